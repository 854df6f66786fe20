//! Key and metadata validation, in one place.
//!
//! Every backend calls [`validate_key`] before touching storage, so a bad key
//! gets [`Error::InvalidKey`] on every backend alike and can never name a path
//! outside a `file://` store.
//!
//! A key is non-empty UTF-8 of at most [`MAX_KEY_BYTES`] bytes, made of
//! `/`-separated segments. It may not start or end with `/`, contain an empty
//! segment (`a//b`), a `.` or `..` segment, a NUL, a control character or a
//! backslash (which some backends would treat as a separator).
//!
//! Metadata is a small map of strings that travels with a value. Names are
//! 1–64 characters of lowercase ASCII letters, digits, `-` and `_` (S3 folds
//! header names to lowercase, so mixed case would not round-trip); values are
//! printable ASCII (S3 would mangle anything else); names and values together
//! take at most [`MAX_METADATA_BYTES`] bytes. Names beginning with `ifmatch-`
//! are reserved for ifmatch itself (write ids, expiry).

use crate::error::{Error, Result};
use crate::store::Metadata;

/// The longest key accepted, in bytes of UTF-8 (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// The most metadata accepted, names and values added up, in bytes (S3 allows 2 KB).
pub const MAX_METADATA_BYTES: usize = 2000;

/// The prefix of metadata names that ifmatch reserves for itself.
pub const RESERVED_METADATA_PREFIX: &str = "ifmatch-";

/// Checks that `key` is a valid key; see the module docs for the rules.
///
/// ```
/// use ifmatch::key::validate_key;
/// assert!(validate_key("users/alice/profile.json").is_ok());
/// assert!(validate_key("../etc/passwd").is_err());
/// assert!(validate_key("/absolute").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |reason: &str| {
        let shown: String = key.chars().take(80).collect();
        Err(Error::InvalidKey {
            key: shown,
            reason: reason.to_string(),
        })
    };
    if key.is_empty() {
        return bad("a key may not be empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return bad(&format!(
            "a key may be at most {MAX_KEY_BYTES} bytes, this one is {}",
            key.len()
        ));
    }
    if key.starts_with('/') {
        return bad("a key may not start with '/'");
    }
    if key.ends_with('/') {
        return bad("a key may not end with '/'");
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return bad(&format!(
            "a key may not contain control characters (found U+{:04X})",
            c as u32
        ));
    }
    if key.contains('\\') {
        return bad("a key may not contain '\\'");
    }
    for segment in key.split('/') {
        match segment {
            "" => return bad("a key may not contain an empty segment ('//')"),
            "." | ".." => return bad("a key may not contain a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a listing prefix: empty (everything), or a key-like string that may end with `/`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    validate_key(trimmed)
}

/// Checks user metadata: names, values and total size; see the module docs.
pub fn validate_metadata(metadata: &Metadata) -> Result<()> {
    let mut total = 0;
    for (name, value) in metadata {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidInput(format!(
                "metadata name {name:?} must be 1-64 characters of a-z, 0-9, '-' and '_'"
            )));
        }
        if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(Error::InvalidInput(format!(
                "metadata value for {name:?} must be printable ASCII"
            )));
        }
        total += name.len() + value.len();
    }
    if total > MAX_METADATA_BYTES {
        return Err(Error::InvalidInput(format!(
            "metadata takes {total} bytes, more than the limit of {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in [
            "a",
            "a/b/c",
            "x.json",
            "a/.hidden",
            "ünïcødé/ключ",
            "a..b",
            "a b",
        ] {
            assert!(validate_key(k).is_ok(), "{k}");
        }
        assert!(validate_key(&"k".repeat(1024)).is_ok());
    }

    #[test]
    fn rejects_bad_keys() {
        let long = "k".repeat(1025);
        for k in [
            "", "/a", "a/", "a//b", ".", "..", "a/../b", "../a", "a/.", "a\0b", "a\nb", "a\\b",
            "\u{7f}", &long,
        ] {
            let err = validate_key(k).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{k:?}: {err}");
        }
    }

    #[test]
    fn metadata_rules() {
        let mut m = Metadata::new();
        m.insert("content-kind".into(), "json v1".into());
        assert!(validate_metadata(&m).is_ok());
        m.insert("Upper".into(), "x".into());
        assert!(validate_metadata(&m).is_err());
        let mut m = Metadata::new();
        m.insert("a".into(), "é".into());
        assert!(validate_metadata(&m).is_err());
        let mut m = Metadata::new();
        m.insert("a".into(), "x".repeat(MAX_METADATA_BYTES));
        assert!(validate_metadata(&m).is_err());
    }
}
