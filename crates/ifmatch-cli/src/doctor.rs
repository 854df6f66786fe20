//! `ifmatch doctor`: checks that a real store gives the guarantees ifmatch rests on.
//!
//! A store can accept conditional requests and still not enforce them — some
//! S3-compatible services silently ignore `If-Match`, and then concurrent
//! writers overwrite each other without a word. [`run`] finds out by trying,
//! under a fresh random prefix (`ifmatch-doctor/<random>/`) that it removes
//! afterwards:
//!
//! 1. create-if-absent is exclusive: a second create conflicts, and of 8
//!    concurrent creates exactly one wins;
//! 2. a write with a stale `If-Match` is rejected and changes nothing;
//! 3. `If-Match` on a missing key is rejected and creates nothing;
//! 4. a conditional GET answers "unchanged" for the current version and
//!    returns the new value for an old one;
//! 5. a conditional delete with a stale version is rejected, with the right
//!    one it succeeds;
//! 6. 8 workers × 25 increments through [`update_json`] end at exactly 200;
//! 7. metadata round-trips, and a write replaces it.
//!
//! The [`Report`] renders as a table ([`Report::render_table`]) or JSON.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ifmatch::error::BoxError;
use ifmatch::retry::RetryPolicy;
use ifmatch::store::{Fetch, Metadata};
use ifmatch::update::update_json;
use ifmatch::{Condition, DynStore, ErrorKind, PutOptions};
use serde::Serialize;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use crate::exit::error_chain;

/// How hard the doctor pushes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Concurrent create-if-absent attempts on one key (check 1).
    pub racers: usize,
    /// Concurrent workers of the increment race (check 6).
    pub workers: usize,
    /// Increments each worker makes (check 6).
    pub increments: u64,
    /// Time limit of each check but the race.
    pub check_timeout: Duration,
    /// Time limit of the race.
    pub race_timeout: Duration,
    /// The scratch prefix (ending in `/`); a fresh random one when `None`.
    pub prefix: Option<String>,
}

impl Default for Options {
    /// 8 racers, 8 workers × 25 increments, 60 s per check, 5 minutes for the race.
    fn default() -> Self {
        Options {
            racers: 8,
            workers: 8,
            increments: 25,
            check_timeout: Duration::from_secs(60),
            race_timeout: Duration::from_secs(300),
            prefix: None,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Its number, 1 to 7.
    pub number: u32,
    /// A stable identifier, e.g. `stale-if-match`.
    pub id: &'static str,
    /// What it checks, for people.
    pub title: &'static str,
    /// Whether the store passed.
    pub passed: bool,
    /// What was seen (on failure: what went wrong and what it means).
    pub detail: String,
    /// How long it took, in milliseconds.
    pub millis: u64,
}

/// The numbers of the increment race (check 6).
#[derive(Debug, Clone, Serialize)]
pub struct RaceOutcome {
    /// Concurrent workers.
    pub workers: usize,
    /// Increments per worker.
    pub increments_per_worker: u64,
    /// The value a correct store ends at.
    pub expected: u64,
    /// The value it ended at (`None` if it could not be read).
    pub final_value: Option<u64>,
    /// Write attempts made by all workers, the successful ones included.
    pub attempts: u64,
    /// Conflicts met (attempts that lost a race and were retried).
    pub conflicts: u64,
    /// Updates that failed outright.
    pub failed_updates: u64,
}

/// What the clean-up did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cleanup {
    /// Keys deleted.
    pub removed: usize,
    /// Keys still under the prefix afterwards (should be none).
    pub leftover: Vec<String>,
    /// The error that stopped the clean-up, if any.
    pub error: Option<String>,
}

/// The doctor's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The store checked ([`ifmatch::Store::describe`]).
    pub store: String,
    /// The scratch prefix used.
    pub prefix: String,
    /// True if every check passed.
    pub passed: bool,
    /// The checks, in order.
    pub checks: Vec<CheckResult>,
    /// The numbers of the increment race, if it ran.
    pub race: Option<RaceOutcome>,
    /// The clean-up.
    pub cleanup: Cleanup,
}

