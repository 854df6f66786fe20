//! The `snapshot` scenario: P publishers rebuild one snapshot at the same
//! moments while R reader processes poll it; then seed 001's unguarded design
//! on the same store.
//!
//! - **ours** ([`ifmatch::snapshot::Snapshots`]): each publisher (its own
//!   instance, like separate Lambda functions) publishes `--publishes` times;
//!   before each, all publishers meet at a barrier, so every publish races.
//!   A publish either lands as version n+1 (`published`) or stops because a
//!   build at least as fresh landed (`superseded`). `versions_gap_free`: the
//!   landed versions are exactly 1..=n and the head is n; `lost_publishes`:
//!   landed publishes minus the head's version (must be 0). Meanwhile each of
//!   R readers (one [`ifmatch::snapshot::SnapshotReader`] with several
//!   callers) polls the latest version; `reader_downloads` counts the bodies
//!   they fetched (at most one per version per reader, whatever the callers).
//! - **seed 001's design** (`QuotesCacheBuilder` before the fix): HEAD the
//!   cache to read its `version` metadata, build, then an **unconditional**
//!   PUT of version+1. Publishers that read the same version all "publish"
//!   the same next version: `naive_lost_publishes` = acknowledged publishes
//!   minus the final version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use ifmatch::clock::SharedRng;
use ifmatch::retry::RetryPolicy;
use ifmatch::snapshot::{PublishOutcome, SnapshotConfig, SnapshotError, Snapshots};
use ifmatch::store::{Metadata, PutOptions};
use ifmatch::{DynStore, Error};
use serde::Serialize;
use tokio::sync::Barrier;

use super::{ms, progress, require, round2};

/// `ifmatch bench snapshot` arguments.
#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// Concurrent publishers.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Reader processes (each with several concurrent callers).
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// Publish rounds per publisher (all publishers start each round together).
    #[arg(long, default_value_t = 5)]
    pub publishes: usize,
    /// How long a build takes, ms.
    #[arg(long, default_value_t = 20)]
    pub build_ms: u64,
    /// How often a reader checks for a newer version, ms.
    #[arg(long, default_value_t = 5)]
    pub check_ms: u64,
}

impl Default for SnapshotArgs {
    fn default() -> Self {
        SnapshotArgs {
            publishers: 4,
            readers: 4,
            publishes: 5,
            build_ms: 20,
            check_ms: 5,
        }
    }
}

/// The scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    /// Always `"snapshot"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// Publishers.
    pub publishers: usize,
    /// Reader processes.
    pub readers: usize,
    /// Publish calls in all (publishers x rounds).
    pub publish_calls: u64,
    /// Publishes that landed as a new version.
    pub published: u64,
    /// Publishes that stopped because a build at least as fresh landed.
    pub superseded: u64,
    /// Publishes that failed (retry budget spent or an error).
    pub failed: u64,
    /// The head's version at the end.
    pub final_version: u64,
    /// The landed versions are exactly 1..=published and the head is the last.
    pub versions_gap_free: bool,
    /// Landed publishes minus the head's version (must be 0).
    pub lost_publishes: u64,
    /// Builds run (several per publish when it lost a race and rebuilt).
    pub builds: u64,
    /// Head writes that lost a race.
    pub conflicts: u64,
    /// Wall time of the publishes, ms.
    pub wall_ms: f64,
    /// Calls served to the readers' callers.
    pub reader_calls: u64,
    /// Freshness checks the readers sent.
    pub reader_checks: u64,
    /// Bodies the readers downloaded.
    pub reader_downloads: u64,
    /// Times a reader served an older version after a newer one (must be 0).
    pub reader_regressions: u64,
    /// Every reader serves the final version after a refresh.
    pub readers_current: bool,
    /// Seed 001's design: publishes acknowledged (every unconditional PUT succeeds).
    pub naive_acknowledged: u64,
    /// Seed 001's design: the version at the end.
    pub naive_final_version: u64,
    /// Seed 001's design: acknowledged publishes minus the final version.
    pub naive_lost_publishes: u64,
    /// Seed 001's design: wall time, ms.
    pub naive_wall_ms: f64,
}

const NAME: &str = "quotes";
const CALLERS: usize = 4;

/// Runs the scenario under a fresh prefix of `store` and removes its keys afterwards.
pub async fn run(
    store: DynStore,
    args: &SnapshotArgs,
    seed: u64,
    json: bool,
) -> Result<SnapshotReport, Error> {
    require(
        args.publishers >= 1 && args.publishes >= 1,
        "--publishers and --publishes must be at least 1",
    )?;
    require(args.build_ms <= 60_000, "--build-ms must be at most 60000")?;
    let base = format!("ifmatch-bench/snapshot/{}", super::run_id());
    let res = run_in(&store, args, seed, json, &base).await;
    super::cleanup(&store, &format!("{base}/")).await;
    res
}

