//! The primitives under seeded fault schedules (errors, lost responses), with
//! the exact final state checked:
//!
//! - update loop: concurrent increments that each append their own id; the
//!   final value names every acknowledged increment exactly once, none that
//!   definitely failed, and each "outcome unknown" one at most once;
//! - leases: workers increment a counter with blind writes under a lease;
//!   no increment is lost (mutual exclusion) and fencing tokens strictly rise;
//! - idempotency: every delivery of a key that succeeds returns one result;
//! - snapshots: every published version holds exactly its own build's bytes,
//!   and the latest is the highest version published;
//! - tenant databases: three workers with their own caches commit rows; the
//!   rows are exactly the acknowledged commits plus some unknown-outcome ones,
//!   none twice.
//!
//! `RELIABILITY_FAULT_ROUNDS` repeats each test with new seeds.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ifmatch::clock::{SharedRng, SystemClock};
use ifmatch::idempotency::Idempotency;
use ifmatch::lease::Leases;
use ifmatch::retry::RetryPolicy;
use ifmatch::snapshot::{PublishOutcome, SnapshotConfig, SnapshotError, Snapshots};
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::file::FileStore;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{DynStore, PutOptions};
use ifmatch::update::{UpdateError, update_json};
use serde::{Deserialize, Serialize};

use crate::common::{TempDir, env_u64, seed};

fn faulty(inner: DynStore, seed: u64, errors: f64, lost: f64) -> Arc<FaultStore> {
    Arc::new(FaultStore::new(
        inner,
        FaultConfig {
            error_rate: errors,
            lost_response_rate: lost,
            ..FaultConfig::default()
        },
        SharedRng::seeded(seed),
    ))
}

/// A policy on tokio's clock (paused in these tests: waits cost no real time).
fn policy(seed: u64, attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_clock(SystemClock::shared())
        .with_rng(SharedRng::seeded(seed))
        .with_max_attempts(attempts)
        .with_delays(Duration::from_millis(1), Duration::from_millis(50))
        .with_deadline(None)
}

fn rounds() -> u64 {
    env_u64("RELIABILITY_FAULT_ROUNDS", 1)
}

#[derive(Serialize, Deserialize, Default, Debug)]
struct Tally {
    n: u64,
    ids: Vec<String>,
}

