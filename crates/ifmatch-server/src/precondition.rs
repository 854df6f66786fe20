//! HTTP preconditions (RFC 9110 §13): entity tags, `If-Match` and `If-None-Match`.
//!
//! A key's [`Version`] is sent as a strong entity tag: the version string in
//! double quotes (`"g7"`). Versions are opaque; the rare byte that may not
//! appear inside an entity tag (`"`, a control character, a space, DEL, non-ASCII) and
//! `%` itself are percent-encoded, so every version has exactly one tag and
//! back ([`etag_for`], [`version_of`]).
//!
//! [`Preconditions::evaluate`] follows the order of RFC 9110 §13.2.2:
//!
//! 1. `If-Match` present and false: 412 Precondition Failed (strong comparison;
//!    `*` is true when the key exists; a weak tag never matches);
//! 2. `If-Match` absent, `If-Unmodified-Since` present: ignored — versions are
//!    not dates, and §13.1.4 says a recipient must ignore it when the resource
//!    has no modification date;
//! 3. `If-None-Match` present and false: 304 Not Modified for GET and HEAD,
//!    412 for every other method (weak comparison; `*` is false when the key exists);
//! 4. `If-None-Match` absent, `If-Modified-Since` present: ignored, for the same
//!    reason as 2 (§13.1.3);
//! 5. `Range` is not supported, so `If-Range` is ignored.
//!
//! Several field lines of one header are one comma-separated list (§5.3). A
//! value that does not parse (an unquoted tag, `*` mixed with tags, a
//! dangling `W/`) is rejected with [`PreconditionError`] (400), rather than
//! guessed at.

use http::HeaderMap;
use http::header::{IF_MATCH, IF_NONE_MATCH};
use ifmatch::{Condition, Version};

/// A header whose value is not a valid `If-Match` / `If-None-Match` field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {header} header: {reason}")]
pub struct PreconditionError {
    /// The header's name.
    pub header: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// One entity tag (RFC 9110 §8.8.3): its opaque content (without quotes) and weakness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// `W/"..."`.
    pub weak: bool,
    /// The characters between the quotes.
    pub tag: String,
}

impl EntityTag {
    /// Strong comparison (§8.8.3.2): both strong and identical.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.tag == other.tag
    }
    /// Weak comparison: identical contents, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.tag == other.tag
    }
}

/// The value of an `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    /// `*`: any current representation.
    Any,
    /// A list of entity tags (possibly empty).
    Tags(Vec<EntityTag>),
}

/// What the preconditions say about a request, given the key's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// All preconditions hold: perform the method.
    Proceed,
    /// 304 Not Modified (only for GET and HEAD).
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// The preconditions of one request (only the ones this server evaluates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`, if present.
    pub if_match: Option<TagList>,
    /// `If-None-Match`, if present.
    pub if_none_match: Option<TagList>,
}

/// The strong ETag of a version: the version in double quotes, escaped if need be.
pub fn etag_for(version: &Version) -> String {
    format!("\"{}\"", tag_of(version))
}

/// The opaque content of the ETag of `version` (what [`etag_for`] puts between the quotes):
/// every byte that is not a visible ASCII `etagc`, and `%` itself, as `%XX`.
fn tag_of(version: &Version) -> String {
    let mut out = String::with_capacity(version.as_str().len());
    for b in version.as_str().bytes() {
        if (b == 0x21 || (0x23..=0x7e).contains(&b)) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The version an entity tag's content names (the inverse of [`etag_for`]).
pub fn version_of(tag: &EntityTag) -> Version {
    let bytes = tag.tag.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Version::new(String::from_utf8_lossy(&out).into_owned())
}

/// Parses a field value that is `*` or a list of entity tags.
pub fn parse_tag_list(header: &'static str, value: &[u8]) -> Result<TagList, PreconditionError> {
    let err = |reason: &str| PreconditionError {
        header,
        reason: reason.to_string(),
    };
    let is_ows = |b: u8| b == b' ' || b == b'\t';
    let trimmed: Vec<u8> = {
        let start = value
            .iter()
            .position(|b| !is_ows(*b))
            .unwrap_or(value.len());
        let end = value
            .iter()
            .rposition(|b| !is_ows(*b))
            .map_or(start, |e| e + 1);
        value[start..end].to_vec()
    };
    if trimmed == b"*" {
        return Ok(TagList::Any);
    }
    let mut tags = Vec::new();
    let mut i = 0;
    let v = &trimmed;
    loop {
        // Skip OWS and empty list elements (§5.6.1: recipients accept them).
        while i < v.len() && (is_ows(v[i]) || v[i] == b',') {
            i += 1;
        }
        if i >= v.len() {
            break;
        }
        if v[i] == b'*' {
            return Err(err("'*' may only stand alone"));
        }
        let weak = v[i..].starts_with(b"W/");
        if weak {
            i += 2;
        }
        if i >= v.len() || v[i] != b'"' {
            return Err(err(
                "an entity tag must be a quoted string like \"v1\" or W/\"v1\"",
            ));
        }
        i += 1;
        let start = i;
        // etagc = %x21 / %x23-7E / obs-text
        while i < v.len() && v[i] != b'"' {
            let b = v[i];
            if !(b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
                return Err(err(
                    "an entity tag may not contain spaces or control characters",
                ));
            }
            i += 1;
        }
        if i >= v.len() {
            return Err(err("unterminated entity tag (missing closing '\"')"));
        }
        let tag = String::from_utf8_lossy(&v[start..i]).into_owned();
        i += 1;
        tags.push(EntityTag { weak, tag });
        while i < v.len() && is_ows(v[i]) {
            i += 1;
        }
        if i < v.len() && v[i] != b',' {
            return Err(err("entity tags must be separated by commas"));
        }
    }
    Ok(TagList::Tags(tags))
}

/// All field lines of `name`, joined as one list (§5.3), or `None` if absent.
fn combined(headers: &HeaderMap, name: &http::HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = Vec::new();
    for (n, v) in values.enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v.as_bytes());
    }
    Some(out)
}

