//! Leases over HTTP: proof of ownership between requests.
//!
//! An HTTP client cannot keep the library's [`Lease`] value between two
//! requests, so the **owner id** returned at acquire is the proof: renew and
//! release send it back (`Lease-Owner` header), and the server rebuilds the
//! lease from the lease record (its documented format: `owner`, `token`,
//! `acquired_at_ms`, `expires_at_ms`, `state`) when the owner id matches
//! (compared in constant time). Renew and release then run the library's own
//! conditional writes, so a stale or foreign owner id can never land.
//!
//! Because the owner id is a secret, it is never shown to others: a `409`
//! names the holder by its **fingerprint** (the first 16 hex digits of the
//! SHA-256 of its owner id), which the holder also gets at acquire to
//! recognise itself.

use std::time::Duration;

use http::StatusCode;
use ifmatch::Error;
use ifmatch::lease::{Lease, Leases};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The public fingerprint of an owner id.
pub fn fingerprint(owner: &str) -> String {
    let d = Sha256::digest(owner.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `presented` is `owner` (constant time in the contents).
fn same_owner(owner: &str, presented: &str) -> bool {
    let a: [u8; 32] = Sha256::digest(owner.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    a.ct_eq(&b).into()
}

/// The fields of the lease record this module reads.
#[derive(Deserialize)]
struct RecordView {
    state: String,
    owner: String,
    token: u64,
    acquired_at_ms: u64,
    expires_at_ms: u64,
}

fn not_owner(name: &str, why: &str) -> ApiError {
    ApiError::refused(
        StatusCode::CONFLICT,
        "not_owner",
        format!("lease '{name}' is not held by this owner: {why}"),
        Some(name),
    )
}

/// The lease `name` as held by `owner`, renewing by `ttl`; 409 `not_owner`
/// unless `owner` holds it now. A lease `owner` already released is
/// `Ok(None)` (releasing twice is fine).
pub async fn held_by(
    leases: &Leases,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, ApiError> {
    let key = leases.key(name);
    let obj = match leases.store().get(&key).await {
        Ok(obj) => obj,
        Err(Error::NotFound { .. }) => return Err(not_owner(name, "it was never taken")),
        Err(e) => return Err(ApiError::from_store(e, false)),
    };
    let rec: RecordView = serde_json::from_slice(&obj.body).map_err(|e| {
        ApiError::from_kind(
            ifmatch::ErrorKind::Other,
            format!("the record of lease '{name}' is not a lease record: {e}"),
            Some(name),
        )
    })?;
    if !same_owner(&rec.owner, owner) {
        return Err(not_owner(
            name,
            &format!("its holder is {}", fingerprint(&rec.owner)),
        ));
    }
    if rec.state != "held" {
        return Ok(None);
    }
    // The library's lease is plain serializable data (made to be carried
    // between invocations); rebuild it from the record.
    let lease = serde_json::json!({
        "name": name,
        "owner": rec.owner,
        "token": rec.token,
        "acquired_at_ms": rec.acquired_at_ms,
        "expires_at_ms": rec.expires_at_ms,
        "ttl_ms": ttl.as_millis() as u64,
        "version": obj.meta.version,
    });
    serde_json::from_value(lease).map(Some).map_err(|e| {
        ApiError::from_kind(
            ifmatch::ErrorKind::Other,
            format!("cannot rebuild lease '{name}': {e}"),
            Some(name),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_hide_the_owner() {
        let f = fingerprint("http-0123456789abcdef01234567");
        assert_eq!(f.len(), 16);
        assert!(!f.contains("0123456789"));
        assert!(same_owner("a", "a"));
        assert!(!same_owner("a", "b"));
    }
}
