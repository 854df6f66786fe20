//! Authentication: `Authorization: Bearer <operator key or session token>` on `/v1` routes.
//!
//! [`authenticate`] resolves the credential into a [`Principal`] (the
//! operator, or a user with a live session from [`crate::sessions`], bound to
//! the account's id and revision); the [`Caller`] extractor answers 401
//! where a route needs one, and [`Caller::check_scope`] keeps users to their
//! own prefix, `users/<account id>/` (never their reusable username).
//!
//! [`ClientIp`] is the client's address, for the failed-login back-off: the
//! TCP peer ([`ClientAddr`], set by [`crate::serve`]), or, behind a proxy the
//! operator trusts ([`crate::ServerConfig::client_ip_header`]), the last
//! address in that header.
//!
//! The operator key is kept only as its SHA-256 digest, and a presented key is hashed
//! and compared in constant time ([`subtle`]), so neither the contents nor the
//! length of the key leak through response timing.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use ifmatch::accounts::User;

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
        bearer_token(value).is_some_and(|t| self.verify(t.as_bytes()))
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: presented the operator key (or the server has none).
    Operator,
    /// A user with a live session: their account as read for this request
    /// (at the revision the session was granted at).
    User(User),
}

/// What the authentication middleware found, kept in the request's extensions.
#[derive(Debug, Clone)]
enum Credential {
    /// No `Authorization` header (and the server has an operator key).
    Missing,
    /// A valid operator key or session token.
    Valid(Principal),
    /// A bearer token that is neither the operator key nor a live session.
    Invalid,
}

/// The bearer token of an `Authorization` header value.
pub fn bearer_token(value: &[u8]) -> Option<&str> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let token = std::str::from_utf8(rest.trim_ascii()).ok()?;
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// Middleware on every `/v1` route: resolves the credential (operator key or
/// session token) into a [`Principal`] for the handlers' extractors. It
/// refuses nothing itself: [`Caller`] answers 401 where a caller is needed.
///
/// Without an operator key, a request without credentials is the operator
/// (the server then listens on loopback only, see [`crate::bind`]), and a
/// bearer token that does not look like a session token is ignored.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let key = state.operator_key();
    let credential = match header.as_deref().map(bearer_token) {
        None if key.is_none() => Credential::Valid(Principal::Operator),
        None => Credential::Missing,
        Some(None) => Credential::Invalid,
        Some(Some(token)) => {
            if key.is_some_and(|k| k.verify(token.as_bytes())) {
                Credential::Valid(Principal::Operator)
            } else if crate::sessions::looks_like_token(token) {
                match state.sessions().lookup(token).await {
                    // The account must still exist, the same account (id) at
                    // the same revision as when the password was checked: one
                    // more read per request, so that deleting a user or
                    // resetting a password ends their sessions at once.
                    Ok(Some(s)) => match state.accounts().get(&s.username).await {
                        Ok(Some(user)) if s.is_current_for(&user) => {
                            Credential::Valid(Principal::User(user))
                        }
                        Ok(_) => Credential::Invalid,
                        Err(e) => return ApiError::from(e).into_response(),
                    },
                    Ok(None) => Credential::Invalid,
                    Err(e) => return ApiError::from_store(e, false).into_response(),
                }
            } else if key.is_none() {
                Credential::Valid(Principal::Operator)
            } else {
                Credential::Invalid
            }
        }
    };
    req.extensions_mut().insert(credential);
    next.run(req).await
}

/// The authenticated caller of a `/v1` route (401 without valid credentials).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Credential>() {
            Some(Credential::Valid(p)) => Ok(Caller(p.clone())),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// The caller if it sent credentials (`None` without any; 401 for wrong ones).
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Credential>() {
            Some(Credential::Valid(p)) => Ok(MaybeCaller(Some(p.clone()))),
            Some(Credential::Missing) | None => Ok(MaybeCaller(None)),
            Some(Credential::Invalid) => Err(ApiError::Unauthorized),
        }
    }
}

