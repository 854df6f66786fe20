//! `POST /v1/db`: a batch of SQL statements against a tenant database.
//!
//! Body: `{"statements": [{"sql": "...", "params": [...]}, ...], "tenant": "..."}`.
//! The batch runs as one transaction with the tenant-database retry
//! ([`ifmatch::tenantdb::TenantDbs::execute`]); a batch of read-only
//! statements never uploads anything. Answer: **200**
//! `{"read_only": bool, "results": [{"columns", "rows", "changes"}, ...]}`.
//!
//! - A **user**'s batch runs on their own database, named by their account
//!   id (never by their reusable username: a later account with the same
//!   name gets a new database); `tenant`, if given, must be their account id
//!   or their username (else 403).
//! - The **operator** must name the `tenant` (400 without one): it can reach
//!   every tenant's database, for administration.
//!
//! Values: `null`, numbers, strings, booleans (as 1/0) and blobs as
//! `{"blob": "<hex>"}`. The SQL runs in the library's sandbox: ATTACH,
//! DETACH, VACUUM, `load_extension` and file functions, virtual tables,
//! BEGIN/COMMIT and all pragmas but a few read-only ones are refused (403
//! `sql_denied`); time, row, size and statement limits give 422
//! `limit_exceeded`; SQLite's own errors are 400 `sql_error`. Nothing is
//! committed when any statement fails.
//!
//! A batch whose commit's outcome cannot be known answers 504
//! `outcome_unknown`; sent with an `Idempotency-Key`, its retry commits
//! under the same commit id, so it settles the outcome instead of
//! committing twice ([`crate::idempotency_key`]).

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json};
use http::StatusCode;
use ifmatch::tenantdb::{BatchResult, SqlStatement, TenantDbs};
use serde::Deserialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::idempotency_key::IdempotentRequest;
use crate::routes::extract::JsonBody;

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/v1/db", post(run_batch))
}

/// The OpenAPI schema of one SQL value, as a parameter or in a result row:
/// `null`, a number, a string, a boolean (a parameter only; stored as 1/0)
/// or a blob as `{"blob": "<hex>"}`.
pub struct SqlValue;

impl utoipa::PartialSchema for SqlValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        let of = |t: Type| ObjectBuilder::new().schema_type(t);
        AnyOfBuilder::new()
            .item(of(Type::Null))
            .item(of(Type::Number))
            .item(of(Type::String))
            .item(of(Type::Boolean))
            .item(
                of(Type::Object)
                    .property(
                        "blob",
                        of(Type::String)
                            .pattern(Some("^(?:[0-9A-Fa-f]{2})*$"))
                            .description(Some("The bytes in hex")),
                    )
                    .required("blob")
                    .additional_properties(Some(
                        utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                    )),
            )
            .description(Some(
                "An SQL value: null, a number, a string, a boolean (parameters only, as 1/0) or a blob as {\"blob\": \"<hex>\"}",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SqlValue {}

/// The OpenAPI schema of a tenant id: a key segment path (see
/// [`crate::routes::extract::KEY_PATTERN`]) that fits the tenant's record keys.
pub struct TenantParam;

impl utoipa::PartialSchema for TenantParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        // The tenant's records live at `tenants/<tenant>/head`, `.../log/<seq>`, ...
        let max = ifmatch::key::MAX_KEY_BYTES - "tenants/".len() - "/checkpoint/".len() - 20;
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(max))
            .pattern(Some(crate::routes::extract::KEY_PATTERN))
            .description(Some(
                "The tenant: required with the operator key (a user's database is named by \
                 their account id); for a session user, absent, their account id or their username. The key rules apply (no empty, '.' or '..' segment, \
                 control character or backslash), and no segment after the first may be \
                 'log', 'checkpoint' or 'head'",
            ))
            .into()
    }
}

impl utoipa::ToSchema for TenantParam {}

/// The server's tenant databases (501 without a cache directory).
pub(crate) fn tenant_dbs(app: &AppState) -> Result<&TenantDbs, ApiError> {
    app.tenant_dbs().ok_or_else(|| {
        ApiError::refused(
            StatusCode::NOT_IMPLEMENTED,
            "unsupported",
            "this server has no tenant database cache (db_cache_dir)",
            None,
        )
    })
}

/// One statement.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementRequest {
    /// One SQL statement.
    #[schema(example = "SELECT 1")]
    pub sql: String,
    /// Positional parameters (`?`, `?NNN`).
    #[serde(default)]
    #[schema(value_type = Vec<SqlValue>)]
    pub params: Vec<serde_json::Value>,
}

/// The body of `POST /v1/db`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tenant": "alice", "statements": [{"sql": "SELECT ?1 AS answer", "params": [42]}]}))]
pub struct BatchRequest {
    /// The statements, run in order as one transaction (at least one).
    #[schema(min_items = 1)]
    pub statements: Vec<StatementRequest>,
    /// The tenant: required for the operator (a user's database is named by
    /// their account id); for a user, absent, their account id or username.
    #[serde(default)]
    #[schema(value_type = Option<TenantParam>)]
    pub tenant: Option<String>,
}

/// What one statement returned.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StatementResultBody {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows of JSON values (blobs as `{"blob": "<hex>"}`).
    #[schema(value_type = Vec<Vec<SqlValue>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Rows inserted, updated or deleted by the statement (and its triggers).
    pub changes: u64,
}

/// What the batch returned.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct BatchResultBody {
    /// True when every statement was read-only (nothing was uploaded).
    pub read_only: bool,
    /// One result per statement.
    pub results: Vec<StatementResultBody>,
}

impl From<BatchResult> for BatchResultBody {
    fn from(b: BatchResult) -> Self {
        BatchResultBody {
            read_only: b.read_only,
            results: b
                .results
                .into_iter()
                .map(|r| StatementResultBody {
                    columns: r.columns,
                    rows: r.rows,
                    changes: r.changes,
                })
                .collect(),
        }
    }
}

/// Runs a SQL batch against a tenant database.
#[utoipa::path(
    post,
    path = "/v1/db",
    tag = "db",
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The results", body = BatchResultBody),
        (status = 400, description = "SQL error or a bad parameter or empty batch (`sql_error`); an operator batch without a tenant, an invalid tenant or invalid JSON (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Refused by the sandbox (`sql_denied`), or another user's tenant", body = ErrorBody),
        (status = 409, description = "Other writers kept winning", body = ErrorBody),
        (status = 422, description = "A time, row, size or statement limit (`limit_exceeded`)", body = ErrorBody),
        (status = 501, description = "The server has no tenant database cache", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn run_batch(
    State(app): State<AppState>,
    caller: Caller,
    idempotent: Option<Extension<IdempotentRequest>>,
    JsonBody(req): JsonBody<BatchRequest>,
) -> Result<Json<BatchResultBody>, ApiError> {
    let tenant = caller.tenant(req.tenant)?;
    let dbs = tenant_dbs(&app)?;
    let statements = req
        .statements
        .into_iter()
        .map(|s| SqlStatement::new(s.sql).with_params(s.params))
        .collect();
    let sandbox = &app.config().sandbox;
    // With an Idempotency-Key, every retry of the request commits under one
    // commit id: a commit that landed is found and its result returned.
    let result = match idempotent {
        Some(Extension(i)) => {
            dbs.execute_once(&tenant, statements, sandbox, &i.commit_id)
                .await?
        }
        None => dbs.execute(&tenant, statements, sandbox).await?,
    };
    Ok(Json(result.into()))
}
