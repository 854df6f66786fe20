//! `ifmatch db ...`: operator access to tenant databases ([`ifmatch::tenantdb`]).
//!
//! Each command is one call of [`TenantDbs`]. The local cache lives in
//! `--cache-dir` (default: a fresh temporary directory removed on exit, so each
//! command opens the tenant cold, which is what an operator tool wants).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ifmatch::DynStore;
use ifmatch::tenantdb::{TenantDbError, TenantDbs, TenantDbsConfig};

use crate::commands::write_stdout;
use crate::exit::Failure;

/// The `db` subcommands.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Write a tenant's database to a SQLite file.
    #[command(long_about = "\
Write tenant TENANT's current database to FILE, a plain SQLite database that
the sqlite3 shell opens and PRAGMA integrity_check accepts. Exits 4 if the
tenant has no database.

Example:
  ifmatch db export alice alice.sqlite3")]
    Export(ExportArgs),

    /// Create a tenant from a SQLite file (only if absent, unless --force).
    #[command(long_about = "\
Create tenant TENANT from the SQLite database FILE. Refused (exit 3) if the
tenant already has a database, unless --force replaces it.

Example:
  ifmatch db import alice alice.sqlite3")]
    Import(ImportArgs),

    /// Run a read-only SQL query on a tenant's database; print tab-separated rows.
    #[command(long_about = "\
Run SQL (read-only: the connection refuses writes) on tenant TENANT's current
database and print the column names, then one tab-separated line per row
(NULL, numbers, text; blobs as x'hex'). SQL errors carry SQLite's message.

Example:
  ifmatch db query alice 'SELECT id, flds FROM notes ORDER BY id'")]
    Query(QueryArgs),

    /// Show a tenant database's size and sequence, and this command's request counts.
    #[command(long_about = "\
Open tenant TENANT's database and print its commit sequence number, page size,
pages and bytes, then what opening it cost: requests by kind and bytes
downloaded.

Example:
  ifmatch db stats alice")]
    Stats(StatsArgs),
}

/// Where the local cache lives.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The local cache directory (default: a temporary one, removed on exit).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `db export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The tenant.
    pub tenant: String,
    /// The SQLite file to write.
    pub file: PathBuf,
    #[command(flatten)]
    cache: CacheArgs,
}

/// `db import` arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tenant.
    pub tenant: String,
    /// The SQLite file to read.
    pub file: PathBuf,
    /// Replace the tenant's database if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

/// `db query` arguments.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The tenant.
    pub tenant: String,
    /// The SQL to run (read-only).
    pub sql: String,
    #[command(flatten)]
    cache: CacheArgs,
}

/// `db stats` arguments.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The tenant.
    pub tenant: String,
    #[command(flatten)]
    cache: CacheArgs,
}

impl From<TenantDbError> for Failure {
    fn from(e: TenantDbError) -> Self {
        Failure::primitive(e.kind(), &e)
    }
}

/// A cache directory that is removed when dropped, if it was made for this command.
struct Cache {
    dir: PathBuf,
    temporary: bool,
}

impl Cache {
    fn new(args: &CacheArgs) -> Cache {
        match &args.cache_dir {
            Some(d) => Cache {
                dir: d.clone(),
                temporary: false,
            },
            None => Cache {
                dir: std::env::temp_dir().join(format!(
                    "ifmatch-db-cache-{}-{:x}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or(0)
                )),
                temporary: true,
            },
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn open(store: &DynStore, cache: &Cache) -> Result<TenantDbs, Failure> {
    Ok(TenantDbs::open(
        store.clone(),
        TenantDbsConfig::new(cache.dir.clone()),
    )?)
}

/// Runs one `db` subcommand.
pub async fn run(store: &DynStore, cmd: &DbCommand) -> Result<(), Failure> {
    match cmd {
        DbCommand::Export(a) => {
            let cache = Cache::new(&a.cache);
            open(store, &cache)?.export(&a.tenant, &a.file).await?;
            Ok(())
        }
        DbCommand::Import(a) => {
            let cache = Cache::new(&a.cache);
            let dbs = open(store, &cache)?;
            dbs.import(&a.tenant, &a.file, a.force).await?;
            // Checkpoints run in the background: let them finish before exiting.
            dbs.flush().await;
            Ok(())
        }
        DbCommand::Query(a) => {
            let cache = Cache::new(&a.cache);
            let r = open(store, &cache)?.query(&a.tenant, &a.sql).await?;
            let mut out = r.columns.join("\t");
            out.push('\n');
            for row in &r.rows {
                out.push_str(&row.join("\t"));
                out.push('\n');
            }
            write_stdout(out.as_bytes())
        }
        DbCommand::Stats(a) => {
            let cache = Cache::new(&a.cache);
            let dbs = open(store, &cache)?;
            let info = dbs.info(&a.tenant).await?;
            let s = dbs.stats();
            let out = format!(
                "seq: {}\npage_size: {}\npages: {}\nbytes: {}\nrequests: get {} put {} delete {} list {}\nbytes_down: {}\nbytes_up: {}\ncache: hits {} misses {} evictions {}\n",
                info.seq,
                info.page_size,
                info.pages,
                info.bytes,
                s.requests_get,
                s.requests_put,
                s.requests_delete,
                s.requests_list,
                s.bytes_down,
                s.bytes_up,
                s.cache_hits,
                s.cache_misses,
                s.evictions
            );
            write_stdout(out.as_bytes())
        }
    }
}
