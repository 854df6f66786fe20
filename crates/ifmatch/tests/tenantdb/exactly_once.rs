//! Exactly once under the faults real stores have (issue 12): a lost answer
//! followed by a brownout, late and duplicated delivery of the log create,
//! and S3's 409 `ConditionalRequestConflict` (which the S3 backend reports as
//! `Unavailable`: nothing written, retry) on every write path.
//!
//! [`Scripted`] is a small store wrapper whose faults are scheduled by the
//! test, so each case replays exactly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::clock::ManualClock;
use ifmatch::store::intercept::{self, Call};
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{Condition, PutOptions, Store, Version};
use ifmatch::tenantdb::{TenantDbError, TenantDbs, TenantDbsConfig};
use ifmatch::{DynStore, Error, ErrorKind, Result};

use crate::suite::{TempDir, policy};

/// What the next create of a log entry suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFault {
    /// It lands, but the caller sees `Ambiguous`.
    LoseAnswer,
    /// It is held back (the caller sees `Ambiguous`) and lands just before
    /// the caller's next request reaches the store.
    Late,
    /// It lands and is delivered a second time; the caller sees the second
    /// answer: a 412 (`Conflict`) for its own write.
    Duplicate,
}

#[derive(Debug, Default)]
struct Script {
    /// Faults for the next log creates, in order.
    log: VecDeque<LogFault>,
    /// Requests of any kind to fail with `Unavailable` after the next fault fires.
    brownout_after_fault: u64,
    /// Requests still to fail in the current brownout.
    failing: u64,
    /// A held-back write, delivered before the next request.
    held: Option<(String, Bytes, PutOptions)>,
    /// Every `n`th conditional write or delete answers like S3's 409 (0: never).
    conflict_409_every: u64,
    conditional: u64,
}

/// A store wrapper with scripted faults; see the module docs.
#[derive(Debug)]
pub struct Scripted {
    inner: DynStore,
    script: Mutex<Script>,
    /// S3-style 409s injected.
    pub injected_409: AtomicU64,
}

impl Scripted {
    pub fn new(inner: DynStore) -> Arc<Scripted> {
        Arc::new(Scripted {
            inner,
            script: Mutex::new(Script::default()),
            injected_409: AtomicU64::new(0),
        })
    }
    /// The next log create suffers `fault`; then `brownout` requests fail.
    pub fn next_log_create(&self, fault: LogFault, brownout: u64) {
        let mut s = self.script.lock().unwrap();
        s.log.push_back(fault);
        s.brownout_after_fault = brownout;
    }
    /// Ends any brownout and forgets scheduled faults (a held write stays held).
    pub fn heal(&self) {
        let mut s = self.script.lock().unwrap();
        s.log.clear();
        s.failing = 0;
        s.brownout_after_fault = 0;
    }
    /// Delivers a held-back write now (it lands, or loses to what is there).
    pub async fn deliver_held(&self) {
        let held = self.script.lock().unwrap().held.take();
        if let Some((k, b, o)) = held {
            let _ = self.inner.put(&k, b, o).await;
        }
    }
    /// Drops a held-back write: it never lands.
    pub fn drop_held(&self) -> bool {
        self.script.lock().unwrap().held.take().is_some()
    }
    /// Every `n`th conditional write or delete answers as S3's 409 does.
    pub fn conflict_409_every(&self, n: u64) {
        self.script.lock().unwrap().conflict_409_every = n;
    }

    fn unavailable(what: &str) -> Error {
        Error::Unavailable {
            message: format!("scripted: {what}"),
            source: None,
        }
    }

    /// Runs before every request: delivers a held write (unless a brownout
    /// holds it longer), applies a brownout.
    async fn before(&self) -> Result<()> {
        if self.script.lock().unwrap().failing == 0 {
            self.deliver_held().await;
        }
        let mut s = self.script.lock().unwrap();
        if s.failing > 0 {
            s.failing -= 1;
            return Err(Self::unavailable("brownout"));
        }
        Ok(())
    }

