//! The tenant database suite, written once; `backend_tests!` instantiates it per backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::clock::SharedRng;
use ifmatch::retry::RetryPolicy;
use ifmatch::store::intercept::{self, Call, Op};
use ifmatch::store::{PutOptions, Store, Version};
use ifmatch::tenantdb::{TenantDbError, TenantDbs, TenantDbsConfig, anki};
use ifmatch::{DynStore, Result};

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(crate::env::unique(prefix));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts requests and uploaded bytes; can simulate a crash right after a log entry lands.
#[derive(Debug)]
pub struct Counting {
    inner: DynStore,
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub gets: AtomicU64,
    pub heads: AtomicU64,
    pub deletes: AtomicU64,
    pub lists: AtomicU64,
    pub crash_after_log_put: AtomicBool,
    /// A directory to remove when the store goes (a `file://` store's root).
    _keep: Option<TempDir>,
}

impl Counting {
    pub fn new(inner: DynStore) -> Arc<Counting> {
        Self::keeping(inner, None)
    }
    /// Like [`Counting::new`], removing `dir` when the store is dropped.
    pub fn keeping(inner: DynStore, dir: Option<TempDir>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            puts: AtomicU64::new(0),
            put_bytes: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            crash_after_log_put: AtomicBool::new(false),
            _keep: dir,
        })
    }
    pub fn requests(&self) -> u64 {
        [
            &self.puts,
            &self.gets,
            &self.heads,
            &self.deletes,
            &self.lists,
        ]
        .iter()
        .map(|a| a.load(Ordering::SeqCst))
        .sum()
    }
    pub fn uploads(&self) -> (u64, u64) {
        (
            self.puts.load(Ordering::SeqCst),
            self.put_bytes.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl intercept::Intercept for Counting {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    fn describe(&self) -> String {
        format!("counting({})", self.inner.describe())
    }
    async fn around<R: Send, F>(&self, call: Call<'_>, run: F) -> Result<R>
    where
        F: std::future::Future<Output = Result<R>> + Send,
    {
        let counter = match call.op {
            Op::Get | Op::GetIfChanged => &self.gets,
            Op::Head => &self.heads,
            Op::Put => {
                self.put_bytes.fetch_add(call.bytes, Ordering::SeqCst);
                &self.puts
            }
            Op::Delete => &self.deletes,
            Op::List => &self.lists,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        run.await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        let v = self.inner.put(key, body, opts).await?;
        if key.contains("/log/") && self.crash_after_log_put.load(Ordering::SeqCst) {
            panic!("simulated crash after the log entry landed");
        }
        Ok(v)
    }
}

/// A retry policy fit for tests: many fast attempts, seeded jitter, no deadline.
pub fn policy(seed: u64) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(60)
        .with_delays(Duration::from_millis(1), Duration::from_millis(20))
        .with_deadline(None)
        .with_rng(SharedRng::seeded(seed))
}

pub fn config(dir: &TempDir) -> TenantDbsConfig {
    TenantDbsConfig::new(dir.path())
        .with_schema(anki::schema_hook())
        .with_retry(policy(1))
}

pub fn open(store: DynStore, dir: &TempDir) -> TenantDbs {
    TenantDbs::open(store, config(dir)).expect("open tenant dbs")
}

pub async fn add_note(dbs: &TenantDbs, tenant: &str, id: i64) {
    dbs.write(tenant, move |tx| {
        Ok(anki::add_note(tx, id, &format!("note {id}"))?)
    })
    .await
    .expect("add note");
}

pub async fn note_ids(dbs: &TenantDbs, tenant: &str) -> Vec<i64> {
    dbs.read(tenant, |c| {
        let mut st = c.prepare("SELECT id FROM notes ORDER BY id")?;
        let ids = st
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids)
    })
    .await
    .expect("read notes")
}

pub async fn integrity_ok(dbs: &TenantDbs, tenant: &str) {
    let r: String = dbs
        .read(tenant, |c| {
            Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
        })
        .await
        .expect("integrity");
    assert_eq!(r, "ok");
}

/// Seed test 2.1: a new tenant gets the Anki schema and its collection row, stored.
pub async fn new_tenant_gets_schema(store: DynStore) {
    let dir = TempDir::new("tdb21");
    let dbs = open(store.clone(), &dir);
    assert!(matches!(
        dbs.read("new-user-001", |_| Ok(())).await,
        Err(TenantDbError::NotFound { .. })
    ));
    dbs.write("new-user-001", |_| Ok(())).await.expect("create");
    let tables: Vec<String> = dbs
        .read("new-user-001", |c| {
            let mut st =
                c.prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")?;
            let v = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(v)
        })
        .await
        .expect("tables");
    assert_eq!(tables, ["cards", "col", "notes", "revlog"]);
    let cols: i64 = dbs
        .read("new-user-001", |c| {
            Ok(c.query_row("SELECT count(*) FROM col", [], |r| r.get(0))?)
        })
        .await
        .expect("col");
    assert_eq!(cols, 1);
    let ck = store
        .head("tenants/new-user-001/checkpoint/00000000000000000000")
        .await
        .expect("the creation checkpoint is stored");
    assert!(ck.size > 4096);
    // Another "container" sees the same schema.
    let dir2 = TempDir::new("tdb21b");
    let other = open(store, &dir2);
    assert_eq!(note_ids(&other, "new-user-001").await, Vec::<i64>::new());
    integrity_ok(&other, "new-user-001").await;
}

/// Seed test 2.2: data persists across three separate instances ("containers").
pub async fn persistence_across_three_containers(store: DynStore) {
    let (d1, d2, d3) = (
        TempDir::new("tdb22a"),
        TempDir::new("tdb22b"),
        TempDir::new("tdb22c"),
    );
    let c1 = open(store.clone(), &d1);
    add_note(&c1, "rw-002", 1).await;
    let c2 = open(store.clone(), &d2);
    assert_eq!(note_ids(&c2, "rw-002").await, [1]);
    let c3 = open(store.clone(), &d3);
    add_note(&c3, "rw-002", 2).await;
    assert_eq!(note_ids(&c3, "rw-002").await, [1, 2]);
    // The first container catches up from its cache with the log tail.
    assert_eq!(note_ids(&c1, "rw-002").await, [1, 2]);
    assert!(c1.stats().cache_hits >= 1);
    integrity_ok(&c1, "rw-002").await;
}

/// Seed test 4.1: a stale commit is rejected — the winner's note present, the
/// loser's absent — and then the retry lands it.
pub async fn stale_commit_rejected_then_retried(store: DynStore) {
    let (da, db) = (TempDir::new("tdb41a"), TempDir::new("tdb41b"));
    let a = open(store.clone(), &da);
    for id in 1..=5 {
        add_note(&a, "conflict-41", id).await;
    }
    // B trusts its cache for an hour and gets one attempt only.
    let b_cfg = config(&db)
        .with_max_staleness(Duration::from_secs(3600))
        .with_retry(policy(2).with_max_attempts(1));
    let b = TenantDbs::open(store.clone(), b_cfg).expect("open b");
    assert_eq!(note_ids(&b, "conflict-41").await.len(), 5);
    add_note(&a, "conflict-41", 100).await;
    let runs = Arc::new(AtomicU64::new(0));
    let r2 = runs.clone();
    let err = b
        .write("conflict-41", move |tx| {
            r2.fetch_add(1, Ordering::SeqCst);
            Ok(anki::add_note(tx, 200, "loser")?)
        })
        .await
        .expect_err("a stale commit must be rejected");
    assert!(
        matches!(err, TenantDbError::Conflict { conflicts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(b.stats().conflicts, 1);
    let ids = note_ids(&a, "conflict-41").await;
    assert!(ids.contains(&100), "the winner's note is there");
    assert!(!ids.contains(&200), "the loser's note is not");
    assert_eq!(ids.len(), 6);
    // B has caught up; with a retry budget its write now lands.
    let b2 = {
        drop(b);
        TenantDbs::open(store.clone(), config(&db)).expect("reopen b")
    };
    add_note(&b2, "conflict-41", 200).await;
    let ids = note_ids(&a, "conflict-41").await;
    assert_eq!(ids, [1, 2, 3, 4, 5, 100, 200]);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Seed test 4.2: 10 writers in separate instances each add a unique note at
/// once: all 10 land, none is lost, and the conflicts are counted.
pub async fn ten_concurrent_writers(store: DynStore) {
    let base = TempDir::new("tdb42base");
    let setup = open(store.clone(), &base);
    for id in 1..=5 {
        add_note(&setup, "concurrent-42", id).await;
    }
    let dirs: Vec<TempDir> = (0..10)
        .map(|i| TempDir::new(&format!("tdb42-{i}")))
        .collect();
    let mut workers = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        // Every worker warms its cache, then trusts it: all start from the same
        // seq, so all but one first attempt must conflict.
        let cfg = config(d)
            .with_max_staleness(Duration::from_secs(3600))
            .with_retry(policy(100 + i as u64));
        let dbs = TenantDbs::open(store.clone(), cfg).expect("open worker");
        assert_eq!(note_ids(&dbs, "concurrent-42").await.len(), 5);
        workers.push(dbs);
    }
    let runs = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, dbs) in workers.iter().enumerate() {
        let dbs = dbs.clone();
        let runs = runs.clone();
        tasks.push(tokio::spawn(async move {
            let id = 1000 + i as i64;
            dbs.write("concurrent-42", move |tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(anki::add_note(tx, id, "concurrent")?)
            })
            .await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("every write lands");
    }
    let ids = note_ids(&setup, "concurrent-42").await;
    let mut want: Vec<i64> = (1..=5).collect();
    want.extend(1000..1010);
    assert_eq!(ids, want, "none lost, none doubled");
    let conflicts: u64 = workers.iter().map(|w| w.stats().conflicts).sum();
    let retries: u64 = workers.iter().map(|w| w.stats().retries).sum();
    assert!(
        conflicts >= 9,
        "stale starts must conflict, got {conflicts}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 10 + retries);
    println!("4.2: 10 writers, {conflicts} conflicts, {retries} retries");
    integrity_ok(&setup, "concurrent-42").await;
}

/// Writers to one tenant in one instance queue instead of conflicting.
pub async fn one_instance_writers_queue(store: DynStore) {
    let d = TempDir::new("tdbq");
    let dbs = open(store, &d);
    add_note(&dbs, "queue", 1).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let dbs = dbs.clone();
        tasks.push(tokio::spawn(async move {
            add_note(&dbs, "queue", 10 + i).await;
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(note_ids(&dbs, "queue").await.len(), 9);
    assert_eq!(dbs.stats().conflicts, 0);
}

/// Eviction under a tiny budget: least recently used first; data survives.
pub async fn eviction_under_tiny_budget(store: DynStore) {
    let d = TempDir::new("tdbev");
    let probe = TempDir::new("tdbev-probe");
    let p = open(store.clone(), &probe);
    add_note(&p, "ev-a", 1).await;
    let one = p.cache_bytes();
    assert!(one > 0);
    drop(p);
    // Room for two tenants, not three.
    let cfg = config(&d).with_cache_budget(one * 2 + one / 2);
    let dbs = TenantDbs::open(store, cfg).expect("open");
    add_note(&dbs, "ev-a", 2).await;
    add_note(&dbs, "ev-b", 1).await;
    add_note(&dbs, "ev-c", 1).await;
    assert!(dbs.stats().evictions >= 1);
    assert!(!dbs.is_cached("ev-a"), "the least recently used goes first");
    assert!(dbs.is_cached("ev-c"));
    assert!(dbs.cache_bytes() <= one * 2 + one / 2);
    let misses = dbs.stats().cache_misses;
    assert_eq!(note_ids(&dbs, "ev-a").await, [1, 2]);
    assert_eq!(dbs.stats().cache_misses, misses + 1);
}

/// Reads never upload: warm reads cost one bodiless request, none within the staleness window.
pub async fn reads_make_zero_uploads(store: DynStore) {
    let counting = Counting::new(store);
    let d = TempDir::new("tdbro");
    let dbs = open(counting.clone(), &d);
    add_note(&dbs, "ro", 1).await;
    // Background checkpoints make requests too: let them finish first.
    dbs.flush().await;
    let (puts, _) = counting.uploads();
    let before = counting.requests();
    for _ in 0..10 {
        assert_eq!(note_ids(&dbs, "ro").await, [1]);
    }
    let per_read = (counting.requests() - before) as f64 / 10.0;
    println!("requests per warm read (max staleness 0): {per_read}");
    assert_eq!(per_read, 1.0);
    // A cold read in another instance downloads but uploads nothing either.
    let d2 = TempDir::new("tdbro2");
    let cfg = config(&d2).with_max_staleness(Duration::from_secs(60));
    let other = TenantDbs::open(counting.clone(), cfg).expect("open");
    assert_eq!(note_ids(&other, "ro").await, [1]);
    let before = counting.requests();
    for _ in 0..10 {
        assert_eq!(note_ids(&other, "ro").await, [1]);
    }
    println!(
        "requests per warm read (max staleness 60 s): {}",
        (counting.requests() - before) as f64 / 10.0
    );
    assert_eq!(counting.requests(), before);
    // A read-only "write" (it changes nothing) uploads nothing.
    dbs.write("ro", |tx| {
        Ok(tx.query_row("SELECT count(*) FROM notes", [], |r| r.get::<_, i64>(0))?)
    })
    .await
    .expect("noop write");
    assert_eq!(
        counting.uploads().0,
        puts,
        "reads and no-op writes upload nothing"
    );
    // The stored version is unchanged: the log has exactly one commit.
    assert!(
        counting
            .head("tenants/ro/log/00000000000000000002")
            .await
            .is_err()
    );
    // A read cannot write.
    let err = dbs
        .read("ro", |c| Ok(c.execute("DELETE FROM notes", [])?))
        .await
        .expect_err("query_only");
    assert!(matches!(err, TenantDbError::Sql { .. }));
    assert_eq!(counting.uploads().0, puts);
}

/// A 20 MB database: one-row commits upload less than 64 KB each.
pub async fn big_database_small_commits(store: DynStore) {
    let counting = Counting::new(store);
    let d = TempDir::new("tdbbig");
    let dbs = open(counting.clone(), &d);
    dbs.write("big", |tx| {
        tx.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 5000)
             INSERT INTO revlog SELECT i, i, 0, 3, 1, 1, 2500, length(randomblob(3900)), 1 FROM n;
             CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 5000)
             INSERT INTO blobs SELECT i, randomblob(3900) FROM n;",
        )?;
        Ok(())
    })
    .await
    .expect("fill");
    dbs.flush().await;
    let info = dbs.info("big").await.expect("info");
    assert!(info.bytes >= 20_000_000, "{info:?}");
    let checkpoints = dbs.stats().checkpoints;
    let mut worst = 0;
    for i in 0..10 {
        let (_, before) = counting.uploads();
        add_note(&dbs, "big", 10_000 + i).await;
        let (_, after) = counting.uploads();
        worst = worst.max(after - before);
    }
    println!(
        "20 MB database ({} pages of {} bytes): worst one-row commit uploaded {worst} bytes",
        info.pages, info.page_size
    );
    assert!(worst < 64 * 1024, "a one-row commit uploaded {worst} bytes");
    assert_eq!(
        dbs.stats().checkpoints,
        checkpoints,
        "no checkpoint in between"
    );
    // Another instance sees it all.
    let d2 = TempDir::new("tdbbig2");
    let other = open(counting.clone(), &d2);
    assert_eq!(note_ids(&other, "big").await.len(), 10);
    integrity_ok(&other, "big").await;
}

/// A crash between the upload and the local bookkeeping: the next open repairs it.
pub async fn crash_between_upload_and_bookkeeping(store: DynStore) {
    let counting = Counting::new(store.clone());
    let d = TempDir::new("tdbcrash");
    let dbs = open(counting.clone(), &d);
    add_note(&dbs, "crash", 1).await;
    counting.crash_after_log_put.store(true, Ordering::SeqCst);
    let task = {
        let dbs = dbs.clone();
        tokio::spawn(async move { add_note(&dbs, "crash", 2).await })
    };
    assert!(task.await.is_err(), "the simulated crash");
    counting.crash_after_log_put.store(false, Ordering::SeqCst);
    dbs.flush().await;
    drop(dbs);
    // The "restarted process" finds a WAL and a sidecar behind the store: it re-fetches.
    let again = open(counting.clone(), &d);
    assert_eq!(note_ids(&again, "crash").await, [1, 2]);
    assert_eq!(again.stats().cache_misses, 1);
    add_note(&again, "crash", 3).await;
    integrity_ok(&again, "crash").await;

    // A corrupted cache file is detected and re-fetched, never served.
    again.flush().await;
    drop(again);
    let db_file = std::fs::read_dir(d.path())
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "db"))
        .expect("cached db");
    let mut bytes = std::fs::read(&db_file).expect("read");
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(&db_file, &bytes).expect("corrupt");
    let again = open(counting, &d);
    assert_eq!(note_ids(&again, "crash").await, [1, 2, 3]);
    assert_eq!(again.stats().cache_misses, 1);
}

/// Failing closures: SQL errors are typed, panics neither upload nor poison.
pub async fn failures_roll_back(store: DynStore) {
    let counting = Counting::new(store);
    let d = TempDir::new("tdbfail");
    let dbs = open(counting.clone(), &d);
    add_note(&dbs, "fail", 1).await;
    dbs.flush().await;
    let (puts, _) = counting.uploads();
    let err = dbs
        .write("fail", |tx| {
            Ok(tx.execute("INSERT INTO nope VALUES (1)", [])?)
        })
        .await
        .expect_err("bad sql");
    match &err {
        TenantDbError::Sql { message, .. } => {
            assert!(message.contains("no such table"), "{message}")
        }
        other => panic!("expected Sql, got {other:?}"),
    }
    let err = dbs
        .write("fail", |tx| -> ifmatch::tenantdb::Result<()> {
            anki::add_note(tx, 2, "half")?;
            panic!("boom");
        })
        .await
        .expect_err("panic");
    assert!(matches!(err, TenantDbError::Panicked(ref m) if m.contains("boom")));
    let err = dbs
        .write("fail", |tx| -> ifmatch::tenantdb::Result<()> {
            anki::add_note(tx, 3, "aborted")?;
            Err(TenantDbError::Aborted("changed my mind".into()))
        })
        .await
        .expect_err("abort");
    assert!(matches!(err, TenantDbError::Aborted(_)));
    assert_eq!(counting.uploads().0, puts, "failed closures upload nothing");
    assert_eq!(note_ids(&dbs, "fail").await, [1]);
    add_note(&dbs, "fail", 4).await;
    assert_eq!(note_ids(&dbs, "fail").await, [1, 4]);
    // Bad tenant ids go through key validation.
    for bad in [
        "",
        "../x",
        "a//b",
        "a/log/b",
        "a/head",
        "x/checkpoint",
        "/abs",
    ] {
        let e = dbs.write(bad, |_| Ok(())).await.expect_err(bad);
        assert_eq!(e.kind(), ifmatch::ErrorKind::Invalid, "{bad}: {e}");
    }
    // A reserved word as the first segment is an ordinary tenant (a user
    // called `log`), and keeps its notes apart from its neighbours'.
    for name in ["log", "head", "checkpoint", "log/x"] {
        add_note(&dbs, name, 7).await;
        assert_eq!(note_ids(&dbs, name).await, [7], "{name}");
    }
    assert_eq!(note_ids(&dbs, "fail").await, [1, 4]);
}

/// Export writes a standalone file; import creates a tenant from one.
pub async fn export_and_import(store: DynStore) {
    let d = TempDir::new("tdbx");
    let dbs = open(store, &d);
    add_note(&dbs, "exp", 1).await;
    add_note(&dbs, "exp", 2).await;
    let out = d.path().join("export.sqlite");
    dbs.export("exp", &out).await.expect("export");
    {
        let c = rusqlite::Connection::open(&out).expect("open export");
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(ok, "ok");
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "delete");
        let n: i64 = c
            .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2);
    }
    if let Ok(o) = std::process::Command::new("sqlite3")
        .arg(&out)
        .arg("PRAGMA integrity_check;")
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok");
    }
    dbs.import("imp", &out, false).await.expect("import");
    assert_eq!(note_ids(&dbs, "imp").await, [1, 2]);
    let e = dbs.import("imp", &out, false).await.expect_err("exists");
    assert!(matches!(e, TenantDbError::Exists { .. }));
    add_note(&dbs, "imp", 3).await;
    dbs.import("imp", &out, true).await.expect("forced import");
    assert_eq!(note_ids(&dbs, "imp").await, [1, 2]);
    let q = dbs
        .query("imp", "SELECT id, sfld FROM notes ORDER BY id")
        .await
        .expect("query");
    assert_eq!(q.columns, ["id", "sfld"]);
    assert_eq!(q.rows[1], ["2", "note 2"]);
}

/// Checkpoints bound the replay; garbage collection removes what no checkpoint needs.
pub async fn checkpoints_and_gc(store: DynStore) {
    let counting = Counting::new(store.clone());
    let (d, d_old) = (TempDir::new("tdbgc"), TempDir::new("tdbgc-old"));
    let cfg = |dir: &TempDir| {
        config(dir)
            .with_checkpoint_every(3)
            .with_gc_grace(Duration::ZERO)
    };
    let dbs = TenantDbs::open(counting.clone(), cfg(&d)).expect("open");
    add_note(&dbs, "gc", 1).await;
    let old = TenantDbs::open(counting.clone(), cfg(&d_old)).expect("open old");
    assert_eq!(note_ids(&old, "gc").await, [1]);
    for id in 2..=10 {
        add_note(&dbs, "gc", id).await;
        // Checkpoints run in the background: wait, so the schedule is deterministic.
        dbs.flush().await;
    }
    let logs = ifmatch::store::list_all(&*store, "tenants/gc/log/")
        .await
        .expect("list");
    let ckps = ifmatch::store::list_all(&*store, "tenants/gc/checkpoint/")
        .await
        .expect("list");
    let seqs = |v: &[ifmatch::store::ListEntry]| {
        v.iter()
            .map(|e| {
                e.key
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .expect("numbered key")
            })
            .collect::<Vec<_>>()
    };
    // 10 commits; with no grace, everything before the newest checkpoint is
    // gone but the creation checkpoint, and the log after it is intact.
    let ckps = seqs(&ckps);
    let newest = *ckps.last().expect("checkpoints");
    assert!(newest >= 5, "{ckps:?}");
    assert_eq!(ckps, [0, newest]);
    assert_eq!(seqs(&logs), (newest + 1..=10).collect::<Vec<_>>());
    assert!(dbs.stats().checkpoints >= 3);
    // A fresh open replays only the tail; an instance whose copy predates the floor reloads.
    let d2 = TempDir::new("tdbgc-new");
    let fresh = TenantDbs::open(counting.clone(), cfg(&d2)).expect("open fresh");
    assert_eq!(note_ids(&fresh, "gc").await, (1..=10).collect::<Vec<_>>());
    assert_eq!(note_ids(&old, "gc").await, (1..=10).collect::<Vec<_>>());
    add_note(&old, "gc", 11).await;
    assert_eq!(note_ids(&dbs, "gc").await.len(), 11);
    integrity_ok(&dbs, "gc").await;
}

/// The cache survives a restart and is re-validated on first use.
pub async fn cache_survives_restart(store: DynStore) {
    let counting = Counting::new(store);
    let d = TempDir::new("tdbrestart");
    let dbs = open(counting.clone(), &d);
    add_note(&dbs, "restart", 1).await;
    assert!(matches!(
        TenantDbs::open(counting.clone(), config(&d)),
        Err(TenantDbError::CacheInUse)
    ));
    dbs.flush().await;
    drop(dbs);
    let again = open(counting.clone(), &d);
    let gets = counting.gets.load(Ordering::SeqCst);
    assert_eq!(note_ids(&again, "restart").await, [1]);
    assert_eq!(again.stats().cache_hits, 1);
    assert_eq!(again.stats().cache_misses, 0);
    assert_eq!(
        counting.gets.load(Ordering::SeqCst) - gets,
        1,
        "one check, no download"
    );
}

/// Tenants unused for longer than the maximum age leave the cache.
pub async fn eviction_by_age(store: DynStore) {
    let d = TempDir::new("tdbage");
    let clock = ifmatch::clock::ManualClock::new(std::time::SystemTime::now());
    let cfg = config(&d)
        .with_clock(Arc::new(clock.clone()))
        .with_cache_max_age(Duration::from_secs(3600));
    let dbs = TenantDbs::open(store, cfg).expect("open");
    add_note(&dbs, "age-a", 1).await;
    assert!(dbs.is_cached("age-a"));
    clock.advance(Duration::from_secs(2 * 3600));
    add_note(&dbs, "age-b", 1).await;
    assert!(!dbs.is_cached("age-a"), "too old");
    assert!(dbs.is_cached("age-b"));
    assert_eq!(dbs.stats().evictions, 1);
    assert_eq!(note_ids(&dbs, "age-a").await, [1]);
}

/// Under injected errors and lost responses, concurrent writers in separate
/// instances lose nothing and apply nothing twice.
pub async fn faults_lose_nothing(store: DynStore) {
    use ifmatch::store::fault::{FaultConfig, FaultStore};
    let fault = Arc::new(FaultStore::new(
        store.clone(),
        FaultConfig {
            error_rate: 0.05,
            lost_response_rate: 0.2,
            ..FaultConfig::default()
        },
        SharedRng::seeded(9),
    ));
    let faulty: DynStore = fault.clone();
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("tdbfault{i}")))
        .collect();
    let mut tasks = Vec::new();
    for (w, d) in dirs.iter().enumerate() {
        let dbs = TenantDbs::open(faulty.clone(), config(d).with_retry(policy(50 + w as u64)))
            .expect("open");
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let id = (w as i64) * 100 + i;
                dbs.write("faulty", move |tx| Ok(anki::add_note(tx, id, "f")?))
                    .await
                    .expect("write under faults");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let d = TempDir::new("tdbfault-check");
    let check = open(store, &d);
    let ids = note_ids(&check, "faulty").await;
    let mut want: Vec<i64> = (0..3)
        .flat_map(|w| (0..5).map(move |i| w * 100 + i))
        .collect();
    want.sort();
    assert_eq!(ids, want);
    integrity_ok(&check, "faulty").await;
    let c = fault.counters();
    assert!(c.lost_responses.load(Ordering::SeqCst) > 0);
    assert!(c.errors.load(Ordering::SeqCst) > 0);
}

/// Writes cancelled at random points (a caller's timeout) leave a cache that
/// agrees with the store: a later write commits on it, every completed write
/// is there, and the instance's view matches a fresh one.
pub async fn cancelled_writes_stay_consistent(store: DynStore) {
    use ifmatch::store::fault::{FaultConfig, FaultStore};
    let slow: DynStore = Arc::new(FaultStore::new(
        store.clone(),
        FaultConfig {
            latency: (Duration::from_millis(0), Duration::from_millis(6)),
            ..FaultConfig::default()
        },
        SharedRng::seeded(4),
    ));
    let d = TempDir::new("tdbcancel");
    let dbs = open(slow, &d);
    add_note(&dbs, "cancel", 0).await;
    let mut done = vec![0i64];
    for i in 1..=20i64 {
        let w = dbs.write("cancel", move |tx| Ok(anki::add_note(tx, i, "c")?));
        let limit = Duration::from_millis((i as u64 * 11) % 17 * 4 + 1);
        if let Ok(r) = tokio::time::timeout(limit, w).await {
            r.expect("write");
            done.push(i);
        }
    }
    // A cancelled write's create may still be on its way (file:// puts run on
    // blocking threads that outlive the dropped future) and land after the
    // cancellation: a late delivery, which can only take the seq it claimed.
    // One completed write claims a seq at or past every such claim, so after
    // it nothing more can land and the two views must agree exactly.
    add_note(&dbs, "cancel", 21).await;
    done.push(21);
    let mine = note_ids(&dbs, "cancel").await;
    for id in &done {
        assert!(mine.contains(id), "completed write {id} missing");
    }
    let d2 = TempDir::new("tdbcancel2");
    let fresh = open(store, &d2);
    assert_eq!(note_ids(&fresh, "cancel").await, mine);
    integrity_ok(&dbs, "cancel").await;
    println!("cancelled writes: {} of 20 completed", done.len() - 1);
}

macro_rules! backend_tests {
    ($store:expr, big = $big:expr) => {
        macro_rules! case {
            ($name:ident) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(s) = $store.await else { return };
                    crate::suite::$name(s).await;
                }
            };
        }
        case!(new_tenant_gets_schema);
        case!(persistence_across_three_containers);
        case!(stale_commit_rejected_then_retried);
        case!(ten_concurrent_writers);
        case!(one_instance_writers_queue);
        case!(eviction_under_tiny_budget);
        case!(reads_make_zero_uploads);
        case!(crash_between_upload_and_bookkeeping);
        case!(failures_roll_back);
        case!(export_and_import);
        case!(checkpoints_and_gc);
        case!(cache_survives_restart);
        case!(eviction_by_age);
        case!(faults_lose_nothing);
        case!(cancelled_writes_stay_consistent);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn big_database_small_commits() {
            if !$big {
                return;
            }
            let Some(s) = $store.await else { return };
            crate::suite::big_database_small_commits(s).await;
        }
    };
}
pub(crate) use backend_tests;
