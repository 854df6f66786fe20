//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::routes::accounts::{LoginRequest, MeBody, RegisterRequest, SessionBody, UserBody};
use crate::routes::db::{BatchRequest, BatchResultBody, StatementRequest, StatementResultBody};
use crate::routes::idempotency::{ClaimRequest, CompleteRequest, IdempotencyBody};
use crate::routes::leases::{AcquireRequest, LeaseBody, RenewRequest};
use crate::routes::objects::WriteResult;
use crate::routes::ops::Health;

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
        crate::routes::db::run_batch,
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
        BatchRequest,
        StatementRequest,
        BatchResultBody,
        StatementResultBody,
    )),
    modifiers(&BearerScheme)
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
