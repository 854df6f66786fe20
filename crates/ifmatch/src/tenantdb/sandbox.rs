//! Untrusted SQL against a tenant database: a batch of statements with
//! parameters, run as one transaction, inside a [`Sandbox`].
//!
//! [`TenantDbs::execute`](super::TenantDbs::execute) is what an HTTP handler
//! (or any interface that lets tenants send SQL) calls. It
//!
//! - runs a batch whose every statement is read-only
//!   ([`rusqlite::Statement::readonly`]) through
//!   [`TenantDbs::read`](super::TenantDbs::read), so it **never uploads**;
//!   for a tenant without a database yet, it runs on an empty in-memory
//!   database made by the schema hook (what the tenant would start with), so
//!   that does not create the tenant either;
//! - runs any other batch through [`TenantDbs::write`](super::TenantDbs::write):
//!   one transaction, one conditional commit, re-run from scratch on conflict.
//!
//! ## The sandbox
//!
//! While the tenant's statements are prepared and run, the connection has:
//!
//! - an **authorizer** ([`rusqlite::Connection::authorizer`]) that refuses
//!   `ATTACH` and `DETACH`; every `PRAGMA` except a short list of read-only
//!   introspection pragmas (so no `journal_mode`, `wal_checkpoint`,
//!   `temp_store_directory`, `writable_schema`, `query_only`, ...);
//!   the functions `load_extension`, `readfile`, `writefile`, `edit` and
//!   `fts3_tokenizer`; virtual tables; and `BEGIN` / `COMMIT` / `ROLLBACK`
//!   (the batch already is one transaction; savepoints are allowed);
//! - `VACUUM` (including `VACUUM INTO 'file'`) refused before it is prepared
//!   (SQLite has no authorizer code for it);
//! - **limits** ([`rusqlite::Connection::set_limit`]): no attached databases
//!   at all, and bounded value and statement sizes;
//! - a **time limit**: a progress handler interrupts the statement once the
//!   batch has run longer than [`Sandbox::time_limit`] (over all its attempts);
//! - a **row limit**: at most [`Sandbox::max_rows`] result rows over the batch.
//!
//! A refusal is [`TenantDbError::Denied`](super::TenantDbError::Denied), a
//! limit [`TenantDbError::LimitExceeded`](super::TenantDbError::LimitExceeded);
//! either rolls the transaction back and uploads nothing.
//!
//! ## Values
//!
//! Parameters and result values map to JSON: `null`, integers, reals, text,
//! booleans (as 1 / 0, parameters only), and blobs as `{"blob": "<hex>"}`
//! (both ways). Arrays and other objects are refused as parameters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Result, TenantDbError};

/// The pragmas a sandboxed statement may use: read-only introspection, plus
/// `user_version` (the database's own schema counter).
pub const ALLOWED_PRAGMAS: &[&str] = &[
    "application_id",
    "collation_list",
    "foreign_key_check",
    "foreign_key_list",
    "freelist_count",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "page_count",
    "page_size",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
    "user_version",
];

/// Pragmas from [`ALLOWED_PRAGMAS`] that may only be read, not set.
const READ_ONLY_PRAGMAS: &[&str] = &["application_id", "page_size"];

/// The functions a sandboxed statement may not call (they touch files or load code).
pub const DENIED_FUNCTIONS: &[&str] = &[
    "load_extension",
    "readfile",
    "writefile",
    "edit",
    "fts3_tokenizer",
];

/// The limits of a sandboxed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// How long the batch may run, over all its attempts (default 5 s).
    pub time_limit: Duration,
    /// How many result rows the batch may return in all (default 10 000).
    pub max_rows: usize,
    /// The largest string or blob (and row) a statement may make, in bytes (default 8 MiB).
    pub max_value_bytes: u32,
    /// The longest statement, in bytes (default 100 000).
    pub max_sql_bytes: u32,
    /// The most statements in one batch (default 100).
    pub max_statements: usize,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            time_limit: Duration::from_secs(5),
            max_rows: 10_000,
            max_value_bytes: 8 * 1024 * 1024,
            max_sql_bytes: 100_000,
            max_statements: 100,
        }
    }
}

/// One statement of a batch: SQL text (a single statement) and positional parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlStatement {
    /// The SQL text.
    pub sql: String,
    /// Values for `?`, `?NNN` (and named) parameters, in order.
    #[serde(default)]
    pub params: Vec<Value>,
}

impl SqlStatement {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        SqlStatement {
            sql: sql.into(),
            params: Vec::new(),
        }
    }
    /// Adds parameters.
    pub fn with_params(mut self, params: Vec<Value>) -> Self {
        self.params = params;
        self
    }
}

