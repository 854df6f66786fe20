//! The conformance suite: every backend must pass every function here.
//!
//! Each function works under a fresh random prefix, so one store (one bucket,
//! one table) can host several runs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ifmatch::clock::SharedRng;
use ifmatch::retry::RetryPolicy;
use ifmatch::store::{Condition, Fetch, ListPage, Metadata, PutOptions, Version, list_all};
use ifmatch::update::{META_SEQ, Updater, update_json};
use ifmatch::{DynStore, Error, ErrorKind};

/// What a backend can do beyond the common contract.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Whether to try a 64 MiB value.
    pub large_values: bool,
    /// Whether listings come back in key order.
    pub sorted_listing: bool,
}

fn prefix() -> String {
    format!("conf-{}/", uuid_like())
}

fn uuid_like() -> String {
    format!("{:016x}", SharedRng::from_entropy().next_u64())
}

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.kind(),
    }
}

/// Runs every single-client check of the contract on `store`.
pub async fn conformance(store: DynStore, caps: Caps) {
    let p = prefix();
    deletes(&store, &p).await;
    versions_never_repeat(&store, &p).await;
    conformance_without_conditional_delete(store, caps).await;
}

/// Every single-client check of [`conformance`] but those that need a
/// conditional DELETE (`deletes`, `versions_never_repeat`), for a server
/// that refuses `If-Match` on DELETE (LocalStack's S3, see `localstack.rs`).
pub async fn conformance_without_conditional_delete(store: DynStore, caps: Caps) {
    let p = prefix();
    conditions(&store, &p).await;
    values_and_metadata(&store, &p).await;
    conditional_get(&store, &p).await;
    bad_keys(&store).await;
    listing(&store, &p, caps).await;
    if caps.large_values {
        large_value(&store, &p).await;
    }
}

/// Every put condition against every state: absent, present at the expected
/// version, present at another version.
async fn conditions(store: &DynStore, p: &str) {
    let k = format!("{p}cond");
    // Absent key.
    assert_eq!(kind(store.get(&k).await), ErrorKind::NotFound);
    assert_eq!(kind(store.head(&k).await), ErrorKind::NotFound);
    let stale = Version::new("no-such-version");
    match store
        .put(&k, "x".into(), PutOptions::if_matches(stale.clone()))
        .await
    {
        Err(Error::Conflict { key, expected, .. }) => {
            assert_eq!(key, k);
            assert_eq!(expected, Condition::Matches(stale.clone()));
        }
        other => panic!("If-Match on an absent key must conflict, got {other:?}"),
    }
    assert_eq!(
        kind(store.get(&k).await),
        ErrorKind::NotFound,
        "a failed put left a value"
    );
    let v1 = store
        .put(&k, "one".into(), PutOptions::if_absent())
        .await
        .unwrap();

    // Present at v1.
    match store.put(&k, "dup".into(), PutOptions::if_absent()).await {
        Err(Error::Conflict { key, expected, .. }) => {
            assert_eq!(key, k);
            assert_eq!(expected, Condition::Absent);
        }
        other => panic!("If-None-Match on a present key must conflict, got {other:?}"),
    }
    assert_eq!(store.get(&k).await.unwrap().body, Bytes::from("one"));
    let v2 = store
        .put(&k, "two".into(), PutOptions::if_matches(v1.clone()))
        .await
        .unwrap();
    assert_ne!(v1, v2);

    // Present at v2, conditioned on v1: stale.
    match store
        .put(&k, "lost".into(), PutOptions::if_matches(v1.clone()))
        .await
    {
        Err(Error::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, Condition::Matches(v1.clone()));
            if let Some(a) = actual {
                assert_eq!(a, v2, "a reported actual version must be the current one");
            }
        }
        other => panic!("a stale If-Match must conflict, got {other:?}"),
    }
    let got = store.get(&k).await.unwrap();
    assert_eq!(got.body, Bytes::from("two"));
    assert_eq!(got.meta.version, v2);

    // Unconditional puts land in any state.
    let v3 = store
        .put(&k, "three".into(), PutOptions::any())
        .await
        .unwrap();
    assert_ne!(v3, v2);
    let k2 = format!("{p}cond-any");
    store
        .put(&k2, "fresh".into(), PutOptions::any())
        .await
        .unwrap();
    assert_eq!(store.get(&k2).await.unwrap().body, Bytes::from("fresh"));
}

