//! The update loop: concurrent clients append their own change ids to one
//! JSON list through `update_json`, under every kind of fault; in the group
//! commit scenarios each client is a process whose tasks share one
//! `Updater`, so their appends are combined into batches. At the end
//! (after every late delivery has landed or been dropped) the list must hold
//! every acknowledged id exactly once, no failed id, each unknown one at most
//! once, and the loop's change counter (`ifmatch-seq`) must equal the number
//! of ids: every change counted once, no gaps, no extra writes.

use std::sync::Arc;
use std::time::Duration;

use ifmatch::clock::{SharedRng, SystemClock};
use ifmatch::retry::RetryPolicy;
use ifmatch::sim::{self, Ledger, Network, Stats, Told, Violation, Weather};
use ifmatch::store::DynStore;
use ifmatch::store::memory::MemoryStore;
use ifmatch::update::{META_SEQ, UpdateError, Updated, Updater, update_json};

const KEY: &str = "sim/list";

fn policy(seed: u64) -> RetryPolicy {
    RetryPolicy::default()
        .with_clock(SystemClock::shared())
        .with_rng(SharedRng::seeded(seed))
        .with_max_attempts(12)
        .with_delays(Duration::from_millis(1), Duration::from_millis(100))
        .with_deadline(Some(Duration::from_secs(10)))
}

/// How each client (a process with its own view of the network) appends.
#[derive(Clone, Copy)]
enum Mode {
    /// One task calling `update_json` in turn.
    Loop,
    /// `tasks` tasks appending at once through one shared `Updater`.
    Group { tasks: u64 },
}

/// What the ledger records for an update's answer.
fn told(r: &Result<Updated, UpdateError>) -> (Told, String) {
    match r {
        Ok(_) => (Told::Applied, String::new()),
        Err(e @ UpdateError::Ambiguous { .. }) => (Told::Unknown, e.to_string()),
        Err(e) if e.kind() == ifmatch::ErrorKind::Ambiguous => (Told::Unknown, e.to_string()),
        Err(e) => (Told::Failed, e.to_string()),
    }
}

fn append(
    id: String,
) -> impl FnMut(Option<Vec<String>>) -> Result<Option<Vec<String>>, ifmatch::error::BoxError> {
    move |v| {
        let mut v = v.unwrap_or_default();
        v.push(id.clone());
        Ok(Some(v))
    }
}

/// One schedule: `clients` clients × `ops` appends (per task) on `inner`.
async fn appends(
    seed: u64,
    inner: DynStore,
    clients: u64,
    ops: u64,
    mode: Mode,
) -> Result<Stats, Violation> {
    let weather = Weather::from_seed(seed);
    let net = Network::new(inner.clone(), seed, weather.config.clone());
    let ledger = Ledger::new();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = net.client(c);
        let policy = policy(seed ^ (c + 1) << 20);
        match mode {
            Mode::Loop => {
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..ops {
                        let id = format!("c{c}-{i}");
                        let r = update_json(&*store, KEY, &policy, append(id.clone())).await;
                        let (told, note) = told(&r.map(|u| u.updated));
                        ledger.record(id, told, note);
                    }
                }));
            }
            Mode::Group { tasks: n } => {
                let updater = Updater::new(store, policy);
                for t in 0..n {
                    let ledger = ledger.clone();
                    let updater = updater.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..ops {
                            let id = format!("c{c}-t{t}-{i}");
                            let r = updater.update_json(KEY, append(id.clone())).await;
                            let (told, note) = told(&r.map(|u| u.updated));
                            ledger.record(id, told, note);
                        }
                    }));
                }
            }
        }
    }
    for t in tasks {
        t.await
            .map_err(|e| Violation(format!("a client panicked: {e}")))?;
    }
    net.settle().await;
    let (found, seq) = match inner.get(KEY).await {
        Ok(o) => {
            let list: Vec<String> = serde_json::from_slice(&o.body)
                .map_err(|e| Violation(format!("the stored list is not JSON: {e}")))?;
            let seq = o.meta.metadata.get(META_SEQ).cloned().unwrap_or_default();
            (list, seq)
        }
        Err(e) if e.kind() == ifmatch::ErrorKind::NotFound => (Vec::new(), "0".to_string()),
        Err(e) => return Err(Violation(format!("final read failed: {e}"))),
    };
    let explain = |v: Violation| {
        Violation(format!(
            "{v}\nweather {} {:?}\nfinal list {found:?}\nfaults:\n{}",
            weather.name,
            weather.config,
            net.traces()
        ))
    };
    let mut stats = ledger.check(&found).map_err(explain)?;
    if seq != found.len().to_string() {
        return Err(explain(Violation(format!(
            "the loop counted {seq} writes for {} changes",
            found.len()
        ))));
    }
    let (faults, late) = net.fault_counts();
    stats.faults = faults;
    stats.late_landed = late;
    Ok(stats)
}

#[test]
fn update_loop_appends_exactly_once() {
    sim::run_all("update_loop_appends_exactly_once", 1000, |seed| {
        appends(seed, Arc::new(MemoryStore::new()), 4, 8, Mode::Loop)
    });
}

/// The same on a store whose versions behave like S3's ETags (a hash of the body).
#[test]
fn update_loop_appends_exactly_once_with_etag_versions() {
    sim::run_all(
        "update_loop_appends_exactly_once_with_etag_versions",
        400,
        |seed| {
            appends(
                seed,
                Arc::new(MemoryStore::with_content_versions()),
                4,
                8,
                Mode::Loop,
            )
        },
    );
}

/// Seeds that found double applications before the loop settled lost,
/// late and duplicated writes from its write id (kept as regressions).
#[test]
fn update_loop_regression_seeds() {
    sim::run_seeds(
        "update_loop_regression_seeds",
        [77_646_809_198_562],
        |seed| appends(seed, Arc::new(MemoryStore::new()), 4, 8, Mode::Loop),
    );
    sim::run_seeds(
        "update_loop_regression_seeds",
        [229_382_206_818_121],
        |seed| {
            appends(
                seed,
                Arc::new(MemoryStore::with_content_versions()),
                4,
                8,
                Mode::Loop,
            )
        },
    );
}

/// Group commit: 3 processes × 6 tasks × 4 appends, each process's tasks
/// combined into batches by one `Updater`, the processes racing each other.
#[test]
fn group_commit_appends_exactly_once() {
    sim::run_all("group_commit_appends_exactly_once", 300, |seed| {
        appends(
            seed,
            Arc::new(MemoryStore::new()),
            3,
            4,
            Mode::Group { tasks: 6 },
        )
    });
}

/// The same on a store whose versions behave like S3's ETags.
#[test]
fn group_commit_appends_exactly_once_with_etag_versions() {
    sim::run_all(
        "group_commit_appends_exactly_once_with_etag_versions",
        150,
        |seed| {
            let store = Arc::new(MemoryStore::with_content_versions());
            appends(seed, store, 3, 4, Mode::Group { tasks: 6 })
        },
    );
}