fn snap_err(e: SnapshotError) -> Error {
    Error::other("snapshot", e)
}

fn config(base: &str, seed: u64, check: Duration) -> SnapshotConfig {
    SnapshotConfig::default()
        .with_prefix(format!("{base}/ours"))
        .with_keep(3)
        .with_policy(
            RetryPolicy::default()
                .with_max_attempts(50)
                .with_delays(Duration::from_millis(5), Duration::from_millis(200))
                .with_deadline(Some(Duration::from_secs(120))),
        )
        .with_rng(SharedRng::seeded(seed))
        .with_check_interval(check)
}

#[derive(Default)]
struct ReaderTally {
    calls: AtomicU64,
    regressions: AtomicU64,
}

async fn run_in(
    store: &DynStore,
    args: &SnapshotArgs,
    seed: u64,
    json: bool,
    base: &str,
) -> Result<SnapshotReport, Error> {
    let p = args.publishers;
    let calls = (p * args.publishes) as u64;
    let bar = progress(2 * calls, json, "snapshot");
    let build = Duration::from_millis(args.build_ms);
    let check = Duration::from_millis(args.check_ms);

    // Readers: R processes, each one reader shared by CALLERS callers.
    let done = Arc::new(AtomicBool::new(false));
    // Readers start polling once a first version exists (before that there is
    // nothing to serve, and every check would only log that).
    let live = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(ReaderTally::default());
    let mut readers = Vec::new();
    let mut reader_tasks = Vec::new();
    for r in 0..args.readers {
        let snaps = Snapshots::with_config(store.clone(), config(base, seed + r as u64, check));
        let reader = Arc::new(snaps.reader(NAME).map_err(snap_err)?);
        readers.push(reader.clone());
        for _ in 0..CALLERS {
            let (reader, done, tally) = (reader.clone(), done.clone(), tally.clone());
            let live = live.clone();
            reader_tasks.push(tokio::spawn(async move {
                let mut seen = 0u64;
                while !done.load(Ordering::Relaxed) {
                    if !live.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    if let Ok(s) = reader.latest().await {
                        tally.calls.fetch_add(1, Ordering::Relaxed);
                        if s.version < seen {
                            tally.regressions.fetch_add(1, Ordering::Relaxed);
                        }
                        seen = seen.max(s.version);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
    }

    // Ours: P publishers, each its own Snapshots, racing every round.
    let barrier = Arc::new(Barrier::new(p));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..p {
        let snaps = Snapshots::with_config(
            store.clone(),
            config(
                base,
                seed.wrapping_mul(31).wrapping_add(100 + i as u64),
                check,
            ),
        );
        let (barrier, bar, rounds) = (barrier.clone(), bar.clone(), args.publishes);
        let live = live.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..rounds {
                barrier.wait().await;
                let r = snaps
                    .publish(NAME, |ctx| async move {
                        tokio::time::sleep(build).await;
                        let body = serde_json::json!({
                            "version": ctx.version,
                            "publisher": i,
                            "quotes": vec!["lorem ipsum dolor sit amet"; 32],
                        });
                        Ok(Bytes::from(body.to_string()))
                    })
                    .await;
                if matches!(r, Ok(PublishOutcome::Published(_))) {
                    live.store(true, Ordering::Relaxed);
                }
                outcomes.push(r);
                bar.inc(1);
            }
            let m = snaps.metrics().to_map();
            (outcomes, m["builds"], m["conflicts"])
        }));
    }
    let mut versions = Vec::new();
    let (mut superseded, mut failed, mut builds, mut conflicts) = (0u64, 0u64, 0u64, 0u64);
    for t in tasks {
        let (outcomes, b, c) = t
            .await
            .map_err(|e| Error::other("a benchmark worker failed", e))?;
        builds += b;
        conflicts += c;
        for o in outcomes {
            match o {
                Ok(PublishOutcome::Published(pb)) => versions.push(pb.version()),
                Ok(PublishOutcome::Superseded { .. }) => superseded += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot bench: a publish failed");
                    failed += 1;
                }
            }
        }
    }
    let wall = started.elapsed();
    done.store(true, Ordering::Relaxed);
    for t in reader_tasks {
        t.await
            .map_err(|e| Error::other("a benchmark reader failed", e))?;
    }
    let head = Snapshots::with_config(store.clone(), config(base, seed, check))
        .latest(NAME)
        .await
        .map(|s| s.version())
        .unwrap_or(0);
    let mut readers_current = true;
    let (mut reader_checks, mut reader_downloads) = (0u64, 0u64);
    for r in &readers {
        let v = r.refresh().await.map(|s| s.version).unwrap_or(0);
        readers_current &= v == head;
        let m = r.metrics().to_map();
        reader_checks += m["checks"];
        reader_downloads += m["downloads"];
    }
    let published = versions.len() as u64;
    versions.sort_unstable();
    let gap_free = head == published && versions.iter().copied().eq(1..=published);

    // Seed 001's unguarded design, same publishers, same rounds, same builds.
    let naive_key = format!("{base}/naive/quotes-cache.json");
    let naive_started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..p {
        let (store, key, barrier, bar, acked) = (
            store.clone(),
            naive_key.clone(),
            barrier.clone(),
            bar.clone(),
            acked.clone(),
        );
        let rounds = args.publishes;
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                barrier.wait().await;
                if naive_publish(&store, &key, i, build).await.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Error::other("a benchmark worker failed", e))?;
    }
    let naive_wall = naive_started.elapsed();
    let naive_final = naive_version(store, &naive_key).await.unwrap_or(0);
    let naive_acknowledged = acked.load(Ordering::Relaxed);
    bar.finish_and_clear();

    Ok(SnapshotReport {
        scenario: "snapshot",
        store: store.describe(),
        publishers: p,
        readers: args.readers,
        publish_calls: calls,
        published,
        superseded,
        failed,
        final_version: head,
        versions_gap_free: gap_free,
        lost_publishes: published.saturating_sub(head),
        builds,
        conflicts,
        wall_ms: round2(ms(wall)),
        reader_calls: tally.calls.load(Ordering::Relaxed),
        reader_checks,
        reader_downloads,
        reader_regressions: tally.regressions.load(Ordering::Relaxed),
        readers_current,
        naive_acknowledged,
        naive_final_version: naive_final,
        naive_lost_publishes: naive_acknowledged.saturating_sub(naive_final),
        naive_wall_ms: round2(ms(naive_wall)),
    })
}

/// The `version` metadata of the seed's cache object (0 if absent).
async fn naive_version(store: &DynStore, key: &str) -> Result<u64, Error> {
    match store.head(key).await {
        Ok(meta) => Ok(meta
            .metadata
            .get("version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)),
        Err(Error::NotFound { .. }) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Seed 001's `getNextVersion()` + build + `uploadToS3()`: no condition on the write.
async fn naive_publish(
    store: &DynStore,
    key: &str,
    publisher: usize,
    build: Duration,
) -> Result<(), Error> {
    let next = naive_version(store, key).await? + 1;
    tokio::time::sleep(build).await;
    let body = serde_json::json!({
        "version": next,
        "publisher": publisher,
        "quotes": vec!["lorem ipsum dolor sit amet"; 32],
    });
    let mut meta = Metadata::new();
    meta.insert("version".into(), next.to_string());
    store
        .put(
            key,
            Bytes::from(body.to_string()),
            PutOptions::any().with_metadata(meta),
        )
        .await?;
    Ok(())
}

/// The report as a table.
pub fn render(r: &SnapshotReport) -> String {
    format!(
        "snapshot: {p} publishers x {rounds} racing rounds, {rd} readers, on {store}\n\n\
         {h:<22} {a:>10} {b:>12}\n\
         {l1:<22} {pub_:>10} {npub:>12}\n\
         {l2:<22} {fv:>10} {nfv:>12}\n\
         {l3:<22} {lost:>10} {nlost:>12}\n\
         {l4:<22} {wall:>10.1} {nwall:>12.1}\n\n\
         superseded {sup}, failed {failed}, builds {builds}, conflicts {conf}, versions gap-free: {gap}\n\
         readers: {calls} calls, {checks} checks, {dl} downloads, {reg} regressions, all current at the end: {cur}\n",
        p = r.publishers,
        rounds = if r.publishers == 0 {
            0
        } else {
            r.publish_calls / r.publishers as u64
        },
        rd = r.readers,
        store = r.store,
        h = "",
        a = "ifmatch",
        b = "seed 001",
        l1 = "publishes landed",
        pub_ = r.published,
        npub = r.naive_acknowledged,
        l2 = "final version",
        fv = r.final_version,
        nfv = r.naive_final_version,
        l3 = "lost publishes",
        lost = r.lost_publishes,
        nlost = r.naive_lost_publishes,
        l4 = "wall, ms",
        wall = r.wall_ms,
        nwall = r.naive_wall_ms,
        sup = r.superseded,
        failed = r.failed,
        builds = r.builds,
        conf = r.conflicts,
        gap = r.versions_gap_free,
        calls = r.reader_calls,
        checks = r.reader_checks,
        dl = r.reader_downloads,
        reg = r.reader_regressions,
        cur = r.readers_current,
    )
}