/// Every delete condition against every state.
async fn deletes(store: &DynStore, p: &str) {
    let k = format!("{p}del");
    // Absent.
    store.delete(&k, Condition::Any).await.unwrap();
    store.delete(&k, Condition::Absent).await.unwrap();
    assert_eq!(
        kind(
            store
                .delete(&k, Condition::Matches(Version::new("nope")))
                .await
        ),
        ErrorKind::Conflict
    );
    // Present.
    let v1 = store.put(&k, "a".into(), PutOptions::any()).await.unwrap();
    let v2 = store.put(&k, "b".into(), PutOptions::any()).await.unwrap();
    assert_eq!(
        kind(store.delete(&k, Condition::Absent).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(store.delete(&k, Condition::Matches(v1)).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        store.get(&k).await.unwrap().body,
        Bytes::from("b"),
        "a failed delete deleted"
    );
    store
        .delete(&k, Condition::Matches(v2.clone()))
        .await
        .unwrap();
    assert_eq!(kind(store.get(&k).await), ErrorKind::NotFound);
    assert_eq!(
        kind(store.delete(&k, Condition::Matches(v2)).await),
        ErrorKind::Conflict
    );
    store.put(&k, "c".into(), PutOptions::any()).await.unwrap();
    store.delete(&k, Condition::Any).await.unwrap();
    assert_eq!(kind(store.head(&k).await), ErrorKind::NotFound);
}

/// Versions differ across writes, also across delete and re-create (no ABA),
/// and a version from before a delete never matches the re-created key.
async fn versions_never_repeat(store: &DynStore, p: &str) {
    let k = format!("{p}aba");
    let mut seen = std::collections::HashSet::new();
    for round in 0..3 {
        let v = store
            .put(
                &k,
                format!("round {round} a").into(),
                PutOptions::if_absent(),
            )
            .await
            .unwrap();
        assert!(seen.insert(v.clone()), "version {v} repeated");
        let v2 = store
            .put(
                &k,
                format!("round {round} b").into(),
                PutOptions::if_matches(v.clone()),
            )
            .await
            .unwrap();
        assert!(seen.insert(v2.clone()), "version {v2} repeated");
        store.delete(&k, Condition::Matches(v2)).await.unwrap();
        // The old version must not match the absent key.
        assert_eq!(
            kind(store.put(&k, "x".into(), PutOptions::if_matches(v)).await),
            ErrorKind::Conflict
        );
    }
}

/// Binary and empty values, metadata and expiry round-trip through get and head.
async fn values_and_metadata(store: &DynStore, p: &str) {
    let k = format!("{p}bin");
    let body: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let mut md = Metadata::new();
    md.insert("content-kind".into(), "application/octet-stream".into());
    md.insert("owner".into(), "alice smith".into());
    let v = store
        .put(
            &k,
            Bytes::from(body.clone()),
            PutOptions::if_absent()
                .with_metadata(md.clone())
                .with_expiry(Some(4_102_444_800)),
        )
        .await
        .unwrap();
    let got = store.get(&k).await.unwrap();
    assert_eq!(got.body.as_ref(), body.as_slice());
    assert_eq!(got.meta.version, v);
    assert_eq!(got.meta.key, k);
    assert_eq!(got.meta.size, 4096);
    assert_eq!(got.meta.metadata, md);
    assert_eq!(got.meta.expires_at, Some(4_102_444_800));
    let head = store.head(&k).await.unwrap();
    assert_eq!(head.version, v);
    assert_eq!(head.size, 4096);
    assert_eq!(head.metadata, md);
    assert_eq!(head.expires_at, Some(4_102_444_800));

    // Metadata is replaced, not merged, by the next write.
    store
        .put(&k, Bytes::new(), PutOptions::any())
        .await
        .unwrap();
    let got = store.get(&k).await.unwrap();
    assert!(got.body.is_empty(), "empty values round-trip");
    assert_eq!(got.meta.size, 0);
    assert!(got.meta.metadata.is_empty(), "{:?}", got.meta.metadata);
    assert_eq!(got.meta.expires_at, None);

    // Invalid metadata is refused before anything is written.
    let mut bad = Metadata::new();
    bad.insert("Bad Name".into(), "x".into());
    let r = store
        .put(
            &format!("{p}badmeta"),
            "x".into(),
            PutOptions::any().with_metadata(bad),
        )
        .await;
    assert_eq!(kind(r), ErrorKind::Invalid);

    // Keys with spaces, unicode and URL-special characters round-trip.
    for (i, odd) in [
        "a b",
        "ünï/cødé",
        "x+y=z",
        "p%41q",
        "h#a?sh&",
        "semi;colon",
        "tilde~",
    ]
    .iter()
    .enumerate()
    {
        let key = format!("{p}odd/{odd}");
        store
            .put(&key, format!("odd {i}").into(), PutOptions::any())
            .await
            .unwrap();
        let got = store.get(&key).await.unwrap();
        assert_eq!(got.body, Bytes::from(format!("odd {i}")), "{key}");
        assert_eq!(got.meta.key, key);
    }
    let listed: BTreeSet<String> = list_all(&**store, &format!("{p}odd/"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(listed.len(), 7, "{listed:?}");
    assert!(listed.contains(&format!("{p}odd/ünï/cødé")));
}

/// A conditional GET transfers nothing for the current version.
async fn conditional_get(store: &DynStore, p: &str) {
    let k = format!("{p}cget");
    assert_eq!(
        kind(store.get_if_changed(&k, &Version::new("x")).await),
        ErrorKind::NotFound
    );
    let v1 = store
        .put(&k, "one".into(), PutOptions::any())
        .await
        .unwrap();
    assert_eq!(
        store.get_if_changed(&k, &v1).await.unwrap(),
        Fetch::Unchanged
    );
    let v2 = store
        .put(&k, "two".into(), PutOptions::any())
        .await
        .unwrap();
    match store.get_if_changed(&k, &v1).await.unwrap() {
        Fetch::Changed(o) => {
            assert_eq!(o.body, Bytes::from("two"));
            assert_eq!(o.meta.version, v2);
        }
        Fetch::Unchanged => panic!("a changed key reported unchanged"),
    }
}

/// Bad keys are refused with InvalidKey by every operation, before touching storage.
async fn bad_keys(store: &DynStore) {
    let long = "k".repeat(1025);
    for k in [
        "",
        "/abs",
        "a/../../etc/passwd",
        "..",
        "a//b",
        "trail/",
        "nul\0",
        "tab\tkey",
        &long,
    ] {
        let is_invalid_key = |r: Result<(), Error>| matches!(r, Err(Error::InvalidKey { .. }));
        assert!(is_invalid_key(store.get(k).await.map(|_| ())), "get {k:?}");
        assert!(
            is_invalid_key(store.head(k).await.map(|_| ())),
            "head {k:?}"
        );
        assert!(
            is_invalid_key(
                store
                    .put(k, "x".into(), PutOptions::any())
                    .await
                    .map(|_| ())
            ),
            "put {k:?}"
        );
        assert!(
            is_invalid_key(store.delete(k, Condition::Any).await),
            "delete {k:?}"
        );
        assert!(
            is_invalid_key(
                store
                    .get_if_changed(k, &Version::new("v"))
                    .await
                    .map(|_| ())
            ),
            "get_if_changed {k:?}"
        );
    }
    assert!(matches!(
        store.list("../", ListPage::default()).await,
        Err(Error::InvalidKey { .. })
    ));
}

/// Listing by prefix, page by page: every key exactly once, nothing outside the prefix.
async fn listing(store: &DynStore, p: &str, caps: Caps) {
    let base = format!("{p}list/");
    let mut expected = BTreeSet::new();
    for i in 0..23 {
        let k = format!("{base}item-{i:02}");
        store
            .put(&k, format!("{i}").into(), PutOptions::any())
            .await
            .unwrap();
        expected.insert(k);
    }
    for sub in ["sub/a", "sub/b", "sub/deeper/c"] {
        let k = format!("{base}{sub}");
        store.put(&k, "s".into(), PutOptions::any()).await.unwrap();
        expected.insert(k);
    }
    // Near misses that must not be listed.
    store
        .put(&format!("{p}listing-not"), "n".into(), PutOptions::any())
        .await
        .unwrap();
    store
        .put(&format!("{p}lis"), "n".into(), PutOptions::any())
        .await
        .unwrap();

    let mut got = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(
                &base,
                ListPage {
                    token: token.take(),
                    limit: 7,
                },
            )
            .await
            .unwrap();
        assert!(page.entries.len() <= 7, "a page exceeded its limit");
        pages += 1;
        for e in &page.entries {
            assert!(e.size > 0);
            let head = store.head(&e.key).await.unwrap();
            assert_eq!(head.version, e.version);
        }
        got.extend(page.entries.into_iter().map(|e| e.key));
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(pages < 50, "listing does not end");
    }
    assert!(
        pages >= 4,
        "26 keys in pages of 7 need at least 4 pages, got {pages}"
    );
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(set.len(), got.len(), "a key was listed twice");
    assert_eq!(set, expected);
    if caps.sorted_listing {
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(got, sorted, "listing is not in key order");
    }
    // A prefix that ends inside a segment.
    let partial: BTreeSet<String> = list_all(&**store, &format!("{base}item-1"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(partial.len(), 10, "{partial:?}");
    // A nested prefix and an empty one.
    assert_eq!(
        list_all(&**store, &format!("{base}sub/"))
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(
        list_all(&**store, &format!("{p}nothing-here/"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        kind(
            store
                .list(
                    &base,
                    ListPage {
                        token: None,
                        limit: 0
                    }
                )
                .await
        ),
        ErrorKind::Invalid
    );
}

/// A 64 MiB value round-trips intact.
async fn large_value(store: &DynStore, p: &str) {
    let k = format!("{p}large");
    let size = 64 * 1024 * 1024;
    let body: Vec<u8> = (0..size)
        .map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let body = Bytes::from(body);
    let v = store
        .put(&k, body.clone(), PutOptions::if_absent())
        .await
        .unwrap();
    let got = store.get(&k).await.unwrap();
    assert_eq!(got.meta.version, v);
    assert_eq!(got.body.len(), size);
    assert!(got.body == body, "the 64 MiB value came back different");
    assert_eq!(store.head(&k).await.unwrap().size, size as u64);
    store.delete(&k, Condition::Any).await.unwrap();
}

/// A retry policy generous enough that contention alone never exhausts it.
pub fn race_policy(seed: u64) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(10_000)
        .with_delays(Duration::from_millis(1), Duration::from_millis(40))
        .with_deadline(Some(Duration::from_secs(300)))
        .with_rng(SharedRng::seeded(seed))
}

/// `workers` concurrent update loops × `per_worker` increments of one key end
/// at exactly the total, and every acknowledged increment saw a distinct value
/// (none lost, none applied twice).
pub async fn race(store: DynStore, workers: usize, per_worker: usize) {
    let key = format!("{}race/counter", prefix());
    let total = workers * per_worker;
    let acks = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        let key = key.clone();
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let policy = race_policy(1000 + w as u64);
            for _ in 0..per_worker {
                let r = update_json(&*store, &key, &policy, |n: Option<u64>| {
                    Ok(Some(n.unwrap_or(0) + 1))
                })
                .await
                .unwrap_or_else(|e| panic!("worker {w}: {e}"));
                let v = r.value.expect("a value was written");
                acks.lock().unwrap().push(v);
            }
        }));
    }
    for t in tasks {
        t.await.expect("a worker panicked");
    }
    let got = store.get(&key).await.unwrap();
    let final_value: u64 = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(final_value, total as u64, "lost or doubled updates");
    let mut acks = acks.lock().unwrap().clone();
    acks.sort_unstable();
    let expected: Vec<u64> = (1..=total as u64).collect();
    assert_eq!(
        acks, expected,
        "acknowledged values are not exactly 1..={total}"
    );
}

/// Group commit: `tasks` concurrent tasks × `per_task` increments of one
/// key through two [`Updater`]s on `store` (two processes' worth of batches
/// racing each other through compare-and-swap) end at exactly the total,
/// and every caller was told a distinct value (none lost, none applied
/// twice, each caller its own result).
pub async fn group_race(store: DynStore, tasks: usize, per_task: usize) {
    let key = format!("{}group/counter", prefix());
    let total = tasks * per_task;
    let updaters = [
        Updater::new(store.clone(), race_policy(7)),
        Updater::new(store.clone(), race_policy(8)),
    ];
    let acks = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let updater = updaters[t % 2].clone();
        let key = key.clone();
        let acks = acks.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let r = updater
                    .update_json(&key, |n: Option<u64>| Ok(Some(n.unwrap_or(0) + 1)))
                    .await
                    .unwrap_or_else(|e| panic!("task {t}: {e}"));
                acks.lock()
                    .unwrap()
                    .push(r.value.expect("a value was written"));
            }
        }));
    }
    for h in handles {
        h.await.expect("a task panicked");
    }
    let got = store.get(&key).await.unwrap();
    let final_value: u64 = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(final_value, total as u64, "lost or doubled updates");
    assert_eq!(
        got.meta.metadata.get(META_SEQ).map(String::as_str),
        Some(total.to_string().as_str()),
        "the loop's change count"
    );
    let mut acks = acks.lock().unwrap().clone();
    acks.sort_unstable();
    let expected: Vec<u64> = (1..=total as u64).collect();
    assert_eq!(
        acks, expected,
        "callers' values are not exactly 1..={total}"
    );
}
