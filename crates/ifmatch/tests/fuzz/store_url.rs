//! Store URL parsing (`ifmatch::store::validate_url`, the checks `open` makes
//! before any I/O): never panics, accepts generated valid URLs, rejects each
//! kind of defect.

use ifmatch::Error;
use ifmatch::store::validate_url;
use proptest::prelude::*;

fn bucket() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]".prop_filter("S3 bucket rules", |b| {
        !b.contains("..") && b.parse::<std::net::Ipv4Addr>().is_err()
    })
}

fn table() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{3,255}"
}

fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9_-]{1,8}(/[a-z0-9_.-]{1,8}){0,3}/?".prop_filter("dot segments", |p| !p
            .split('/')
            .any(|s| s == "." || s == "..")),
    ]
}

fn endpoint() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("http://127.0.0.1:4566".to_string()),
        Just("https://s3.example.com".to_string()),
        Just("http://localhost:9000/".to_string()),
        (1u16..65535).prop_map(|p| format!("http://[::1]:{p}")),
    ]
}

fn region() -> impl Strategy<Value = String> {
    "[a-z]{2}-[a-z]{4,9}-[1-9]"
}

/// Query parameters of an `s3://` URL, each at most once, percent-encoded.
fn s3_query() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::option::of(endpoint()),
        prop::option::of(region()),
        prop::option::of(prop::sample::select(vec![
            "true", "false", "1", "no", "YES",
        ])),
    )
        .prop_map(|(e, r, h)| {
            let mut q = Vec::new();
            if let Some(e) = e {
                q.push(("endpoint".to_string(), e));
            }
            if let Some(r) = r {
                q.push(("region".to_string(), r));
            }
            if let Some(h) = h {
                q.push(("allow_http".to_string(), h.to_string()));
            }
            q
        })
        .prop_shuffle()
}

fn encode_query(q: &[(String, String)]) -> String {
    if q.is_empty() {
        return String::new();
    }
    let mut s = url::form_urlencoded::Serializer::new(String::from("?"));
    for (k, v) in q {
        s.append_pair(k, v);
    }
    s.finish().replacen("?&", "?", 1)
}

fn s3_url() -> impl Strategy<Value = String> {
    (bucket(), prefix(), s3_query()).prop_map(|(b, p, q)| {
        let path = if p.is_empty() {
            String::new()
        } else {
            format!("/{p}")
        };
        format!("s3://{b}{path}{}", encode_query(&q))
    })
}

fn dynamodb_url() -> impl Strategy<Value = String> {
    (
        table(),
        prop::option::of(prop::sample::select(vec!["true", "false"])),
        prop::option::of(endpoint()),
        prop::option::of(region()),
    )
        .prop_map(|(t, c, e, r)| {
            let mut q = Vec::new();
            if let Some(c) = c {
                q.push(("create".to_string(), c.to_string()));
            }
            if let Some(e) = e {
                q.push(("endpoint".to_string(), e));
            }
            if let Some(r) = r {
                q.push(("region".to_string(), r));
            }
            format!("dynamodb://{t}{}", encode_query(&q))
        })
}

/// Ways to break a valid URL, each of which must be rejected.
#[derive(Debug, Clone)]
enum Defect {
    UnknownParameter,
    DuplicateParameter,
    Fragment,
    BadBucketChar(char),
    BadEndpoint(&'static str),
    DotSegmentPrefix,
}

fn s3_defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        Just(Defect::UnknownParameter),
        Just(Defect::DuplicateParameter),
        Just(Defect::Fragment),
        prop::sample::select(vec!['A', '_', ' ', '/', 'é', '%']).prop_map(Defect::BadBucketChar),
        prop::sample::select(vec!["ftp://host", "http://", "not a url", "http://h/?q=1"])
            .prop_map(Defect::BadEndpoint),
        Just(Defect::DotSegmentPrefix),
    ]
}

