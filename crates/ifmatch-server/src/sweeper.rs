//! The background collection of expired records in `ifmatch serve`: every
//! [`GcSchedule::interval`], one bounded [`ifmatch::gc::Collector::sweep`] of
//! at most [`GcSchedule::budget`] records over the server's sessions, leases
//! and idempotency records, so that a login (which writes a session record)
//! or a lease never leaves a record behind for ever on `file://`,
//! `memory://` or `s3://`. (DynamoDB removes them by TTL; `ifmatch serve`
//! turns the sweeper off there unless asked.)
//!
//! Besides the collector's counters (`ifmatch_gc_*_total` by prefix) it
//! reports `ifmatch_gc_sweeps_total{outcome}` and the histogram
//! `ifmatch_gc_sweep_duration_seconds`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ifmatch::gc::Collector;

/// When and how much the background sweeper collects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcSchedule {
    /// The pause between two sweeps.
    pub interval: Duration,
    /// The most records one sweep examines.
    pub budget: usize,
}

impl Default for GcSchedule {
    /// A sweep of at most 1,000 records a minute.
    fn default() -> Self {
        GcSchedule {
            interval: Duration::from_secs(60),
            budget: 1000,
        }
    }
}

/// Sweeps for ever, one bounded sweep per interval (the first after one interval).
pub async fn run(collector: Arc<Collector>, schedule: GcSchedule) {
    let mut ticker = tokio::time::interval(schedule.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let started = Instant::now();
        let outcome = match collector.sweep(schedule.budget).await {
            Ok(r) => {
                tracing::debug!(
                    examined = r.examined,
                    deleted = r.deleted,
                    renewed = r.renewed,
                    errors = r.errors,
                    "garbage collection sweep"
                );
                "ok"
            }
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection sweep failed; retried next interval");
                "error"
            }
        };
        metrics::counter!("ifmatch_gc_sweeps_total", "outcome" => outcome).increment(1);
        metrics::histogram!("ifmatch_gc_sweep_duration_seconds")
            .record(started.elapsed().as_secs_f64());
    }
}