    /// Whether this conditional request gets a 409 instead.
    fn take_409(&self, conditional: bool) -> bool {
        if !conditional {
            return false;
        }
        let mut s = self.script.lock().unwrap();
        if s.conflict_409_every == 0 {
            return false;
        }
        s.conditional += 1;
        let hit = s.conditional.is_multiple_of(s.conflict_409_every);
        if hit {
            self.injected_409.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }
}

#[async_trait]
impl intercept::Intercept for Scripted {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    fn describe(&self) -> String {
        format!("scripted({})", self.inner.describe())
    }
    async fn around<R: Send, F>(&self, _call: Call<'_>, run: F) -> Result<R>
    where
        F: std::future::Future<Output = Result<R>> + Send,
    {
        self.before().await?;
        run.await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        if self.take_409(opts.condition != Condition::Any) {
            return Err(Self::unavailable(
                "409 ConditionalRequestConflict (nothing written)",
            ));
        }
        let fault = if key.contains("/log/") && opts.condition == Condition::Absent {
            let mut s = self.script.lock().unwrap();
            let f = s.log.pop_front();
            if f.is_some() {
                s.failing = s.brownout_after_fault;
            }
            f
        } else {
            None
        };
        let lost = || Error::Ambiguous {
            key: key.to_string(),
            message: "scripted: the answer was lost".into(),
        };
        match fault {
            None => self.inner.put(key, body, opts).await,
            Some(LogFault::LoseAnswer) => {
                self.inner.put(key, body, opts).await?;
                Err(lost())
            }
            Some(LogFault::Late) => {
                self.script.lock().unwrap().held = Some((key.to_string(), body, opts));
                Err(lost())
            }
            Some(LogFault::Duplicate) => {
                self.inner.put(key, body.clone(), opts.clone()).await?;
                self.inner.put(key, body, opts).await
            }
        }
    }
    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        if self.take_409(condition != Condition::Any) {
            return Err(Self::unavailable("409 ConditionalRequestConflict"));
        }
        self.inner.delete(key, condition).await
    }
}

fn config(dir: &TempDir, seed: u64) -> TenantDbsConfig {
    TenantDbsConfig::new(dir.path())
        .with_schema(Arc::new(|tx| {
            tx.execute_batch("CREATE TABLE ops (id TEXT PRIMARY KEY, n INTEGER NOT NULL);")
        }))
        .with_retry(policy(seed))
}

/// Inserts `id` (with `n = count + 1`), counting closure runs.
async fn insert(dbs: &TenantDbs, id: &str, runs: &Arc<AtomicU64>) -> ifmatch::tenantdb::Result<()> {
    let (id, runs) = (id.to_string(), runs.clone());
    dbs.write("t", move |tx| {
        runs.fetch_add(1, Ordering::SeqCst);
        tx.execute(
            "INSERT INTO ops (id, n) VALUES (?1, (SELECT count(*) + 1 FROM ops))",
            [&id],
        )?;
        Ok(())
    })
    .await
}

async fn ids(store: DynStore) -> Vec<String> {
    let d = TempDir::new("tdb-once-check");
    let dbs = TenantDbs::open(store, config(&d, 1)).expect("open");
    dbs.read("t", |c| {
        let mut st = c.prepare("SELECT id FROM ops ORDER BY n")?;
        let v = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    })
    .await
    .expect("read")
}

/// The bug issue 12 names: the log create lands but its answer is lost, and
/// the read-back fails too (a brownout). Within the retry budget the commit is
/// settled as ours (acknowledged, the closure run once); past it the caller
/// gets `Ambiguous`. Never a re-run, never applied twice (before the fix, a
/// brownout longer than one read's retries re-ran the closure on top of its
/// own landed commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answer_then_failed_read_back_commits_once() {
    // A budget of 4 attempts: brownouts of 5 and 6 outlast it.
    for brownout in [1, 2, 5, 6] {
        let mem: DynStore = Arc::new(MemoryStore::new());
        let s = Scripted::new(mem.clone());
        let d = TempDir::new("tdb-once-lost");
        let cfg = config(&d, 3).with_retry(policy(3).with_max_attempts(4));
        let dbs = TenantDbs::open(s.clone(), cfg).expect("open");
        let runs = Arc::new(AtomicU64::new(0));
        insert(&dbs, "a", &runs).await.expect("first");
        // A queued checkpoint's requests would eat the scripted brownout.
        dbs.flush().await;
        s.next_log_create(LogFault::LoseAnswer, brownout);
        match insert(&dbs, "b", &runs).await {
            Ok(()) => assert!(brownout <= 2, "brownout {brownout}: settled?"),
            Err(e) => {
                assert!(brownout > 2, "brownout {brownout}: {e}");
                assert_eq!(e.kind(), ErrorKind::Ambiguous, "{e}");
            }
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "brownout {brownout}: re-ran"
        );
        assert_eq!(ids(mem).await, ["a", "b"], "brownout {brownout}");
    }
}

