//! The `tenantdb` scenario: seed 003's tests 2.3, 3.1 and 3.2 on a 10-note
//! Anki database, ours against the seed's design on the same store.
//!
//! - **ours** ([`ifmatch::tenantdb::TenantDbs`]): a warm read checks freshness
//!   with one GET that transfers no body and uploads nothing; a commit uploads
//!   only the pages it changed (plus, now and then, a checkpoint).
//! - **the seed's design** (day 3): a local copy and its ETag; every request
//!   HEADs the object, downloads it when the ETag changed, runs the query on
//!   the local file and then **always uploads the whole file** (unconditionally),
//!   reads included.
//!
//! Figures: `cold_ms` (median of fresh-cache opens, test 3.1), `warm_read_ms`
//! and `warm_write_ms` (medians over `--requests`, test 3.2),
//! `requests_per_warm_read`, `uploads_per_read`, `bytes_up_per_write` (mean,
//! checkpoints included), and the seed's `naive_*` counterparts. With
//! `--db-mb M` both databases are padded to about M MiB first, to show bytes
//! per commit against database size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use ifmatch::store::{PutOptions, Version};
use ifmatch::tenantdb::{TenantDbError, TenantDbStats, TenantDbs, TenantDbsConfig, anki};
use ifmatch::{DynStore, Error};
use serde::Serialize;

use super::{median, ms, progress, ratio, require, round2};

/// `ifmatch bench tenantdb` arguments.
#[derive(Debug, Clone, Args)]
pub struct TenantDbArgs {
    /// Warm reads and warm writes measured (each), as in seed 003's test 3.2.
    #[arg(long, default_value_t = 50)]
    pub requests: usize,
    /// Pad the database to about this many MiB (0: just the 10 notes).
    #[arg(long, default_value_t = 0)]
    pub db_mb: u64,
    /// Cold opens measured (each from an empty local cache).
    #[arg(long, default_value_t = 3)]
    pub cold: usize,
    /// Run once per database size (MiB, comma-separated; 0 is the bare 10
    /// notes) instead of once at `--db-mb`, and print every run and its ratios.
    #[arg(long, value_delimiter = ',', value_name = "MIB,...")]
    pub sizes: Vec<u64>,
    /// With `--sizes`: also write an SVG chart of warm-write latency against
    /// database size (ifmatch beside the seed's design) to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

impl Default for TenantDbArgs {
    fn default() -> Self {
        TenantDbArgs {
            requests: 50,
            db_mb: 0,
            cold: 3,
            sizes: Vec::new(),
            svg: None,
        }
    }
}

/// The scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct TenantDbReport {
    /// Always `"tenantdb"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// Warm reads and writes measured (each).
    pub requests: usize,
    /// The padding asked for, MiB.
    pub db_mb: u64,
    /// Notes in the database.
    pub notes: usize,
    /// Size of our database file, bytes (after the run).
    pub db_bytes: u64,
    /// Median open + first query from an empty cache.
    pub cold_ms: f64,
    /// Median warm read (a cached copy, checked for freshness).
    pub warm_read_ms: f64,
    /// Median warm write (one note's review added and committed).
    pub warm_write_ms: f64,
    /// Store requests per warm read.
    pub requests_per_warm_read: f64,
    /// Store requests per warm write, the write's own (checkpoints excluded).
    pub requests_per_warm_write: f64,
    /// Background requests per warm write (checkpoints, head updates, GC),
    /// made after the writes were acknowledged.
    pub background_requests_per_write: f64,
    /// Checkpoints uploaded per warm write.
    pub checkpoints_per_write: f64,
    /// Uploads (PUTs) per warm read: 0 by design.
    pub uploads_per_read: f64,
    /// Mean bytes uploaded per write, checkpoints included.
    pub bytes_up_per_write: f64,
    /// The seed's design: median cold request (HEAD, GET, query, PUT).
    pub naive_cold_ms: f64,
    /// The seed's design: median warm read (HEAD, query, PUT of the whole file).
    pub naive_warm_read_ms: f64,
    /// The seed's design: median warm write.
    pub naive_warm_write_ms: f64,
    /// The seed's design: store requests per warm read.
    pub naive_requests_per_warm_read: f64,
    /// The seed's design: store requests per warm write.
    pub naive_requests_per_warm_write: f64,
    /// The seed's design: uploads per warm read.
    pub naive_uploads_per_read: f64,
    /// The seed's design: mean bytes uploaded per write (the whole file).
    pub naive_bytes_up_per_write: f64,
    /// Size of the seed's database file, bytes (after the run).
    pub naive_db_bytes: u64,
    /// `naive_warm_read_ms / warm_read_ms`.
    pub warm_read_speedup: f64,
    /// `naive_warm_write_ms / warm_write_ms`.
    pub warm_write_speedup: f64,
    /// `naive_cold_ms / cold_ms`.
    pub cold_speedup: f64,
    /// `naive_bytes_up_per_write / bytes_up_per_write`.
    pub upload_bytes_ratio: f64,
}

