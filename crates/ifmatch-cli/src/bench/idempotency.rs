//! The `idempotency` scenario: seed 004's two load tests.
//!
//! - `yarn load-test:duplicates 50`: one message delivered 50 times across 4
//!   workers (all at once: duplicates arrive while the first is still being
//!   processed). The handler must run exactly once (`executed`); every other
//!   delivery gets the stored result (`duplicates`).
//! - `yarn load-test 100` with 3 containers: 100 unique messages across 3
//!   workers, each handled exactly once (`unique_executed`), and the claim
//!   throughput (`claims_per_sec`: messages claimed, run and completed per
//!   second, with a handler that does nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use ifmatch::idempotency::{Idempotency, IdempotencyError, Outcome};
use ifmatch::{DynStore, Error};
use serde::Serialize;

use super::{ms, progress, require, round2};

/// `ifmatch bench idempotency` arguments.
#[derive(Debug, Clone, Args)]
pub struct IdempotencyArgs {
    /// Deliveries of the one duplicated message.
    #[arg(long, default_value_t = 50)]
    pub deliveries: usize,
    /// Workers sharing the duplicated deliveries.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Unique messages.
    #[arg(long, default_value_t = 100)]
    pub unique: usize,
    /// Workers sharing the unique messages.
    #[arg(long, default_value_t = 3)]
    pub unique_workers: usize,
    /// How long the handler of the duplicated message works, ms (the screenshot).
    #[arg(long, default_value_t = 50)]
    pub work_ms: u64,
}

impl Default for IdempotencyArgs {
    fn default() -> Self {
        IdempotencyArgs {
            deliveries: 50,
            workers: 4,
            unique: 100,
            unique_workers: 3,
            work_ms: 50,
        }
    }
}

/// The scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct IdempotencyReport {
    /// Always `"idempotency"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// Deliveries of the duplicated message.
    pub deliveries: usize,
    /// Workers sharing them.
    pub workers: usize,
    /// Handler runs for the duplicated message (must be 1).
    pub executed: u64,
    /// Deliveries answered with the stored result instead of running the handler.
    pub duplicates: u64,
    /// Deliveries that failed (must be 0).
    pub failed: u64,
    /// Wall time of the duplicated deliveries.
    pub duplicates_wall_ms: f64,
    /// Unique messages.
    pub unique: usize,
    /// Workers sharing them.
    pub unique_workers: usize,
    /// Handler runs for the unique messages (must equal `unique`).
    pub unique_executed: u64,
    /// Unique messages that failed (must be 0).
    pub unique_failed: u64,
    /// Wall time of the unique messages.
    pub unique_wall_ms: f64,
    /// Unique messages claimed, run and completed per second.
    pub claims_per_sec: f64,
}

#[derive(Default)]
struct Tally {
    handler_runs: AtomicU64,
    executed: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
}

/// Runs the scenario under a fresh prefix of `store` and removes its keys afterwards.
pub async fn run(
    store: DynStore,
    args: &IdempotencyArgs,
    json: bool,
) -> Result<IdempotencyReport, Error> {
    require(
        args.deliveries >= 1 && args.workers >= 1 && args.unique >= 1 && args.unique_workers >= 1,
        "--deliveries, --workers, --unique and --unique-workers must be at least 1",
    )?;
    require(args.work_ms <= 60_000, "--work-ms must be at most 60000")?;
    let base = format!("ifmatch-bench/idempotency/{}/", super::run_id());
    let res = run_in(&store, args, json, &base).await;
    super::cleanup(&store, &base).await;
    res
}

