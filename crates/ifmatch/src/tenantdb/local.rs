//! The local side of tenant databases: cache file paths, SQLite connections,
//! running a transaction and reading the pages it changed from the WAL, and
//! applying log entries to the cached file. Everything here is blocking and
//! runs on tokio's blocking threads.
//!
//! Nothing here is fsynced (SQLite runs with `synchronous=OFF` too): the
//! store is the only durable copy, files are replaced by rename so a killed
//! process leaves an old or a new file, and every cached copy is checked page
//! by page against its sidecar on first use, so whatever a power loss leaves
//! behind is caught and fetched again, never served.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::TenantDbError;
use super::TenantDbError as E;
use super::format::{
    CommitRecord, LogEntry, Sidecar, WalContent, WalIndex, page_hash, page_hashes,
};
use super::sandbox::LimitKind;

type Result<T, E = TenantDbError> = std::result::Result<T, E>;

/// The files of one tenant in the cache directory.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub db: PathBuf,
    pub meta: PathBuf,
    pub wal: PathBuf,
    pub shm: PathBuf,
}

/// The cache file stem of a tenant: a hash, so any valid tenant id maps to a safe name.
pub(crate) fn stem(tenant: &str) -> String {
    let d = Sha256::digest(tenant.as_bytes());
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Paths {
    pub(crate) fn new(dir: &Path, stem: &str) -> Paths {
        Paths {
            db: dir.join(format!("{stem}.db")),
            meta: dir.join(format!("{stem}.meta")),
            wal: dir.join(format!("{stem}.db-wal")),
            shm: dir.join(format!("{stem}.db-shm")),
        }
    }

    /// Removes SQLite's side files (no connection may be open).
    pub(crate) fn clear_side_files(&self) -> Result<()> {
        remove_if_exists(&self.wal)?;
        remove_if_exists(&self.shm)
    }

    /// Removes every file of this tenant from the cache.
    pub(crate) fn remove_all(&self) -> Result<()> {
        self.clear_side_files()?;
        remove_if_exists(&self.meta)?;
        remove_if_exists(&self.db)
    }

    /// The length of the cached database file.
    pub(crate) fn db_len(&self) -> Result<u64> {
        fs::metadata(&self.db)
            .map(|m| m.len())
            .map_err(|e| io("reading the cached database's size", e))
    }

    /// Bytes this tenant takes in the cache.
    pub(crate) fn bytes(&self) -> u64 {
        [&self.db, &self.meta]
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

pub(crate) fn io(what: &str, e: std::io::Error) -> TenantDbError {
    TenantDbError::Io {
        message: what.to_string(),
        source: e,
    }
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing a cache file", e)),
    }
}

/// Writes `bytes` to `path` atomically for a process crash (temporary file,
/// rename; no fsync, see the module docs).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(|e| io("creating a cache file", e))?;
    f.write_all(bytes)
        .map_err(|e| io("writing a cache file", e))?;
    fs::rename(&tmp, path).map_err(|e| io("renaming a cache file", e))
}

/// Writes the sidecar of a tenant.
pub(crate) fn write_sidecar(paths: &Paths, sc: &Sidecar) -> Result<()> {
    write_atomic(&paths.meta, &sc.encode())
}

/// Loads a cached copy and checks it page by page against its sidecar.
/// Any mismatch (a crash mid-write, a torn file, a leftover WAL) removes the
/// copy and returns `None`: a bad copy is re-fetched, never served.
pub(crate) fn load_verified(paths: &Paths, tenant: &str) -> Result<Option<Sidecar>> {
    let ok = (|| -> Option<Sidecar> {
        let meta = fs::read(&paths.meta).ok()?;
        let sc = Sidecar::decode(&meta).ok()?;
        if sc.tenant != tenant {
            return None;
        }
        if fs::metadata(&paths.wal)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            return None;
        }
        let image = fs::read(&paths.db).ok()?;
        let ps = sc.page_size as usize;
        if image.len() != sc.hashes.len() * ps || page_hashes(&image, ps) != sc.hashes {
            return None;
        }
        Some(sc)
    })();
    match ok {
        Some(sc) => {
            paths.clear_side_files()?;
            Ok(Some(sc))
        }
        None => {
            paths.remove_all()?;
            Ok(None)
        }
    }
}

/// Installs a full image (with its commit records) as the tenant's cached copy.
pub(crate) fn install_image(
    paths: &Paths,
    tenant: &str,
    seq: u64,
    page_size: u32,
    image: &[u8],
    records: Vec<CommitRecord>,
    validated_ms: u64,
) -> Result<Sidecar> {
    paths.clear_side_files()?;
    // The sidecar goes first: a crash between the two leaves a mismatch, which load_verified rejects.
    remove_if_exists(&paths.meta)?;
    write_atomic(&paths.db, image)?;
    let sc = Sidecar {
        tenant: tenant.to_string(),
        seq,
        page_size,
        validated_ms,
        tail_entries: 0,
        tail_bytes: 0,
        hashes: page_hashes(image, page_size as usize),
        records,
    };
    write_sidecar(paths, &sc)?;
    Ok(sc)
}