async fn update_loop_exactly(name: &str, inner: DynStore, seed: u64) {
    let store = faulty(inner.clone(), seed, 0.05, 0.10);
    let (tasks, per_task) = (4u64, 50u64);
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let maybe = Arc::new(Mutex::new(HashSet::new()));
    let failed = Arc::new(Mutex::new(HashSet::new()));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (store, acked, maybe, failed) =
            (store.clone(), acked.clone(), maybe.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            let policy = policy(seed ^ (t + 1), 40);
            for i in 0..per_task {
                let id = format!("{t}-{i}");
                let r = update_json(&*store, "tally", &policy, |v: Option<Tally>| {
                    let mut v = v.unwrap_or_default();
                    v.n += 1;
                    v.ids.push(id.clone());
                    Ok(Some(v))
                })
                .await;
                match r {
                    Ok(_) => acked.lock().unwrap().insert(id),
                    Err(UpdateError::Ambiguous { .. }) | Err(UpdateError::Store(_)) => {
                        maybe.lock().unwrap().insert(id)
                    }
                    Err(UpdateError::Conflict { .. }) => failed.lock().unwrap().insert(id),
                    Err(e) => panic!("{e}"),
                };
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let o = inner.get("tally").await.unwrap();
    let tally: Tally = serde_json::from_slice(&o.body).unwrap();
    let (acked, maybe, failed) = (
        acked.lock().unwrap().clone(),
        maybe.lock().unwrap().clone(),
        failed.lock().unwrap().clone(),
    );
    let ids: Vec<&String> = tally.ids.iter().collect();
    let unique: HashSet<&String> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{name}: an increment was applied twice"
    );
    assert_eq!(tally.n, ids.len() as u64, "{name}: count and ids disagree");
    for id in &acked {
        assert!(
            unique.contains(id),
            "{name}: acknowledged increment {id} is lost"
        );
    }
    for id in &failed {
        assert!(
            !unique.contains(id),
            "{name}: increment {id} failed but landed"
        );
    }
    for id in &unique {
        assert!(
            acked.contains(*id) || maybe.contains(*id),
            "{name}: {id} landed but was neither acknowledged nor ambiguous"
        );
    }
    let landed_maybe = maybe.iter().filter(|id| unique.contains(id)).count();
    let c = store.counters();
    println!(
        "{name}: final {} = {} acknowledged + {landed_maybe} of {} unknown-outcome; {} failed; injected {} errors, {} lost responses",
        tally.n,
        acked.len(),
        maybe.len(),
        failed.len(),
        c.errors.load(std::sync::atomic::Ordering::Relaxed),
        c.lost_responses.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(tally.n, (acked.len() + landed_maybe) as u64);
}

#[tokio::test(start_paused = true)]
async fn update_loop_exact_under_faults_memory() {
    let base = seed("update_loop_memory");
    for r in 0..rounds() {
        update_loop_exactly("memory", Arc::new(MemoryStore::new()), base + r).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_loop_exact_under_faults_file() {
    let base = seed("update_loop_file");
    for r in 0..rounds() {
        let dir = TempDir::new("upd");
        let store = Arc::new(FileStore::open(&dir.0).unwrap());
        update_loop_exactly("file", store, base + r).await;
    }
}

#[tokio::test(start_paused = true)]
async fn leases_exclude_under_faults() {
    let base = seed("leases_under_faults");
    for r in 0..rounds() {
        let s = base + r;
        let inner: DynStore = Arc::new(MemoryStore::new());
        let store = faulty(inner.clone(), s, 0.05, 0.10);
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        let workers = 4u64;
        for w in 0..workers {
            let (store, inner, tokens) = (store.clone(), inner.clone(), tokens.clone());
            handles.push(tokio::spawn(async move {
                let leases = Leases::new(store).with_retry(policy(s ^ (w + 7), 20));
                let mut done = 0u32;
                for _ in 0..15 {
                    let lease = match leases
                        .acquire("job", Duration::from_secs(10), Duration::from_secs(3600))
                        .await
                    {
                        Ok(l) => l,
                        // Could not settle (the store failed too often): try again.
                        Err(_) => continue,
                    };
                    // The critical section: a blind read-modify-write, safe only under exclusion.
                    let n: u64 = match inner.get("counter").await {
                        Ok(o) => serde_json::from_slice(&o.body).unwrap(),
                        Err(_) => 0,
                    };
                    tokio::task::yield_now().await;
                    inner
                        .put(
                            "counter",
                            serde_json::to_vec(&(n + 1)).unwrap().into(),
                            PutOptions::any(),
                        )
                        .await
                        .unwrap();
                    tokens.lock().unwrap().push(lease.token());
                    done += 1;
                    // A failed release leaves the lease to expire; the others wait it out.
                    let _ = leases.release(&lease).await;
                }
                done
            }));
        }
        let mut sections = 0u64;
        for h in handles {
            sections += h.await.unwrap() as u64;
        }
        let n: u64 = serde_json::from_slice(&inner.get("counter").await.unwrap().body).unwrap();
        assert_eq!(
            n, sections,
            "seed {s}: two holders at once lost an increment"
        );
        let tokens = tokens.lock().unwrap().clone();
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "seed {s}: fencing tokens did not strictly increase: {tokens:?}"
        );
        println!(
            "leases: {sections} exclusive sections, tokens up to {:?}",
            tokens.last()
        );
        assert!(sections > 0);
    }
}

#[tokio::test(start_paused = true)]
async fn idempotency_answers_one_result_under_faults() {
    let base = seed("idempotency_under_faults");
    for r in 0..rounds() {
        let s = base + r;
        let inner: DynStore = Arc::new(MemoryStore::new());
        let store = faulty(inner.clone(), s, 0.05, 0.10);
        let runs = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
        let results = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
        let mut handles = Vec::new();
        for w in 0..4u64 {
            let (store, runs, results) = (store.clone(), runs.clone(), results.clone());
            handles.push(tokio::spawn(async move {
                let idem = Idempotency::new(store)
                    .with_retry(policy(s ^ (w + 3), 10))
                    .with_wait(Duration::from_secs(30), Duration::from_millis(50));
                let mut ok = 0;
                // Every worker delivers every message, in its own order.
                for i in 0..12u64 {
                    let key = format!("msg-{}", (i * (w + 1) * 5) % 12);
                    let payload = serde_json::json!({ "key": key });
                    let runs2 = runs.clone();
                    let k2 = key.clone();
                    let handler = || async move {
                        let mut m = runs2.lock().unwrap();
                        let c = m.entry(k2.clone()).or_default();
                        *c += 1;
                        Ok::<_, std::io::Error>(format!("{k2}/run-{c}/worker-{w}"))
                    };
                    if let Ok(out) = idem.run(&key, &payload, handler).await {
                        results
                            .lock()
                            .unwrap()
                            .entry(key)
                            .or_default()
                            .insert(out.into_value());
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for h in handles {
            ok += h.await.unwrap();
        }
        let results = results.lock().unwrap().clone();
        for (key, got) in &results {
            assert_eq!(
                got.len(),
                1,
                "seed {s}: deliveries of {key} got different results: {got:?}"
            );
        }
        let runs = runs.lock().unwrap().clone();
        let extra: u32 = runs.values().map(|c| c - 1).sum();
        println!(
            "idempotency: {ok} of 48 deliveries answered, {} keys, handler re-runs after unsettled claims: {extra}",
            results.len()
        );
        assert!(ok > 24, "seed {s}: too few deliveries succeeded ({ok})");
    }
}

#[tokio::test(start_paused = true)]
async fn snapshots_publish_exactly_under_faults() {
    let base = seed("snapshots_under_faults");
    for r in 0..rounds() {
        let s = base + r;
        let inner: DynStore = Arc::new(MemoryStore::new());
        let store = faulty(inner.clone(), s, 0.05, 0.10);
        let config = SnapshotConfig::default()
            .with_policy(policy(s, 20))
            .with_keep(1000);
        let mut handles = Vec::new();
        for w in 0..3u64 {
            let store = store.clone();
            let config = config.clone();
            handles.push(tokio::spawn(async move {
                let snaps = Snapshots::with_config(store, config);
                let mut published = Vec::new();
                for i in 0..8u64 {
                    let r = snaps
                        .publish("report", |ctx| async move {
                            Ok(bytes::Bytes::from(format!("v{} by {w}/{i}", ctx.version)))
                        })
                        .await;
                    match r {
                        Ok(PublishOutcome::Published(p)) => published.push((p.version(), w, i)),
                        Ok(PublishOutcome::Superseded { .. }) => {}
                        Err(SnapshotError::Ambiguous { .. })
                        | Err(SnapshotError::Store(_))
                        | Err(SnapshotError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                published
            }));
        }
        let mut published = Vec::new();
        for h in handles {
            published.extend(h.await.unwrap());
        }
        let reader = Snapshots::with_config(inner.clone(), config.clone());
        let mut versions = HashSet::new();
        for (v, w, i) in &published {
            assert!(versions.insert(*v), "seed {s}: version {v} published twice");
            let snap = reader.get("report", Some(*v)).await.unwrap();
            assert_eq!(
                snap.body,
                format!("v{v} by {w}/{i}"),
                "seed {s}: version {v} does not hold its own build"
            );
        }
        let latest = reader.latest("report").await.unwrap();
        let max = published.iter().map(|p| p.0).max().unwrap_or(0);
        assert!(
            latest.version() >= max,
            "seed {s}: latest {} < published {max}",
            latest.version()
        );
        // Every retained version parses as some build's bytes, numbered as it says.
        for info in reader.versions("report").await.unwrap() {
            let snap = reader.get("report", Some(info.version)).await.unwrap();
            let text = String::from_utf8(snap.body.to_vec()).unwrap();
            assert!(
                text.starts_with(&format!("v{} by ", info.version)),
                "seed {s}: version {} holds {text:?}",
                info.version
            );
        }
        println!(
            "snapshots: {} publishes acknowledged, latest version {}",
            published.len(),
            latest.version()
        );
        assert!(!published.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_commits_exact_under_faults() {
    use ifmatch::tenantdb::{TenantDbError, TenantDbs, TenantDbsConfig};
    let base = seed("tenantdb_under_faults");
    for r in 0..rounds() {
        let s = base + r;
        let dir = TempDir::new("tdb-faults");
        let inner: DynStore = Arc::new(MemoryStore::new());
        let store = faulty(inner.clone(), s, 0.05, 0.10);
        let (acked, maybe) = (
            Arc::new(Mutex::new(HashSet::new())),
            Arc::new(Mutex::new(HashSet::new())),
        );
        let mut handles = Vec::new();
        // Three workers, each with its own cache, as three processes would be.
        for w in 0..3u64 {
            let cfg = TenantDbsConfig::new(dir.0.join(format!("cache-{w}")))
                .with_schema(Arc::new(|tx| {
                    tx.execute_batch(
                        "CREATE TABLE ops (n INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL);",
                    )
                }))
                .with_checkpoint_every(4)
                // The default grace: a zero grace loses acknowledged commits
                // between concurrent writers (this test showed it; see
                // `TenantDbsConfig::gc_grace`).
                .with_gc_grace(Duration::from_secs(600))
                .with_retry(policy(s ^ (w + 11), 30));
            let dbs = TenantDbs::open(store.clone() as DynStore, cfg).unwrap();
            let (acked, maybe) = (acked.clone(), maybe.clone());
            handles.push(tokio::spawn(async move {
                for i in 0..15u64 {
                    let id = format!("{w}-{i}");
                    let id2 = id.clone();
                    let r = dbs
                        .write("t", move |tx| {
                            let n: i64 =
                                tx.query_row("SELECT coalesce(max(n), 0) + 1 FROM ops", [], |r| {
                                    r.get(0)
                                })?;
                            tx.execute(
                                "INSERT INTO ops (n, id) VALUES (?1, ?2)",
                                rusqlite::params![n, id2],
                            )?;
                            Ok(())
                        })
                        .await;
                    match r {
                        Ok(()) => acked.lock().unwrap().insert(id),
                        // Outcome unknown to the caller (it may or may not have landed).
                        Err(TenantDbError::Store(_)) | Err(TenantDbError::Io { .. }) => {
                            maybe.lock().unwrap().insert(id)
                        }
                        // Every attempt lost to another writer's commit: nothing landed.
                        Err(TenantDbError::Conflict { .. }) => false,
                        Err(e) => panic!("{e}"),
                    };
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        // A fresh reader, without faults, sees the committed history.
        let reader =
            TenantDbs::open(inner.clone(), TenantDbsConfig::new(dir.0.join("reader"))).unwrap();
        let rows: Vec<(i64, String)> = reader
            .read("t", |c| {
                let mut st = c.prepare("SELECT n, id FROM ops ORDER BY n")?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        let (acked, maybe) = (acked.lock().unwrap().clone(), maybe.lock().unwrap().clone());
        let ids: HashSet<&String> = rows.iter().map(|r| &r.1).collect();
        assert_eq!(
            ids.len(),
            rows.len(),
            "seed {s}: a commit was applied twice"
        );
        for (i, (n, _)) in rows.iter().enumerate() {
            assert_eq!(*n, i as i64 + 1, "seed {s}: rows are not 1..=M");
        }
        for id in &acked {
            assert!(
                ids.contains(id),
                "seed {s}: acknowledged commit {id} is lost"
            );
        }
        for id in &ids {
            assert!(
                acked.contains(*id) || maybe.contains(*id),
                "seed {s}: {id} landed but its writer was told it failed"
            );
        }
        let landed_maybe = maybe.iter().filter(|id| ids.contains(id)).count();
        println!(
            "tenantdb: {} rows = {} acknowledged + {landed_maybe} of {} unknown-outcome",
            rows.len(),
            acked.len(),
            maybe.len()
        );
        assert_eq!(rows.len(), acked.len() + landed_maybe);
    }
}
