//! Crash test of `file://`: a child process writes in a loop and logs every
//! acknowledged write (one fsynced line each); the parent SIGKILLs it at
//! seeded random moments, many times, and after every kill checks that:
//!
//! - every acknowledged write is there: the counter is the last acknowledged
//!   value plus at most one per increment attempted since (each logged before
//!   it starts; one may land and be killed before its acknowledgement, and
//!   the next child builds on it); the blob is the last acknowledged one or
//!   one attempted since — never older, never anything else;
//! - nothing partial is ever visible: every value read (also by the parent
//!   *while* the child writes) parses and its checksum holds;
//! - no increment is applied twice (acknowledged values strictly increase);
//! - the next writer proceeds without repair (no stale lock blocks it, and
//!   leftover temporary files are harmless).
//!
//! The child is this test binary run again with `RELIABILITY_CHILD=file`,
//! running only [`child`]. `RELIABILITY_KILLS` sets the number of kills.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ifmatch::store::file::FileStore;
use ifmatch::store::{PutOptions, Store};
use ifmatch::update::update_json;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::common::{TempDir, env_u64, fast_policy, seed};

pub const CHILD: &str = "RELIABILITY_CHILD";
pub const CHILD_DIR: &str = "RELIABILITY_CHILD_DIR";
pub const CHILD_SEED: &str = "RELIABILITY_CHILD_SEED";

/// A self-checking value: a sequence number, padding of random size, and a
/// SHA-256 of both.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Checked {
    pub n: u64,
    pub pad: String,
    pub sum: String,
}

impl Checked {
    pub fn new(n: u64, rng: &mut StdRng) -> Checked {
        let len = rng.random_range(0..48_000);
        let pad: String = (0..len)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect();
        let sum = Self::digest(n, &pad);
        Checked { n, pad, sum }
    }

    fn digest(n: u64, pad: &str) -> String {
        let mut h = Sha256::new();
        h.update(n.to_le_bytes());
        h.update(pad.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses and verifies a stored value; panics on anything partial or corrupt.
    pub fn verify(what: &str, body: &[u8]) -> Checked {
        let c: Checked = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{what}: a value that does not parse ({e}), {} bytes",
                body.len()
            )
        });
        assert_eq!(
            c.sum,
            Self::digest(c.n, &c.pad),
            "{what}: checksum mismatch at n={}",
            c.n
        );
        c
    }
}

/// Appends one line to the acknowledgement log and fsyncs it.
pub fn log_line(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
    f.sync_data().unwrap();
}

/// The complete lines of the log (a line torn by a kill was never acknowledged).
pub fn log_lines(log: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("reading the log: {e}"),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().map(str::to_string).collect()
}

