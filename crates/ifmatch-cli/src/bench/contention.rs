//! The `contention` scenario: W workers × N increments of one key.
//!
//! Three modes run one after the other on the same store:
//!
//! - `ifmatch`: the update loop ([`ifmatch::update::update_json`]) with full jitter;
//! - `naive`: seed 003's design — GET, then HEAD to check that the ETag has not
//!   changed, then an **unconditional** PUT. A detected change is retried with
//!   the same backoff; the window between HEAD and PUT loses updates;
//! - `no-jitter`: the update loop with plain capped exponential backoff, no
//!   randomness (seed 000, phase 1): contenders retry in lockstep.
//!
//! `--in-process` runs the group-commit mode instead (`super::in_process`).
//!
//! For each mode: `acknowledged` increments (the worker was told it succeeded),
//! the `final_value`, `lost_updates` (acknowledged − final), `conflicts`,
//! `attempts`, `wall_ms` and `ops_per_sec` (acknowledged / wall time). And
//! `serial_limit_ops_per_sec`: 1 / the median latency of an uncontended
//! conditional write, measured in the same run — no mode can beat it, since
//! every increment of one key is one conditional write after another.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use ifmatch::clock::SharedRng;
use ifmatch::retry::{Jitter, RetryPolicy};
use ifmatch::store::{Condition, PutOptions};
use ifmatch::update::{UpdateError, update_json};
use ifmatch::{DynStore, Error};
use serde::Serialize;

use super::{median, ms, progress, round2};

/// `ifmatch bench contention` arguments.
#[derive(Debug, Clone, Args)]
pub struct ContentionArgs {
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Increments per worker.
    #[arg(long, default_value_t = 50)]
    pub ops: usize,
    /// Run once per worker count in this list (e.g. `1,2,4,8,16`) instead of `--workers`.
    #[arg(long, value_delimiter = ',', value_name = "W,W,..")]
    pub sweep: Option<Vec<usize>>,
    /// With `--sweep`: also write an SVG chart of throughput against workers to this file.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
    /// With `--sweep`: run the whole sweep this many times (interleaved); the
    /// chart plots the median of each point, to damp a noisy machine.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Run the in-process mode instead: `--workers` tasks in this process
    /// share one group-commit `Updater` (e.g. `--workers 64 --ops 50`).
    #[arg(long, conflicts_with_all = ["sweep", "svg"])]
    pub in_process: bool,
}

impl Default for ContentionArgs {
    fn default() -> Self {
        ContentionArgs {
            workers: 8,
            ops: 50,
            sweep: None,
            svg: None,
            repeat: 1,
            in_process: false,
        }
    }
}

/// The report of `--sweep`: one contention report per worker count.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// Always `"contention-sweep"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// Increments per worker.
    pub ops: usize,
    /// How many times the sweep ran.
    pub repeat: usize,
    /// One run per worker count and repetition, in the order they ran.
    pub runs: Vec<ContentionReport>,
}

/// `ifmatch bench contention`: one run, or a sweep (and its chart); rendered.
pub async fn run_cli(
    store: DynStore,
    args: &ContentionArgs,
    seed: u64,
    json: bool,
) -> Result<String, Error> {
    if args.in_process {
        let r = super::in_process::run(store, args, seed, json).await?;
        return super::output(&r, json, super::in_process::render);
    }
    let Some(sweep) = &args.sweep else {
        if args.svg.is_some() {
            return Err(Error::InvalidInput(
                "--svg needs --sweep (the chart plots throughput against workers)".into(),
            ));
        }
        let r = run(store, args, seed, json).await?;
        return super::output(&r, json, render);
    };
    if let Some(path) = &args.svg {
        // Fail before a long sweep, not after it.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(Error::InvalidInput(format!(
                "--svg {}: the directory does not exist",
                path.display()
            )));
        }
    }
    let r = run_sweep(store, args, sweep, seed, json).await?;
    if let Some(path) = &args.svg {
        let chart = super::svg::contention_chart(&r);
        std::fs::write(path, chart).map_err(|e| {
            Error::other(format!("cannot write the chart to {}", path.display()), e)
        })?;
    }
    super::output(&r, json, render_sweep)
}

/// Runs the scenario once per worker count in `sweep`.
pub async fn run_sweep(
    store: DynStore,
    args: &ContentionArgs,
    sweep: &[usize],
    seed: u64,
    json: bool,
) -> Result<SweepReport, Error> {
    if sweep.is_empty() || sweep.contains(&0) {
        return Err(Error::InvalidInput(
            "--sweep must list worker counts of at least 1, e.g. 1,2,4,8".into(),
        ));
    }
    if args.repeat == 0 || args.workers == 0 || args.ops == 0 {
        return Err(Error::InvalidInput(
            "--repeat and --ops must be at least 1".into(),
        ));
    }
    let mut runs = Vec::with_capacity(sweep.len() * args.repeat);
    for rep in 0..args.repeat {
        for &w in sweep {
            if !json {
                eprintln!(
                    "contention sweep: {w} workers (round {} of {})",
                    rep + 1,
                    args.repeat
                );
            }
            let a = ContentionArgs {
                workers: w,
                ..args.clone()
            };
            runs.push(run(store.clone(), &a, seed.wrapping_add(rep as u64), json).await?);
        }
    }
    Ok(SweepReport {
        scenario: "contention-sweep",
        store: store.describe(),
        ops: args.ops,
        repeat: args.repeat,
        runs,
    })
}