const NOTES: usize = 10;
const TENANT: &str = "bench";

fn tdb(e: TenantDbError) -> Error {
    Error::other("tenant database", e)
}

fn sum_requests(s: &TenantDbStats) -> u64 {
    s.requests_get + s.requests_put + s.requests_delete + s.requests_list
}

/// Runs the scenario under a fresh prefix of `store` and removes its keys afterwards.
pub async fn run(
    store: DynStore,
    args: &TenantDbArgs,
    json: bool,
) -> Result<TenantDbReport, Error> {
    require(args.requests >= 1, "--requests must be at least 1")?;
    require(args.cold >= 1, "--cold must be at least 1")?;
    require(args.db_mb <= 1024, "--db-mb must be at most 1024")?;
    let base = format!("ifmatch-bench/tenantdb/{}", super::run_id());
    let dir =
        tempfile::tempdir().map_err(|e| Error::other("cannot create a temporary directory", e))?;
    let res = run_in(&store, args, json, &base, dir.path()).await;
    super::cleanup(&store, &format!("{base}/")).await;
    res
}

async fn run_in(
    store: &DynStore,
    args: &TenantDbArgs,
    json: bool,
    base: &str,
    dir: &Path,
) -> Result<TenantDbReport, Error> {
    let n = args.requests;
    let bar = progress((4 * n + 2 * args.cold) as u64, json, "tenantdb");
    let ours = Ours::new(store, base);
    let naive_key = format!("{base}/naive/{TENANT}.anki2");

    // Setup: both designs get the same 10 notes (and padding).
    let dbs = ours.open(&dir.join("warm"))?;
    let pad = args.db_mb * 1024 * 1024;
    dbs.write(TENANT, move |tx| {
        for i in 1..=NOTES as i64 {
            anki::add_note(tx, i, &format!("note {i}"))?;
        }
        pad_db(tx, pad)?;
        Ok(())
    })
    .await
    .map_err(tdb)?;
    // The setup's checkpoint runs in the background: let it finish first.
    dbs.flush().await;
    let seed_file = dir.join("seed.anki2");
    build_seed_file(&seed_file, pad).await?;
    let seed_bytes = tokio::fs::read(&seed_file)
        .await
        .map_err(|e| Error::other("cannot read the seed's database", e))?;
    store
        .put(&naive_key, Bytes::from(seed_bytes), PutOptions::any())
        .await?;

    // Test 3.1: cold opens, each from an empty cache.
    let mut cold = Vec::new();
    for i in 0..args.cold {
        let fresh = ours.open(&dir.join(format!("cold-{i}")))?;
        let t = Instant::now();
        count_notes(&fresh).await?;
        cold.push(t.elapsed());
        bar.inc(1);
    }
    let mut naive_cold = Vec::new();
    for i in 0..args.cold {
        let mut c = NaiveConn::new(
            store.clone(),
            &naive_key,
            dir.join(format!("naive-cold-{i}.anki2")),
        );
        let t = Instant::now();
        c.request(Query::Read).await?;
        naive_cold.push(t.elapsed());
        bar.inc(1);
    }

    // Test 3.2: warm reads, then warm writes, on one warm worker each.
    count_notes(&dbs).await?;
    let before = dbs.stats();
    let mut reads = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        count_notes(&dbs).await?;
        reads.push(t.elapsed());
        bar.inc(1);
    }
    let after_reads = dbs.stats();
    let mut writes = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let id = 1_000_000 + i as i64;
        dbs.write(TENANT, move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO revlog VALUES (?1, 1, -1, 3, 1, 0, 2500, 6000, 1)",
                [id],
            )?;
            Ok(())
        })
        .await
        .map_err(tdb)?;
        writes.push(t.elapsed());
        bar.inc(1);
    }
    // Checkpoints run after the acknowledgements; count them, apart.
    dbs.flush().await;
    let after_writes = dbs.stats();

    let mut naive = NaiveConn::new(store.clone(), &naive_key, dir.join("naive-warm.anki2"));
    naive.request(Query::Read).await?;
    let nb = naive.counters;
    let mut naive_reads = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        naive.request(Query::Read).await?;
        naive_reads.push(t.elapsed());
        bar.inc(1);
    }
    let na = naive.counters;
    let mut naive_writes = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        naive.request(Query::Review(1_000_000 + i as i64)).await?;
        naive_writes.push(t.elapsed());
        bar.inc(1);
    }
    let nw = naive.counters;
    bar.finish_and_clear();

    let db_bytes = dbs.info(TENANT).await.map(|i| i.bytes).unwrap_or_default();
    drop(dbs);
    let naive_db_bytes = tokio::fs::metadata(&naive.path)
        .await
        .map(|m| m.len())
        .unwrap_or_default();

    let nf = n as f64;
    let per = |a: u64, b: u64| round2(a.saturating_sub(b) as f64 / nf);
    let warm_read_ms = round2(ms(median(reads)));
    let naive_warm_read_ms = round2(ms(median(naive_reads)));
    let warm_write_ms = round2(ms(median(writes)));
    let naive_warm_write_ms = round2(ms(median(naive_writes)));
    let cold_ms = round2(ms(median(cold)));
    let naive_cold_ms = round2(ms(median(naive_cold)));
    let bytes_up_per_write = per(after_writes.bytes_up, after_reads.bytes_up);
    let naive_bytes_up_per_write = per(nw.bytes_up, na.bytes_up);
    Ok(TenantDbReport {
        scenario: "tenantdb",
        store: store.describe(),
        requests: n,
        db_mb: args.db_mb,
        notes: NOTES,
        db_bytes,
        cold_ms,
        warm_read_ms,
        warm_write_ms,
        requests_per_warm_read: per(sum_requests(&after_reads), sum_requests(&before)),
        requests_per_warm_write: per(
            sum_requests(&after_writes) - after_writes.requests_background,
            sum_requests(&after_reads) - after_reads.requests_background,
        ),
        background_requests_per_write: per(
            after_writes.requests_background,
            after_reads.requests_background,
        ),
        checkpoints_per_write: per(after_writes.checkpoints, after_reads.checkpoints),
        uploads_per_read: per(after_reads.requests_put, before.requests_put),
        bytes_up_per_write,
        naive_cold_ms,
        naive_warm_read_ms,
        naive_warm_write_ms,
        naive_requests_per_warm_read: per(na.requests, nb.requests),
        naive_requests_per_warm_write: per(nw.requests, na.requests),
        naive_uploads_per_read: per(na.puts, nb.puts),
        naive_bytes_up_per_write,
        naive_db_bytes,
        warm_read_speedup: ratio(naive_warm_read_ms, warm_read_ms),
        warm_write_speedup: ratio(naive_warm_write_ms, warm_write_ms),
        cold_speedup: ratio(naive_cold_ms, cold_ms),
        upload_bytes_ratio: ratio(naive_bytes_up_per_write, bytes_up_per_write),
    })
}