impl Caller {
    /// Refuses (403) a user outside their scope: objects, leases and
    /// idempotency keys are operator scope, except `users/<account id>/...`
    /// for a user when the server has per-user prefixes.
    pub fn check_scope(&self, state: &AppState, what: &str, key: &str) -> Result<(), ApiError> {
        let prefix = self.own_prefix(state, what)?;
        if prefix.is_empty() || (key.starts_with(&prefix) && key.len() > prefix.len()) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{what} '{key}' is outside your scope: use names under '{prefix}'"
            )))
        }
    }

    /// The key prefix of the caller's own `what`s: `""` (everything) for the
    /// operator, the user's prefix for a user when the server has per-user
    /// prefixes (403 otherwise). Snapshots and build leases of a user live
    /// under it.
    pub fn own_prefix(&self, state: &AppState, what: &str) -> Result<String, ApiError> {
        let Principal::User(user) = &self.0 else {
            return Ok(String::new());
        };
        if !state.config().user_prefixes {
            return Err(ApiError::Forbidden(format!(
                "{what}s are operator scope on this server (it has no per-user prefixes)"
            )));
        }
        Ok(user.data_prefix())
    }

    /// The prefix a listing of `requested` may cover: `requested` for the
    /// operator; for a user, `requested` narrowed to their own prefix (their
    /// prefix itself when `requested` is empty or above it; 403 when it lies
    /// outside it).
    pub fn list_prefix(&self, state: &AppState, requested: &str) -> Result<String, ApiError> {
        let own = self.own_prefix(state, "object")?;
        if requested.starts_with(&own) {
            Ok(requested.to_string())
        } else if own.starts_with(requested) {
            Ok(own)
        } else {
            Err(ApiError::Forbidden(format!(
                "prefix '{requested}' is outside your scope: list under '{own}'"
            )))
        }
    }

    /// The tenant database the caller reaches: a user their own, named by
    /// their account id (they may name it by id or username; naming another
    /// is 403); the operator must name one (400 without).
    pub fn tenant(&self, requested: Option<String>) -> Result<String, ApiError> {
        match (&self.0, requested) {
            (Principal::User(user), None) => Ok(user.id.clone()),
            (Principal::User(user), Some(t)) if t == user.id || t == user.username => {
                Ok(user.id.clone())
            }
            (Principal::User(_), Some(_)) => Err(ApiError::Forbidden(
                "a user reaches only their own tenant database".into(),
            )),
            (Principal::Operator, Some(t)) => Ok(t),
            (Principal::Operator, None) => Err(ApiError::BadRequest(
                "the operator must name the tenant (\"tenant\" in the body, or ?tenant= in the query)"
                    .into(),
            )),
        }
    }

    /// Refuses (403) anyone but the operator.
    pub fn require_operator(&self, what: &str) -> Result<(), ApiError> {
        match &self.0 {
            Principal::Operator => Ok(()),
            Principal::User(_) => Err(ApiError::Forbidden(format!(
                "{what} needs the operator key"
            ))),
        }
    }
}

/// The TCP peer of a connection, put into each request's extensions by [`crate::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client's address for the failed-login back-off: the last address in
/// [`crate::ServerConfig::client_ip_header`] when the server is configured
/// to trust one (the address the operator's proxy appended), else the
/// connection's peer; `None` when neither is known (then only the
/// per-username back-off applies).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(name) = &state.config().client_ip_header {
            // The rightmost address: the one the trusted proxy appended
            // (anything left of it came from the client).
            let forwarded = parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|a| a.trim().parse::<IpAddr>().ok());
            if forwarded.is_some() {
                return Ok(ClientIp(forwarded));
            }
        }
        Ok(ClientIp(parts.extensions.get::<ClientAddr>().map(|a| a.0)))
    }
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