/// Applies log entries to the cached file, in order, and updates the sidecar:
/// page hashes, seq, and commit records (dropping those sent at or before
/// `keep_after_ms`).
pub(crate) fn apply_entries(
    paths: &Paths,
    sc: &mut Sidecar,
    entries: &[LogEntry],
    keep_after_ms: u64,
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .write(true)
        .open(&paths.db)
        .map_err(|e| io("opening the cached database", e))?;
    for e in entries {
        if e.seq != sc.seq + 1 || e.page_size != sc.page_size {
            return Err(TenantDbError::Corrupt {
                what: format!("log entry {}", e.seq),
                message: format!(
                    "expected seq {} with page size {}, got seq {} with page size {}",
                    sc.seq + 1,
                    sc.page_size,
                    e.seq,
                    e.page_size
                ),
            });
        }
        let ps = e.page_size as u64;
        for (no, page) in &e.pages {
            f.seek(SeekFrom::Start((*no as u64 - 1) * ps))
                .and_then(|_| f.write_all(page))
                .map_err(|err| io("writing a page", err))?;
        }
        f.set_len(e.page_count as u64 * ps)
            .map_err(|err| io("resizing the cached database", err))?;
        sc.hashes.resize(e.page_count as usize, [0; 16]);
        for (no, page) in &e.pages {
            sc.hashes[*no as usize - 1] = page_hash(page);
        }
        sc.seq = e.seq;
        if let Some(c) = &e.commit {
            sc.records.push(c.clone());
        }
        sc.tail_entries += 1;
        sc.tail_bytes += e.pages.len() as u64 * ps;
    }
    drop(f);
    sc.records.retain(|r| r.at_ms > keep_after_ms);
    super::crash_point("tenantdb-pages-applied");
    write_sidecar(paths, sc)
}

/// Appends the whole cached file to `buf`.
pub(crate) fn read_image_into(paths: &Paths, buf: &mut Vec<u8>) -> Result<()> {
    File::open(&paths.db)
        .and_then(|mut f| f.read_to_end(buf))
        .map_err(|e| io("reading the cached database", e))?;
    Ok(())
}

/// Reads the whole cached file.
pub(crate) fn read_image(paths: &Paths) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(&paths.db)
        .and_then(|mut f| f.read_to_end(&mut v))
        .map_err(|e| io("reading the cached database", e))?;
    Ok(v)
}

/// Opens a connection that never checkpoints on its own, so the WAL holds
/// exactly the last transaction until we decide what happens to it.
pub(crate) fn open_conn(path: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    // No fsyncs: the store is the durable copy (see the module docs).
    c.execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA synchronous=OFF;")?;
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(TenantDbError::Corrupt {
            what: "cached database".into(),
            message: format!("journal mode is {mode}, expected wal"),
        });
    }
    Ok(c)
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs a read closure on a query-only connection.
pub(crate) fn run_read<T, F>(paths: &Paths, f: F) -> Result<T>
where
    F: FnOnce(&Connection) -> Result<T>,
{
    paths.clear_side_files()?;
    let out = (|| {
        let conn = open_conn(&paths.db)?;
        conn.execute_batch("PRAGMA query_only=ON;")?;
        let r = catch_unwind(AssertUnwindSafe(|| f(&conn)))
            .map_err(|p| TenantDbError::Panicked(panic_message(p)))?;
        drop(conn);
        r
    })();
    paths.clear_side_files()?;
    out
}

/// The size bounds of one commit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The most page bytes one commit may change.
    pub max_commit: u64,
    /// The most bytes the database may hold after a commit that grows it.
    pub max_tenant: u64,
    /// The database's size before the commit.
    pub old_bytes: u64,
}

impl Limits {
    /// Refuses a commit that changes `changed` bytes and leaves `after` bytes.
    pub(crate) fn check(&self, changed: u64, after: u64) -> Result<()> {
        if changed > self.max_commit {
            return Err(E::LimitExceeded {
                limit: LimitKind::CommitBytes,
                message: format!(
                    "the commit changes {changed} bytes of pages, more than the {} one commit may \
                     change (nothing was uploaded)",
                    self.max_commit
                ),
            });
        }
        if after > self.max_tenant && after > self.old_bytes {
            return Err(E::LimitExceeded {
                limit: LimitKind::TenantBytes,
                message: format!(
                    "the database would grow to {after} bytes, more than the {} a tenant \
                     database may hold (nothing was uploaded)",
                    self.max_tenant
                ),
            });
        }
        Ok(())
    }
}

/// Reads the committed pages of the WAL, checking `limits` from the frame
/// headers first: a refused commit never has its pages in memory.
fn read_wal(paths: &Paths, page_size: u32, limits: &Limits) -> Result<Option<WalContent>> {
    let file = match File::open(&paths.wal) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("opening the WAL", e)),
    };
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let corrupt = |e: super::format::FormatError| E::Corrupt {
        what: "WAL".into(),
        message: e.0,
    };
    let idx = WalIndex::scan(&mut r, page_size).map_err(corrupt)?;
    let Some(count) = idx.page_count else {
        return Ok(None);
    };
    limits.check(idx.bytes(), count as u64 * page_size as u64)?;
    let pages = idx
        .read_pages(r.get_mut())
        .map_err(|e| io("reading the WAL", e))?;
    Ok(Some(WalContent {
        pages,
        page_count: Some(count),
    }))
}

