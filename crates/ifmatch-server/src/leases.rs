//! Leases over HTTP: proof of ownership between requests.
//!
//! An HTTP client cannot keep the library's [`Lease`] value between two
//! requests, so the **owner id** returned at acquire is the proof: renew and
//! release send it back (`Lease-Owner` header), and the server rebuilds the
//! lease from what the lease record says ([`Leases::inspect`],
//! [`ifmatch::lease::LeaseInfo::into_lease`]) when the owner id matches
//! (compared in constant time). Renew and release then run the library's own
//! conditional writes, so a stale or foreign owner id can never land.
//!
//! Because the owner id is a secret, it is never shown to others: a `409`
//! names the holder by its **fingerprint** (the first 16 hex digits of the
//! SHA-256 of its owner id), which the holder also gets at acquire to
//! recognise itself.

use std::time::Duration;

use http::StatusCode;
use ifmatch::lease::{Lease, Leases};
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
    let Some(info) = leases.inspect(name).await? else {
        return Err(not_owner(name, "it was never taken"));
    };
    if !same_owner(&info.owner, owner) {
        return Err(not_owner(
            name,
            &format!("its holder is {}", fingerprint(&info.owner)),
        ));
    }
    Ok(info.into_lease(ttl))
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
