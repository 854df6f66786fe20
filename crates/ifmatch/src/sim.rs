//! Deterministic simulation support: seeded fault weather, simulated
//! clients, and the exactly-once bookkeeping that the simulation suites
//! (`crates/ifmatch/tests/sim/`, the server's `tests/sim.rs`) check after
//! every schedule.
//!
//! A **schedule** is one seed: [`run`] builds a fresh single-threaded tokio
//! runtime on a paused clock and runs the scenario in it; [`Weather::from_seed`]
//! draws the fault mix ([`FaultConfig`]) from the seed; a [`Network`] gives
//! every simulated client its own [`FaultStore`] with its own seed over one
//! shared inner store. Each client's faults then depend only on its own calls,
//! all waits happen on tokio's paused clock (virtual time, no real sleeping),
//! and the same seed replays the same schedule. A failing schedule prints its
//! seed; `IFMATCH_SIM_SEED=<seed>` replays just that one.
//!
//! [`Ledger`] records what each client was told about each change (applied,
//! failed, or unknown) and checks the invariants of "nothing acknowledged
//! lost, nothing applied twice" against what the store holds at the end:
//!
//! - every acknowledged change is present exactly once;
//! - every change whose outcome was reported unknown is present at most once;
//! - every change reported as failed is absent;
//! - nothing is present that nobody tried.
//!
//! Knobs (environment): `IFMATCH_SIM_SEEDS=N` runs N schedules per scenario
//! instead of the scenario's default; `IFMATCH_SIM_SECONDS=S` keeps drawing
//! new seeds for S seconds of real time (long runs); `IFMATCH_SIM_SEED=X`
//! runs only seed X; `IFMATCH_SIM_BASE=B` starts the seed sequence at B.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
#[cfg(feature = "sim")]
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::SharedRng;
use crate::store::DynStore;
use crate::store::fault::{FaultConfig, FaultStore};

/// The seeds of one scenario, from the environment knobs (see the module docs).
#[derive(Debug, Clone)]
pub struct Seeds {
    next: u64,
    left: Option<u64>,
    until: Option<Instant>,
}

impl Seeds {
    /// The seeds to run for a scenario whose default is `default` schedules.
    ///
    /// Seeds are `base, base+1, ...` with `base` from `IFMATCH_SIM_BASE`
    /// (default: a constant per scenario name, so CI runs are reproducible).
    pub fn for_scenario(name: &str, default: u64) -> Seeds {
        let var = |v: &str| {
            std::env::var(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        if let Some(one) = var("IFMATCH_SIM_SEED") {
            return Seeds {
                next: one,
                left: Some(1),
                until: None,
            };
        }
        let base = var("IFMATCH_SIM_BASE").unwrap_or_else(|| name_hash(name));
        let until = var("IFMATCH_SIM_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
        let left = match until {
            Some(_) => var("IFMATCH_SIM_SEEDS"),
            None => Some(var("IFMATCH_SIM_SEEDS").unwrap_or(default)),
        };
        Seeds {
            next: base,
            left,
            until,
        }
    }
}

impl Iterator for Seeds {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if let Some(0) = self.left {
            return None;
        }
        if let Some(t) = self.until
            && Instant::now() >= t
        {
            return None;
        }
        if let Some(n) = self.left.as_mut() {
            *n -= 1;
        }
        let s = self.next;
        self.next = self.next.wrapping_add(1);
        Some(s)
    }
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: a stable, dependency-free hash, so a scenario's default seeds never change.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h >> 16
}

/// (Only with the `sim` feature, which test builds enable: it needs tokio's paused clock.)
///
/// Runs `scenario(seed)` on a fresh single-threaded tokio runtime whose clock
/// starts paused, so every wait is virtual and the schedule is reproducible.
#[cfg(feature = "sim")]
pub fn run<T, F, Fut>(seed: u64, scenario: F) -> T
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"));
    rt.block_on(scenario(seed))
}

/// (Only with the `sim` feature.)
///
/// Runs a scenario for every seed of [`Seeds::for_scenario`], stopping at the
/// first violation with a message that names the seed and how to replay it.
/// Returns the scenario's statistics, summed, with the number of schedules.
#[cfg(feature = "sim")]
pub fn run_all<F, Fut>(name: &str, default: u64, scenario: F) -> Stats
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<Stats, Violation>>,
{
    run_seeds(name, Seeds::for_scenario(name, default), scenario)
}

/// (Only with the `sim` feature.)
///
/// Runs a scenario for the given seeds (a list of regression seeds, say);
/// see [`run_all`].
#[cfg(feature = "sim")]
pub fn run_seeds<F, Fut>(name: &str, seeds: impl IntoIterator<Item = u64>, mut scenario: F) -> Stats
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<Stats, Violation>>,
{
    let mut total = Stats::default();
    let started = Instant::now();
    for seed in seeds {
        match run(seed, &mut scenario) {
            Ok(s) => total.add(&s),
            Err(v) => panic!(
                "{name}: seed {seed} violates exactly-once: {v}\nreplay: IFMATCH_SIM_SEED={seed} cargo test --workspace --test sim {name}"
            ),
        }
        total.schedules += 1;
    }
    println!(
        "{name}: {} schedules in {:.1} s: {total}",
        total.schedules,
        started.elapsed().as_secs_f64()
    );
    total
}

/// Counters a scenario reports, summed over schedules.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Schedules run.
    pub schedules: u64,
    /// Changes acknowledged as applied.
    pub acked: u64,
    /// Changes reported as failed.
    pub failed: u64,
    /// Changes whose outcome was reported unknown.
    pub unknown: u64,
    /// Of the unknown ones, those found applied at the end.
    pub unknown_landed: u64,
    /// Faults injected (errors, lost answers, late and duplicated deliveries, 409s, brownouts).
    pub faults: u64,
    /// Late deliveries that landed.
    pub late_landed: u64,
}