/// Runs a write closure in an immediate transaction and returns its value
/// with the pages it committed (read from the WAL, within `limits`). The
/// cached file itself is left untouched: the caller applies the pages once
/// the commit is published, or drops the WAL when it is not.
pub(crate) fn run_write<T, F>(
    paths: &Paths,
    page_size: u32,
    limits: &Limits,
    f: &mut F,
) -> Result<(T, Option<WalContent>)>
where
    F: FnMut(&rusqlite::Transaction<'_>) -> Result<T>,
{
    paths.clear_side_files()?;
    let out = (|| {
        let mut conn = open_conn(&paths.db)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = catch_unwind(AssertUnwindSafe(|| f(&tx)));
        let v = match r {
            Err(p) => {
                drop(tx);
                return Err(TenantDbError::Panicked(panic_message(p)));
            }
            Ok(Err(e)) => {
                drop(tx);
                return Err(e);
            }
            Ok(Ok(v)) => v,
        };
        tx.commit()?;
        conn.close().map_err(|(_, e)| TenantDbError::from(e))?;
        Ok((v, read_wal(paths, page_size, limits)?))
    })();
    if out.is_err() {
        paths.clear_side_files()?;
    }
    out
}

/// Builds a new database image: runs the schema hook, switches to WAL mode.
pub(crate) fn build_image<F>(dir: &Path, stem: &str, schema: F) -> Result<(u32, Vec<u8>)>
where
    F: FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
{
    let tmp = Paths::new(dir, &format!("{stem}.new"));
    tmp.remove_all()?;
    let out = (|| {
        let mut conn = Connection::open(&tmp.db)?;
        let tx = conn.transaction()?;
        catch_unwind(AssertUnwindSafe(|| schema(&tx)))
            .map_err(|p| TenantDbError::Panicked(panic_message(p)))??;
        tx.commit()?;
        to_wal_image(conn, &tmp)
    })();
    tmp.remove_all()?;
    out
}

/// Switches an open database to WAL mode, closes it and returns (page size, image).
fn to_wal_image(conn: Connection, paths: &Paths) -> Result<(u32, Vec<u8>)> {
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(TenantDbError::Corrupt {
            what: "new database".into(),
            message: format!("could not switch to WAL mode (got {mode})"),
        });
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    let ps: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    conn.close().map_err(|(_, e)| TenantDbError::from(e))?;
    let image = read_image(paths)?;
    if image.len() % ps as usize != 0 || image.is_empty() {
        return Err(TenantDbError::Corrupt {
            what: "new database".into(),
            message: "image is not a whole number of pages".into(),
        });
    }
    Ok((ps, image))
}

/// Reads a SQLite file for import: checks its integrity and converts it to a WAL-mode image.
pub(crate) fn import_image(dir: &Path, stem: &str, src: &Path) -> Result<(u32, Vec<u8>)> {
    let tmp = Paths::new(dir, &format!("{stem}.import"));
    tmp.remove_all()?;
    let out = (|| {
        fs::copy(src, &tmp.db).map_err(|e| io("copying the file to import", e))?;
        {
            let conn = Connection::open(&tmp.db)?;
            check_integrity(&conn).map_err(|e| {
                crate::Error::InvalidInput(format!(
                    "the file to import is not a sound database: {e}"
                ))
            })?;
            conn.close().map_err(|(_, e)| TenantDbError::from(e))?;
        }
        to_wal_image(Connection::open(&tmp.db)?, &tmp)
    })();
    tmp.remove_all()?;
    out
}

fn check_integrity(conn: &Connection) -> Result<()> {
    let r: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if r != "ok" {
        return Err(TenantDbError::Corrupt {
            what: "database".into(),
            message: format!("integrity_check: {r}"),
        });
    }
    Ok(())
}

/// Writes a standalone copy of the cached database (rollback-journal mode,
/// integrity-checked) to `dest`.
pub(crate) fn export_to(paths: &Paths, dest: &Path) -> Result<()> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".ifmatch-export");
    let tmp = PathBuf::from(tmp);
    let side = |s: &str| {
        let mut p = tmp.as_os_str().to_owned();
        p.push(s);
        PathBuf::from(p)
    };
    let out = (|| {
        fs::copy(&paths.db, &tmp).map_err(|e| io("copying the database for export", e))?;
        let conn = Connection::open(&tmp)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(TenantDbError::Corrupt {
                what: "export".into(),
                message: format!("could not leave WAL mode (got {mode})"),
            });
        }
        check_integrity(&conn)?;
        conn.close().map_err(|(_, e)| TenantDbError::from(e))?;
        fs::rename(&tmp, dest).map_err(|e| io("moving the export into place", e))
    })();
    for p in [tmp.clone(), side("-wal"), side("-shm"), side("-journal")] {
        remove_if_exists(&p)?;
    }
    out
}
