//! `ifmatch bench contention --in-process`: group commit on one hot key.
//!
//! T tasks in this process × N increments of one key through one
//! [`Updater`] (issue 14's target: 64 × 50), so that updates queued behind
//! a write in flight land together in the next conditional write. Reports
//! `acknowledged`, `final_value`, `lost_updates` (acknowledged − final),
//! `failed`, `ops_per_sec`, the store requests it took (`gets`, `puts`,
//! `requests_per_increment`, `mean_batch` = acknowledged / puts), and beside
//! them `serial_limit_ops_per_sec` (1 / the median uncontended conditional
//! write, measured in the same run on the same store: no writer landing one
//! change per write can pass it) and `vs_serial_limit`, the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use ifmatch::retry::Jitter;
use ifmatch::store::intercept::{self, Call, Op};
use ifmatch::store::{Condition, PutOptions, Store};
use ifmatch::update::Updater;
use ifmatch::{DynStore, Error};
use serde::Serialize;

use super::contention::{ContentionArgs, policy, serial_limit};
use super::{ms, progress, round2};

/// The in-process report.
#[derive(Debug, Clone, Serialize)]
pub struct InProcessReport {
    /// Always `"contention-in-process"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// Concurrent tasks sharing one `Updater`.
    pub tasks: usize,
    /// Increments per task.
    pub ops: usize,
    /// Increments the tasks were told succeeded.
    pub acknowledged: u64,
    /// The counter's value at the end.
    pub final_value: u64,
    /// `acknowledged - final_value`: acknowledged but lost.
    pub lost_updates: u64,
    /// Increments that failed.
    pub failed: u64,
    /// Wall-clock time.
    pub wall_ms: f64,
    /// Acknowledged increments per second.
    pub ops_per_sec: f64,
    /// Store reads during the run.
    pub gets: u64,
    /// Store writes (conditional puts) during the run.
    pub puts: u64,
    /// All store requests per acknowledged increment.
    pub requests_per_increment: f64,
    /// Increments per write, on average.
    pub mean_batch: f64,
    /// 1 / the median uncontended conditional write.
    pub serial_limit_ops_per_sec: f64,
    /// `ops_per_sec / serial_limit_ops_per_sec`.
    pub vs_serial_limit: f64,
}

/// Counts the requests that reach the store.
#[derive(Debug)]
struct Counted {
    inner: DynStore,
    gets: AtomicU64,
    puts: AtomicU64,
    other: AtomicU64,
}

#[async_trait]
impl intercept::Intercept for Counted {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn around<R: Send, F>(&self, call: Call<'_>, run: F) -> ifmatch::Result<R>
    where
        F: std::future::Future<Output = ifmatch::Result<R>> + Send,
    {
        let n = match call.op {
            Op::Get => &self.gets,
            Op::Put => &self.puts,
            _ => &self.other,
        };
        n.fetch_add(1, Ordering::Relaxed);
        run.await
    }
}

/// Runs the in-process mode under a fresh prefix of `store` and removes its keys afterwards.
pub async fn run(
    store: DynStore,
    args: &ContentionArgs,
    seed: u64,
    json: bool,
) -> Result<InProcessReport, Error> {
    super::require(
        args.workers >= 1 && args.ops >= 1,
        "--workers and --ops must be at least 1",
    )?;
    let base = format!("ifmatch-bench/contention-in-process/{}", super::run_id());
    let (serial_key, key) = (format!("{base}/serial"), format!("{base}/counter"));
    let serial = serial_limit(&store, &serial_key).await?;
    store.put(&key, "0".into(), PutOptions::any()).await?;
    let counted = Arc::new(Counted {
        inner: store.clone(),
        gets: AtomicU64::new(0),
        puts: AtomicU64::new(0),
        other: AtomicU64::new(0),
    });
    let updater = Updater::new(counted.clone(), policy(Jitter::Full, seed));
    let bar = progress((args.workers * args.ops) as u64, json, "in-process");
    let (acked, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.workers);
    for _ in 0..args.workers {
        let (updater, key, bar) = (updater.clone(), key.clone(), bar.clone());
        let (acked, failed, ops) = (acked.clone(), failed.clone(), args.ops);
        tasks.push(tokio::spawn(async move {
            for _ in 0..ops {
                let r = updater
                    .update_json(&key, |n: Option<u64>| Ok(Some(n.unwrap_or(0) + 1)))
                    .await;
                let n = if r.is_ok() { &acked } else { &failed };
                n.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Error::other("a benchmark task failed", e))?;
    }
    let wall = started.elapsed();
    bar.finish_and_clear();
    let (gets, puts) = (
        counted.gets.load(Ordering::Relaxed),
        counted.puts.load(Ordering::Relaxed),
    );
    let requests = gets + puts + counted.other.load(Ordering::Relaxed);
    let o = store.get(&key).await?;
    let final_value: u64 = serde_json::from_slice(&o.body)
        .map_err(|e| Error::msg(format!("the counter at '{key}' is not a number: {e}")))?;
    for k in [&serial_key, &key] {
        let _ = store.delete(k, Condition::Any).await;
    }
    let acknowledged = acked.load(Ordering::Relaxed);
    let ops_per_sec = acknowledged as f64 / wall.as_secs_f64().max(1e-9);
    let serial_ops = if serial.is_zero() {
        0.0
    } else {
        1.0 / serial.as_secs_f64()
    };
    Ok(InProcessReport {
        scenario: "contention-in-process",
        store: store.describe(),
        tasks: args.workers,
        ops: args.ops,
        acknowledged,
        final_value,
        lost_updates: acknowledged.saturating_sub(final_value),
        failed: failed.load(Ordering::Relaxed),
        wall_ms: round2(ms(wall)),
        ops_per_sec: round2(ops_per_sec),
        gets,
        puts,
        requests_per_increment: round2(requests as f64 / acknowledged.max(1) as f64),
        mean_batch: round2(acknowledged as f64 / puts.max(1) as f64),
        serial_limit_ops_per_sec: round2(serial_ops),
        vs_serial_limit: round2(if serial_ops > 0.0 {
            ops_per_sec / serial_ops
        } else {
            0.0
        }),
    })
}

/// The report as a table.
pub fn render(r: &InProcessReport) -> String {
    format!(
        "contention, in process (group commit): {} tasks x {} increments of one key on {}\n\n\
         acked {}  final {}  lost {}  failed {}\n\
         wall {:.1} ms  {:.1} ops/s\n\
         store requests: {} gets, {} puts ({:.2} per increment, {:.1} increments per write)\n\
         serial limit (1 / median uncontended conditional write): {:.1} ops/s\n\
         group commit vs serial limit: {:.2}x\n",
        r.tasks,
        r.ops,
        r.store,
        r.acknowledged,
        r.final_value,
        r.lost_updates,
        r.failed,
        r.wall_ms,
        r.ops_per_sec,
        r.gets,
        r.puts,
        r.requests_per_increment,
        r.mean_batch,
        r.serial_limit_ops_per_sec,
        r.vs_serial_limit
    )
}