/// Late delivery: the create is held back (the caller sees `Ambiguous`) and
/// lands just before the caller's next request; duplicated delivery: it lands
/// and the caller sees a 412 for its own write. Both are ours, applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_duplicated_delivery_commit_once() {
    for (fault, brownout) in [
        (LogFault::Late, 0),
        (LogFault::Late, 3),
        (LogFault::Duplicate, 0),
        (LogFault::Duplicate, 2),
    ] {
        let mem: DynStore = Arc::new(MemoryStore::new());
        let s = Scripted::new(mem.clone());
        let d = TempDir::new("tdb-once-late");
        let dbs = TenantDbs::open(s.clone(), config(&d, 4)).expect("open");
        let runs = Arc::new(AtomicU64::new(0));
        insert(&dbs, "a", &runs).await.expect("first");
        dbs.flush().await;
        s.next_log_create(fault, brownout);
        insert(&dbs, "b", &runs)
            .await
            .unwrap_or_else(|e| panic!("{fault:?}/{brownout}: {e}"));
        insert(&dbs, "c", &runs).await.expect("after");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "{fault:?}/{brownout}");
        assert_eq!(ids(mem).await, ["a", "b", "c"], "{fault:?}/{brownout}");
    }
}

/// A brownout longer than the retry budget leaves the outcome undecided: the
/// caller gets `Ambiguous` (never a re-run), and the commit, which did land,
/// is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecidable_outcome_is_ambiguous() {
    let mem: DynStore = Arc::new(MemoryStore::new());
    let s = Scripted::new(mem.clone());
    let d = TempDir::new("tdb-once-amb");
    let cfg = config(&d, 5).with_retry(policy(5).with_max_attempts(4));
    let dbs = TenantDbs::open(s.clone(), cfg).expect("open");
    let runs = Arc::new(AtomicU64::new(0));
    insert(&dbs, "a", &runs).await.expect("first");
    dbs.flush().await;
    s.next_log_create(LogFault::LoseAnswer, 1000);
    let e = insert(&dbs, "b", &runs).await.expect_err("undecidable");
    assert_eq!(e.kind(), ErrorKind::Ambiguous, "{e}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    s.heal();
    // The same instance catches up with its own landed commit and goes on.
    insert(&dbs, "c", &runs).await.expect("after the brownout");
    assert_eq!(ids(mem).await, ["a", "b", "c"]);
}

/// S3's 409 on every kind of conditional write (commits, creation,
/// checkpoints, head updates, collection) is retried, never read as
/// "exists", and never surfaces: every commit lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_409_is_retried_on_every_write_path() {
    for every in [2, 3, 5] {
        let mem: DynStore = Arc::new(MemoryStore::new());
        let s = Scripted::new(mem.clone());
        let (d1, d2) = (TempDir::new("tdb-409a"), TempDir::new("tdb-409b"));
        s.conflict_409_every(every);
        let cfg = |d: &TempDir, seed| {
            config(d, seed)
                .with_checkpoint_every(2)
                .with_gc_grace(Duration::ZERO)
        };
        let a = TenantDbs::open(s.clone(), cfg(&d1, 6)).expect("open");
        let b = TenantDbs::open(s.clone(), cfg(&d2, 7)).expect("open");
        let runs = Arc::new(AtomicU64::new(0));
        let mut want = Vec::new();
        for i in 0..12 {
            let (who, id) = if i % 3 == 0 {
                (&b, format!("b{i}"))
            } else {
                (&a, format!("a{i}"))
            };
            insert(who, &id, &runs)
                .await
                .unwrap_or_else(|e| panic!("every {every}, {id}: {e}"));
            want.push(id);
            // Checkpoints run in the background: wait, so 409s hit them too.
            a.flush().await;
            b.flush().await;
        }
        assert!(s.injected_409.load(Ordering::SeqCst) > 5);
        assert_eq!(ids(mem.clone()).await, want, "every {every}");
        let ckps = ifmatch::store::list_all(&*mem, "tenants/t/checkpoint/")
            .await
            .expect("list");
        assert!(ckps.len() >= 2, "checkpoints were written: {ckps:?}");
    }
}

