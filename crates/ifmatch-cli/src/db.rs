//! `ifmatch db ...`: operator access to tenant databases ([`ifmatch::tenantdb`]).
//!
//! Each command is one call of [`TenantDbs`]. `db exec` runs one statement
//! through [`TenantDbs::execute`]: one transaction, re-run on a conflict by
//! the tenant-database retry, inside the same SQL sandbox as `POST /v1/db`. The local cache lives in
//! `--cache-dir` (default: a fresh temporary directory removed on exit, so each
//! command opens the tenant cold, which is what an operator tool wants).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ifmatch::DynStore;
use ifmatch::ErrorKind;
use ifmatch::tenantdb::{Sandbox, SqlStatement, TenantDbError, TenantDbs, TenantDbsConfig};
use serde_json::Value;

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

    /// Run one SQL statement as a transaction on a tenant's database; print rows and changes.
    #[command(long_about = "\
Run one SQL statement on tenant TENANT's database as one transaction, and
commit it to the store (the tenant is created if it has no database yet; a
read-only statement uploads nothing). When another writer commits first the
statement runs again on the new state. Prints the rows it returns, if any
(column names, then tab-separated rows as 'db query' prints them), then
'changes: N', the rows it inserted, updated or deleted.

Each --param V binds the next '?' parameter: V is read as JSON when it is a
number, true, false, null, a \"quoted string\" or {\"blob\": \"<hex>\"}, and as
text otherwise. The statement runs in the SQL sandbox of POST /v1/db (no
ATTACH, VACUUM, file functions or writing pragmas; a 5 s time limit).

A SQL error prints SQLite's message on one line and exits 1.

Examples:
  ifmatch db exec alice 'CREATE TABLE notes(id INTEGER PRIMARY KEY, flds TEXT)'
  ifmatch db exec alice 'INSERT INTO notes(flds) VALUES (?)' --param 'hello'
  ifmatch db exec alice 'UPDATE notes SET flds = ? WHERE id = ?' --param bye --param 1")]
    Exec(ExecArgs),

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

/// `db exec` arguments.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The tenant.
    pub tenant: String,
    /// One SQL statement.
    pub sql: String,
    /// A value for the next '?' parameter (repeatable): JSON if it parses as a
    /// JSON scalar or {"blob": "<hex>"}, else text.
    #[arg(long = "param", value_name = "V", allow_hyphen_values = true)]
    pub params: Vec<String>,
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
        DbCommand::Exec(a) => {
            let cache = Cache::new(&a.cache);
            let statement = SqlStatement::new(a.sql.clone())
                .with_params(a.params.iter().map(|p| param(p)).collect());
            let batch = open(store, &cache)?
                .execute(&a.tenant, vec![statement], &Sandbox::default())
                .await
                .map_err(sql_failure)?;
            let mut out = String::new();
            for r in &batch.results {
                if !r.columns.is_empty() {
                    out.push_str(&r.columns.join("\t"));
                    out.push('\n');
                    for row in &r.rows {
                        let cells: Vec<String> = row.iter().map(render).collect();
                        out.push_str(&cells.join("\t"));
                        out.push('\n');
                    }
                }
                out.push_str(&format!("changes: {}\n", r.changes));
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

/// A `--param`: a JSON scalar or blob object when it parses as one, else text.
fn param(v: &str) -> Value {
    match serde_json::from_str::<Value>(v) {
        Ok(j @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => j,
        Ok(Value::Object(o)) if o.len() == 1 && o.get("blob").is_some_and(Value::is_string) => {
            Value::Object(o)
        }
        _ => Value::String(v.to_string()),
    }
}

/// A result value as `db query` prints it: NULL, numbers, text, blobs as x'hex'.
fn render(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("blob").and_then(Value::as_str) {
            Some(hex) => format!("x'{hex}'"),
            None => v.to_string(),
        },
        other => other.to_string(),
    }
}

/// SQL that SQLite or the sandbox refused is an error of the statement (exit 1), not of usage.
fn sql_failure(e: TenantDbError) -> Failure {
    match e {
        TenantDbError::Sql { .. }
        | TenantDbError::Denied { .. }
        | TenantDbError::LimitExceeded { .. } => Failure::primitive(ErrorKind::Other, &e),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_are_json_scalars_or_text() {
        assert_eq!(param("42"), json!(42));
        assert_eq!(param("1.5"), json!(1.5));
        assert_eq!(param("null"), Value::Null);
        assert_eq!(param("true"), json!(true));
        assert_eq!(param("\"42\""), json!("42"));
        assert_eq!(param("hello world"), json!("hello world"));
        assert_eq!(param("007"), json!("007"));
        assert_eq!(param("[1]"), json!("[1]"));
        assert_eq!(param(r#"{"blob":"00ff"}"#), json!({"blob": "00ff"}));
        assert_eq!(param(r#"{"x":1}"#), json!(r#"{"x":1}"#));
    }

    #[test]
    fn values_render_like_db_query() {
        assert_eq!(render(&Value::Null), "NULL");
        assert_eq!(render(&json!("a b")), "a b");
        assert_eq!(render(&json!(3)), "3");
        assert_eq!(render(&json!({"blob": "00ff"})), "x'00ff'");
    }
}
