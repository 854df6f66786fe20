//! How a record travels over S3's HTTP interface: versions as ETags (and
//! back), object keys percent-encoded into URL paths, and user metadata and
//! expiry as `x-amz-meta-*` headers (values that plain headers cannot carry
//! travel as RFC 2047 encoded words).
//!
//! What it guarantees: every metadata value and expiry written comes back
//! unchanged; a version that cannot be an ETag is never sent as one (so it
//! never matches, rather than matching something else).

use std::borrow::Cow;

use http::header::HeaderValue;
use object_store::{Attribute, AttributeValue, Attributes};

use super::super::{Metadata, Version};

/// The metadata name under which `expires_at` is stored (seconds since the epoch).
pub(super) const EXPIRES_METADATA: &str = "ifmatch-expires";

/// A version from an ETag header or listing entry: the ETag without its quotes.
pub(super) fn version_from_etag(etag: &str) -> Version {
    let inner = etag
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or(etag);
    Version::new(inner)
}

/// The quoted ETag to send for `version`, or `None` if it cannot be an ETag
/// (empty, or not visible ASCII without quotes): such a version never matches.
pub(super) fn header_etag(version: &Version) -> Option<HeaderValue> {
    let v = version.as_str();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return None;
    }
    HeaderValue::from_str(&format!("\"{v}\"")).ok()
}

/// Percent-encodes an object key for a URL path: everything but unreserved characters and `/`.
pub(super) fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// User metadata and expiry as `object_store` attributes (`x-amz-meta-*` headers).
pub(super) fn attributes_from_metadata(metadata: &Metadata, expires_at: Option<u64>) -> Attributes {
    let mut attrs = Attributes::with_capacity(metadata.len() + 1);
    for (name, value) in metadata {
        attrs.insert(
            Attribute::Metadata(Cow::Owned(name.clone())),
            AttributeValue::from(encode_metadata_value(value)),
        );
    }
    if let Some(t) = expires_at {
        attrs.insert(
            Attribute::Metadata(Cow::Borrowed(EXPIRES_METADATA)),
            AttributeValue::from(t.to_string()),
        );
    }
    attrs
}

/// User metadata and expiry back from `object_store` attributes.
pub(super) fn metadata_from_attributes(attrs: &Attributes) -> (Metadata, Option<u64>) {
    let mut metadata = Metadata::new();
    let mut expires_at = None;
    for (attr, value) in attrs {
        if let Attribute::Metadata(name) = attr {
            if name == EXPIRES_METADATA {
                expires_at = value.as_ref().trim().parse().ok();
            } else {
                metadata.insert(name.to_string(), decode_metadata_value(value.as_ref()));
            }
        }
    }
    (metadata, expires_at)
}

pub(super) const Q_START: &str = "=?UTF-8?Q?";
pub(super) const Q_END: &str = "?=";

/// HTTP drops spaces at either end of a header value. Such values (and values
/// that look like an encoded word themselves) travel as an RFC 2047 encoded
/// word, `=?UTF-8?Q?...?=`, the convention S3 documents for metadata that
/// plain headers cannot carry; every other value is sent as is.
pub(super) fn encode_metadata_value(value: &str) -> String {
    let needs = value.starts_with(' ')
        || value.ends_with(' ')
        || (value.starts_with("=?") && value.ends_with("?="));
    if !needs {
        return value.to_string();
    }
    let mut out = String::from(Q_START);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'!' | b'*' | b'+' | b'-' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out.push_str(Q_END);
    out
}

/// Reverses [`encode_metadata_value`]; a value that is not a well-formed Q word stays as is.
pub(super) fn decode_metadata_value(value: &str) -> String {
    let Some(inner) = value
        .strip_prefix(Q_START)
        .and_then(|v| v.strip_suffix(Q_END))
    else {
        return value.to_string();
    };
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                out.push(b' ');
                i += 1;
            }
            b'=' => {
                let hex = inner
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => out.push(b),
                    None => return value.to_string(),
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_versions() {
        assert_eq!(version_from_etag("\"abc\"").as_str(), "abc");
        assert_eq!(version_from_etag("abc").as_str(), "abc");
        assert_eq!(header_etag(&Version::new("abc-2")).unwrap(), "\"abc-2\"");
        assert!(header_etag(&Version::new("")).is_none());
        assert!(header_etag(&Version::new("a\"b")).is_none());
        assert!(header_etag(&Version::new("a\nb")).is_none());
        assert!(header_etag(&Version::new("a b")).is_none());
    }

    #[test]
    fn key_encoding() {
        assert_eq!(encode_key("a/b c+d%e=f#g?h"), "a/b%20c%2Bd%25e%3Df%23g%3Fh");
        assert_eq!(encode_key("ü"), "%C3%BC");
        assert_eq!(encode_key("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn metadata_values_round_trip() {
        for v in [
            "",
            "plain",
            "json v1",
            " leading",
            "trailing ",
            " both ",
            "=?x?=",
            "=?UTF-8?Q?a?=",
            "a_b=c?d",
            "  ",
            "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        ] {
            let encoded = encode_metadata_value(v);
            assert!(
                !encoded.starts_with(' ') && !encoded.ends_with(' '),
                "{v:?} -> {encoded:?}"
            );
            assert_eq!(decode_metadata_value(&encoded), v, "{v:?} -> {encoded:?}");
        }
        assert_eq!(encode_metadata_value("json v1"), "json v1");
        assert_eq!(
            decode_metadata_value("=?UTF-8?Q?bad=Z?="),
            "=?UTF-8?Q?bad=Z?="
        );
    }

    #[test]
    fn expiry_travels_as_metadata() {
        let mut m = Metadata::new();
        m.insert("a".into(), "1".into());
        let attrs = attributes_from_metadata(&m, Some(1_700_000_000));
        assert_eq!(
            attrs
                .get(&Attribute::Metadata("ifmatch-expires".into()))
                .map(|v| v.as_ref()),
            Some("1700000000")
        );
        let (back, expires) = metadata_from_attributes(&attrs);
        assert_eq!(back, m);
        assert_eq!(expires, Some(1_700_000_000));
    }
}