impl Stats {
    /// Adds another schedule's counters.
    pub fn add(&mut self, o: &Stats) {
        self.schedules += o.schedules;
        self.acked += o.acked;
        self.failed += o.failed;
        self.unknown += o.unknown;
        self.unknown_landed += o.unknown_landed;
        self.faults += o.faults;
        self.late_landed += o.late_landed;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} acknowledged, {} failed, {} unknown ({} of them landed), {} faults injected, {} late deliveries landed",
            self.acked,
            self.failed,
            self.unknown,
            self.unknown_landed,
            self.faults,
            self.late_landed
        )
    }
}

/// A broken invariant, with what the schedule did.
#[derive(Debug, Clone)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// The fault mix of one schedule, drawn from its seed.
#[derive(Debug, Clone)]
pub struct Weather {
    /// A short name of the mix, for messages.
    pub name: &'static str,
    /// The faults each client's store injects.
    pub config: FaultConfig,
}

impl Weather {
    /// Draws a fault mix from `seed`. Over many seeds every mix occurs:
    /// calm, lossy, late, duplicating, 409-heavy, brownouts, and all at once,
    /// each with random rates and always some latency (so writes in flight
    /// together land in any order).
    pub fn from_seed(seed: u64) -> Weather {
        let rng = SharedRng::seeded(seed ^ 0x005e_ed0f_7ea7_4e72);
        let r = |max: f64| rng.unit() * max;
        let ms = Duration::from_millis;
        let mut c = FaultConfig {
            latency: (Duration::ZERO, ms(1 + rng.up_to(20))),
            answer_latency: (Duration::ZERO, ms(1 + rng.up_to(10))),
            late_delay: (Duration::ZERO, ms(1 + rng.up_to(200))),
            late_never: r(0.5),
            burst_len: (1, 1 + rng.up_to(8) as u32),
            ..FaultConfig::default()
        };
        let name = match rng.up_to(6) {
            0 => {
                c.error_rate = r(0.05);
                "calm"
            }
            1 => {
                c.error_rate = r(0.1);
                c.lost_response_rate = 0.05 + r(0.25);
                "lossy"
            }
            2 => {
                c.late_rate = 0.05 + r(0.25);
                c.lost_response_rate = r(0.1);
                "late"
            }
            3 => {
                c.duplicate_rate = 0.05 + r(0.2);
                c.late_duplicate_rate = 0.05 + r(0.2);
                "duplicating"
            }
            4 => {
                c.conflict_409_rate = 0.1 + r(0.3);
                c.error_rate = r(0.05);
                "409"
            }
            5 => {
                c.lost_response_rate = 0.05 + r(0.15);
                c.late_rate = r(0.1);
                c.burst_rate = 0.3 + r(0.7);
                "brownout"
            }
            _ => {
                c.error_rate = r(0.08);
                c.lost_response_rate = r(0.1);
                c.late_rate = r(0.1);
                c.duplicate_rate = r(0.08);
                c.late_duplicate_rate = r(0.08);
                c.conflict_409_rate = r(0.15);
                c.burst_rate = r(0.5);
                "storm"
            }
        };
        Weather { name, config: c }
    }
}

/// Simulated clients over one shared store, each behind its own [`FaultStore`].
#[derive(Debug, Clone)]
pub struct Network {
    inner: DynStore,
    seed: u64,
    config: FaultConfig,
    clients: Arc<Mutex<Vec<Arc<FaultStore>>>>,
}

impl Network {
    /// A network over `inner` whose clients inject `config`'s faults, seeded from `seed`.
    pub fn new(inner: DynStore, seed: u64, config: FaultConfig) -> Network {
        Network {
            inner,
            seed,
            config,
            clients: Arc::default(),
        }
    }