/// Our tenant databases under the run's prefix, one cache directory per worker.
struct Ours {
    store: DynStore,
    prefix: String,
}

impl Ours {
    fn new(store: &DynStore, base: &str) -> Self {
        Ours {
            store: store.clone(),
            prefix: format!("{base}/ours"),
        }
    }
    fn open(&self, cache: &Path) -> Result<TenantDbs, Error> {
        TenantDbs::open(
            self.store.clone(),
            TenantDbsConfig::new(cache)
                .with_prefix(self.prefix.clone())
                .with_schema(anki::schema_hook()),
        )
        .map_err(tdb)
    }
}

async fn count_notes(dbs: &TenantDbs) -> Result<i64, Error> {
    dbs.read(TENANT, |c| {
        Ok(c.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))?)
    })
    .await
    .map_err(tdb)
}

/// Adds about `bytes` of padding rows (64 KiB random blobs) in the transaction.
fn pad_db(tx: &rusqlite::Transaction<'_>, bytes: u64) -> rusqlite::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    tx.execute_batch("CREATE TABLE IF NOT EXISTS bench_pad (id INTEGER PRIMARY KEY, b BLOB)")?;
    let rows = bytes.div_ceil(64 * 1024);
    for _ in 0..rows {
        tx.execute("INSERT INTO bench_pad (b) VALUES (randomblob(65536))", [])?;
    }
    Ok(())
}