/// What one statement returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementResult {
    /// Column names (empty for statements that return no rows).
    pub columns: Vec<String>,
    /// The rows, as JSON values (see the module docs).
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted by the statement (and its triggers).
    pub changes: u64,
}

/// What a batch returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    /// True if every statement was read-only (nothing was uploaded).
    pub read_only: bool,
    /// One result per statement, in order.
    pub results: Vec<StatementResult>,
}

/// Which limit a batch ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitKind {
    /// [`Sandbox::time_limit`].
    Time,
    /// [`Sandbox::max_rows`].
    Rows,
    /// [`Sandbox::max_value_bytes`] or [`Sandbox::max_sql_bytes`].
    Size,
    /// [`Sandbox::max_statements`].
    Statements,
    /// `TenantDbsConfig::max_commit_bytes`: the page bytes one commit may change.
    CommitBytes,
    /// `TenantDbsConfig::max_tenant_bytes`: the size a tenant database may grow to.
    TenantBytes,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Time => "time limit",
            LimitKind::Rows => "row limit",
            LimitKind::Size => "size limit",
            LimitKind::Statements => "statement limit",
            LimitKind::CommitBytes => "commit size limit",
            LimitKind::TenantBytes => "tenant database size limit",
        })
    }
}

/// Why the authorizer refuses an action (`None`: allowed).
pub fn refusal(action: &AuthAction<'_>) -> Option<String> {
    match action {
        AuthAction::Attach { .. } => Some("ATTACH is not allowed".into()),
        AuthAction::Detach { .. } => Some("DETACH is not allowed".into()),
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            if !ALLOWED_PRAGMAS.contains(&name.as_str()) {
                Some(format!("PRAGMA {name} is not allowed"))
            } else if pragma_value.is_some() && READ_ONLY_PRAGMAS.contains(&name.as_str()) {
                Some(format!("PRAGMA {name} may only be read"))
            } else {
                None
            }
        }
        AuthAction::Function { function_name } => {
            let name = function_name.to_ascii_lowercase();
            DENIED_FUNCTIONS
                .contains(&name.as_str())
                .then(|| format!("the function {name}() is not allowed"))
        }
        AuthAction::Transaction { .. } => Some(
            "BEGIN, COMMIT and ROLLBACK are not allowed: the batch runs as one transaction (use SAVEPOINT)"
                .into(),
        ),
        AuthAction::CreateVtable { .. } | AuthAction::DropVtable { .. } => {
            Some("virtual tables are not allowed".into())
        }
        AuthAction::Unknown { code, .. } => Some(format!("SQLite action {code} is not allowed")),
        _ => None,
    }
}

/// The first keyword of `sql`, upper-cased, after whitespace and comments.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// What the sandbox hooks saw, shared with them.
#[derive(Default)]
struct Findings {
    denied: Mutex<Option<String>>,
    timed_out: AtomicBool,
}

/// The hooks and limits installed on a connection; removed on drop (before the commit).
struct Installed<'c> {
    conn: &'c Connection,
    findings: Arc<Findings>,
}

impl<'c> Installed<'c> {
    fn new(conn: &'c Connection, sb: &Sandbox, deadline: Instant) -> Result<Self> {
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.set_limit(
            Limit::SQLITE_LIMIT_LENGTH,
            i32::try_from(sb.max_value_bytes).unwrap_or(i32::MAX),
        )?;
        conn.set_limit(
            Limit::SQLITE_LIMIT_SQL_LENGTH,
            i32::try_from(sb.max_sql_bytes).unwrap_or(i32::MAX),
        )?;
        let findings = Arc::new(Findings::default());
        let f = findings.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            match refusal(&ctx.action) {
                None => Authorization::Allow,
                Some(why) => {
                    let mut d = f.denied.lock().unwrap_or_else(|e| e.into_inner());
                    d.get_or_insert(why);
                    Authorization::Deny
                }
            }
        }))?;
        let f = findings.clone();
        conn.progress_handler(
            1000,
            Some(move || {
                if Instant::now() >= deadline {
                    f.timed_out.store(true, Ordering::Relaxed);
                    true
                } else {
                    false
                }
            }),
        )?;
        Ok(Installed { conn, findings })
    }

    /// Turns a SQLite error into a refusal or a limit when a hook caused it.
    fn explain(&self, e: rusqlite::Error, sb: &Sandbox) -> TenantDbError {
        if let Some(why) = self
            .findings
            .denied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return TenantDbError::Denied { message: why };
        }
        if self.findings.timed_out.load(Ordering::Relaxed) {
            return TenantDbError::LimitExceeded {
                limit: LimitKind::Time,
                message: format!("the batch ran longer than {:?}", sb.time_limit),
            };
        }
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::TooBig) => TenantDbError::LimitExceeded {
                limit: LimitKind::Size,
                message: format!(
                    "a value or statement is too large (values up to {} bytes, statements up to {} bytes): {e}",
                    sb.max_value_bytes, sb.max_sql_bytes
                ),
            },
            Some(rusqlite::ErrorCode::OperationInterrupted) => TenantDbError::LimitExceeded {
                limit: LimitKind::Time,
                message: format!("the batch ran longer than {:?}", sb.time_limit),
            },
            _ => TenantDbError::from(e),
        }
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        // Both only fail on a connection not owned by this thread, which ours is.
        let _ = self
            .conn
            .authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
        let _ = self.conn.progress_handler(0, None::<fn() -> bool>);
    }
}

