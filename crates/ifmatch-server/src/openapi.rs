//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.

use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::routes::accounts::{
    ChangePasswordRequest, LoginRequest, MeBody, RegisterRequest, SessionBody, UserBody,
    UserListBody,
};
use crate::routes::db::{BatchRequest, BatchResultBody, StatementRequest, StatementResultBody};
use crate::routes::db_files::DbInfoBody;
use crate::routes::idempotency::{ClaimRequest, CompleteRequest, IdempotencyBody};
use crate::routes::inspect::{LeaseInfoBody, RecordBody};
use crate::routes::leases::{AcquireRequest, LeaseBody, RenewRequest};
use crate::routes::listing::{ListBody, ListedObject};
use crate::routes::objects::WriteResult;
use crate::routes::ops::Health;
use crate::routes::snapshots::{PublishBody, RollbackRequest, VersionBody, VersionsBody};

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "ifmatch", description = "Compare-and-swap on versioned keys over HTTP"),
    paths(
        crate::routes::objects::get_object,
        crate::routes::objects::head_object,
        crate::routes::objects::put_object,
        crate::routes::objects::patch_object,
        crate::routes::objects::delete_object,
        crate::routes::leases::acquire_lease,
        crate::routes::leases::renew_lease,
        crate::routes::leases::release_lease,
        crate::routes::idempotency::claim_key,
        crate::routes::idempotency::complete_key,
        crate::routes::idempotency::abandon_key,
        crate::routes::accounts::register,
        crate::routes::accounts::login,
        crate::routes::accounts::logout,
        crate::routes::accounts::me,
        crate::routes::accounts::list_users,
        crate::routes::accounts::delete_user,
        crate::routes::accounts::change_password,
        crate::routes::db::run_batch,
        crate::routes::snapshots::publish_snapshot,
        crate::routes::snapshots::get_snapshot,
        crate::routes::snapshots::list_versions,
        crate::routes::snapshots::get_version,
        crate::routes::snapshots::rollback_snapshot,
        crate::routes::snapshots::acquire_build,
        crate::routes::snapshots::release_build,
        crate::routes::listing::list_objects,
        crate::routes::inspect::inspect_lease,
        crate::routes::inspect::inspect_key,
        crate::routes::db_files::export_db,
        crate::routes::db_files::import_db,
        crate::routes::db_files::db_info,
        crate::routes::ops::healthz,
        crate::routes::ops::metrics,
        crate::routes::ops::openapi,
    ),
    components(schemas(
        ErrorBody,
        WriteResult,
        Health,
        AcquireRequest,
        RenewRequest,
        LeaseBody,
        ClaimRequest,
        CompleteRequest,
        IdempotencyBody,
        RegisterRequest,
        LoginRequest,
        UserBody,
        SessionBody,
        MeBody,
        UserListBody,
        ChangePasswordRequest,
        BatchRequest,
        StatementRequest,
        BatchResultBody,
        StatementResultBody,
        PublishBody,
        VersionBody,
        VersionsBody,
        RollbackRequest,
        ListBody,
        ListedObject,
        LeaseInfoBody,
        RecordBody,
        DbInfoBody,
    )),
    modifiers(&BearerScheme, &CommonResponses, &IdempotencyKeyHeader)
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the `/v1` routes name: the operator key or a
/// session token from `POST /v1/sessions`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator key (--api-key), or a session token from POST /v1/sessions",
                    ))
                    .build(),
            ),
        );
    }
}

/// The answers every `/v1` operation can give besides its own, declared once
/// as `components/responses` and referenced from each operation that does
/// not say more about them itself: 400 (a malformed key, header or body),
/// 401, 413 (operations with a body) and the server errors 500, 503 and 504.
struct CommonResponses;

/// `(status, component name, description)` of the shared responses.
const COMMON: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "A malformed key, header or body (`bad_request`)",
    ),
    (
        "401",
        "Unauthorized",
        "Missing, wrong or expired credentials (`unauthorized`); with `WWW-Authenticate: Bearer`",
    ),
    (
        "413",
        "PayloadTooLarge",
        "The body is larger than the server's limit (`payload_too_large`)",
    ),
    ("500", "InternalError", "An unexpected failure (`internal`)"),
    (
        "503",
        "Unavailable",
        "The store is unreachable (`unavailable`): retry later",
    ),
    (
        "504",
        "Timeout",
        "The outcome of a write is unknown (`outcome_unknown`), or the request took longer than the server's request timeout (`timeout`): a write may or may not have landed. Retry with the same `Idempotency-Key` to settle it, or re-read before retrying",
    ),
];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (_, name, description) in COMMON {
            components
                .responses
                .insert((*name).to_string(), RefOr::T(error_response(description)));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.head,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let has_body = op.request_body.is_some();
                for (status, name, _) in COMMON {
                    if *status == "413" && !has_body {
                        continue;
                    }
                    op.responses
                        .responses
                        .entry((*status).to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
                }
            }
        }
    }
}

/// Declares the optional `Idempotency-Key` header on every `/v1` POST and
/// PATCH that accepts it (all but `POST /v1/sessions`) and on the snapshot
/// publish PUT ([`crate::idempotency_key::takes_key`]), with its two answers
/// of its own: 409 `idempotency_in_progress` and 422 `idempotency_key_reused`
/// (see [`crate::idempotency_key`]).
struct IdempotencyKeyHeader;

impl Modify for IdempotencyKeyHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "1-255 printable ASCII characters, as a structured-field string or bare. A retry \
                 with the same key and request gets the first answer (`Idempotent-Replayed: true`) \
                 and never applies the change twice",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(crate::idempotency_key::MAX_KEY_LEN))
                    .pattern(Some("^[!-~]([ -~]*[!-~])?$")),
            ))
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") || path == "/v1/sessions" {
                continue;
            }
            let put = item
                .put
                .as_mut()
                .filter(|_| crate::idempotency_key::takes_key(&http::Method::PUT, path));
            for op in [item.post.as_mut(), item.patch.as_mut(), put]
                .into_iter()
                .flatten()
            {
                op.parameters
                    .get_or_insert_with(Vec::new)
                    .push(header.clone());
                for (status, text) in [
                    (
                        "409",
                        "A conflict, or (`idempotency_in_progress`, with `Retry-After`) a request \
                         with this Idempotency-Key is still running",
                    ),
                    (
                        "422",
                        "This Idempotency-Key was used for a different request (`idempotency_key_reused`)",
                    ),
                ] {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(error_response(text)));
                }
            }
        }
    }
}

/// A response with a JSON [`ErrorBody`].
fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}
