//! The stored account record: its keys, its JSON format (current and
//! legacy) and account ids. Not public beyond the module: a record holds the
//! password hash.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::rules::{normalize_username, shown};
use super::timefmt;
use super::{AccountsError, User};

/// The prefix of account records: an account lives at `accounts/<username>`.
pub const KEY_PREFIX: &str = "accounts/";

/// Where records of [`LEGACY_RECORD_FORMAT`] lived (`users/<username>`, next
/// to the users' data): read only by [`super::Accounts::migrate_legacy`].
pub const LEGACY_KEY_PREFIX: &str = "users/";

/// The prefix of every account's own data: `users/<account id>/`.
pub const DATA_PREFIX: &str = "users/";

/// The format version written into every account record (see the module docs).
pub const RECORD_FORMAT: u32 = 2;

/// The format of records written before account ids (and of seed 003's items).
pub const LEGACY_RECORD_FORMAT: u32 = 1;

/// The key of a (folded) username's account record.
pub(crate) fn key_of(username: &str) -> String {
    format!("{KEY_PREFIX}{username}")
}

/// The key a (folded) username's legacy record had.
pub(crate) fn legacy_key_of(username: &str) -> String {
    format!("{LEGACY_KEY_PREFIX}{username}")
}

/// The key prefix of the data of the account with id `id`: `users/<id>/`.
///
/// ```
/// assert_eq!(ifmatch::accounts::data_prefix("alice"), "users/alice/");
/// ```
pub fn data_prefix(id: &str) -> String {
    format!("{DATA_PREFIX}{id}/")
}

/// The length of a generated account id: `u` and 32 hex digits, one more
/// character than the longest username, so that no generated id can ever
/// equal the id of a migrated account (which is its username).
pub const ACCOUNT_ID_LEN: usize = 33;

/// A fresh account id: `u` and 128 random bits in lowercase hex, from the
/// operating system's generator (not an injected, possibly seeded one: two
/// accounts must never share an id).
pub(crate) fn new_account_id() -> String {
    format!("u{}", uuid::Uuid::new_v4().simple())
}

/// Whether `id` is an account id: a generated one, or a username (the id of
/// an account migrated from [`LEGACY_RECORD_FORMAT`]). Either is a safe key
/// segment.
pub fn is_account_id(id: &str) -> bool {
    let generated = id.len() == ACCOUNT_ID_LEN
        && id.starts_with('u')
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    generated || normalize_username(id).ok().as_deref() == Some(id)
}

/// A record as stored. Fields in the order they are written.
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    #[serde(default = "legacy_format")]
    format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    username: String,
    name: String,
    password_hash: String,
    #[serde(default)]
    revision: u64,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

fn legacy_format() -> u32 {
    LEGACY_RECORD_FORMAT
}

/// Just the format field, read before the rest so a newer record is refused cleanly.
#[derive(Deserialize)]
struct FormatProbe {
    #[serde(default = "legacy_format")]
    format: u32,
}