async fn run_in(
    store: &DynStore,
    args: &IdempotencyArgs,
    json: bool,
    base: &str,
) -> Result<IdempotencyReport, Error> {
    let bar = progress((args.deliveries + args.unique) as u64, json, "idempotency");
    // Duplicates wait for the first delivery's result, as an SQS consumer
    // would rather ack with the result than fail and be redelivered.
    let idem = Arc::new(
        Idempotency::new(store.clone())
            .with_prefix(base.to_string())
            .with_wait(Duration::from_secs(60), Duration::from_millis(10)),
    );

    // 1. One message, many deliveries, all at once.
    let dup = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.workers {
        let (idem, dup, next, bar) = (idem.clone(), dup.clone(), next.clone(), bar.clone());
        let (deliveries, work) = (args.deliveries, Duration::from_millis(args.work_ms));
        tasks.push(tokio::spawn(async move {
            let msg = serde_json::json!({"requestId": "shot-1", "url": "https://example.com/"});
            while next.fetch_add(1, Ordering::Relaxed) < deliveries {
                let r = idem
                    .run("shot-1", &msg, || async {
                        dup.handler_runs.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(work).await;
                        Ok::<_, std::io::Error>("s3://shots/shot-1.png".to_string())
                    })
                    .await;
                tally(&dup, r);
                bar.inc(1);
            }
        }));
    }
    join(tasks).await?;
    let dup_wall = started.elapsed();

    // 2. Unique messages across workers, a handler that does nothing.
    let uniq = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.unique_workers {
        let (idem, uniq, next, bar) = (idem.clone(), uniq.clone(), next.clone(), bar.clone());
        let unique = args.unique;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= unique {
                    break;
                }
                let key = format!("msg-{i}");
                let msg = serde_json::json!({"requestId": key});
                let r = idem
                    .run(&key, &msg, || async {
                        uniq.handler_runs.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, std::io::Error>(i)
                    })
                    .await;
                tally(&uniq, r);
                bar.inc(1);
            }
        }));
    }
    join(tasks).await?;
    let unique_wall = started.elapsed();
    bar.finish_and_clear();

    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(IdempotencyReport {
        scenario: "idempotency",
        store: store.describe(),
        deliveries: args.deliveries,
        workers: args.workers,
        executed: g(&dup.handler_runs),
        duplicates: g(&dup.duplicates),
        failed: g(&dup.failed),
        duplicates_wall_ms: round2(ms(dup_wall)),
        unique: args.unique,
        unique_workers: args.unique_workers,
        unique_executed: g(&uniq.handler_runs),
        unique_failed: g(&uniq.failed),
        unique_wall_ms: round2(ms(unique_wall)),
        claims_per_sec: round2(g(&uniq.executed) as f64 / unique_wall.as_secs_f64().max(1e-9)),
    })
}

fn tally<T>(t: &Tally, r: Result<Outcome<T>, IdempotencyError<std::io::Error>>) {
    match r {
        Ok(Outcome::Executed(_)) => t.executed.fetch_add(1, Ordering::Relaxed),
        Ok(Outcome::Duplicate(_)) => t.duplicates.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            tracing::warn!(error = %e, "idempotency bench: a delivery failed");
            t.failed.fetch_add(1, Ordering::Relaxed)
        }
    };
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) -> Result<(), Error> {
    for t in tasks {
        t.await
            .map_err(|e| Error::other("a benchmark worker failed", e))?;
    }
    Ok(())
}

/// The report as a table.
pub fn render(r: &IdempotencyReport) -> String {
    format!(
        "idempotency: seed 004's load tests on {store}\n\n\
         one message x {d} deliveries across {w} workers ({wall:.1} ms):\n  \
         executed {e} (must be 1), duplicates {dup}, failed {f}\n\
         {u} unique messages across {uw} workers ({uwall:.1} ms):\n  \
         unique_executed {ue} (must be {u}), failed {uf}, claims/s {cps:.1}\n",
        store = r.store,
        d = r.deliveries,
        w = r.workers,
        wall = r.duplicates_wall_ms,
        e = r.executed,
        dup = r.duplicates,
        f = r.failed,
        u = r.unique,
        uw = r.unique_workers,
        uwall = r.unique_wall_ms,
        ue = r.unique_executed,
        uf = r.unique_failed,
        cps = r.claims_per_sec,
    )
}