impl TagList {
    /// `If-Match` evaluation (§13.1.1): strong comparison.
    fn if_match(&self, current: Option<&EntityTag>) -> bool {
        match (self, current) {
            (_, None) => false,
            (TagList::Any, Some(_)) => true,
            (TagList::Tags(tags), Some(cur)) => tags.iter().any(|t| t.strong_eq(cur)),
        }
    }
    /// `If-None-Match` evaluation (§13.1.2): weak comparison.
    fn if_none_match(&self, current: Option<&EntityTag>) -> bool {
        match (self, current) {
            (_, None) => true,
            (TagList::Any, Some(_)) => false,
            (TagList::Tags(tags), Some(cur)) => !tags.iter().any(|t| t.weak_eq(cur)),
        }
    }
    /// The single strong tag of a one-element list, if that is what this is.
    fn single(&self) -> Option<&EntityTag> {
        match self {
            TagList::Tags(tags) if tags.len() == 1 => tags.first(),
            _ => None,
        }
    }
}

impl Preconditions {
    /// Reads `If-Match` and `If-None-Match`; `If-(Un)Modified-Since` and `If-Range` are ignored
    /// (see the module docs).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, PreconditionError> {
        let if_match = combined(headers, &IF_MATCH)
            .map(|v| parse_tag_list("If-Match", &v))
            .transpose()?;
        let if_none_match = combined(headers, &IF_NONE_MATCH)
            .map(|v| parse_tag_list("If-None-Match", &v))
            .transpose()?;
        Ok(Preconditions {
            if_match,
            if_none_match,
        })
    }

    /// True when the request carries no precondition at all.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Evaluates the preconditions against the key's current version (`None`: absent),
    /// in the order of RFC 9110 §13.2.2. `safe` is true for GET and HEAD.
    pub fn evaluate(&self, current: Option<&Version>, safe: bool) -> Verdict {
        let cur = current.map(|v| EntityTag {
            weak: false,
            tag: tag_of(v),
        });
        if let Some(im) = &self.if_match
            && !im.if_match(cur.as_ref())
        {
            return Verdict::Failed;
        }
        if let Some(inm) = &self.if_none_match
            && !inm.if_none_match(cur.as_ref())
        {
            return if safe {
                Verdict::NotModified
            } else {
                Verdict::Failed
            };
        }
        Verdict::Proceed
    }

    /// The one store [`Condition`] that is exactly these preconditions, when there is one,
    /// so a write can be a single conditional request without reading first:
    /// none → `Any`, `If-Match: "v"` → `Matches(v)`, `If-None-Match: *` → `Absent`.
    pub fn as_condition(&self) -> Option<Condition> {
        match (&self.if_match, &self.if_none_match) {
            (None, None) => Some(Condition::Any),
            (Some(im), None) => im
                .single()
                .filter(|t| !t.weak)
                .and_then(canonical_version)
                .map(Condition::Matches),
            (None, Some(TagList::Any)) => Some(Condition::Absent),
            _ => None,
        }
    }

    /// For a conditional GET: the one version named by `If-None-Match`, when that is the
    /// only precondition (then the store can answer "unchanged" without sending the body).
    pub fn single_if_none_match(&self) -> Option<Version> {
        match (&self.if_match, &self.if_none_match) {
            (None, Some(inm)) => inm.single().and_then(canonical_version),
            _ => None,
        }
    }
}

