//! The `lease` scenario: C contenders take one lease in turn, R times.
//!
//! Every contender loops: acquire the lease (waiting for it), check that
//! nobody else is inside the critical section, hold it briefly, then **stop
//! renewing** — walk away without releasing, as a crashed or paused worker
//! would — so the next holder must wait for the lease to expire. Figures:
//! `acquisitions`, `overlaps` (two holders inside at once: must be 0),
//! `tokens_monotonic` (each holder's fencing token is greater than every
//! earlier one), and `handover_ms` (median time from a holder stopping to the
//! next holder's acquisition: the TTL left, plus the skew allowance and the
//! waiters' jitter).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use ifmatch::clock::SharedRng;
use ifmatch::lease::{LeaseError, Leases};
use ifmatch::{DynStore, Error};
use serde::Serialize;

use super::{median, ms, progress, require, round2};

/// `ifmatch bench lease` arguments.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Workers competing for the lease.
    #[arg(long, default_value_t = 4)]
    pub contenders: usize,
    /// Acquisitions in all (each holder then stops renewing).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// The lease's TTL, ms.
    #[arg(long, default_value_t = 250)]
    pub ttl_ms: u64,
    /// How long each holder works before it stops renewing, ms (less than the TTL).
    #[arg(long, default_value_t = 10)]
    pub hold_ms: u64,
    /// The clock-skew allowance, ms (one machine: small).
    #[arg(long, default_value_t = 20)]
    pub skew_ms: u64,
}

impl Default for LeaseArgs {
    fn default() -> Self {
        LeaseArgs {
            contenders: 4,
            rounds: 10,
            ttl_ms: 250,
            hold_ms: 10,
            skew_ms: 20,
        }
    }
}

/// The scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseReport {
    /// Always `"lease"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// Contenders.
    pub contenders: usize,
    /// Acquisitions asked for.
    pub rounds: usize,
    /// The TTL, ms.
    pub ttl_ms: u64,
    /// The skew allowance, ms.
    pub skew_ms: u64,
    /// Acquisitions made.
    pub acquisitions: u64,
    /// Times a holder entered while another was inside (must be 0).
    pub overlaps: u64,
    /// Whether every fencing token was greater than all earlier ones.
    pub tokens_monotonic: bool,
    /// Median time from a holder stopping to the next acquisition, ms.
    pub handover_ms: f64,
    /// The fastest handover, ms.
    pub handover_min_ms: f64,
    /// The slowest handover, ms.
    pub handover_max_ms: f64,
    /// Takeovers made before the previous holder's lease had expired (must be 0).
    pub takeovers_before_expiry: u64,
    /// Holders that overran their TTL while working (a paused machine; makes
    /// an overlap possible, which fencing tokens exist for).
    pub overran: u64,
    /// Acquire calls that gave up waiting or failed (retried).
    pub waits_failed: u64,
    /// Wall time, ms.
    pub wall_ms: f64,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    acquisitions: AtomicU64,
    inside: AtomicU64,
    overlaps: AtomicU64,
    overran: AtomicU64,
    early: AtomicU64,
    waits_failed: AtomicU64,
    monotonic: AtomicBool,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    last_token: Option<u64>,
    /// When the last holder stopped renewing, and when its lease expired.
    last_stop: Option<(SystemTime, SystemTime)>,
    handovers: Vec<Duration>,
}

