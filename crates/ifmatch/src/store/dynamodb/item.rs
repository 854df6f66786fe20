//! How a record is laid out in a DynamoDB item: the attribute names, reading
//! an [`Object`] or [`ObjectMeta`] back from an item, fresh versions, the
//! item size by DynamoDB's own counting rules, and the condition expression
//! of a [`Condition`].
//!
//! The schema is the table under "Item schema" in the [module docs](super).
//! What it guarantees: an item this module cannot read (a missing or
//! malformed attribute) is reported as corrupt, never guessed at; the size
//! computed is never below what DynamoDB counts, so an oversized item fails
//! here before it is sent.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;

use super::super::{Condition, Metadata, Object, ObjectMeta, Version};
use crate::error::{Error, Result};

/// Attribute: the key (partition key).
pub(super) const A_KEY: &str = "k";
/// Attribute: the value.
pub(super) const A_VALUE: &str = "v";
/// Attribute: the version.
pub(super) const A_VERSION: &str = "ver";
/// Attribute: the value's size.
pub(super) const A_SIZE: &str = "sz";
/// Attribute: the metadata map.
pub(super) const A_META: &str = "m";
/// Attribute: the expiry (TTL).
pub(super) const A_EXPIRES: &str = "exp";

pub(super) fn version_of(item: &HashMap<String, AttributeValue>) -> Option<Version> {
    item.get(A_VERSION)
        .and_then(|v| v.as_s().ok())
        .map(|s| Version::new(s.clone()))
}

/// A fresh version: 128 random bits in hex.
pub(super) fn new_version() -> Version {
    Version::new(uuid::Uuid::new_v4().simple().to_string())
}

pub(super) fn corrupt(key: &str, what: &str) -> Error {
    Error::msg(format!(
        "DynamoDB item for key '{key}' is not an ifmatch record: {what}"
    ))
}

pub(super) fn number_attr(
    item: &HashMap<String, AttributeValue>,
    name: &str,
    key: &str,
) -> Result<Option<u64>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(n)) => n.parse::<u64>().map(Some).map_err(|_| {
            corrupt(
                key,
                &format!("attribute '{name}' is {n:?}, not a size or time"),
            )
        }),
        Some(_) => Err(corrupt(key, &format!("attribute '{name}' is not a number"))),
    }
}

/// Reads everything but the value from an item.
pub(super) fn meta_of(item: &HashMap<String, AttributeValue>, key: &str) -> Result<ObjectMeta> {
    let version = version_of(item).ok_or_else(|| corrupt(key, "no string attribute 'ver'"))?;
    let size = match number_attr(item, A_SIZE, key)? {
        Some(s) => s,
        None => match item.get(A_VALUE) {
            Some(AttributeValue::B(b)) => b.as_ref().len() as u64,
            _ => 0,
        },
    };
    let mut metadata = Metadata::new();
    match item.get(A_META) {
        None => {}
        Some(AttributeValue::M(m)) => {
            for (name, value) in m {
                let value = value
                    .as_s()
                    .map_err(|_| corrupt(key, &format!("metadata '{name}' is not a string")))?;
                metadata.insert(name.clone(), value.clone());
            }
        }
        Some(_) => return Err(corrupt(key, "attribute 'm' is not a map")),
    }
    Ok(ObjectMeta {
        key: key.to_string(),
        version,
        size,
        metadata,
        expires_at: number_attr(item, A_EXPIRES, key)?,
    })
}

/// Reads a whole record from an item (taking the value without copying it).
pub(super) fn object_of(mut item: HashMap<String, AttributeValue>, key: &str) -> Result<Object> {
    let body = match item.remove(A_VALUE) {
        None => Bytes::new(),
        Some(AttributeValue::B(b)) => Bytes::from(b.into_inner()),
        Some(_) => return Err(corrupt(key, "attribute 'v' is not binary")),
    };
    let mut meta = meta_of(&item, key)?;
    meta.size = body.len() as u64;
    Ok(Object { meta, body })
}

/// The size DynamoDB counts for an item: attribute-name lengths plus value sizes.
pub(super) fn item_size(item: &HashMap<String, AttributeValue>) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + attribute_size(value))
        .sum()
}