/// Spawns this test binary as a child running only `test` with the given env.
pub fn spawn_child(test: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits until the log has a line `start RUN` (the child is up and about to write).
pub fn wait_for_start(log: &Path, run: u64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("start {run}");
    loop {
        if log_lines(log).contains(&want) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child run {run} exited before starting: {status}");
        }
        assert!(Instant::now() < deadline, "child run {run} never started");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the child of run `run` has logged an acknowledgement (a line
/// starting with `ack` after its `start` line), so a kill that follows hits
/// a writer in full swing rather than one still starting.
pub fn wait_for_ack(log: &Path, run: u64, ack: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let start = format!("start {run}");
    loop {
        let lines = log_lines(log);
        if let Some(i) = lines.iter().position(|l| *l == start)
            && lines[i + 1..].iter().any(|l| l.starts_with(ack))
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child run {run} exited before acknowledging a write: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "child run {run} acknowledged nothing in 30 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the log says: the acknowledged counter values and blob writes, and
/// the attempts since the last acknowledgement of each (several, when
/// successive children die before acknowledging).
#[derive(Debug, Default)]
struct Acks {
    counter: Vec<u64>,
    counter_tries: u64,
    blob_tried: Vec<u64>,
    blob_acked: Option<u64>,
    writes: u64,
}

fn read_acks(log: &Path) -> Acks {
    let mut a = Acks::default();
    for line in log_lines(log) {
        let mut parts = line.split(' ');
        let (Some(kind), Some(n)) = (parts.next(), parts.next()) else {
            panic!("bad log line {line:?}");
        };
        let n: u64 = n.parse().unwrap();
        match kind {
            "start" => {}
            "try-c" => a.counter_tries += 1,
            "c" => {
                a.counter_tries = 0;
                if let Some(&last) = a.counter.last() {
                    assert!(
                        n > last,
                        "counter acknowledged {n} after {last}: applied twice or lost"
                    );
                }
                a.counter.push(n);
                a.writes += 1;
            }
            "try-b" => a.blob_tried.push(n),
            "b" => {
                assert_eq!(
                    a.blob_tried.last(),
                    Some(&n),
                    "blob {n} acknowledged without a try"
                );
                a.blob_tried.clear();
                a.blob_acked = Some(n);
                a.writes += 1;
            }
            other => panic!("bad log line kind {other:?}"),
        }
    }
    a
}

/// Checks the store against the log; returns (counter, blob) as stored.
async fn check_state(store: &FileStore, log: &Path, when: &str) -> (u64, u64) {
    let acks = read_acks(log);
    let last_c = acks.counter.last().copied().unwrap_or(0);
    let counter = match store.get("counter").await {
        Ok(o) => Checked::verify("counter", &o.body).n,
        Err(ifmatch::Error::NotFound { .. }) => 0,
        Err(e) => panic!("{when}: reading the counter: {e}"),
    };
    // Each attempt since the last acknowledgement may have landed, once.
    assert!(
        (last_c..=last_c + acks.counter_tries).contains(&counter),
        "{when}: counter is {counter} but the last acknowledged increment made it {last_c}, with {} unacknowledged attempts since",
        acks.counter_tries
    );
    let blob = match store.get("blob").await {
        Ok(o) => Checked::verify("blob", &o.body).n,
        Err(ifmatch::Error::NotFound { .. }) => 0,
        Err(e) => panic!("{when}: reading the blob: {e}"),
    };
    let acked = acks.blob_acked.unwrap_or(0);
    assert!(
        blob == acked || acks.blob_tried.contains(&blob),
        "{when}: blob is {blob}, but the last acknowledged is {acked} and the attempts since {:?}",
        acks.blob_tried
    );
    (counter, blob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_survives_sigkill() {
    let seed = seed("file_store_survives_sigkill");
    let kills = env_u64("RELIABILITY_KILLS", 40);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new("crash-file");
    let store_dir = dir.0.join("store");
    let log = dir.0.join("acks.log");
    let started = Instant::now();
    let mut total_reads = 0u64;
    for run in 0..kills {
        let mut child = spawn_child(
            "crash_file::child",
            &[
                (CHILD, "file".into()),
                (CHILD_DIR, dir.0.display().to_string()),
                (CHILD_SEED, format!("{}", seed.wrapping_add(run))),
                ("RELIABILITY_CHILD_RUN", run.to_string()),
            ],
        );
        wait_for_start(&log, run, &mut child);
        // Every other run is killed only after its first acknowledged write
        // (so every run does some work, however slow the machine); the others
        // may die while still opening the store.
        if run % 2 == 0 {
            wait_for_ack(&log, run, "c ", &mut child);
        }
        // While the child writes, read along: nothing partial may ever show.
        let kill_at = Instant::now() + Duration::from_millis(rng.random_range(5..250));
        let reader = FileStore::open(&store_dir).unwrap();
        let mut reads = 0u32;
        while Instant::now() < kill_at {
            for key in ["counter", "blob"] {
                match reader.get(key).await {
                    Ok(o) => {
                        Checked::verify(key, &o.body);
                        reads += 1;
                    }
                    Err(ifmatch::Error::NotFound { .. }) => {}
                    Err(e) => panic!("run {run}: a concurrent read of {key} failed: {e}"),
                }
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
            "run {run}: the child was not killed but ended: {status}"
        );
        total_reads += reads as u64;
        let (c, b) = check_state(&reader, &log, &format!("after kill {run}")).await;
        if run % 10 == 0 {
            println!("run {run}: counter {c}, blob {b}, {reads} concurrent reads");
        }
    }
    // The next writer proceeds without repair: no lock left behind blocks it.
    let store = FileStore::open(&store_dir).unwrap();
    let (before, _) = check_state(&store, &log, "at the end").await;
    let policy = fast_policy(seed, 5);
    let mut prng = StdRng::seed_from_u64(seed);
    for i in 1..=5 {
        let fut = update_json(&store, "counter", &policy, |c: Option<Checked>| {
            Ok(Some(Checked::new(c.map_or(0, |c| c.n) + 1, &mut prng)))
        });
        let r = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("a writer after the crashes blocked: a stale lock?")
            .unwrap();
        assert_eq!(r.value.unwrap().n, before + i);
    }
    let acks = read_acks(&log);
    // Leftover temporary files (at most one per kill) do not disturb anything;
    // the store removes them once they are an hour old.
    let tmp_left = std::fs::read_dir(store_dir.join("tmp")).unwrap().count() as u64;
    assert!(
        tmp_left <= kills,
        "{tmp_left} temporary files after {kills} kills"
    );
    // Nothing but value files and folders in the data directory.
    for e in std::fs::read_dir(store_dir.join("data")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            name.ends_with(".v") || name.ends_with(".d"),
            "stray file {name}"
        );
    }
    println!(
        "{kills} kills in {:.1}s: {} acknowledged writes ({} increments, blob {:?}), {total_reads} concurrent reads, {tmp_left} temporary files left",
        started.elapsed().as_secs_f64(),
        acks.writes,
        acks.counter.len(),
        acks.blob_acked
    );
    assert!(
        acks.writes >= kills / 2,
        "every other run acknowledges a write"
    );
}

/// The child of [`file_store_survives_sigkill`]; without `RELIABILITY_CHILD=file` it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    if std::env::var(CHILD).as_deref() != Ok("file") {
        return;
    }
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let run: u64 = std::env::var("RELIABILITY_CHILD_RUN")
        .unwrap()
        .parse()
        .unwrap();
    let log = dir.join("acks.log");
    let store = FileStore::open(dir.join("store")).unwrap();
    let policy = fast_policy(seed, 10);
    let mut rng = StdRng::seed_from_u64(seed);
    log_line(&log, &format!("start {run}"));
    for i in 0..100_000u64 {
        if i % 2 == 0 {
            log_line(&log, "try-c 0");
            let mut vrng = StdRng::seed_from_u64(rng.random());
            let r = update_json(&store, "counter", &policy, |c: Option<Checked>| {
                Ok(Some(Checked::new(c.map_or(0, |c| c.n) + 1, &mut vrng)))
            })
            .await
            .unwrap();
            log_line(&log, &format!("c {}", r.value.unwrap().n));
        } else {
            // A compare-and-swap chain on the blob.
            let (n, cond) = match store.get("blob").await {
                Ok(o) => (
                    Checked::verify("blob", &o.body).n + 1,
                    PutOptions::if_matches(o.meta.version),
                ),
                Err(ifmatch::Error::NotFound { .. }) => (1, PutOptions::if_absent()),
                Err(e) => panic!("{e}"),
            };
            let value = serde_json::to_vec(&Checked::new(n, &mut rng)).unwrap();
            log_line(&log, &format!("try-b {n}"));
            store.put("blob", value.into(), cond).await.unwrap();
            log_line(&log, &format!("b {n}"));
        }
    }
}
