//! The idempotency record: what is stored at `idempotency/KEY` ([`Record`],
//! its [`RecordState`]), what [`Idempotency::inspect`](super::Idempotency::inspect)
//! reports of it ([`RecordInfo`]), and the [`payload_hash`] a claim carries.
//!
//! The JSON layout is under "Record format" in the [module docs](super).
//! What it guarantees: the payload hash depends only on the payload's JSON
//! value (object keys are sorted before hashing), so the same payload
//! hashes alike however its maps were built.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[cfg(doc)]
use super::Idempotency;
use crate::store::Version;

/// The state of an idempotency record.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// A worker claimed the key and is running the handler.
    InProgress,
    /// The handler finished; the record holds its result.
    Completed,
}

impl fmt::Display for RecordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordState::InProgress => "in-progress",
            RecordState::Completed => "completed",
        })
    }
}

/// The JSON body of an idempotency record.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct Record {
    pub(super) key: String,
    pub(super) status: RecordState,
    pub(super) payload_hash: String,
    pub(super) claim_id: String,
    pub(super) claimed_at_ms: u64,
    pub(super) updated_at_ms: u64,
    /// In progress: when the claim goes stale. Completed: when the result expires.
    pub(super) expires_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) result: Option<Value>,
}

/// What an idempotency record says, as [`Idempotency::inspect`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordInfo {
    /// The idempotency key.
    pub key: String,
    /// In progress or completed.
    pub state: RecordState,
    /// The hex SHA-256 of the payload the key was claimed for.
    pub payload_hash: String,
    /// When the (current) claim was made, by the claimer's clock.
    pub claimed_at: SystemTime,
    /// When the record was last written.
    pub updated_at: SystemTime,
    /// In progress: when the claim goes stale. Completed: when the result expires.
    pub expires_at: SystemTime,
    /// The stored result, as JSON (`None` while in progress).
    pub result: Option<Value>,
    /// The record's store version.
    pub version: Version,
}

/// The hex SHA-256 of `payload`'s canonical JSON (object keys sorted).
pub fn payload_hash<P: Serialize + ?Sized>(payload: &P) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(payload)?;
    let mut canonical = Vec::new();
    write_canonical(&value, &mut canonical)?;
    let digest = Sha256::digest(&canonical);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) fn write_canonical(v: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                if let Some(x) = map.get(k) {
                    write_canonical(x, out)?;
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out)?;
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hash_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(payload_hash(&a).unwrap(), payload_hash(&b).unwrap());
        assert_ne!(
            payload_hash(&a).unwrap(),
            payload_hash(&serde_json::json!({"b": 2})).unwrap()
        );
        assert_eq!(payload_hash("x").unwrap().len(), 64);
    }
}
