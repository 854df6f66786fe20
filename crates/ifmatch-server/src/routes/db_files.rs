//! Tenant databases as whole files: `GET /v1/db/export`, `PUT /v1/db/import`
//! and `GET /v1/db/info`, over [`ifmatch::tenantdb::TenantDbs`]'s `export`,
//! `import` and `info`.
//!
//! - `GET /v1/db/export` streams the tenant's current database as a plain
//!   SQLite file (`application/vnd.sqlite3`; the `sqlite3` shell and Python's
//!   `sqlite3` open it, `PRAGMA integrity_check` passes). **404** if the
//!   tenant has no database.
//! - `PUT /v1/db/import` creates the tenant from the SQLite file in the body,
//!   only if it has no database (**409** otherwise) unless `?force=true`
//!   replaces it. The file is checked with `PRAGMA integrity_check` before
//!   anything is stored (**400** for a file that is not a sound database).
//!   **204** when done.
//! - `GET /v1/db/info` gives the database's commit sequence number, page
//!   size, pages and bytes.
//!
//! The tenant is chosen as for `POST /v1/db` ([`crate::auth::Caller::tenant`]):
//! a user reaches their own (`?tenant=` absent or their own); the operator
//! names any with `?tenant=`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use futures::StreamExt;
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::db::{TenantParam, tenant_dbs};
use crate::routes::extract::{Body, Query};

/// The media type of a SQLite database file.
pub const SQLITE_MEDIA_TYPE: &str = "application/vnd.sqlite3";

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/db/export", get(export_db))
        .route("/v1/db/import", put(import_db))
        .route("/v1/db/info", get(db_info))
}

/// The query of export and info.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// The tenant: required with the operator key; for a user, absent or their own.
    #[param(value_type = Option<TenantParam>)]
    pub tenant: Option<String>,
}

/// The query of an import.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// The tenant: required with the operator key; for a user, absent or their own.
    #[param(value_type = Option<TenantParam>)]
    pub tenant: Option<String>,
    /// Replace the tenant's database if it has one (default false).
    pub force: Option<bool>,
}

/// What `GET /v1/db/info` reports.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DbInfoBody {
    /// The tenant.
    pub tenant: String,
    /// The commit sequence number of the current database.
    pub seq: u64,
    /// The page size in bytes.
    pub page_size: u32,
    /// The number of pages.
    pub pages: u64,
    /// The database size in bytes.
    pub bytes: u64,
}

fn io_error(what: &str, e: std::io::Error) -> ApiError {
    ApiError::Store(ifmatch::Error::other(what.to_string(), e))
}

/// A file name for the tenant's export: its characters outside `A-Z a-z 0-9 . _ -` as `_`.
fn file_name(tenant: &str) -> String {
    let safe: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.sqlite3")
}

/// Streams a tenant's database as a SQLite file.
#[utoipa::path(
    get,
    path = "/v1/db/export",
    tag = "db",
    params(TenantQuery),
    responses(
        (status = 200, description = "The database as a plain SQLite file", content_type = "application/vnd.sqlite3"),
        (status = 400, description = "An operator request without a tenant, or an invalid tenant (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Another user's tenant (`forbidden`)", body = ErrorBody),
        (status = 404, description = "The tenant has no database (`not_found`)", body = ErrorBody),
        (status = 501, description = "The server has no tenant database cache", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn export_db(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<TenantQuery>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant(q.tenant)?;
    let dbs = tenant_dbs(&app)?;
    // The export goes to a file of its own, streamed from an open handle:
    // the directory is removed when the stream ends (or is dropped).
    let dir = tempfile::tempdir().map_err(|e| io_error("creating a temporary directory", e))?;
    let path = dir.path().join("export.sqlite3");
    dbs.export(&tenant, &path).await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| io_error("opening the export", e))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| io_error("reading the export's size", e))?
        .len();
    let stream = file_chunks(file).map(move |chunk| {
        let _dir = &dir;
        chunk
    });
    let disposition = format!("attachment; filename=\"{}\"", file_name(&tenant));
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(SQLITE_MEDIA_TYPE)),
            (CONTENT_LENGTH, HeaderValue::from(len)),
            (
                CONTENT_DISPOSITION,
                HeaderValue::try_from(disposition)
                    .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// The bytes of `file`, 64 KiB at a time.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    use tokio::io::AsyncReadExt;
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), file)))
    })
}

/// Creates (or with `force`, replaces) a tenant's database from a SQLite file.
#[utoipa::path(
    put,
    path = "/v1/db/import",
    tag = "db",
    params(ImportQuery),
    request_body(content = Vec<u8>, description = "A SQLite database file (any Content-Type is accepted, e.g. `application/vnd.sqlite3`)", content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Imported"),
        (status = 400, description = "Not a sound SQLite database (`PRAGMA integrity_check`), an operator request without a tenant, or an invalid tenant (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Another user's tenant (`forbidden`)", body = ErrorBody),
        (status = 409, description = "The tenant has a database and `force` is not set (`conflict`), or other writers kept winning", body = ErrorBody),
        (status = 501, description = "The server has no tenant database cache", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn import_db(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<ImportQuery>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant(q.tenant)?;
    let dbs = tenant_dbs(&app)?;
    let dir = tempfile::tempdir().map_err(|e| io_error("creating a temporary directory", e))?;
    let path = dir.path().join("import.sqlite3");
    tokio::fs::write(&path, &body)
        .await
        .map_err(|e| io_error("writing the upload to a temporary file", e))?;
    dbs.import(&tenant, &path, q.force.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The size and commit sequence of a tenant's database.
#[utoipa::path(
    get,
    path = "/v1/db/info",
    tag = "db",
    params(TenantQuery),
    responses(
        (status = 200, description = "The database's sequence number and size", body = DbInfoBody),
        (status = 400, description = "An operator request without a tenant, or an invalid tenant (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Another user's tenant (`forbidden`)", body = ErrorBody),
        (status = 404, description = "The tenant has no database (`not_found`)", body = ErrorBody),
        (status = 501, description = "The server has no tenant database cache", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn db_info(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<TenantQuery>,
) -> Result<Json<DbInfoBody>, ApiError> {
    let tenant = caller.tenant(q.tenant)?;
    let info = tenant_dbs(&app)?.info(&tenant).await?;
    Ok(Json(DbInfoBody {
        tenant,
        seq: info.seq,
        page_size: info.page_size,
        pages: info.pages,
        bytes: info.bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_file_names_are_safe() {
        assert_eq!(file_name("alice"), "alice.sqlite3");
        assert_eq!(file_name("a/b \"c\""), "a_b__c_.sqlite3");
    }
}
