//! Sessions: the opaque bearer tokens a user gets at login.
//!
//! A token is `ifms_` followed by 64 hex digits (32 bytes from the operating
//! system's generator through `rand`'s thread generator). The store never
//! sees a token: the session lives at `sessions/<hex SHA-256 of the token>`
//! as JSON `{"account_id", "username", "revision", "created_at_ms",
//! "expires_at_ms"}`, created with `If-None-Match: *` and carrying its expiry
//! as the store's `expires_at` (so DynamoDB TTL removes old sessions, and
//! [`ifmatch::gc`] the others). A lookup hashes the presented token and reads
//! that key; a session past its expiry (by the injected clock) is no session.
//! Logout deletes the record.
//!
//! A session is bound to the account as it was when the password was
//! checked: its account id and its revision ([`ifmatch::accounts::User::revision`]).
//! [`Session::is_current_for`] accepts it only while the account still has
//! both, so deleting the account (or re-creating one by the same name: a
//! new id), resetting its password or renaming it ends the session, even a
//! session whose login checked the old password just before the change and
//! wrote its record just after. A session record of an older format (without
//! an account id) is refused.
//!
//! A stolen copy of the store therefore yields no usable token, and a token
//! is checked with one GET by its hash (no comparison of secrets in this process).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ifmatch::accounts::User;
use ifmatch::clock::DynClock;
use ifmatch::store::Metadata;
use ifmatch::{Condition, DynStore, Error, PutOptions, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix every session token starts with.
pub const TOKEN_PREFIX: &str = "ifms_";

/// The key prefix of session records.
pub const KEY_PREFIX: &str = "sessions/";

#[derive(Serialize, Deserialize)]
struct Record {
    account_id: String,
    username: String,
    revision: u64,
    created_at_ms: u64,
    expires_at_ms: u64,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The account id it was granted to.
    pub account_id: String,
    /// The account's username at login.
    pub username: String,
    /// The account's revision when the password was checked.
    pub revision: u64,
    /// When it was created (login).
    pub created_at: SystemTime,
    /// When it stops being accepted.
    pub expires_at: SystemTime,
}

impl Session {
    /// Whether this session still belongs to `user` as it is now: the same
    /// account (id) at the same revision as when the password was checked.
    pub fn is_current_for(&self, user: &User) -> bool {
        self.account_id == user.id && self.revision == user.revision
    }
}

/// A session just created: the token (shown once) and its expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The bearer token.
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The sessions in one store.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: DynStore,
    ttl: Duration,
    clock: DynClock,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether `token` has the shape of a session token (so other bearer tokens skip the store).
pub fn looks_like_token(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

impl Sessions {
    /// Sessions in `store` that last `ttl`, timed by `clock`.
    pub fn new(store: DynStore, ttl: Duration, clock: DynClock) -> Self {
        Sessions { store, ttl, clock }
    }

    fn key(token: &str) -> String {
        let digest = Sha256::digest(token.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{KEY_PREFIX}{hex}")
    }

    /// Starts a session for `user`, as returned by the password check (so
    /// bound to the revision that check read).
    pub async fn create(&self, user: &User) -> Result<NewSession, Error> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = std::iter::once(TOKEN_PREFIX.to_string())
            .chain(bytes.iter().map(|b| format!("{b:02x}")))
            .collect();
        let now = self.clock.now();
        let expires_at = now + self.ttl;
        let record = Record {
            account_id: user.id.clone(),
            username: user.username.clone(),
            revision: user.revision,
            created_at_ms: ms(now),
            expires_at_ms: ms(expires_at),
        };
        self.write(&token, &record, Condition::Absent).await?;
        Ok(NewSession { token, expires_at })
    }

    /// Writes a session record, carrying its expiry as the store's `expires_at`.
    async fn write(
        &self,
        token: &str,
        record: &Record,
        condition: Condition,
    ) -> Result<Version, Error> {
        let body =
            serde_json::to_vec(record).map_err(|e| Error::other("cannot encode a session", e))?;
        self.store
            .put(
                &Self::key(token),
                Bytes::from(body),
                PutOptions {
                    condition,
                    metadata: Metadata::new(),
                    expires_at: Some(record.expires_at_ms.div_ceil(1000)),
                },
            )
            .await
    }

    /// The live session of `token`, if any (`None`: unknown, logged out or expired).
    pub async fn lookup(&self, token: &str) -> Result<Option<Session>, Error> {
        if !looks_like_token(token) {
            return Ok(None);
        }
        Ok(self.read(token).await?.map(|(session, _)| session))
    }

    /// The live session of `token` with its record's version.
    async fn read(&self, token: &str) -> Result<Option<(Session, Version)>, Error> {
        let obj = match self.store.get(&Self::key(token)).await {
            Ok(obj) => obj,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(record) = serde_json::from_slice::<Record>(&obj.body) else {
            tracing::debug!("a session record of an unknown or older format; refusing it");
            return Ok(None);
        };
        if ms(self.clock.now()) >= record.expires_at_ms {
            return Ok(None);
        }
        let session = Session {
            account_id: record.account_id,
            username: record.username,
            revision: record.revision,
            created_at: UNIX_EPOCH + Duration::from_millis(record.created_at_ms),
            expires_at: UNIX_EPOCH + Duration::from_millis(record.expires_at_ms),
        };
        Ok(Some((session, obj.meta.version)))
    }

    /// Moves the session of `token` to `user`'s current revision, for the
    /// caller of a change it made itself (a new password): its other
    /// sessions end, this one goes on. Only a live session of the same
    /// account moves, and only with a write conditional on the record as
    /// read; `false` if it did not (the caller should log in again).
    pub async fn rebind(&self, token: &str, user: &User) -> Result<bool, Error> {
        if !looks_like_token(token) {
            return Ok(false);
        }
        let Some((session, version)) = self.read(token).await? else {
            return Ok(false);
        };
        if session.account_id != user.id {
            return Ok(false);
        }
        let record = Record {
            account_id: session.account_id,
            username: user.username.clone(),
            revision: user.revision,
            created_at_ms: ms(session.created_at),
            expires_at_ms: ms(session.expires_at),
        };
        match self
            .write(token, &record, Condition::Matches(version))
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends the session of `token` (logout); true if there was one.
    pub async fn delete(&self, token: &str) -> Result<bool, Error> {
        if !looks_like_token(token) {
            return Ok(false);
        }
        match self.store.delete(&Self::key(token), Condition::Any).await {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = format!("{TOKEN_PREFIX}{}", "ab".repeat(32));
        assert!(looks_like_token(&t));
        assert!(!looks_like_token("s3cret"));
        assert!(!looks_like_token(&format!(
            "{TOKEN_PREFIX}{}",
            "AB".repeat(32)
        )));
        assert!(!looks_like_token(&format!("{TOKEN_PREFIX}../x")));
    }
}