/// A sweep as one table: throughput and losses per worker count and mode.
pub fn render_sweep(r: &SweepReport) -> String {
    let mut out = format!(
        "contention sweep: N={} increments per worker on {}\n\n",
        r.ops, r.store
    );
    out.push_str(&format!(
        "{:>7} {:>11} {:>11} {:>11} {:>10} {:>10} {:>12}\n",
        "workers", "ifmatch/s", "naive/s", "no-jitter/s", "naive lost", "ifm. lost", "serial lim/s"
    ));
    for run in &r.runs {
        let m = |name: &str| run.modes.get(name);
        let ops = |name: &str| m(name).map(|x| x.ops_per_sec).unwrap_or(0.0);
        let lost = |name: &str| m(name).map(|x| x.lost_updates).unwrap_or(0);
        out.push_str(&format!(
            "{:>7} {:>11.1} {:>11.1} {:>11.1} {:>10} {:>10} {:>12.1}\n",
            run.workers,
            ops("ifmatch"),
            ops("naive"),
            ops("no-jitter"),
            lost("naive"),
            lost("ifmatch"),
            run.serial_limit_ops_per_sec
        ));
    }
    out
}

/// One mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    /// Increments the workers were told succeeded.
    pub acknowledged: u64,
    /// The counter's value at the end.
    pub final_value: u64,
    /// `acknowledged - final_value`: updates acknowledged but lost.
    pub lost_updates: u64,
    /// Attempts that found the key changed.
    pub conflicts: u64,
    /// Attempts in all.
    pub attempts: u64,
    /// Wall-clock time of the mode.
    pub wall_ms: f64,
    /// Acknowledged increments per second.
    pub ops_per_sec: f64,
    /// Increments given up (retry budget spent or an error).
    pub failed: u64,
}

/// The scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct ContentionReport {
    /// Always `"contention"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// Workers.
    pub workers: usize,
    /// Increments per worker.
    pub ops: usize,
    /// 1 / the median uncontended conditional write.
    pub serial_limit_ops_per_sec: f64,
    /// `ifmatch`, `naive` and `no-jitter`.
    pub modes: BTreeMap<String, ModeResult>,
}

/// The three modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ifmatch,
    Naive,
    NoJitter,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ifmatch => "ifmatch",
            Mode::Naive => "naive",
            Mode::NoJitter => "no-jitter",
        }
    }
}

#[derive(Default)]
struct Counters {
    acknowledged: AtomicU64,
    conflicts: AtomicU64,
    attempts: AtomicU64,
    failed: AtomicU64,
}

/// The retry policy of the benchmark's update loops.
pub(super) fn policy(jitter: Jitter, seed: u64) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(1000)
        .with_delays(Duration::from_millis(2), Duration::from_millis(250))
        .with_deadline(Some(Duration::from_secs(120)))
        .with_jitter(jitter)
        .with_rng(SharedRng::seeded(seed))
}

/// Runs the scenario under a fresh prefix of `store` and removes its keys afterwards.
pub async fn run(
    store: DynStore,
    args: &ContentionArgs,
    seed: u64,
    json: bool,
) -> Result<ContentionReport, Error> {
    if args.workers == 0 || args.ops == 0 {
        return Err(Error::InvalidInput(
            "--workers and --ops must be at least 1".into(),
        ));
    }
    let run_id = super::run_id();
    let base = format!("ifmatch-bench/contention/{run_id}");
    let serial = serial_limit(&store, &format!("{base}/serial")).await?;
    let total = (args.workers * args.ops * 3) as u64;
    let bar = progress(total, json, "contention");
    let mut modes = BTreeMap::new();
    for mode in [Mode::Ifmatch, Mode::Naive, Mode::NoJitter] {
        let key = format!("{base}/{}", mode.name());
        let r = run_mode(&store, &key, mode, args, seed, &bar).await?;
        modes.insert(mode.name().to_string(), r);
    }
    bar.finish_and_clear();
    for k in ["serial", "ifmatch", "naive", "no-jitter"] {
        let _ = store.delete(&format!("{base}/{k}"), Condition::Any).await;
    }
    Ok(ContentionReport {
        scenario: "contention",
        store: store.describe(),
        workers: args.workers,
        ops: args.ops,
        serial_limit_ops_per_sec: round2(if serial.is_zero() {
            0.0
        } else {
            1.0 / serial.as_secs_f64()
        }),
        modes,
    })
}

/// The median latency of 30 uncontended conditional writes.
pub(super) async fn serial_limit(store: &DynStore, key: &str) -> Result<Duration, Error> {
    let mut v = store.put(key, "0".into(), PutOptions::any()).await?;
    let mut samples = Vec::with_capacity(30);
    for i in 1..=30u32 {
        let started = Instant::now();
        v = store
            .put(key, i.to_string().into(), PutOptions::if_matches(v))
            .await?;
        samples.push(started.elapsed());
    }
    Ok(median(samples))
}

