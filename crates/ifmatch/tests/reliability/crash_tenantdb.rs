//! Crash test of tenant databases: a child process commits rows in a loop
//! (each row `n = max(n) + 1` with a random payload and its SHA-256) and logs
//! every acknowledged commit; it dies by the parent's SIGKILL at a random
//! moment, or by its own SIGKILL at a crash point (`IFMATCH_CRASH_AT`, see
//! `tenantdb`'s docs): right after the log entry landed in the store and
//! before the cache was touched (`tenantdb-commit-landed`), or between
//! writing pages into the cached file and its sidecar (`tenantdb-pages-applied`).
//!
//! After every crash the parent opens the tenant — half the time through the
//! crashed process's own cache directory, half the time through a fresh one —
//! and checks that every acknowledged commit is there, rows are exactly
//! `1..=M` with valid checksums (nothing partial, nothing applied twice), at
//! most one commit per crash landed unacknowledged, and SQLite's
//! `integrity_check` passes. The next child then goes on with the crashed
//! cache directory. `RELIABILITY_TENANT_KILLS` sets the number of crashes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ifmatch::store::file::FileStore;
use ifmatch::tenantdb::{TenantDbs, TenantDbsConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::common::{TempDir, env_u64, fast_policy, seed};
use crate::crash_file::{
    CHILD, CHILD_DIR, CHILD_SEED, log_line, log_lines, spawn_child, wait_for_ack, wait_for_start,
};

const TENANT: &str = "crashy";

fn config(cache: &Path, seed: u64) -> TenantDbsConfig {
    TenantDbsConfig::new(cache)
        .with_schema(Arc::new(|tx| {
            tx.execute_batch(
                "CREATE TABLE acks (n INTEGER PRIMARY KEY, payload BLOB NOT NULL, sum TEXT NOT NULL);",
            )
        }))
        // Frequent checkpoints and immediate collection, so crashes also hit those.
        .with_checkpoint_every(5)
        .with_gc_grace(Duration::ZERO)
        .with_retry(fast_policy(seed, 10))
}

fn sum(n: i64, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(n.to_le_bytes());
    h.update(payload);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn acked(log: &Path) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    for line in log_lines(log) {
        if let Some(n) = line.strip_prefix("t ") {
            let n: i64 = n.parse().unwrap();
            if let Some(&last) = out.last() {
                assert!(n > last, "commit {n} acknowledged after {last}");
            }
            out.push(n);
        }
    }
    out
}

/// Opens the tenant through `cache` and checks it against the log; returns M.
async fn check(store: &FileStore, cache: &Path, log: &Path, crashes: u64, when: &str) -> i64 {
    let dbs = TenantDbs::open(Arc::new(store.clone()), config(cache, 1))
        .unwrap_or_else(|e| panic!("{when}: opening the cache after a crash: {e}"));
    let rows: Vec<(i64, Vec<u8>, String)> = match dbs
        .read(TENANT, |c| {
            let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            assert_eq!(ok, "ok");
            let mut st = c.prepare("SELECT n, payload, sum FROM acks ORDER BY n")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    {
        Ok(r) => r,
        Err(ifmatch::tenantdb::TenantDbError::NotFound { .. }) => Vec::new(),
        Err(e) => panic!("{when}: reading the tenant: {e}"),
    };
    for (i, (n, payload, s)) in rows.iter().enumerate() {
        assert_eq!(*n, i as i64 + 1, "{when}: rows are not 1..=M");
        assert_eq!(*s, sum(*n, payload), "{when}: row {n} is corrupt");
    }
    let m = rows.len() as i64;
    let acks = acked(log);
    let last = acks.last().copied().unwrap_or(0);
    assert!(
        m >= last,
        "{when}: commit {last} was acknowledged but the tenant has {m} rows"
    );
    let unacked = m - acks.len() as i64;
    assert!(
        (0..=crashes as i64).contains(&unacked),
        "{when}: {m} rows, {} acknowledged, after {crashes} crashes",
        acks.len()
    );
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_commits_survive_sigkill() {
    let seed = seed("tenant_commits_survive_sigkill");
    let crashes = env_u64("RELIABILITY_TENANT_KILLS", 30);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new("crash-tdb");
    let log = dir.0.join("acks.log");
    let cache = dir.0.join("cache");
    let store = FileStore::open(dir.0.join("store")).unwrap();
    let started = Instant::now();
    let (mut at_landed, mut at_applied, mut timed, mut after_first) = (0, 0, 0, 0u64);
    for run in 0..crashes {
        let mut envs = vec![
            (CHILD, "tenantdb".to_string()),
            (CHILD_DIR, dir.0.display().to_string()),
            (CHILD_SEED, seed.wrapping_add(run).to_string()),
            ("RELIABILITY_CHILD_RUN", run.to_string()),
        ];
        let mode = rng.random_range(0..4u32);
        let nth = rng.random_range(1..4u32);
        match mode {
            0 => envs.push(("IFMATCH_CRASH_AT", format!("tenantdb-commit-landed@{nth}"))),
            1 => envs.push(("IFMATCH_CRASH_AT", format!("tenantdb-pages-applied@{nth}"))),
            _ => {}
        }
        let mut child = spawn_child("crash_tenantdb::child", &envs);
        wait_for_start(&log, run, &mut child);
        let status = if mode <= 1 {
            // It kills itself at the crash point.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break s;
                }
                assert!(
                    Instant::now() < deadline,
                    "run {run}: never reached the crash point"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        } else {
            // As for file://: half the timed kills only after a first commit.
            if mode == 2 {
                wait_for_ack(&log, run, "t ", &mut child);
                after_first += 1;
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(10..300)));
            child.kill().unwrap();
            child.wait().unwrap()
        };
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "run {run}: the child was not killed but ended: {status}"
        );
        match mode {
            0 => at_landed += 1,
            1 => at_applied += 1,
            _ => timed += 1,
        }
        // Half the time through the crashed cache, half through a fresh one
        // (which leaves the crashed cache for the next child to repair).
        let check_cache = if rng.random_bool(0.5) {
            cache.clone()
        } else {
            dir.0.join(format!("fresh-{run}"))
        };
        let m = check(
            &store,
            &check_cache,
            &log,
            run + 1,
            &format!("after crash {run}"),
        )
        .await;
        if run % 10 == 0 {
            println!("run {run} (mode {mode}): {m} rows");
        }
    }
    // A new process with the crashed cache dir sees every acked commit and goes on.
    let m = check(&store, &cache, &log, crashes, "at the end").await;
    let dbs = TenantDbs::open(Arc::new(store.clone()), config(&cache, seed)).unwrap();
    for i in 1..=3 {
        let n = commit(&dbs, &mut StdRng::seed_from_u64(seed + i)).await;
        assert_eq!(n, m + i as i64);
    }
    drop(dbs);
    let acks = acked(&log);
    println!(
        "{crashes} crashes in {:.1}s ({at_landed} after the remote commit, {at_applied} mid cache update, {timed} at random): {} acknowledged commits, {m} rows",
        started.elapsed().as_secs_f64(),
        acks.len()
    );
    // Runs killed after their first commit each acknowledged one at least.
    assert!(
        acks.len() as u64 >= after_first,
        "{} commits acknowledged, but {after_first} runs waited for one",
        acks.len()
    );
}

async fn commit(dbs: &TenantDbs, rng: &mut StdRng) -> i64 {
    let len = rng.random_range(10..6000);
    let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    dbs.write(TENANT, move |tx| {
        let n: i64 = tx.query_row("SELECT coalesce(max(n), 0) + 1 FROM acks", [], |r| r.get(0))?;
        tx.execute(
            "INSERT INTO acks (n, payload, sum) VALUES (?1, ?2, ?3)",
            rusqlite::params![n, payload, sum(n, &payload)],
        )?;
        Ok(n)
    })
    .await
    .unwrap()
}

/// The child of [`tenant_commits_survive_sigkill`]; without `RELIABILITY_CHILD=tenantdb` it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    if std::env::var(CHILD).as_deref() != Ok("tenantdb") {
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
    let dbs = TenantDbs::open(Arc::new(store), config(&dir.join("cache"), seed)).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    log_line(&log, &format!("start {run}"));
    for _ in 0..100_000 {
        let n = commit(&dbs, &mut rng).await;
        log_line(&log, &format!("t {n}"));
    }
}