/// The seed's database file: the Anki schema, 10 notes, the same padding.
async fn build_seed_file(path: &Path, pad: u64) -> Result<(), Error> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
        let mut c = rusqlite::Connection::open(&path)?;
        let tx = c.transaction()?;
        anki::create(&tx)?;
        for i in 1..=NOTES as i64 {
            anki::add_note(&tx, i, &format!("note {i}"))?;
        }
        pad_db(&tx, pad)?;
        tx.commit()
    })
    .await
    .map_err(|e| Error::other("a benchmark task failed", e))?
    .map_err(|e| Error::other("cannot build the seed's database", e))
}

/// What a seed-design request runs on the local file.
#[derive(Clone, Copy)]
enum Query {
    /// `SELECT count(*) FROM notes`.
    Read,
    /// Adds one review (a `revlog` row) with this id.
    Review(i64),
}

#[derive(Debug, Default, Clone, Copy)]
struct NaiveCounters {
    requests: u64,
    puts: u64,
    bytes_up: u64,
}

/// Seed 003's `S3SQLiteConnection` (day 3): a local copy and its ETag.
struct NaiveConn {
    store: DynStore,
    key: String,
    path: PathBuf,
    etag: Option<Version>,
    counters: NaiveCounters,
}

impl NaiveConn {
    fn new(store: DynStore, key: &str, path: PathBuf) -> Self {
        NaiveConn {
            store,
            key: key.to_string(),
            path,
            etag: None,
            counters: NaiveCounters::default(),
        }
    }

    /// One request: HEAD, download if the ETag changed, query, upload the whole file.
    async fn request(&mut self, q: Query) -> Result<(), Error> {
        let head = self.store.head(&self.key).await?;
        self.counters.requests += 1;
        if self.etag.as_ref() != Some(&head.version) || !self.path.exists() {
            let obj = self.store.get(&self.key).await?;
            self.counters.requests += 1;
            tokio::fs::write(&self.path, &obj.body)
                .await
                .map_err(|e| Error::other("cannot write the local copy", e))?;
            self.etag = Some(obj.meta.version);
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let c = rusqlite::Connection::open(&path)?;
            match q {
                Query::Read => {
                    let _: i64 = c.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))?;
                }
                Query::Review(id) => {
                    c.execute(
                        "INSERT OR REPLACE INTO revlog VALUES (?1, 1, -1, 3, 1, 0, 2500, 6000, 1)",
                        [id],
                    )?;
                }
            }
            c.close().map_err(|(_, e)| e)
        })
        .await
        .map_err(|e| Error::other("a benchmark task failed", e))?
        .map_err(|e| Error::other("the seed's local query failed", e))?;
        // "Always upload": the whole file, unconditionally, reads included.
        let body = tokio::fs::read(&self.path)
            .await
            .map_err(|e| Error::other("cannot read the local copy", e))?;
        let len = body.len() as u64;
        let v = self
            .store
            .put(&self.key, Bytes::from(body), PutOptions::any())
            .await?;
        self.counters.requests += 1;
        self.counters.puts += 1;
        self.counters.bytes_up += len;
        self.etag = Some(v);
        Ok(())
    }
}

