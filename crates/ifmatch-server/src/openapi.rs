//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
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
        crate::routes::ops::healthz,
        crate::routes::ops::metrics,
        crate::routes::ops::openapi,
    ),
    components(schemas(ErrorBody, WriteResult, Health)),
    modifiers(&OperatorKeyScheme)
)]
pub struct ApiDoc;

/// Declares the `operator_key` bearer scheme the `/v1` routes name.
struct OperatorKeyScheme;

impl Modify for OperatorKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "operator_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