/// `write_once` under `id`: inserts `row` and returns the row count after it;
/// counts closure runs.
async fn insert_once(
    dbs: &TenantDbs,
    id: &str,
    row: &str,
    runs: &Arc<AtomicU64>,
) -> ifmatch::tenantdb::Result<i64> {
    let (row, runs) = (row.to_string(), runs.clone());
    dbs.write_once("t", id, move |tx| {
        runs.fetch_add(1, Ordering::SeqCst);
        tx.execute(
            "INSERT INTO ops (id, n) VALUES (?1, (SELECT count(*) + 1 FROM ops))",
            [&row],
        )?;
        Ok(tx.query_row("SELECT count(*) FROM ops", [], |r| r.get(0))?)
    })
    .await
}

/// A repeated commit id returns the stored result without running: in the
/// same instance, in another with its own cache, after checkpoints and
/// collection, for as long as the retention; after it, the id is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_once_replays_until_the_retention_ends() {
    let mem: DynStore = Arc::new(MemoryStore::new());
    let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let cfg = |d: &TempDir, seed| {
        config(d, seed)
            .with_clock(Arc::new(clock.clone()))
            .with_checkpoint_every(2)
            .with_gc_grace(Duration::ZERO)
            .with_commit_id_retention(Duration::from_secs(3600))
    };
    let d = TempDir::new("tdb-once-replay");
    let dbs = TenantDbs::open(mem.clone(), cfg(&d, 8)).expect("open");
    let runs = Arc::new(AtomicU64::new(0));
    assert_eq!(insert_once(&dbs, "req-1", "a", &runs).await.unwrap(), 1);
    assert_eq!(insert_once(&dbs, "req-1", "a", &runs).await.unwrap(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "replayed, not run");
    assert_eq!(dbs.stats().replays, 1);
    // A commit that changes nothing is recorded too.
    let noop = dbs.write_once("t", "req-noop", |_| Ok(7u8)).await.unwrap();
    let again = dbs
        .write_once("t", "req-noop", |_| -> ifmatch::tenantdb::Result<u8> {
            panic!("must not run")
        })
        .await
        .unwrap();
    assert_eq!((noop, again), (7, 7));
    // Many commits later (checkpoints, collection), from a cold cache.
    for i in 0..9 {
        insert(&dbs, &format!("x{i}"), &runs).await.unwrap();
        dbs.flush().await;
        clock.advance(Duration::from_secs(60));
    }
    let logs = ifmatch::store::list_all(&*mem, "tenants/t/log/")
        .await
        .unwrap();
    assert!(
        !logs
            .iter()
            .any(|e| e.key.ends_with("/00000000000000000001")),
        "the entry of req-1 was collected: {logs:?}"
    );
    let d2 = TempDir::new("tdb-once-replay2");
    let other = TenantDbs::open(mem.clone(), cfg(&d2, 9)).expect("open");
    let before = runs.load(Ordering::SeqCst);
    assert_eq!(insert_once(&other, "req-1", "a", &runs).await.unwrap(), 1);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        before,
        "found from a cold cache"
    );
    // Past the retention, and a checkpoint later, the id is forgotten.
    clock.advance(Duration::from_secs(3600));
    for i in 0..3 {
        insert(&dbs, &format!("y{i}"), &runs).await.unwrap();
        dbs.flush().await;
    }
    let d3 = TempDir::new("tdb-once-replay3");
    let late = TenantDbs::open(mem.clone(), cfg(&d3, 10)).expect("open");
    let e = insert_once(&late, "req-1", "a", &runs)
        .await
        .expect_err("runs again: the row exists");
    assert!(matches!(e, TenantDbError::Sql { .. }), "{e}");
}