/// The version whose ETag is exactly `tag`, if there is one. Another spelling
/// of the same version (`"%41"` for `A`, lowercase hex) never equals a current
/// ETag in [`Preconditions::evaluate`], so the shortcuts must not match it either.
fn canonical_version(tag: &EntityTag) -> Option<Version> {
    let v = version_of(tag);
    (tag_of(&v) == tag.tag).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn tags(v: &str) -> TagList {
        parse_tag_list("If-Match", v.as_bytes()).unwrap()
    }
    fn strong(t: &str) -> EntityTag {
        EntityTag {
            weak: false,
            tag: t.into(),
        }
    }
    fn weak(t: &str) -> EntityTag {
        EntityTag {
            weak: true,
            tag: t.into(),
        }
    }

    #[test]
    fn parses_lists_star_and_weak_tags() {
        assert_eq!(tags("*"), TagList::Any);
        assert_eq!(tags(" * "), TagList::Any);
        assert_eq!(tags("\"a\""), TagList::Tags(vec![strong("a")]));
        assert_eq!(
            tags("\"a\", W/\"b\" ,,\"c,d\""),
            TagList::Tags(vec![strong("a"), weak("b"), strong("c,d")])
        );
        assert_eq!(tags(""), TagList::Tags(vec![]));
        assert_eq!(tags("\"\""), TagList::Tags(vec![strong("")]));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "a",
            "\"a",
            "*, \"a\"",
            "\"a\" *",
            "W/",
            "w/\"a\"",
            "\"a\" \"b\"",
            "\"a b\"",
            "W/ \"a\"",
        ] {
            assert!(
                parse_tag_list("If-Match", bad.as_bytes()).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    fn pre(im: Option<&str>, inm: Option<&str>) -> Preconditions {
        let mut h = HeaderMap::new();
        if let Some(v) = im {
            h.insert(IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = inm {
            h.insert(IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        Preconditions::from_headers(&h).unwrap()
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        let v = Version::new("g1");
        assert_eq!(
            pre(Some("\"g1\""), None).evaluate(Some(&v), false),
            Verdict::Proceed
        );
        assert_eq!(
            pre(Some("\"x\", \"g1\""), None).evaluate(Some(&v), false),
            Verdict::Proceed
        );
        assert_eq!(
            pre(Some("W/\"g1\""), None).evaluate(Some(&v), false),
            Verdict::Failed
        );
        assert_eq!(
            pre(Some("*"), None).evaluate(Some(&v), false),
            Verdict::Proceed
        );
        assert_eq!(pre(Some("*"), None).evaluate(None, false), Verdict::Failed);
        assert_eq!(
            pre(Some("\"g1\""), None).evaluate(None, false),
            Verdict::Failed
        );
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_304_only_for_safe_methods() {
        let v = Version::new("g1");
        assert_eq!(
            pre(None, Some("W/\"g1\"")).evaluate(Some(&v), true),
            Verdict::NotModified
        );
        assert_eq!(
            pre(None, Some("\"g1\"")).evaluate(Some(&v), false),
            Verdict::Failed
        );
        assert_eq!(
            pre(None, Some("\"g0\"")).evaluate(Some(&v), true),
            Verdict::Proceed
        );
        assert_eq!(
            pre(None, Some("*")).evaluate(Some(&v), false),
            Verdict::Failed
        );
        assert_eq!(pre(None, Some("*")).evaluate(None, false), Verdict::Proceed);
    }

    #[test]
    fn if_match_is_evaluated_before_if_none_match() {
        let v = Version::new("g1");
        // If-Match fails: 412 even on a GET whose If-None-Match would give 304.
        assert_eq!(
            pre(Some("\"g0\""), Some("\"g1\"")).evaluate(Some(&v), true),
            Verdict::Failed
        );
        assert_eq!(
            pre(Some("\"g1\""), Some("\"g1\"")).evaluate(Some(&v), true),
            Verdict::NotModified
        );
    }

    #[test]
    fn several_field_lines_form_one_list() {
        let mut h = HeaderMap::new();
        h.append(IF_MATCH, HeaderValue::from_static("\"a\""));
        h.append(IF_MATCH, HeaderValue::from_static("\"b\""));
        let p = Preconditions::from_headers(&h).unwrap();
        assert_eq!(
            p.if_match,
            Some(TagList::Tags(vec![strong("a"), strong("b")]))
        );
        assert_eq!(p.as_condition(), None);
    }

    #[test]
    fn single_conditions_map_to_one_store_condition() {
        assert_eq!(pre(None, None).as_condition(), Some(Condition::Any));
        assert_eq!(
            pre(Some("\"g1\""), None).as_condition(),
            Some(Condition::Matches(Version::new("g1")))
        );
        assert_eq!(pre(Some("W/\"g1\""), None).as_condition(), None);
        assert_eq!(pre(None, Some("*")).as_condition(), Some(Condition::Absent));
        assert_eq!(pre(Some("*"), None).as_condition(), None);
    }

    #[test]
    fn etags_round_trip_any_version() {
        for v in ["g7", "abc-2", "a\"b", "50%", "sp ace", "é"] {
            let version = Version::new(v);
            let etag = etag_for(&version);
            let parsed = tags(&etag);
            let TagList::Tags(t) = parsed else {
                panic!("{etag}")
            };
            assert_eq!(version_of(&t[0]), version, "{etag}");
        }
        assert_eq!(etag_for(&Version::new("g7")), "\"g7\"");
    }
}