    /// The store as client `i` sees it (its own fault stream, seeded from the
    /// network's seed and `i`). Calling it twice with the same `i` gives two
    /// independent connections with the same seed; use each `i` once.
    pub fn client(&self, i: u64) -> Arc<FaultStore> {
        let seed = self
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(i.wrapping_mul(0xbf58_476d_1ce4_e5b9) + 1);
        let c = Arc::new(
            FaultStore::new(
                self.inner.clone(),
                self.config.clone(),
                SharedRng::seeded(seed),
            )
            .with_trace(),
        );
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c.clone());
        c
    }

    /// The store without faults (for the final read-out).
    pub fn inner(&self) -> &DynStore {
        &self.inner
    }

    /// Waits until every client's late deliveries have landed or been dropped.
    pub async fn settle(&self) {
        let clients: Vec<_> = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for c in clients {
            c.settle().await;
        }
    }

    /// Faults injected and late deliveries landed, over all clients.
    pub fn fault_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.iter().fold((0, 0), |(f, l), c| {
            let k = c.counters();
            (
                f + k.errors.load(Relaxed)
                    + k.lost_responses.load(Relaxed)
                    + k.late.load(Relaxed)
                    + k.duplicated.load(Relaxed),
                l + k.late_landed.load(Relaxed),
            )
        })
    }

    /// Every client's fault trace, for a violation message.
    pub fn traces(&self) -> String {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (i, c) in clients.iter().enumerate() {
            for line in c.trace() {
                out.push_str(&format!("  client {i}: {line}\n"));
            }
        }
        out
    }
}

/// What a client was told about one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// The change was acknowledged: it must be present exactly once.
    Applied,
    /// The change definitely failed: it must be absent.
    Failed,
    /// The outcome was reported unknown: present at most once.
    Unknown,
}

/// The changes of one schedule and what their clients were told.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    told: Arc<Mutex<BTreeMap<String, (Told, String)>>>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Records what the client of change `id` was told, with a note (the error, say).
    pub fn record(&self, id: impl Into<String>, told: Told, note: impl Into<String>) {
        self.told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into(), (told, note.into()));
    }

    /// The changes whose outcome was reported unknown, with their notes.
    pub fn unknowns(&self) -> Vec<(String, String)> {
        let told = self.told.lock().unwrap_or_else(|e| e.into_inner());
        told.iter()
            .filter(|(_, (t, _))| *t == Told::Unknown)
            .map(|(id, (_, note))| (id.clone(), note.clone()))
            .collect()
    }

    /// Checks the store's final content (every change id found, with
    /// repetitions) against the ledger; see the module docs for the rules.
    pub fn check(&self, found: &[String]) -> Result<Stats, Violation> {
        let told = self.told.lock().unwrap_or_else(|e| e.into_inner());
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for id in found {
            *count.entry(id.as_str()).or_default() += 1;
        }
        let mut problems = Vec::new();
        let mut stats = Stats::default();
        for (id, (t, note)) in told.iter() {
            let n = count.get(id.as_str()).copied().unwrap_or(0);
            match t {
                Told::Applied => {
                    stats.acked += 1;
                    if n != 1 {
                        problems.push(format!("acknowledged change {id} is present {n} times"));
                    }
                }
                Told::Failed => {
                    stats.failed += 1;
                    if n != 0 {
                        problems.push(format!(
                            "change {id} was reported failed ({note}) but is present {n} times"
                        ));
                    }
                }
                Told::Unknown => {
                    stats.unknown += 1;
                    if n > 1 {
                        problems.push(format!(
                            "change {id} of unknown outcome ({note}) is present {n} times"
                        ));
                    }
                    if n == 1 {
                        stats.unknown_landed += 1;
                    }
                }
            }
        }
        let strangers: BTreeSet<&str> = count
            .keys()
            .copied()
            .filter(|id| !told.contains_key(*id))
            .collect();
        if !strangers.is_empty() {
            problems.push(format!("present but never tried: {strangers:?}"));
        }
        if problems.is_empty() {
            Ok(stats)
        } else {
            Err(Violation(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_ledger_catches_every_broken_rule() {
        let l = Ledger::new();
        l.record("a", Told::Applied, "");
        l.record("f", Told::Failed, "conflict");
        l.record("u", Told::Unknown, "ambiguous");
        let ok = l.check(&ids(&["a", "u"])).unwrap();
        assert_eq!(
            (ok.acked, ok.failed, ok.unknown, ok.unknown_landed),
            (1, 1, 1, 1)
        );
        assert!(
            l.check(&ids(&["a"])).is_ok(),
            "an unknown change may be absent"
        );
        for bad in [
            &["u"][..],
            &["a", "a"],
            &["a", "f"],
            &["a", "u", "u"],
            &["a", "zzz"],
        ] {
            assert!(l.check(&ids(bad)).is_err(), "{bad:?} must be a violation");
        }
    }

    #[test]
    fn seeds_follow_the_knobs_and_weather_varies() {
        let s: Vec<u64> = Seeds::for_scenario("x", 3).collect();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1], s[0] + 1);
        assert_eq!(s, Seeds::for_scenario("x", 3).collect::<Vec<_>>());
        let names: BTreeSet<&str> = (0..200).map(|s| Weather::from_seed(s).name).collect();
        assert_eq!(names.len(), 7, "{names:?}");
    }
}