/// An idempotent commit whose outcome stayed unknown is settled by a retry
/// with the same id from another instance with its own cache: it finds the
/// landed commit and returns its result; or, when the original never lands,
/// commits once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_once_settles_an_ambiguous_commit_in_another_instance() {
    // (fault, deliver the held create before the retry?)
    for (fault, deliver) in [
        (LogFault::LoseAnswer, false),
        (LogFault::Late, true),
        (LogFault::Late, false),
    ] {
        let mem: DynStore = Arc::new(MemoryStore::new());
        let s = Scripted::new(mem.clone());
        let (d1, d2) = (TempDir::new("tdb-once-a"), TempDir::new("tdb-once-b"));
        let a = TenantDbs::open(
            s.clone(),
            config(&d1, 11).with_retry(policy(11).with_max_attempts(3)),
        )
        .expect("open a");
        let b = TenantDbs::open(mem.clone(), config(&d2, 12)).expect("open b");
        let runs = Arc::new(AtomicU64::new(0));
        insert(&a, "first", &runs).await.unwrap();
        // No background request may deliver the held create behind our back.
        a.flush().await;
        s.next_log_create(fault, 1000);
        let e = insert_once(&a, "req-9", "r", &runs)
            .await
            .expect_err("undecided");
        assert_eq!(e.kind(), ErrorKind::Ambiguous, "{fault:?}: {e}");
        assert_eq!(a.stats().undecided, 1);
        s.heal();
        if deliver {
            s.deliver_held().await;
        }
        // The client retries the same id through another instance.
        let n = insert_once(&b, "req-9", "r", &runs).await.unwrap();
        assert_eq!(n, 2, "{fault:?}/{deliver}");
        let landed_first = fault == LogFault::LoseAnswer || deliver;
        let want_runs = if landed_first { 2 } else { 3 };
        assert_eq!(
            runs.load(Ordering::SeqCst),
            want_runs,
            "{fault:?}/{deliver}"
        );
        // A late original that arrives now loses to the retry's commit.
        s.deliver_held().await;
        assert!(!s.drop_held());
        assert_eq!(
            ids(mem.clone()).await,
            ["first", "r"],
            "{fault:?}/{deliver}"
        );
        // The first instance recognises its own entry, or another's at its seq.
        insert(&a, "after", &runs).await.unwrap();
        let st = a.stats();
        if landed_first {
            assert_eq!((st.undecided_landed, st.undecided_lost), (1, 0));
        } else {
            assert_eq!((st.undecided_landed, st.undecided_lost), (0, 1));
        }
        assert_eq!(insert_once(&a, "req-9", "r", &runs).await.unwrap(), 2);
    }
}

/// `execute_once`: a SQL batch retried with the same commit id through
/// another instance returns the original results and inserts nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_once_returns_the_original_results() {
    use ifmatch::tenantdb::{Sandbox, SqlStatement};
    let mem: DynStore = Arc::new(MemoryStore::new());
    let (d1, d2) = (TempDir::new("tdb-exec-a"), TempDir::new("tdb-exec-b"));
    let a = TenantDbs::open(mem.clone(), config(&d1, 13)).expect("open a");
    let b = TenantDbs::open(mem.clone(), config(&d2, 14)).expect("open b");
    let batch = || {
        vec![
            SqlStatement::new("INSERT INTO ops (id, n) VALUES ('x', 1)"),
            SqlStatement::new("SELECT count(*) AS c FROM ops"),
        ]
    };
    let sb = Sandbox::default();
    let first = a.execute_once("t", batch(), &sb, "batch-1").await.unwrap();
    assert!(!first.read_only);
    let again = b.execute_once("t", batch(), &sb, "batch-1").await.unwrap();
    assert_eq!(again, first);
    assert_eq!(b.stats().replays, 1);
    // A plain execute of the same batch runs it (and fails: the row exists).
    assert!(b.execute("t", batch(), &sb).await.is_err());
    assert_eq!(ids(mem).await, ["x"]);
}