/// The size of one attribute value by DynamoDB's rules (rounded up where they are approximate).
pub(super) fn attribute_size(value: &AttributeValue) -> u64 {
    match value {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::N(n) => number_size(n),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|a| attribute_size(a) + 1).sum::<u64>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, a)| k.len() as u64 + attribute_size(a) + 1)
                .sum::<u64>()
        }
        // Unknown future types: count the maximum of a number, to stay conservative.
        _ => 21,
    }
}

/// A number takes one byte per two significant digits plus one (at most 21).
pub(super) fn number_size(n: &str) -> u64 {
    let digits = n.bytes().filter(|b| b.is_ascii_digit()).count() as u64;
    (digits.div_ceil(2) + 1).min(21)
}

/// Builds the expression parts of a condition.
pub(super) struct Expr {
    pub(super) condition: Option<&'static str>,
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

pub(super) fn condition_expr(condition: &Condition) -> Expr {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let condition = match condition {
        Condition::Any => None,
        Condition::Absent => {
            names.insert("#k".to_string(), A_KEY.to_string());
            Some("attribute_not_exists(#k)")
        }
        Condition::Matches(v) => {
            names.insert("#ver".to_string(), A_VERSION.to_string());
            values.insert(":v".to_string(), AttributeValue::S(v.as_str().to_string()));
            Some("#ver = :v")
        }
    };
    Expr {
        condition,
        names,
        values,
    }
}

pub(super) fn non_empty<K, V>(m: HashMap<K, V>) -> Option<HashMap<K, V>> {
    if m.is_empty() { None } else { Some(m) }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::primitives::Blob;

    use super::super::{ITEM_SIZE_LIMIT, MAX_VALUE_SIZE};
    use super::*;

    #[test]
    fn sizes_follow_dynamodb_rules() {
        assert_eq!(number_size("0"), 2);
        assert_eq!(number_size("12"), 2);
        assert_eq!(number_size("123"), 3);
        assert_eq!(number_size("1700000000"), 6);
        let mut item = HashMap::new();
        item.insert("k".to_string(), AttributeValue::S("abc".into()));
        item.insert("v".to_string(), AttributeValue::B(Blob::new(vec![0u8; 10])));
        item.insert(
            "m".to_string(),
            AttributeValue::M(HashMap::from([(
                "ab".to_string(),
                AttributeValue::S("xyz".into()),
            )])),
        );
        // k: 1+3, v: 1+10, m: 1 + 3 + (2+3+1)
        assert_eq!(item_size(&item), 4 + 11 + 10);
    }

    #[test]
    fn max_value_always_fits() {
        // Worst case: the longest key, the most metadata, an expiry.
        let key = "k".repeat(crate::key::MAX_KEY_BYTES);
        let mut item = HashMap::new();
        item.insert(A_KEY.to_string(), AttributeValue::S(key));
        item.insert(
            A_VERSION.to_string(),
            AttributeValue::S(new_version().as_str().into()),
        );
        item.insert(
            A_SIZE.to_string(),
            AttributeValue::N(MAX_VALUE_SIZE.to_string()),
        );
        item.insert(
            A_VALUE.to_string(),
            AttributeValue::B(Blob::new(vec![0u8; MAX_VALUE_SIZE as usize])),
        );
        // The most entries (each costs a byte of overhead) within 2000 bytes of
        // names: every 1-character name, then 2-character names, empty values.
        let alphabet: Vec<char> = ('a'..='z').chain('0'..='9').chain(['-', '_']).collect();
        let mut names: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        'outer: for a in &alphabet {
            for b in &alphabet {
                if names.iter().map(String::len).sum::<usize>() + 2 > crate::key::MAX_METADATA_BYTES
                {
                    break 'outer;
                }
                names.push(format!("{a}{b}"));
            }
        }
        let m: HashMap<String, AttributeValue> = names
            .into_iter()
            .map(|n| (n, AttributeValue::S(String::new())))
            .collect();
        item.insert(A_META.to_string(), AttributeValue::M(m));
        item.insert(
            A_EXPIRES.to_string(),
            AttributeValue::N(u64::MAX.to_string()),
        );
        assert!(item_size(&item) <= ITEM_SIZE_LIMIT, "{}", item_size(&item));
    }

    #[test]
    fn versions_are_fresh() {
        let a = new_version();
        let b = new_version();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
    }
}
