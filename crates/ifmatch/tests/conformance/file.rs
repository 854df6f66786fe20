//! Conformance on `file://`, including a race between OS processes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use ifmatch::store::file::FileStore;
use ifmatch::store::{PutOptions, Store};
use ifmatch::update::update_json;

use crate::suite::{Caps, conformance as run, group_race, race as run_race, race_policy};

const CAPS: Caps = Caps {
    large_values: true,
    sorted_listing: true,
};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(crate::env::unique(&format!("ifmatch-{tag}")));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn conformance() {
    let dir = TempDir::new("conf");
    run(Arc::new(FileStore::open(&dir.0).unwrap()), CAPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race() {
    let dir = TempDir::new("race");
    run_race(Arc::new(FileStore::open(&dir.0).unwrap()), 8, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_race() {
    let dir = TempDir::new("group");
    group_race(Arc::new(FileStore::open(&dir.0).unwrap()), 64, 20).await;
}

#[tokio::test]
async fn opened_by_url_and_reopened() {
    let dir = TempDir::new("url");
    let url = format!("file://{}", dir.0.display());
    let s = ifmatch::store::open(&url).await.unwrap();
    let v = s
        .put("a/b", "kept".into(), PutOptions::if_absent())
        .await
        .unwrap();
    drop(s);
    // A second handle (as another process would) sees the same value and version.
    let s = ifmatch::store::open(&url).await.unwrap();
    let o = s.get("a/b").await.unwrap();
    assert_eq!(o.body, "kept");
    assert_eq!(o.meta.version, v);
    // A bare path works too.
    let s = ifmatch::store::open(dir.0.to_str().unwrap()).await.unwrap();
    assert!(s.head("a/b").await.is_ok());
}

#[tokio::test]
async fn keys_stay_inside_the_directory() {
    let dir = TempDir::new("escape");
    let store_dir = dir.0.join("store");
    let s = FileStore::open(&store_dir).unwrap();
    for k in ["../outside", "a/../../outside", "/etc/passwd"] {
        assert!(s.put(k, "x".into(), PutOptions::any()).await.is_err());
    }
    // Nothing was created next to the store.
    let siblings: Vec<_> = std::fs::read_dir(&dir.0).unwrap().flatten().collect();
    assert_eq!(siblings.len(), 1);
    // A key and a key below it coexist ("a" is a value, "a/b" lives in a folder).
    s.put("a", "1".into(), PutOptions::any()).await.unwrap();
    s.put("a/b", "2".into(), PutOptions::any()).await.unwrap();
    assert_eq!(s.get("a").await.unwrap().body, "1");
    assert_eq!(s.get("a/b").await.unwrap().body, "2");
}

#[tokio::test]
async fn long_segments_are_shortened_and_still_listed() {
    let dir = TempDir::new("long");
    let s = FileStore::open(&dir.0).unwrap();
    let long_a = format!("p/{}", "é".repeat(400));
    let long_b = format!("p/{}/leaf", "x".repeat(900));
    s.put(&long_a, "a".into(), PutOptions::any()).await.unwrap();
    s.put(&long_b, "b".into(), PutOptions::any()).await.unwrap();
    assert_eq!(s.get(&long_a).await.unwrap().body, "a");
    assert_eq!(s.get(&long_b).await.unwrap().body, "b");
    let keys: Vec<String> = ifmatch::store::list_all(&s, "p/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&long_a) && keys.contains(&long_b));
}

#[tokio::test]
async fn a_corrupt_value_file_is_an_error_not_garbage() {
    let dir = TempDir::new("corrupt");
    let s = FileStore::open(&dir.0).unwrap();
    s.put("k", "0123456789".into(), PutOptions::any())
        .await
        .unwrap();
    // Truncate the value file behind the store's back.
    let path = dir.0.join("data").join("k.v");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = s.get("k").await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

const CHILD_DIR: &str = "IFMATCH_TEST_CHILD_DIR";
const CHILD_ID: &str = "IFMATCH_TEST_CHILD_ID";
const PROCESS_WORKERS: usize = 4;
const PROCESS_INCREMENTS: u64 = 50;

/// 4 OS processes × 50 increments on one directory end at exactly 200.
///
/// The processes are this test binary run again with [`CHILD_DIR`] set, running
/// only [`child_process_worker`].
#[tokio::test]
async fn race_between_processes() {
    let dir = TempDir::new("procs");
    FileStore::open(&dir.0).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESS_WORKERS)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "file::child_process_worker",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, &dir.0)
                .env(CHILD_ID, i.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "a worker process failed: {status}");
    }
    let s = FileStore::open(&dir.0).unwrap();
    let o = s.get("counter").await.unwrap();
    let n: u64 = serde_json::from_slice(&o.body).unwrap();
    assert_eq!(n, PROCESS_WORKERS as u64 * PROCESS_INCREMENTS);
    // Every process recorded its acknowledged values: together exactly 1..=200.
    let mut acks = Vec::new();
    for i in 0..PROCESS_WORKERS {
        let o = s.get(&format!("acks/{i}")).await.unwrap();
        let mine: Vec<u64> = serde_json::from_slice(&o.body).unwrap();
        acks.extend(mine);
    }
    acks.sort_unstable();
    assert_eq!(
        acks,
        (1..=PROCESS_WORKERS as u64 * PROCESS_INCREMENTS).collect::<Vec<_>>()
    );
}

/// The body of one worker process of [`race_between_processes`]; run on its
/// own (without [`CHILD_DIR`]) it only checks that it was not asked to work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_worker() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let id: u64 = std::env::var(CHILD_ID).unwrap().parse().unwrap();
    let s = FileStore::open(&dir).unwrap();
    let policy = race_policy(77 + id);
    let mut acks = Vec::new();
    for _ in 0..PROCESS_INCREMENTS {
        let r = update_json(&s, "counter", &policy, |n: Option<u64>| {
            Ok(Some(n.unwrap_or(0) + 1))
        })
        .await
        .unwrap();
        acks.push(r.value.unwrap());
    }
    s.put(
        &format!("acks/{id}"),
        serde_json::to_vec(&acks).unwrap().into(),
        PutOptions::if_absent(),
    )
    .await
    .unwrap();
}