fn to_sql(v: &Value, i: usize) -> Result<SqlValue> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => SqlValue::Integer(i),
            (None, Some(f)) => SqlValue::Real(f),
            _ => {
                return Err(TenantDbError::InvalidInput(format!(
                    "parameter {}: {n} does not fit an SQLite integer or real",
                    i + 1
                )));
            }
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Object(m) if m.len() == 1 && m.contains_key("blob") => {
            let hex = m.get("blob").and_then(Value::as_str).unwrap_or("");
            SqlValue::Blob(decode_hex(hex).ok_or_else(|| {
                TenantDbError::InvalidInput(format!(
                    "parameter {}: a blob is {{\"blob\": \"<hex>\"}} with an even number of hex digits",
                    i + 1
                ))
            })?)
        }
        _ => {
            return Err(TenantDbError::InvalidInput(format!(
                "parameter {}: use null, a number, a string, a boolean or {{\"blob\": \"<hex>\"}}",
                i + 1
            )));
        }
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "blob": hex })
        }
    }
}

/// Checks the batch's shape before anything runs.
pub(crate) fn check_batch(statements: &[SqlStatement], sb: &Sandbox) -> Result<()> {
    if statements.is_empty() {
        return Err(TenantDbError::InvalidInput(
            "the batch has no statements".into(),
        ));
    }
    if statements.len() > sb.max_statements {
        return Err(TenantDbError::LimitExceeded {
            limit: LimitKind::Statements,
            message: format!(
                "the batch has {} statements; at most {} are allowed",
                statements.len(),
                sb.max_statements
            ),
        });
    }
    for st in statements {
        if first_keyword(&st.sql) == "VACUUM" {
            return Err(TenantDbError::Denied {
                message: "VACUUM is not allowed".into(),
            });
        }
    }
    Ok(())
}

