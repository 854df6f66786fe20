//! Parsing an `s3://` URL into a [`ParsedUrl`]: bucket, prefix and the
//! `endpoint`, `region` and `allow_http` parameters, each checked.
//!
//! Pure (no request, no environment): [`S3Store::open`](super::S3Store::open)
//! and `store::check_url` both use it. What it guarantees: a bucket name
//! follows S3's general-purpose naming rules, an endpoint is an http(s) URL
//! with a host and nothing after the path, a parameter given twice or not
//! known is rejected by name, so a typo never goes unnoticed.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::key::validate_key;

/// The parts of an `s3://` URL.
#[derive(Debug, Default, PartialEq, Eq)]
pub(in crate::store) struct ParsedUrl {
    pub(super) bucket: String,
    /// Without a trailing `/`; empty for the bucket root.
    pub(super) prefix: String,
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) allow_http: Option<bool>,
}

/// Parses an `s3://` URL (pure; see [`S3Store::open`](super::S3Store::open)).
pub(in crate::store) fn parse_url(url: &str) -> Result<ParsedUrl> {
    let bad = |why: String| Error::InvalidInput(format!("bad S3 store URL {url:?}: {why}"));
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("it must start with s3://".into()))?;
    if rest.contains('#') {
        return Err(bad("a fragment ('#') is not allowed".into()));
    }
    let (location, query) = match rest.split_once('?') {
        Some((l, q)) => (l, Some(q)),
        None => (rest, None),
    };
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    validate_bucket(bucket).map_err(|why| bad(format!("bucket name {bucket:?}: {why}")))?;
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if !prefix.is_empty() {
        validate_key(prefix).map_err(|e| bad(format!("prefix {prefix:?}: {e}")))?;
    }
    let mut parsed = ParsedUrl {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        ..ParsedUrl::default()
    };
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let set_once = |slot: &mut Option<String>| {
            if slot.is_some() {
                return Err(bad(format!("parameter {name:?} is given twice")));
            }
            if value.is_empty() {
                return Err(bad(format!("parameter {name:?} is empty")));
            }
            *slot = Some(value.to_string());
            Ok(())
        };
        match name.as_ref() {
            "endpoint" => {
                set_once(&mut parsed.endpoint)?;
                check_endpoint(&value).map_err(|why| bad(format!("endpoint {value:?}: {why}")))?;
            }
            "region" => set_once(&mut parsed.region)?,
            "allow_http" => {
                if parsed.allow_http.is_some() {
                    return Err(bad("parameter \"allow_http\" is given twice".into()));
                }
                parsed.allow_http = Some(parse_bool(&value).ok_or_else(|| {
                    bad(format!("allow_http must be true or false, not {value:?}"))
                })?);
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?} (known: endpoint, region, allow_http)"
                )));
            }
        }
    }
    if let Some(e) = &mut parsed.endpoint {
        let trimmed = e.trim_end_matches('/').len();
        e.truncate(trimmed);
    }
    Ok(parsed)
}

/// Checks an endpoint URL: http or https, a host, no query or fragment.
pub(super) fn check_endpoint(endpoint: &str) -> std::result::Result<(), String> {
    let u = url::Url::parse(endpoint).map_err(|e| e.to_string())?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            u.scheme()
        ));
    }
    if u.host().is_none() {
        return Err("it has no host".into());
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("it may not have a query or fragment".into());
    }
    Ok(())
}

/// S3's general-purpose bucket naming rules.
pub(super) fn validate_bucket(bucket: &str) -> std::result::Result<(), String> {
    if bucket.is_empty() {
        return Err("it is missing (s3://BUCKET[/PREFIX])".into());
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err("it must be 3 to 63 characters long".into());
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("it may contain only a-z, 0-9, '.' and '-'".into());
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge_ok(bucket.bytes().next()) || !edge_ok(bucket.bytes().last()) {
        return Err("it must begin and end with a letter or digit".into());
    }
    if bucket.contains("..") {
        return Err("it may not contain '..'".into());
    }
    if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("it may not look like an IP address".into());
    }
    Ok(())
}

/// True when the URL's host is loopback: `127.0.0.0/8`, `localhost` or `[::1]`.
pub(super) fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// `true`/`false` and the usual spellings.
pub(super) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" | "y" => Some(true),
        "0" | "false" | "off" | "no" | "n" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let p = parse_url("s3://my-bucket").unwrap();
        assert_eq!(p.bucket, "my-bucket");
        assert_eq!(p.prefix, "");
        assert_eq!(p.endpoint, None);

        let p = parse_url("s3://my-bucket/").unwrap();
        assert_eq!(p.prefix, "");

        let p = parse_url("s3://my.bucket/a/b/?region=eu-west-1").unwrap();
        assert_eq!(p.bucket, "my.bucket");
        assert_eq!(p.prefix, "a/b");
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));

        let p = parse_url(
            "s3://bkt/p?endpoint=http%3A%2F%2F127.0.0.1%3A4566%2F&allow_http=true&region=us-east-1",
        )
        .unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(p.allow_http, Some(true));

        let p = parse_url("s3://bkt?endpoint=https://minio.example:9000").unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("https://minio.example:9000"));
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "s3://",
            "s3:///prefix",
            "s3://ab",
            "s3://Bucket",
            "s3://bucket_name",
            "s3://-bucket",
            "s3://bucket-",
            "s3://a..b",
            "s3://192.168.1.1",
            &format!("s3://{}", "b".repeat(64)),
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://bucket?endpoint=",
            "s3://bucket?endpoint=ftp://x",
            "s3://bucket?endpoint=not a url",
            "s3://bucket?region=a&region=b",
            "s3://bucket?allow_http=maybe",
            "s3://bucket#frag",
            "file://bucket",
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{url}: {err}");
        }
    }

    #[test]
    fn unknown_parameters_are_named() {
        let err = parse_url("s3://bucket?endpoint=http://127.0.0.1:1&colour=blue").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("colour")),
            "{err}"
        );
    }
}
