//! The operator key: `Authorization: Bearer <key>` on every `/v1` route.
//!
//! The key is kept only as its SHA-256 digest, and a presented key is hashed
//! and compared in constant time ([`subtle`]), so neither the contents nor the
//! length of the key leak through response timing.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// The operator key, as a digest.
#[derive(Clone)]
pub struct OperatorKey([u8; 32]);

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorKey(<redacted>)")
    }
}

impl OperatorKey {
    /// Keeps the digest of `key`.
    pub fn new(key: &str) -> Self {
        OperatorKey(Sha256::digest(key.as_bytes()).into())
    }

    /// Whether `presented` is the key (constant time).
    pub fn verify(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.0).into()
    }

    /// Whether an `Authorization` header value carries the key as a bearer token.
    pub fn verify_header(&self, value: &[u8]) -> bool {
        let Some(space) = value.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, rest) = value.split_at(space);
        let token = rest.trim_ascii();
        scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty() && self.verify(token)
    }
}

/// Middleware: 401 unless the request presents the operator key (when the server has one).
pub async fn require_operator_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = state.operator_key() {
        let ok = req
            .headers()
            .get(AUTHORIZATION)
            .is_some_and(|v| key.verify_header(v.as_bytes()));
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let k = OperatorKey::new("s3cret");
        assert!(k.verify_header(b"Bearer s3cret"));
        assert!(k.verify_header(b"bearer  s3cret "));
        assert!(!k.verify_header(b"Bearer s3cre"));
        assert!(!k.verify_header(b"Basic s3cret"));
        assert!(!k.verify_header(b"Bearer"));
        assert!(!k.verify_header(b"s3cret"));
        assert!(!format!("{k:?}").contains("s3cret"));
    }
}