async fn run_mode(
    store: &DynStore,
    key: &str,
    mode: Mode,
    args: &ContentionArgs,
    seed: u64,
    bar: &indicatif::ProgressBar,
) -> Result<ModeResult, Error> {
    store.put(key, "0".into(), PutOptions::any()).await?;
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.workers {
        let store = store.clone();
        let key = key.to_string();
        let counters = counters.clone();
        let bar = bar.clone();
        let ops = args.ops;
        let worker_seed = seed.wrapping_mul(1_000_003).wrapping_add(w as u64);
        tasks.push(tokio::spawn(async move {
            for _ in 0..ops {
                let ok = match mode {
                    Mode::Ifmatch => {
                        loop_increment(&store, &key, &policy(Jitter::Full, worker_seed), &counters)
                            .await
                    }
                    Mode::NoJitter => {
                        loop_increment(&store, &key, &policy(Jitter::None, worker_seed), &counters)
                            .await
                    }
                    Mode::Naive => {
                        naive_increment(&store, &key, &policy(Jitter::Full, worker_seed), &counters)
                            .await
                    }
                };
                if ok {
                    counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Error::other("a benchmark worker failed", e))?;
    }
    let wall = started.elapsed();
    let final_value: u64 = {
        let o = store.get(key).await?;
        std::str::from_utf8(&o.body)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::msg(format!("the counter at '{key}' is not a number")))?
    };
    let acknowledged = counters.acknowledged.load(Ordering::Relaxed);
    Ok(ModeResult {
        acknowledged,
        final_value,
        lost_updates: acknowledged.saturating_sub(final_value),
        conflicts: counters.conflicts.load(Ordering::Relaxed),
        attempts: counters.attempts.load(Ordering::Relaxed),
        wall_ms: round2(ms(wall)),
        ops_per_sec: round2(acknowledged as f64 / wall.as_secs_f64().max(1e-9)),
        failed: counters.failed.load(Ordering::Relaxed),
    })
}

/// One increment through the update loop; true if acknowledged.
async fn loop_increment(
    store: &DynStore,
    key: &str,
    policy: &RetryPolicy,
    counters: &Counters,
) -> bool {
    let r = update_json(&**store, key, policy, |n: Option<u64>| {
        Ok(Some(n.unwrap_or(0) + 1))
    })
    .await;
    match r {
        Ok(u) => {
            counters
                .attempts
                .fetch_add(u.updated.attempts as u64, Ordering::Relaxed);
            counters
                .conflicts
                .fetch_add(u.updated.conflicts as u64, Ordering::Relaxed);
            true
        }
        Err(UpdateError::Conflict {
            attempts,
            conflicts,
            ..
        }) => {
            counters
                .attempts
                .fetch_add(attempts as u64, Ordering::Relaxed);
            counters
                .conflicts
                .fetch_add(conflicts as u64, Ordering::Relaxed);
            false
        }
        Err(_) => false,
    }
}

/// Seed 003's design: GET, HEAD to compare the version, then an unconditional PUT.
async fn naive_increment(
    store: &DynStore,
    key: &str,
    policy: &RetryPolicy,
    counters: &Counters,
) -> bool {
    let mut attempts = policy.start();
    loop {
        attempts.begin();
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        let Ok(obj) = store.get(key).await else {
            return false;
        };
        let n: u64 = std::str::from_utf8(&obj.body)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let still_same = match store.head(key).await {
            Ok(meta) => meta.version == obj.meta.version,
            Err(_) => false,
        };
        if still_same {
            // The race window: another writer may land between the HEAD and this PUT.
            return store
                .put(key, (n + 1).to_string().into(), PutOptions::any())
                .await
                .is_ok();
        }
        counters.conflicts.fetch_add(1, Ordering::Relaxed);
        if !attempts.backoff().await {
            return false;
        }
    }
}

/// The report as a table.
pub fn render(r: &ContentionReport) -> String {
    let mut out = format!(
        "contention: {} workers x {} increments of one key on {}\n\n",
        r.workers, r.ops, r.store
    );
    out.push_str(&format!(
        "{:<10} {:>6} {:>6} {:>5} {:>9} {:>8} {:>9} {:>9} {:>6}\n",
        "mode", "acked", "final", "lost", "conflicts", "attempts", "wall_ms", "ops/s", "failed"
    ));
    for (name, m) in &r.modes {
        out.push_str(&format!(
            "{:<10} {:>6} {:>6} {:>5} {:>9} {:>8} {:>9.1} {:>9.1} {:>6}\n",
            name,
            m.acknowledged,
            m.final_value,
            m.lost_updates,
            m.conflicts,
            m.attempts,
            m.wall_ms,
            m.ops_per_sec,
            m.failed
        ));
    }
    out.push_str(&format!(
        "\nserial limit (1 / median uncontended conditional write): {:.1} ops/s\n",
        r.serial_limit_ops_per_sec
    ));
    out
}