impl Report {
    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The check with this id.
    pub fn check(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The report as a table for people.
    pub fn render_table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.title.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "ifmatch doctor: {} (scratch prefix {})\n\n",
            self.store, self.prefix
        );
        out.push_str(&format!(" #  {:<width$}  result  details\n", "check"));
        for c in &self.checks {
            out.push_str(&format!(
                " {}  {:<width$}  {:<6}  {} ({} ms)\n",
                c.number,
                c.title,
                if c.passed { "PASS" } else { "FAIL" },
                c.detail,
                c.millis
            ));
        }
        out.push('\n');
        let failed = self.failures().count();
        if failed == 0 {
            out.push_str(&format!(
                "All {} checks passed: this store enforces conditional writes.\n",
                self.checks.len()
            ));
        } else {
            out.push_str(&format!(
                "{failed} of {} checks FAILED: this store does not give ifmatch's guarantees.\n",
                self.checks.len()
            ));
            let ignores = [
                "create-exclusive",
                "stale-if-match",
                "if-match-missing",
                "conditional-delete",
            ]
            .iter()
            .any(|id| self.check(id).is_some_and(|c| !c.passed));
            if ignores {
                out.push_str(
                    "A store that lets a write through whose condition does not hold is ignoring\n\
                     conditional requests (some S3-compatible services do): concurrent writers\n\
                     would silently overwrite each other. Do not use it with ifmatch.\n",
                );
            }
        }
        match (&self.cleanup.error, self.cleanup.leftover.is_empty()) {
            (Some(e), _) => out.push_str(&format!(
                "Warning: clean-up failed ({e}); remove the keys under {} by hand.\n",
                self.prefix
            )),
            (None, false) => out.push_str(&format!(
                "Warning: {} keys are left under {}; remove them by hand.\n",
                self.cleanup.leftover.len(),
                self.prefix
            )),
            (None, true) => out.push_str(&format!(
                "Cleaned up {} scratch keys.\n",
                self.cleanup.removed
            )),
        }
        out
    }
}

/// Runs every check against `store` with the default [`Options`].
pub async fn run(store: DynStore) -> Report {
    run_with(store, Options::default()).await
}

/// Runs every check against `store`, then removes what it wrote.
pub async fn run_with(store: DynStore, opts: Options) -> Report {
    let prefix = opts.prefix.clone().unwrap_or_else(|| {
        let n = ifmatch::clock::SharedRng::from_entropy().next_u64();
        format!("ifmatch-doctor/{n:016x}/")
    });
    let key = |name: &str| format!("{prefix}{name}");
    tracing::info!(store = %store.describe(), %prefix, "doctor starting");

    let mut checks = Vec::new();
    let limit = opts.check_timeout;
    checks.push(
        timed(
            1,
            "create-exclusive",
            "create-if-absent is exclusive",
            limit,
            create_exclusive(&store, &key("create"), &key("create-race"), opts.racers),
        )
        .await,
    );
    checks.push(
        timed(
            2,
            "stale-if-match",
            "a stale If-Match is rejected",
            limit,
            stale_if_match(&store, &key("stale")),
        )
        .await,
    );
    checks.push(
        timed(
            3,
            "if-match-missing",
            "If-Match on a missing key is rejected",
            limit,
            if_match_missing(&store, &key("missing"), &key("missing-ref")),
        )
        .await,
    );
    checks.push(
        timed(
            4,
            "conditional-get",
            "conditional GET sees the current version",
            limit,
            conditional_get(&store, &key("cond-get")),
        )
        .await,
    );
    checks.push(
        timed(
            5,
            "conditional-delete",
            "conditional delete honours its version",
            limit,
            conditional_delete(&store, &key("cond-delete")),
        )
        .await,
    );
    let mut race = None;
    checks.push(
        timed(
            6,
            "concurrent-race",
            "concurrent increments lose nothing",
            opts.race_timeout,
            increment_race(&store, &key("race"), &opts, &mut race),
        )
        .await,
    );
    checks.push(
        timed(
            7,
            "metadata",
            "metadata round-trips",
            limit,
            metadata_round_trip(&store, &key("metadata")),
        )
        .await,
    );

    let known: Vec<String> = [
        "create",
        "create-race",
        "stale",
        "missing",
        "missing-ref",
        "cond-get",
        "cond-delete",
        "race",
        "metadata",
    ]
    .iter()
    .map(|n| key(n))
    .collect();
    let cleanup = match tokio::time::timeout(limit, clean_up(&store, &prefix, &known)).await {
        Ok(c) => c,
        Err(_) => Cleanup {
            error: Some(format!("timed out after {} s", limit.as_secs())),
            ..Cleanup::default()
        },
    };
    let passed = checks.iter().all(|c| c.passed);
    tracing::info!(passed, "doctor done");
    Report {
        store: store.describe(),
        prefix,
        passed,
        checks,
        race,
        cleanup,
    }
}