fn check_no_panic(url: &str) {
    if let Err(e) = validate_url(url) {
        assert!(matches!(e, Error::InvalidInput(_)), "{url:?}: {e}");
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn corpus_seeds_never_panic() {
    for seed in crate::corpus("store_url") {
        check_no_panic(&String::from_utf8_lossy(&seed));
    }
}

#[test]
fn regressions() {
    for ok in [
        "memory://",
        "memory:///",
        "./data",
        "file://./data",
        "s3://abc",
        "s3://abc/",
        "s3://a.b-c/p/q?region=us-east-1",
        "dynamodb://tab",
        "dynamodb://tab?create=true&endpoint=http%3A%2F%2F127.0.0.1%3A4567",
    ] {
        assert!(validate_url(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "file://",
        "memory://x",
        "s3://",
        "s3://ab",
        "s3://192.168.1.1",
        "s3://abc//p",
        "s3://abc/p?region=",
        "s3://abc?endpoint=http://h?x",
        "s3://abc?allow_http=maybe",
        "dynamodb://ta",
        "dynamodb://tab?create=yes",
        "dynamodb://tab?create=true&create=true",
        "dynamodb://tab?region=EU",
        "gs://bucket",
        "://x",
    ] {
        assert!(validate_url(bad).is_err(), "{bad}");
    }
}

proptest! {
    #![proptest_config(crate::config(2048))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        check_no_panic(&s);
    }

    #[test]
    fn url_shaped_strings_never_panic(
        scheme in prop::sample::select(vec!["s3", "dynamodb", "memory", "file", "S3", ""]),
        rest in "[a-z0-9./?&=%#:_A-Z -]{0,40}",
    ) {
        check_no_panic(&format!("{scheme}://{rest}"));
    }

    #[test]
    fn valid_s3_urls_are_accepted(u in s3_url()) {
        prop_assert!(validate_url(&u).is_ok(), "{}: {:?}", u, validate_url(&u));
    }

    #[test]
    fn valid_dynamodb_urls_are_accepted(u in dynamodb_url()) {
        prop_assert!(validate_url(&u).is_ok(), "{}: {:?}", u, validate_url(&u));
    }

    #[test]
    fn each_defect_is_rejected(b in bucket(), p in prefix(), q in s3_query(), d in s3_defect()) {
        let mut b = b;
        let mut p = p;
        let mut q = q;
        let mut tail = String::new();
        match &d {
            Defect::UnknownParameter => q.push(("regoin".into(), "x".into())),
            Defect::DuplicateParameter => {
                q.push(("region".into(), "us-east-1".into()));
                q.push(("region".into(), "us-east-1".into()));
            }
            Defect::Fragment => tail.push_str("#frag"),
            Defect::BadBucketChar(c) => b.insert(1, *c),
            Defect::BadEndpoint(e) => {
                q.retain(|(k, _)| k != "endpoint");
                q.push(("endpoint".into(), (*e).into()));
            }
            Defect::DotSegmentPrefix => p = format!("x/../{p}"),
        }
        let path = if p.is_empty() { String::new() } else { format!("/{p}") };
        let u = format!("s3://{b}{path}{}{tail}", encode_query(&q));
        prop_assert!(validate_url(&u).is_err(), "{:?} should reject {}", d, u);
    }

    #[test]
    fn bad_table_names_are_rejected(t in "[A-Za-z0-9_.-]{0,2}|[A-Za-z0-9]{1,5}[^A-Za-z0-9_.?-][A-Za-z0-9]{1,5}") {
        let u = format!("dynamodb://{t}");
        prop_assert!(validate_url(&u).is_err(), "{}", u);
    }

    #[test]
    fn unknown_schemes_are_rejected(s in "[a-z][a-z0-9+.-]{0,8}", rest in "[a-z/]{0,8}") {
        prop_assume!(!["s3", "dynamodb", "memory", "file"].contains(&s.as_str()));
        let u = format!("{s}://{rest}");
        prop_assert!(validate_url(&u).is_err(), "{}", u);
    }
}