/// A parsed account record.
#[derive(Clone)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) name: String,
    pub(crate) password_hash: String,
    pub(crate) revision: u64,
    pub(crate) created_at: SystemTime,
    pub(crate) updated_at: SystemTime,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("revision", &self.revision)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Record {
    /// Parses the record at `accounts/<username>`: format [`RECORD_FORMAT`] only.
    pub(crate) fn parse(key: &str, username: &str, body: &[u8]) -> Result<Record, AccountsError> {
        let stored = Self::stored(key, body)?;
        if stored.format == LEGACY_RECORD_FORMAT {
            return Err(corrupt(
                key,
                "a format-1 record has no account id; such records belong under users/ \
                 and are moved here by `ifmatch user migrate`"
                    .into(),
            ));
        }
        let id = match stored.id.clone() {
            Some(id) if is_account_id(&id) => id,
            Some(id) => {
                return Err(corrupt(
                    key,
                    format!("{:?} is not an account id", shown(&id)),
                ));
            }
            None => return Err(corrupt(key, "it has no account id".into())),
        };
        Self::finish(key, username, id, stored)
    }

    /// Parses a legacy record at `users/<username>` (format 1): its account
    /// id is its username, its revision 1.
    pub(crate) fn parse_legacy(
        key: &str,
        username: &str,
        body: &[u8],
    ) -> Result<Record, AccountsError> {
        let mut stored = Self::stored(key, body)?;
        if stored.format != LEGACY_RECORD_FORMAT {
            return Err(corrupt(
                key,
                format!("format {} is not a legacy record", stored.format),
            ));
        }
        stored.revision = 1;
        Self::finish(key, username, username.to_string(), stored)
    }

    fn stored(key: &str, body: &[u8]) -> Result<StoredRecord, AccountsError> {
        let probe: FormatProbe = serde_json::from_slice(body)
            .map_err(|e| corrupt(key, format!("not a JSON user record: {e}")))?;
        if probe.format > RECORD_FORMAT {
            return Err(AccountsError::UnsupportedFormat {
                key: key.to_string(),
                found: probe.format,
                supported: RECORD_FORMAT,
            });
        }
        if probe.format == 0 {
            return Err(corrupt(key, "format 0 does not exist".into()));
        }
        serde_json::from_slice(body)
            .map_err(|e| corrupt(key, format!("not a JSON user record: {e}")))
    }

    fn finish(
        key: &str,
        username: &str,
        id: String,
        stored: StoredRecord,
    ) -> Result<Record, AccountsError> {
        if stored.username.to_ascii_lowercase() != username {
            return Err(corrupt(
                key,
                format!(
                    "it names user {:?}, not {username:?}",
                    shown(&stored.username)
                ),
            ));
        }
        let created_at = timefmt::parse(&stored.created_at).ok_or_else(|| {
            corrupt(
                key,
                format!(
                    "created_at {:?} is not a timestamp",
                    shown(&stored.created_at)
                ),
            )
        })?;
        let updated_at = match &stored.updated_at {
            Some(s) => timefmt::parse(s).ok_or_else(|| {
                corrupt(key, format!("updated_at {:?} is not a timestamp", shown(s)))
            })?,
            None => created_at,
        };
        Ok(Record {
            id,
            username: username.to_string(),
            name: stored.name,
            password_hash: stored.password_hash,
            revision: stored.revision,
            created_at,
            updated_at,
        })
    }

    /// The record in the current format.
    pub(crate) fn to_bytes(&self) -> Result<Bytes, AccountsError> {
        let stored = StoredRecord {
            format: RECORD_FORMAT,
            id: Some(self.id.clone()),
            username: self.username.clone(),
            name: self.name.clone(),
            password_hash: self.password_hash.clone(),
            revision: self.revision,
            created_at: timefmt::format(self.created_at),
            updated_at: Some(timefmt::format(self.updated_at)),
        };
        serde_json::to_vec(&stored)
            .map(Bytes::from)
            .map_err(|e| AccountsError::Hashing(format!("cannot encode a user record: {e}")))
    }

    /// The account as the outside world sees it (no hash).
    pub(crate) fn user(&self) -> User {
        User {
            id: self.id.clone(),
            username: self.username.clone(),
            name: self.name.clone(),
            revision: self.revision,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn corrupt(key: &str, reason: String) -> AccountsError {
    AccountsError::CorruptRecord {
        key: key.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_never_usernames() {
        let id = new_account_id();
        assert_eq!(id.len(), ACCOUNT_ID_LEN);
        assert!(is_account_id(&id));
        assert!(
            normalize_username(&id).is_err(),
            "{id} is too long for a username"
        );
        assert_ne!(new_account_id(), id);
        assert!(
            is_account_id("alice"),
            "a migrated account's id is its username"
        );
        for bad in ["", "../x", "a/b", "U0123456789abcdef0123456789abcdef", "_x"] {
            assert!(!is_account_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn formats() {
        let legacy = br#"{"username":"Bob","name":"B","password_hash":"h","created_at":"2026-01-01T00:00:00Z"}"#;
        let r = Record::parse_legacy("users/bob", "bob", legacy).unwrap();
        assert_eq!((r.id.as_str(), r.revision), ("bob", 1));
        let e = Record::parse("accounts/bob", "bob", legacy).unwrap_err();
        assert!(e.to_string().contains("ifmatch user migrate"), "{e}");
        let current = r.to_bytes().unwrap();
        let back = Record::parse("accounts/bob", "bob", &current).unwrap();
        assert_eq!(back.user(), r.user());
        assert!(Record::parse_legacy("users/bob", "bob", &current).is_err());
        let evil = br#"{"format":2,"id":"../x","username":"bob","name":"","password_hash":"h","created_at":"2026-01-01T00:00:00Z"}"#;
        assert!(Record::parse("accounts/bob", "bob", evil).is_err());
    }
}