fn lock(m: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the scenario under a fresh prefix of `store` and removes its keys afterwards.
pub async fn run(
    store: DynStore,
    args: &LeaseArgs,
    seed: u64,
    json: bool,
) -> Result<LeaseReport, Error> {
    require(
        args.contenders >= 1 && args.rounds >= 1,
        "--contenders and --rounds must be at least 1",
    )?;
    require(
        args.ttl_ms >= 10 && args.hold_ms < args.ttl_ms,
        "--ttl-ms must be at least 10 and --hold-ms less than --ttl-ms",
    )?;
    let base = format!("ifmatch-bench/lease/{}/", super::run_id());
    let res = run_in(&store, args, seed, json, &base).await;
    super::cleanup(&store, &base).await;
    res
}

async fn run_in(
    store: &DynStore,
    args: &LeaseArgs,
    seed: u64,
    json: bool,
    base: &str,
) -> Result<LeaseReport, Error> {
    let bar = progress(args.rounds as u64, json, "lease");
    let shared = Arc::new(Shared {
        monotonic: AtomicBool::new(true),
        ..Shared::default()
    });
    let ttl = Duration::from_millis(args.ttl_ms);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.contenders {
        let leases = Leases::new(store.clone())
            .with_prefix(base.to_string())
            .with_skew(Duration::from_millis(args.skew_ms))
            .with_poll_interval(Duration::from_millis(50))
            .with_holder_name(format!("contender-{c}"))
            .with_rng(SharedRng::seeded(
                seed.wrapping_mul(7_919).wrapping_add(c as u64 + 1),
            ));
        let (shared, bar) = (shared.clone(), bar.clone());
        let (rounds, hold) = (args.rounds as u64, Duration::from_millis(args.hold_ms));
        tasks.push(tokio::spawn(async move {
            contend(&leases, &shared, rounds, ttl, hold, &bar).await
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Error::other("a benchmark worker failed", e))??;
    }
    let wall = started.elapsed();
    bar.finish_and_clear();
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let handovers = std::mem::take(&mut lock(&shared.log).handovers);
    let min = handovers.iter().min().copied().unwrap_or_default();
    let max = handovers.iter().max().copied().unwrap_or_default();
    Ok(LeaseReport {
        scenario: "lease",
        store: store.describe(),
        contenders: args.contenders,
        rounds: args.rounds,
        ttl_ms: args.ttl_ms,
        skew_ms: args.skew_ms,
        acquisitions: g(&shared.acquisitions),
        overlaps: g(&shared.overlaps),
        tokens_monotonic: shared.monotonic.load(Ordering::Relaxed),
        handover_ms: round2(ms(median(handovers))),
        handover_min_ms: round2(ms(min)),
        handover_max_ms: round2(ms(max)),
        takeovers_before_expiry: g(&shared.early),
        overran: g(&shared.overran),
        waits_failed: g(&shared.waits_failed),
        wall_ms: round2(ms(wall)),
    })
}

async fn contend(
    leases: &Leases,
    shared: &Shared,
    rounds: u64,
    ttl: Duration,
    hold: Duration,
    bar: &indicatif::ProgressBar,
) -> Result<(), Error> {
    let mut failures = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        let lease = match leases
            .acquire("bench", ttl, ttl * 4 + Duration::from_secs(1))
            .await
        {
            Ok(l) => l,
            Err(LeaseError::Held { .. }) => {
                shared.waits_failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => {
                shared.waits_failed.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                if failures > 20 {
                    return Err(Error::msg(format!(
                        "lease bench: acquire keeps failing: {e}"
                    )));
                }
                continue;
            }
        };
        let got = Instant::now();
        if shared.stop.load(Ordering::Relaxed) {
            // The run is over: give it back so nobody waits for it.
            let _ = leases.release(&lease).await;
            break;
        }
        if shared.inside.fetch_add(1, Ordering::SeqCst) > 0 {
            shared.overlaps.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut log = lock(&shared.log);
            if log.last_token.is_some_and(|t| lease.token() <= t) {
                shared.monotonic.store(false, Ordering::Relaxed);
            }
            log.last_token = Some(lease.token());
            // Times by the lease's own clock: when the new holder's write was
            // made, against when the old holder stopped and its lease expired.
            if let Some((stop, expired)) = log.last_stop.take() {
                let at = lease.acquired_at();
                log.handovers
                    .push(at.duration_since(stop).unwrap_or_default());
                if at < expired {
                    shared.early.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let n = shared.acquisitions.fetch_add(1, Ordering::Relaxed) + 1;
        bar.inc(1);
        tokio::time::sleep(hold).await;
        if got.elapsed() >= ttl {
            shared.overran.fetch_add(1, Ordering::Relaxed);
        }
        shared.inside.fetch_sub(1, Ordering::SeqCst);
        if n >= rounds {
            shared.stop.store(true, Ordering::Relaxed);
            let _ = leases.release(&lease).await;
            break;
        }
        // Stop renewing: walk away without releasing.
        lock(&shared.log).last_stop = Some((SystemTime::now(), lease.expires_at()));
        drop(lease);
    }
    Ok(())
}

/// The report as a table.
pub fn render(r: &LeaseReport) -> String {
    format!(
        "lease: {c} contenders, {n} acquisitions, TTL {ttl} ms, skew {skew} ms, on {store}\n\n\
         acquisitions      {a}\n\
         overlaps          {o} (must be 0)\n\
         tokens monotonic  {m}\n\
         handover, ms      median {h:.1} (min {hmin:.1}, max {hmax:.1}) after a holder stops renewing\n\
         early takeovers   {early} (must be 0)\n\
         holders overran   {ov}\n\
         wall, ms          {wall:.1}\n",
        c = r.contenders,
        n = r.rounds,
        ttl = r.ttl_ms,
        skew = r.skew_ms,
        store = r.store,
        a = r.acquisitions,
        o = r.overlaps,
        m = r.tokens_monotonic,
        h = r.handover_ms,
        hmin = r.handover_min_ms,
        hmax = r.handover_max_ms,
        early = r.takeovers_before_expiry,
        ov = r.overran,
        wall = r.wall_ms,
    )
}