/// A check's verdict: `Ok(what was seen)` or `Err(what went wrong)`.
type Verdict = Result<String, String>;

async fn timed(
    number: u32,
    id: &'static str,
    title: &'static str,
    limit: Duration,
    check: impl Future<Output = Verdict>,
) -> CheckResult {
    let started = Instant::now();
    let verdict = match tokio::time::timeout(limit, check).await {
        Ok(v) => v,
        Err(_) => Err(format!("did not finish within {} s", limit.as_secs())),
    };
    let millis = started.elapsed().as_millis() as u64;
    tracing::info!(check = id, passed = verdict.is_ok(), millis, "check done");
    let (passed, detail) = match verdict {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    CheckResult {
        number,
        id,
        title,
        passed,
        detail,
        millis,
    }
}

/// Turns a store error of a step that should have worked into a failure message.
fn step<T>(r: ifmatch::Result<T>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what} failed: {}", error_chain(&e)))
}

/// Spawned tasks that are aborted if the check is dropped (on its time limit).
struct Tasks<T>(Vec<JoinHandle<T>>);

impl<T> Drop for Tasks<T> {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Check 1.
async fn create_exclusive(store: &DynStore, key: &str, race_key: &str, racers: usize) -> Verdict {
    step(
        store
            .put(key, Bytes::from_static(b"first"), PutOptions::if_absent())
            .await,
        "the first create-if-absent",
    )?;
    match store
        .put(key, Bytes::from_static(b"second"), PutOptions::if_absent())
        .await
    {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        Ok(_) => {
            return Err(
                "a second create-if-absent of an existing key succeeded: the store ignores If-None-Match: *"
                    .into(),
            );
        }
        Err(e) => {
            return Err(format!(
                "the second create-if-absent failed with an unexpected error: {}",
                error_chain(&e)
            ));
        }
    }
    let obj = step(store.get(key).await, "reading the key back")?;
    if obj.body.as_ref() != b"first" {
        return Err("the second create reported a conflict but overwrote the value".into());
    }

    let racers = racers.max(2);
    let barrier = Arc::new(Barrier::new(racers));
    let mut tasks = Tasks(Vec::new());
    for i in 0..racers {
        let store = store.clone();
        let barrier = barrier.clone();
        let race_key = race_key.to_string();
        tasks.0.push(tokio::spawn(async move {
            barrier.wait().await;
            let body = Bytes::from(format!("racer {i}"));
            store.put(&race_key, body, PutOptions::if_absent()).await
        }));
    }
    let mut winners = Vec::new();
    let mut others = Vec::new();
    for (i, h) in tasks.0.iter_mut().enumerate() {
        match h.await {
            Ok(Ok(_)) => winners.push(i),
            Ok(Err(e)) if e.kind() == ErrorKind::Conflict => {}
            Ok(Err(e)) => others.push(error_chain(&e)),
            Err(e) => others.push(format!("task failed: {e}")),
        }
    }
    if let Some(e) = others.first() {
        return Err(format!(
            "{} of {racers} concurrent creates failed with unexpected errors, e.g. {e}",
            others.len()
        ));
    }
    if winners.len() != 1 {
        return Err(format!(
            "{} of {racers} concurrent creates-if-absent won, expected exactly 1: the store does not make creates exclusive",
            winners.len()
        ));
    }
    let obj = step(store.get(race_key).await, "reading the raced key")?;
    let expected = format!("racer {}", winners[0]);
    if obj.body.as_ref() != expected.as_bytes() {
        return Err(format!(
            "the raced key holds {:?}, not the winner's value {expected:?}: a losing create landed",
            String::from_utf8_lossy(&obj.body)
        ));
    }
    Ok(format!(
        "a second create conflicted; 1 of {racers} concurrent creates won"
    ))
}

/// Check 2.
async fn stale_if_match(store: &DynStore, key: &str) -> Verdict {
    let v1 = step(
        store
            .put(key, Bytes::from_static(b"one"), PutOptions::any())
            .await,
        "the first write",
    )?;
    let v2 = step(
        store
            .put(
                key,
                Bytes::from_static(b"two"),
                PutOptions::if_matches(v1.clone()),
            )
            .await,
        "a write with the current version",
    )?;
    if v2 == v1 {
        return Err(format!(
            "two different values got the same version {v1}: versions cannot tell writes apart"
        ));
    }
    match store
        .put(
            key,
            Bytes::from_static(b"stale"),
            PutOptions::if_matches(v1.clone()),
        )
        .await
    {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        Ok(_) => {
            return Err(
                "a write with a stale If-Match succeeded: the store ignores If-Match".into(),
            );
        }
        Err(e) => {
            return Err(format!(
                "the stale write failed with an unexpected error: {}",
                error_chain(&e)
            ));
        }
    }
    let obj = step(store.get(key).await, "reading the key back")?;
    if obj.body.as_ref() != b"two" || obj.meta.version != v2 {
        return Err("the stale write reported a conflict but changed the value".into());
    }
    Ok(format!(
        "a write over {v1} after {v2} conflicted and changed nothing"
    ))
}

/// Check 3.
async fn if_match_missing(store: &DynStore, key: &str, ref_key: &str) -> Verdict {
    // A real version of this store, so the condition looks like any other.
    let real = step(
        store
            .put(ref_key, Bytes::from_static(b"ref"), PutOptions::any())
            .await,
        "writing a reference key",
    )?;
    let note = match store
        .put(
            key,
            Bytes::from_static(b"x"),
            PutOptions::if_matches(real.clone()),
        )
        .await
    {
        Err(e) if e.kind() == ErrorKind::Conflict => "",
        Err(e) if e.kind() == ErrorKind::NotFound => " (reported as not-found, not as a conflict)",
        Ok(_) => {
            return Err(
                "a write with If-Match on a missing key succeeded and created it: the store ignores If-Match"
                    .into(),
            );
        }
        Err(e) => {
            return Err(format!(
                "the write failed with an unexpected error: {}",
                error_chain(&e)
            ));
        }
    };
    match store.head(key).await {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Ok(_) => return Err("the rejected write created the key anyway".into()),
        Err(e) => return Err(format!("checking the key failed: {}", error_chain(&e))),
    }
    Ok(format!("rejected{note}; the key stayed absent"))
}

/// Check 4.
async fn conditional_get(store: &DynStore, key: &str) -> Verdict {
    let v1 = step(
        store
            .put(key, Bytes::from_static(b"one"), PutOptions::any())
            .await,
        "the first write",
    )?;
    match step(store.get_if_changed(key, &v1).await, "a conditional GET")? {
        Fetch::Unchanged => {}
        Fetch::Changed(o) => {
            return Err(format!(
                "a conditional GET with the current version {v1} returned the value again (as version {}): readers cannot cache",
                o.meta.version
            ));
        }
    }
    let v2 = step(
        store
            .put(
                key,
                Bytes::from_static(b"two"),
                PutOptions::if_matches(v1.clone()),
            )
            .await,
        "the second write",
    )?;
    match step(
        store.get_if_changed(key, &v1).await,
        "a conditional GET with the old version",
    )? {
        Fetch::Changed(o) if o.body.as_ref() == b"two" && o.meta.version == v2 => {}
        Fetch::Changed(o) => {
            return Err(format!(
                "a conditional GET with an old version returned version {} instead of {v2}",
                o.meta.version
            ));
        }
        Fetch::Unchanged => {
            return Err(
                "a conditional GET with an old version answered 'unchanged': readers would never see updates"
                    .into(),
            );
        }
    }
    Ok(format!("unchanged at {v1}; the new value after an update"))
}

/// Check 5.
async fn conditional_delete(store: &DynStore, key: &str) -> Verdict {
    let v1 = step(
        store
            .put(key, Bytes::from_static(b"one"), PutOptions::any())
            .await,
        "the first write",
    )?;
    let v2 = step(
        store
            .put(
                key,
                Bytes::from_static(b"two"),
                PutOptions::if_matches(v1.clone()),
            )
            .await,
        "the second write",
    )?;
    match store.delete(key, Condition::Matches(v1.clone())).await {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        Ok(()) => {
            return Err(
                "a delete with a stale version succeeded: the store ignores conditions on delete"
                    .into(),
            );
        }
        Err(e) => {
            return Err(format!(
                "the stale delete failed with an unexpected error: {}",
                error_chain(&e)
            ));
        }
    }
    match store.head(key).await {
        Ok(m) if m.version == v2 => {}
        Ok(m) => {
            return Err(format!(
                "after the rejected delete the key is at {} instead of {v2}",
                m.version
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err("the stale delete reported a conflict but deleted the key".into());
        }
        Err(e) => return Err(format!("checking the key failed: {}", error_chain(&e))),
    }
    step(
        store.delete(key, Condition::Matches(v2.clone())).await,
        "a delete with the current version",
    )?;
    match store.head(key).await {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Ok(_) => {
            return Err(
                "a delete with the current version succeeded but the key is still there".into(),
            );
        }
        Err(e) => return Err(format!("checking the key failed: {}", error_chain(&e))),
    }
    Ok(format!("rejected at stale {v1}; deleted at {v2}"))
}

/// Check 6.
async fn increment_race(
    store: &DynStore,
    key: &str,
    opts: &Options,
    outcome: &mut Option<RaceOutcome>,
) -> Verdict {
    let workers = opts.workers.max(1);
    let increments = opts.increments;
    let expected = workers as u64 * increments;
    // A budget generous enough that a correct store never runs out of it.
    let policy = RetryPolicy::default()
        .with_max_attempts(10_000)
        .with_delays(Duration::from_millis(1), Duration::from_millis(100))
        .with_deadline(Some(opts.race_timeout));
    let mut tasks = Tasks(Vec::new());
    for _ in 0..workers {
        let store = store.clone();
        let key = key.to_string();
        let policy = policy.clone();
        tasks.0.push(tokio::spawn(async move {
            let (mut attempts, mut conflicts) = (0u64, 0u64);
            for done in 0..increments {
                let r = update_json(&*store, &key, &policy, |n: Option<u64>| {
                    Ok::<_, BoxError>(Some(n.unwrap_or(0) + 1))
                })
                .await;
                match r {
                    Ok(u) => {
                        attempts += u64::from(u.updated.attempts);
                        conflicts += u64::from(u.updated.conflicts);
                    }
                    Err(e) => {
                        return (
                            attempts,
                            conflicts,
                            increments - done,
                            Some(error_chain(&e)),
                        );
                    }
                }
            }
            (attempts, conflicts, 0, None)
        }));
    }
    let mut race = RaceOutcome {
        workers,
        increments_per_worker: increments,
        expected,
        final_value: None,
        attempts: 0,
        conflicts: 0,
        failed_updates: 0,
    };
    let mut first_error = None;
    for h in tasks.0.iter_mut() {
        match h.await {
            Ok((a, c, failed, err)) => {
                race.attempts += a;
                race.conflicts += c;
                race.failed_updates += failed;
                if first_error.is_none() {
                    first_error = err;
                }
            }
            Err(e) => {
                race.failed_updates += increments;
                first_error.get_or_insert_with(|| format!("a worker failed: {e}"));
            }
        }
    }
    let read = store.get(key).await;
    let final_value = match &read {
        Ok(o) => std::str::from_utf8(&o.body)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok()),
        Err(_) => None,
    };
    race.final_value = final_value;
    let summary = format!(
        "{workers} workers x {increments} increments: final value {}, expected {expected}; {} attempts, {} conflicts",
        final_value.map_or_else(|| "unreadable".to_string(), |v| v.to_string()),
        race.attempts,
        race.conflicts
    );
    *outcome = Some(race);
    if let Some(e) = first_error {
        return Err(format!("{summary}; an update failed: {e}"));
    }
    match (final_value, read) {
        (Some(v), _) if v == expected => Ok(summary),
        (Some(v), _) if v < expected => Err(format!(
            "{summary}: {} updates were lost, so the store does not enforce If-Match",
            expected - v
        )),
        (Some(_), _) => Err(format!("{summary}: some updates were applied twice")),
        (None, Err(e)) => Err(format!(
            "{summary}: reading the counter failed: {}",
            error_chain(&e)
        )),
        (None, Ok(_)) => Err(format!("{summary}: the counter does not hold a number")),
    }
}

/// Check 7.
async fn metadata_round_trip(store: &DynStore, key: &str) -> Verdict {
    let mut md = Metadata::new();
    md.insert("doctor-check".into(), "round-trip 1".into());
    md.insert("x_y-9".into(), "Mixed Case, a=1; b=\"2\" ~!".into());
    let v1 = step(
        store
            .put(
                key,
                Bytes::from_static(b"{}"),
                PutOptions::any().with_metadata(md.clone()),
            )
            .await,
        "a write with metadata",
    )?;
    let user = |m: &Metadata| -> Metadata {
        m.iter()
            .filter(|(k, _)| !k.starts_with(ifmatch::key::RESERVED_METADATA_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let head = step(store.head(key).await, "HEAD")?;
    if user(&head.metadata) != md {
        return Err(format!(
            "wrote {md:?}, HEAD returned {:?}",
            user(&head.metadata)
        ));
    }
    if head.version != v1 || head.size != 2 {
        return Err(format!(
            "HEAD returned version {} and size {}, expected {v1} and 2",
            head.version, head.size
        ));
    }
    let obj = step(store.get(key).await, "GET")?;
    if user(&obj.meta.metadata) != md {
        return Err(format!(
            "wrote {md:?}, GET returned {:?}",
            user(&obj.meta.metadata)
        ));
    }
    let mut md2 = Metadata::new();
    md2.insert("doctor-check".into(), "round-trip 2".into());
    step(
        store
            .put(
                key,
                Bytes::from_static(b"{}"),
                PutOptions::if_matches(v1).with_metadata(md2.clone()),
            )
            .await,
        "a second write with other metadata",
    )?;
    let head = step(store.head(key).await, "HEAD after the second write")?;
    if user(&head.metadata) != md2 {
        return Err(format!(
            "a write should replace the metadata with {md2:?}, HEAD returned {:?}",
            user(&head.metadata)
        ));
    }
    Ok(format!(
        "{} entries came back intact and were replaced by a write",
        md.len()
    ))
}

/// Deletes the doctor's keys: the known ones and whatever is listed under the prefix.
async fn clean_up(store: &DynStore, prefix: &str, known: &[String]) -> Cleanup {
    let mut cleanup = Cleanup::default();
    let mut keys: Vec<String> = known.to_vec();
    match ifmatch::store::list_all(&**store, prefix).await {
        Ok(entries) => keys.extend(entries.into_iter().map(|e| e.key)),
        Err(e) => cleanup.error = Some(format!("listing failed: {}", error_chain(&e))),
    }
    keys.sort();
    keys.dedup();
    for k in &keys {
        match store.head(k).await {
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            _ => {}
        }
        match store.delete(k, Condition::Any).await {
            Ok(()) => cleanup.removed += 1,
            Err(e) => {
                cleanup
                    .error
                    .get_or_insert_with(|| format!("deleting '{k}' failed: {}", error_chain(&e)));
            }
        }
    }
    if let Ok(entries) = ifmatch::store::list_all(&**store, prefix).await {
        cleanup.leftover = entries.into_iter().map(|e| e.key).collect();
    }
    cleanup
}