/// Classifies the batch on `conn` (without running it): true if every
/// statement is read-only. Stops at the first statement that is not, since
/// later ones may depend on its effects (a table it creates).
pub(crate) fn all_read_only(
    conn: &Connection,
    statements: &[SqlStatement],
    sb: &Sandbox,
    deadline: Instant,
) -> Result<bool> {
    let hooks = Installed::new(conn, sb, deadline)?;
    for st in statements {
        let stmt = conn.prepare(&st.sql).map_err(|e| hooks.explain(e, sb))?;
        if !stmt.readonly() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs the batch on `conn` inside the sandbox. The caller provides the
/// transaction (or the read-only connection).
pub(crate) fn run_batch(
    conn: &Connection,
    statements: &[SqlStatement],
    sb: &Sandbox,
    deadline: Instant,
) -> Result<Vec<StatementResult>> {
    let hooks = Installed::new(conn, sb, deadline)?;
    let mut rows_left = sb.max_rows;
    let mut results = Vec::with_capacity(statements.len());
    for (n, st) in statements.iter().enumerate() {
        let params = st
            .params
            .iter()
            .enumerate()
            .map(|(i, v)| to_sql(v, i))
            .collect::<Result<Vec<_>>>()?;
        let mut stmt = conn.prepare(&st.sql).map_err(|e| hooks.explain(e, sb))?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let width = columns.len();
        let before = conn.total_changes();
        let mut rows = Vec::new();
        {
            let mut q = stmt
                .query(rusqlite::params_from_iter(params))
                .map_err(|e| hooks.explain(e, sb))?;
            while let Some(row) = q.next().map_err(|e| hooks.explain(e, sb))? {
                if rows_left == 0 {
                    return Err(TenantDbError::LimitExceeded {
                        limit: LimitKind::Rows,
                        message: format!(
                            "statement {} would return more rows than the batch's limit of {}",
                            n + 1,
                            sb.max_rows
                        ),
                    });
                }
                rows_left -= 1;
                let mut out = Vec::with_capacity(width);
                for i in 0..width {
                    out.push(to_json(row.get_ref(i).map_err(|e| hooks.explain(e, sb))?));
                }
                rows.push(out);
            }
        }
        // Not `changes()`: that keeps the count of the last INSERT, UPDATE or
        // DELETE across DDL statements.
        let changes = conn.total_changes() - before;
        results.push(StatementResult {
            columns,
            rows,
            changes,
        });
    }
    drop(hooks);
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(a, b)").unwrap();
        c
    }

    fn run(c: &Connection, sql: &str) -> Result<Vec<StatementResult>> {
        run_batch(
            c,
            &[SqlStatement::new(sql)],
            &Sandbox::default(),
            Instant::now() + Duration::from_secs(5),
        )
    }

    fn denied(r: Result<Vec<StatementResult>>) -> String {
        match r {
            Err(TenantDbError::Denied { message }) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn execute_uploads_only_writes() {
        use crate::tenantdb::{TenantDbs, TenantDbsConfig};
        let dir = std::env::temp_dir().join(format!(
            "ifmatch-sandbox-test-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let store: crate::DynStore = Arc::new(crate::store::memory::MemoryStore::new());
        let dbs = TenantDbs::open(store, TenantDbsConfig::new(&dir)).unwrap();
        let sb = Sandbox::default();
        // A read of a tenant that does not exist runs on an empty database and creates nothing.
        let r = dbs
            .execute("t1", vec![SqlStatement::new("SELECT 1 AS one")], &sb)
            .await
            .unwrap();
        assert!(r.read_only);
        assert_eq!(r.results[0].rows, vec![vec![Value::from(1)]]);
        assert_eq!(dbs.stats().requests_put, 0);
        let w = dbs
            .execute(
                "t1",
                vec![
                    SqlStatement::new("CREATE TABLE kv(k TEXT PRIMARY KEY, v)"),
                    SqlStatement::new("INSERT INTO kv VALUES (?, ?)")
                        .with_params(vec![Value::from("a"), Value::from(1)]),
                ],
                &sb,
            )
            .await
            .unwrap();
        assert!(!w.read_only);
        assert_eq!(w.results[1].changes, 1);
        // The commit may have queued a checkpoint, whose PUTs come later.
        dbs.flush().await;
        let puts = dbs.stats().requests_put;
        assert!(puts > 0);
        let r = dbs
            .execute(
                "t1",
                vec![SqlStatement::new("SELECT v FROM kv WHERE k = 'a'")],
                &sb,
            )
            .await
            .unwrap();
        assert!(r.read_only);
        assert_eq!(r.results[0].rows, vec![vec![Value::from(1)]]);
        assert_eq!(
            dbs.stats().requests_put,
            puts,
            "a read-only batch uploads nothing"
        );
        // A refused statement rolls the whole batch back.
        let err = dbs
            .execute(
                "t1",
                vec![
                    SqlStatement::new("INSERT INTO kv VALUES ('b', 2)"),
                    SqlStatement::new("ATTACH '/etc/passwd' AS p"),
                ],
                &sb,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, TenantDbError::Denied { .. }), "{err:?}");
        assert_eq!(dbs.stats().requests_put, puts);
        let n = dbs
            .execute(
                "t1",
                vec![SqlStatement::new("SELECT count(*) FROM kv")],
                &sb,
            )
            .await
            .unwrap();
        assert_eq!(n.results[0].rows, vec![vec![Value::from(1)]]);
        drop(dbs);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn values_round_trip() {
        let c = conn();
        let st = SqlStatement::new("INSERT INTO t VALUES (?, ?), (?, ?), (?, ?) RETURNING a, b")
            .with_params(vec![
                Value::from(1),
                Value::from(1.5),
                Value::from("x"),
                Value::Null,
                serde_json::json!({"blob": "00ff"}),
                Value::from(true),
            ]);
        let r = run_batch(
            &c,
            &[st],
            &Sandbox::default(),
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r[0].columns, ["a", "b"]);
        assert_eq!(
            r[0].rows,
            vec![
                vec![Value::from(1), Value::from(1.5)],
                vec![Value::from("x"), Value::Null],
                vec![serde_json::json!({"blob": "00ff"}), Value::from(1)],
            ]
        );
        assert_eq!(r[0].changes, 3);
        // DDL after DML reports no changes of its own.
        let ddl = run_batch(
            &c,
            &[SqlStatement::new("CREATE INDEX ta ON t(a)")],
            &Sandbox::default(),
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(ddl[0].changes, 0);
        let bad = SqlStatement::new("SELECT ?").with_params(vec![serde_json::json!([1])]);
        assert!(matches!(
            run_batch(
                &c,
                &[bad],
                &Sandbox::default(),
                Instant::now() + Duration::from_secs(5)
            ),
            Err(TenantDbError::InvalidInput(_))
        ));
    }

    #[test]
    fn file_touching_statements_are_refused() {
        let c = conn();
        assert!(denied(run(&c, "ATTACH '/etc/passwd' AS p")).contains("ATTACH"));
        assert!(denied(run(&c, "DETACH main")).contains("DETACH"));
        assert!(denied(run(&c, "PRAGMA journal_mode=DELETE")).contains("journal_mode"));
        assert!(denied(run(&c, "PRAGMA temp_store_directory='/tmp'")).contains("PRAGMA"));
        assert!(denied(run(&c, "PRAGMA writable_schema=ON")).contains("PRAGMA"));
        assert!(denied(run(&c, "SELECT load_extension('/tmp/x.so')")).contains("load_extension"));
        // Table-valued pragma functions go through the same check (this one shows file paths).
        assert!(denied(run(&c, "SELECT * FROM pragma_database_list")).contains("database_list"));
        assert!(denied(run(&c, "COMMIT")).contains("COMMIT"));
        assert!(denied(run(&c, "CREATE VIRTUAL TABLE v USING fts5(x)")).contains("virtual"));
        assert!(denied(run(&c, "PRAGMA page_size=1024")).contains("read"));
        // Introspection is fine.
        let info = run(&c, "PRAGMA table_info(t)").unwrap();
        assert_eq!(info[0].rows.len(), 2);
        run(&c, "PRAGMA user_version=3").unwrap();
        // The hooks are gone afterwards: the caller's own statements run.
        c.execute_batch("PRAGMA journal_mode=MEMORY").unwrap();
    }

    #[test]
    fn vacuum_is_refused_before_it_runs() {
        let err = check_batch(
            &[SqlStatement::new(
                "  /* c */ -- x\n vacuum INTO '/tmp/copy.db'",
            )],
            &Sandbox::default(),
        );
        assert!(matches!(err, Err(TenantDbError::Denied { .. })));
        assert_eq!(first_keyword("--a\n/*b*/select 1"), "SELECT");
    }

    #[test]
    fn limits() {
        let c = conn();
        let sb = Sandbox {
            max_rows: 3,
            time_limit: Duration::from_millis(50),
            max_value_bytes: 1000,
            ..Sandbox::default()
        };
        let deadline = Instant::now() + sb.time_limit;
        let many = SqlStatement::new(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n LIMIT 10) SELECT i FROM n",
        );
        assert!(matches!(
            run_batch(&c, &[many], &sb, deadline),
            Err(TenantDbError::LimitExceeded {
                limit: LimitKind::Rows,
                ..
            })
        ));
        let big = SqlStatement::new("SELECT randomblob(5000)");
        assert!(matches!(
            run_batch(&c, &[big], &sb, deadline),
            Err(TenantDbError::LimitExceeded {
                limit: LimitKind::Size,
                ..
            })
        ));
        let forever = SqlStatement::new(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n) SELECT count(*) FROM n",
        );
        assert!(matches!(
            run_batch(&c, &[forever], &sb, deadline),
            Err(TenantDbError::LimitExceeded {
                limit: LimitKind::Time,
                ..
            })
        ));
        let too_many = vec![SqlStatement::new("SELECT 1"); 101];
        assert!(matches!(
            check_batch(&too_many, &Sandbox::default()),
            Err(TenantDbError::LimitExceeded {
                limit: LimitKind::Statements,
                ..
            })
        ));
    }

    #[test]
    fn classification_stops_at_the_first_write() {
        let c = conn();
        let sb = Sandbox::default();
        let d = Instant::now() + Duration::from_secs(5);
        assert!(all_read_only(&c, &[SqlStatement::new("SELECT * FROM t")], &sb, d).unwrap());
        // The INSERT names a table that does not exist yet: classification must not prepare it.
        let batch = [
            SqlStatement::new("CREATE TABLE u(x)"),
            SqlStatement::new("INSERT INTO u VALUES (1)"),
        ];
        assert!(!all_read_only(&c, &batch, &sb, d).unwrap());
    }
}