/// The report as a table.
pub fn render(r: &TenantDbReport) -> String {
    let mut out = format!(
        "tenantdb: seed 003 tests 2.3/3.1/3.2, {} notes{}, {} warm requests each, on {}\n\n",
        r.notes,
        if r.db_mb > 0 {
            format!(" padded to {} MiB", r.db_mb)
        } else {
            String::new()
        },
        r.requests,
        r.store
    );
    out.push_str(&format!(
        "{:<28} {:>12} {:>12} {:>9}\n",
        "", "ifmatch", "seed design", "seed/ours"
    ));
    let row = |name: &str, a: f64, b: f64| {
        let x = if a == 0.0 {
            "-".to_string()
        } else {
            format!("{:.2}x", ratio(b, a))
        };
        format!("{name:<28} {a:>12.2} {b:>12.2} {x:>9}\n")
    };
    out.push_str(&row("cold open, ms (median)", r.cold_ms, r.naive_cold_ms));
    out.push_str(&row(
        "warm read, ms (median)",
        r.warm_read_ms,
        r.naive_warm_read_ms,
    ));
    out.push_str(&row(
        "warm write, ms (median)",
        r.warm_write_ms,
        r.naive_warm_write_ms,
    ));
    out.push_str(&row(
        "requests per warm write",
        r.requests_per_warm_write,
        r.naive_requests_per_warm_write,
    ));
    out.push_str(&row(
        "requests per warm read",
        r.requests_per_warm_read,
        r.naive_requests_per_warm_read,
    ));
    out.push_str(&row(
        "uploads per read",
        r.uploads_per_read,
        r.naive_uploads_per_read,
    ));
    out.push_str(&row(
        "bytes up per write",
        r.bytes_up_per_write,
        r.naive_bytes_up_per_write,
    ));
    out.push_str(&format!(
        "\ndatabase size: ours {} bytes, the seed's {} bytes\n\
         ifmatch checkpoints per warm write: {:.2}, background requests per warm write: {:.2} \
         (after the acknowledgement, not in the write's latency)\n",
        r.db_bytes, r.naive_db_bytes, r.checkpoints_per_write, r.background_requests_per_write
    ));
    out
}

/// `--sizes`: one run per database size, on one store.
#[derive(Debug, Clone, Serialize)]
pub struct TenantDbSweep {
    /// Always `"tenantdb-sizes"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// One report per size, in the order asked.
    pub runs: Vec<TenantDbReport>,
}

/// `ifmatch bench tenantdb`: one run, or a run per `--sizes` (and its chart); rendered.
pub async fn run_cli(store: DynStore, args: &TenantDbArgs, json: bool) -> Result<String, Error> {
    if args.sizes.is_empty() {
        require(
            args.svg.is_none(),
            "--svg needs --sizes (the chart plots latency against size)",
        )?;
        let r = run(store, args, json).await?;
        return super::output(&r, json, render);
    }
    let mut runs = Vec::new();
    for mb in &args.sizes {
        let one = TenantDbArgs {
            db_mb: *mb,
            sizes: Vec::new(),
            svg: None,
            ..args.clone()
        };
        runs.push(run(store.clone(), &one, json).await?);
    }
    let sweep = TenantDbSweep {
        scenario: "tenantdb-sizes",
        store: store.describe(),
        runs,
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, super::svg::tenantdb_chart(&sweep))
            .map_err(|e| Error::other(format!("cannot write {}", path.display()), e))?;
    }
    super::output(&sweep, json, render_sweep)
}

/// A sweep as one table per size, then the ratios side by side.
pub fn render_sweep(s: &TenantDbSweep) -> String {
    let mut out = String::new();
    for r in &s.runs {
        out.push_str(&render(r));
        out.push('\n');
    }
    out.push_str(&format!(
        "summary on {}: seed design / ifmatch (above 1 means ifmatch is faster)\n\n",
        s.store
    ));
    out.push_str(&format!(
        "{:>8} {:>10} {:>12} {:>12} {:>10} {:>12} {:>12} {:>10} {:>10} {:>10}\n",
        "size MiB",
        "db bytes",
        "write ms",
        "seed write",
        "write x",
        "cold ms",
        "seed cold",
        "cold x",
        "req/write",
        "ckp/write"
    ));
    for r in &s.runs {
        out.push_str(&format!(
            "{:>8} {:>10} {:>12.2} {:>12.2} {:>9.2}x {:>12.2} {:>12.2} {:>9.2}x {:>10.2} {:>10.2}\n",
            r.db_mb,
            r.db_bytes,
            r.warm_write_ms,
            r.naive_warm_write_ms,
            r.warm_write_speedup,
            r.cold_ms,
            r.naive_cold_ms,
            r.cold_speedup,
            r.requests_per_warm_write,
            r.checkpoints_per_write
        ));
    }
    out
}
