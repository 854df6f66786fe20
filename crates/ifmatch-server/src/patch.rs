//! JSON patches: RFC 7396 merge patches and RFC 6902 JSON patches, applied to stored bytes.
//!
//! Pure functions, no I/O: [`apply`] takes a stored value and a patch document
//! and returns the new value, so the update loop can run it as often as it
//! needs to (seed 002's modification history: an RFC 6902
//! `{"op": "add", "path": "/modifications/-", "value": ...}` appends, and
//! re-applying it after a conflict appends to the *current* list, never to a
//! stale copy).

use bytes::Bytes;
use serde_json::Value;

/// The two patch formats this server applies, by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchFormat {
    /// `application/merge-patch+json` (RFC 7396).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
}

impl PatchFormat {
    /// The format named by a `Content-Type` value (parameters such as `charset` ignored).
    pub fn from_content_type(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/merge-patch+json") {
            Some(PatchFormat::Merge)
        } else if essence.eq_ignore_ascii_case("application/json-patch+json") {
            Some(PatchFormat::Json)
        } else {
            None
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is not valid (not JSON, not a list of operations).
    #[error("invalid patch document: {0}")]
    BadDocument(String),
    /// The stored value is not a JSON document, so it cannot be patched.
    #[error("the stored value is not a JSON document: {0}")]
    NotJson(String),
    /// An operation failed (a `test` that did not hold, a path that does not exist).
    #[error("patch cannot be applied: {0}")]
    Failed(String),
}

/// A parsed patch document, ready to apply any number of times.
#[derive(Debug, Clone)]
pub enum Patch {
    /// A merge patch.
    Merge(Value),
    /// A JSON patch.
    Json(json_patch::Patch),
}

impl Patch {
    /// Parses a patch document of the given format.
    pub fn parse(format: PatchFormat, body: &[u8]) -> Result<Self, PatchError> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| PatchError::BadDocument(e.to_string()))?;
        match format {
            PatchFormat::Merge => Ok(Patch::Merge(doc)),
            PatchFormat::Json => serde_json::from_value(doc)
                .map(Patch::Json)
                .map_err(|e| PatchError::BadDocument(e.to_string())),
        }
    }

    /// Applies the patch to a stored value and returns the new value (compact JSON).
    pub fn apply(&self, stored: &[u8]) -> Result<Bytes, PatchError> {
        let mut doc: Value =
            serde_json::from_slice(stored).map_err(|e| PatchError::NotJson(e.to_string()))?;
        match self {
            Patch::Merge(p) => json_patch::merge(&mut doc, p),
            // `doc` is a fresh copy that is dropped on error, so the operations need no
            // rollback: `json_patch::patch`'s undo can itself fail on some patches
            // (a `move` from a path a previous operation created) and then panics.
            Patch::Json(p) => json_patch::patch_unsafe(&mut doc, p)
                .map_err(|e| PatchError::Failed(e.to_string()))?,
        }
        serde_json::to_vec(&doc)
            .map(Bytes::from)
            .map_err(|e| PatchError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_media_type() {
        assert_eq!(
            PatchFormat::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchFormat::Merge)
        );
        assert_eq!(
            PatchFormat::from_content_type("Application/JSON-Patch+JSON"),
            Some(PatchFormat::Json)
        );
        assert_eq!(PatchFormat::from_content_type("application/json"), None);
    }

    #[test]
    fn merge_patch_replaces_and_removes() {
        let p = Patch::parse(PatchFormat::Merge, br#"{"title":"b","drop":null}"#).unwrap();
        let out = p.apply(br#"{"title":"a","drop":1,"keep":2}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"title": "b", "keep": 2}));
    }

    #[test]
    fn json_patch_appends_and_tests() {
        let p = Patch::parse(
            PatchFormat::Json,
            br#"[{"op":"add","path":"/modifications/-","value":{"by":"A"}}]"#,
        )
        .unwrap();
        let out = p.apply(br#"{"modifications":[{"by":"B"}]}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["modifications"].as_array().map(Vec::len), Some(2));

        let t = Patch::parse(
            PatchFormat::Json,
            br#"[{"op":"test","path":"/a","value":1}]"#,
        )
        .unwrap();
        assert!(matches!(t.apply(br#"{"a":2}"#), Err(PatchError::Failed(_))));
        assert!(matches!(t.apply(b"not json"), Err(PatchError::NotJson(_))));
        assert!(matches!(
            Patch::parse(PatchFormat::Json, br#"{"op":"add"}"#),
            Err(PatchError::BadDocument(_))
        ));
    }
}
