//! `ifmatch bench`: measure ifmatch side by side with the seeds' own designs,
//! on any store, in one run.
//!
//! Each scenario runs our implementation **and** the seed's design against the
//! same store in the same process, so the figures that matter are ratios that
//! survive a noisy, shared machine. `--json` prints exactly one JSON object on
//! standard output; a progress bar goes to standard error.

pub mod all;
pub mod contention;
pub mod idempotency;
pub mod in_process;
pub mod lease;
pub mod snapshot;
pub mod store_ops;
pub mod svg;
pub mod tenantdb;

use std::time::Duration;

use clap::{Args, Subcommand};
use ifmatch::clock::SharedRng;
use ifmatch::{DynStore, Error};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// `ifmatch bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print exactly one JSON object on standard output instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seed of the random generators (jitter), for repeatable schedules.
    #[arg(long, global = true, default_value_t = 1)]
    pub seed: u64,
    /// The scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The benchmark scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// W workers x N increments of one key: the update loop against the seed's
    /// HEAD-then-PUT (seed 003) and plain exponential backoff (seed 000).
    Contention(contention::ContentionArgs),
    /// Seed 003's tests 2.3/3.1/3.2 on a 10-note database: tenant databases
    /// against the seed's download-when-changed, always-upload design.
    Tenantdb(tenantdb::TenantDbArgs),
    /// Seed 004: one message delivered many times, and unique messages, across workers.
    Idempotency(idempotency::IdempotencyArgs),
    /// C contenders take a lease in turn; every holder stops renewing.
    Lease(lease::LeaseArgs),
    /// P publishers rebuild one snapshot while R readers poll it; against
    /// seed 001's unguarded read-version-then-put.
    Snapshot(snapshot::SnapshotArgs),
    /// Every scenario with small defaults (under a minute on file://).
    All(all::AllArgs),
    /// The raw store's PUT, GET and HEAD throughput on distinct keys (no
    /// HTTP): the figures `scripts/bench-server` sets beside the server's.
    Store(store_ops::StoreArgs),
}

/// Runs the chosen scenario and renders its report (a table, or one JSON line).
pub async fn run(store: DynStore, args: &BenchArgs) -> Result<String, Error> {
    let (json, seed) = (args.json, args.seed);
    match &args.scenario {
        Scenario::Contention(c) => contention::run_cli(store, c, seed, json).await,
        Scenario::Tenantdb(a) => tenantdb::run_cli(store, a, json).await,
        Scenario::Idempotency(a) => {
            let r = idempotency::run(store, a, json).await?;
            output(&r, json, idempotency::render)
        }
        Scenario::Lease(a) => {
            let r = lease::run(store, a, seed, json).await?;
            output(&r, json, lease::render)
        }
        Scenario::Snapshot(a) => {
            let r = snapshot::run(store, a, seed, json).await?;
            output(&r, json, snapshot::render)
        }
        Scenario::All(a) => {
            let r = all::run(store, a, seed, json).await?;
            output(&r, json, all::render)
        }
        Scenario::Store(a) => {
            let r = store_ops::run(store, a, json).await?;
            output(&r, json, store_ops::render)
        }
    }
}

/// The report as one JSON line, or as the table `render` makes of it.
pub(crate) fn output<T: Serialize>(
    r: &T,
    json: bool,
    render: impl Fn(&T) -> String,
) -> Result<String, Error> {
    if json { to_json_line(r) } else { Ok(render(r)) }
}

/// One JSON object and a newline.
pub(crate) fn to_json_line<T: Serialize>(r: &T) -> Result<String, Error> {
    let mut s = serde_json::to_string(r)
        .map_err(|e| Error::msg(format!("cannot render the report: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// A fresh, random run id, so runs never share keys.
pub(crate) fn run_id() -> String {
    format!("{:016x}", SharedRng::from_entropy().next_u64())
}

/// Deletes every key under `prefix` (best effort: a benchmark's leftovers).
pub(crate) async fn cleanup(store: &DynStore, prefix: &str) {
    if let Ok(entries) = ifmatch::store::list_all(&**store, prefix).await {
        for e in entries {
            let _ = store.delete(&e.key, ifmatch::store::Condition::Any).await;
        }
    }
}

/// A usage error unless `ok`.
pub(crate) fn require(ok: bool, message: &str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(message.to_string()))
    }
}

/// A progress bar on standard error (hidden when it is not a terminal or with `--json`).
pub(crate) fn progress(total: u64, json: bool, what: &str) -> ProgressBar {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// The median of some durations (zero for none).
pub(crate) fn median(mut xs: Vec<Duration>) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    xs.sort_unstable();
    xs[xs.len() / 2]
}

/// Milliseconds as a float with microsecond precision.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Rounds to two decimals for readable JSON.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `a / b`, rounded to two decimals, or 0 when `b` is 0.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { round2(a / b) }
}
