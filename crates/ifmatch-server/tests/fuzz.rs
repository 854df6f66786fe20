//! Property-based fuzz tests of the server's parsers, bounded so they run in
//! every `cargo test` (seeded: the same cases on every run; `PROPTEST_CASES=N`
//! runs more, `PROPTEST_RNG_SEED=S` other ones):
//!
//! - conditional headers (`precondition`): parsing never panics, formatting a
//!   parsed list and parsing it again gives the same list, every version
//!   round-trips through its ETag, and the single-request shortcuts
//!   (`as_condition`, `single_if_none_match`) agree with the full evaluation;
//! - patches (`patch`): never panic on any document or stored value, merge
//!   patches match RFC 7396's algorithm and are idempotent, JSON-patch appends
//!   append exactly once per application.
//!
//! Each property also replays the seeds under `fuzz/corpus/<target>/`, shared
//! with the `cargo fuzz` targets in `fuzz/`.

use std::path::PathBuf;

use http::header::{IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue};
use ifmatch::{Condition, Version};
use ifmatch_server::patch::{Patch, PatchError, PatchFormat};
use ifmatch_server::precondition::{
    EntityTag, Preconditions, TagList, Verdict, etag_for, parse_tag_list, version_of,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};

fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x1f_a7c3_2026);
    }
    c
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "fuzz",
        "corpus",
        target,
    ]
    .iter()
    .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

// ---- conditional headers ----

/// Formats a tag list as a header value (the inverse of `parse_tag_list`).
fn format_list(list: &TagList) -> String {
    match list {
        TagList::Any => "*".into(),
        TagList::Tags(tags) => tags
            .iter()
            .map(|t| format!("{}\"{}\"", if t.weak { "W/" } else { "" }, t.tag))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Parsing never panics; what parses, formats and parses again to the same list.
fn check_tag_list(value: &[u8]) -> Result<(), TestCaseError> {
    let Ok(list) = parse_tag_list("If-Match", value) else {
        return Ok(());
    };
    let again = parse_tag_list("If-Match", format_list(&list).as_bytes());
    prop_assert_eq!(
        again.as_ref(),
        Ok(&list),
        "{:?}",
        String::from_utf8_lossy(value)
    );
    if let TagList::Tags(tags) = &list {
        for t in tags {
            prop_assert!(!t.tag.contains('"'));
        }
    }
    Ok(())
}

fn etagc_string() -> impl Strategy<Value = String> {
    // etagc = %x21 / %x23-7E / obs-text (here: valid UTF-8 beyond ASCII)
    prop::collection::vec(
        prop_oneof![
            8 => prop::char::range('#', '~'),
            1 => Just('!'),
            1 => Just('é'),
        ],
        0..8,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn entity_tag() -> impl Strategy<Value = EntityTag> {
    (any::<bool>(), etagc_string()).prop_map(|(weak, tag)| EntityTag { weak, tag })
}

fn tag_list() -> impl Strategy<Value = TagList> {
    prop_oneof![
        1 => Just(TagList::Any),
        6 => prop::collection::vec(entity_tag(), 0..5).prop_map(TagList::Tags),
    ]
}

/// A header value for `list` with random optional whitespace and empty list
/// elements, split over one to three field lines.
fn render(list: &TagList, ows: &[u8], lines: usize) -> Vec<String> {
    let pad = |i: usize| match ows.get(i).copied().unwrap_or(0) % 4 {
        0 => "",
        1 => " ",
        2 => "\t ",
        _ => " ,, ",
    };
    match list {
        TagList::Any => {
            let ws = |i: usize| [" ", "", "\t"][usize::from(ows.get(i).copied().unwrap_or(0) % 3)];
            vec![format!("{}*{}", ws(0), ws(1))]
        }
        TagList::Tags(tags) if tags.is_empty() => vec![String::new()],
        TagList::Tags(tags) => {
            let parts: Vec<String> = tags
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    format!(
                        "{}{}\"{}\"{}",
                        pad(2 * i),
                        if t.weak { "W/" } else { "" },
                        t.tag,
                        pad(2 * i + 1)
                    )
                })
                .collect();
            let per_line = parts.len().div_ceil(lines.max(1));
            parts.chunks(per_line.max(1)).map(|c| c.join(",")).collect()
        }
    }
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        prop::sample::select(vec![
            "A", "a", "g1", "%", "%41", "a b", "é", "\"", "", "W/x"
        ])
        .prop_map(Version::new),
        "\\PC{0,6}".prop_map(Version::new),
        any::<String>().prop_map(Version::new),
    ]
}

/// Tags that name `v` in other spellings: canonical, percent-encoded bytes,
/// lowercase hex; or a different version's tag.
fn tag_near(v: Version) -> impl Strategy<Value = EntityTag> {
    let canonical = etag_for(&v).trim_matches('"').to_string();
    let raw = v.as_str().to_string();
    (
        any::<bool>(),
        0..5u8,
        any::<prop::sample::Index>(),
        version(),
    )
        .prop_map(move |(weak, how, at, other)| {
            let tag = match how {
                0 | 1 => canonical.clone(),
                2 if !raw.is_empty() => {
                    // Percent-encode one byte that need not be (a non-canonical spelling).
                    let bytes = raw.as_bytes();
                    let i = at.index(bytes.len());
                    let mut s = String::new();
                    for (j, b) in bytes.iter().enumerate() {
                        if j == i || !(*b == 0x21 || (0x23..=0x7e).contains(b)) || *b == b'%' {
                            s.push_str(&format!("%{b:02x}"));
                        } else {
                            s.push(*b as char);
                        }
                    }
                    s
                }
                3 => canonical.to_lowercase(),
                _ => etag_for(&other).trim_matches('"').to_string(),
            };
            EntityTag { weak, tag }
        })
}

fn holds(c: &Condition, current: Option<&Version>) -> bool {
    match (c, current) {
        (Condition::Any, _) => true,
        (Condition::Absent, cur) => cur.is_none(),
        (Condition::Matches(v), Some(cur)) => v == cur,
        (Condition::Matches(_), None) => false,
    }
}

fn headers(im: &Option<TagList>, inm: &Option<TagList>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(l) = im {
        h.insert(
            IF_MATCH,
            HeaderValue::from_bytes(format_list(l).as_bytes()).unwrap(),
        );
    }
    if let Some(l) = inm {
        h.insert(
            IF_NONE_MATCH,
            HeaderValue::from_bytes(format_list(l).as_bytes()).unwrap(),
        );
    }
    h
}

#[test]
fn etag_list_corpus_seeds() {
    for seed in corpus("etag_list") {
        check_tag_list(&seed).unwrap();
    }
}

#[test]
fn etag_list_regressions() {
    for v in [
        "\"a\"\"b\"",
        "W/W/\"a\"",
        "\"a\",*",
        "\u{80}",
        "\"\u{ff}\"",
        ",,,",
        " , ",
    ] {
        check_tag_list(v.as_bytes()).unwrap();
    }
    check_tag_list(b"\"\xff\xfe\"").unwrap();
    // A percent-encoded spelling of the current version is not its ETag: the
    // write shortcut must not accept what the full evaluation rejects.
    let v = Version::new("A");
    let p = Preconditions::from_headers(&headers(
        &Some(TagList::Tags(vec![EntityTag {
            weak: false,
            tag: "%41".into(),
        }])),
        &None,
    ))
    .unwrap();
    assert_eq!(p.evaluate(Some(&v), false), Verdict::Failed);
    if let Some(c) = p.as_condition() {
        assert!(!holds(&c, Some(&v)), "as_condition accepts {c:?} for {v:?}");
    }
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn arbitrary_header_bytes_parse_or_fail_cleanly(b in prop::collection::vec(any::<u8>(), 0..40)) {
        check_tag_list(&b)?;
    }

    #[test]
    fn header_shaped_bytes_parse_or_fail_cleanly(s in "[\"W/ \t,*a-z%é\\\\]{0,24}") {
        check_tag_list(s.as_bytes())?;
    }

    #[test]
    fn formatted_lists_parse_back(list in tag_list(), ows in prop::collection::vec(any::<u8>(), 12), lines in 1usize..4) {
        let values = render(&list, &ows, lines);
        let mut h = HeaderMap::new();
        for v in &values {
            h.append(IF_NONE_MATCH, HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        let p = Preconditions::from_headers(&h).unwrap();
        prop_assert_eq!(p.if_none_match.as_ref(), Some(&list), "{:?}", values);
        prop_assert_eq!(parse_tag_list("If-Match", format_list(&list).as_bytes()), Ok(list));
    }

    #[test]
    fn every_version_round_trips_through_its_etag(v in version()) {
        let etag = etag_for(&v);
        prop_assert!(HeaderValue::from_str(&etag).is_ok(), "{:?}", etag);
        prop_assert!(etag.bytes().all(|b| (0x21..0x7f).contains(&b)));
        let list = parse_tag_list("If-Match", etag.as_bytes()).unwrap();
        let TagList::Tags(tags) = list else { return Err(TestCaseError::fail("not a tag list")) };
        prop_assert_eq!(tags.len(), 1);
        prop_assert!(!tags[0].weak);
        prop_assert_eq!(version_of(&tags[0]), v.clone());
        // And a strong If-Match of that ETag holds exactly at v.
        let p = Preconditions::from_headers(&headers(&Some(TagList::Tags(tags)), &None)).unwrap();
        prop_assert_eq!(p.evaluate(Some(&v), false), Verdict::Proceed);
    }

    /// The one-store-call shortcuts must decide exactly like the full RFC 9110
    /// evaluation, or a PUT could land where a GET would say 412.
    #[test]
    fn shortcuts_agree_with_the_full_evaluation(
        (current, im, inm) in version().prop_flat_map(|v| {
            let list = prop_oneof![
                1 => Just(TagList::Any),
                4 => prop::collection::vec(tag_near(v.clone()), 0..3).prop_map(TagList::Tags),
            ];
            (Just(v), prop::option::of(list.clone()), prop::option::of(list))
        }),
        exists in any::<bool>(),
    ) {
        let p = Preconditions::from_headers(&headers(&im, &inm)).unwrap();
        let cur = exists.then_some(&current);
        if let Some(c) = p.as_condition() {
            let full = p.evaluate(cur, false) == Verdict::Proceed;
            prop_assert_eq!(holds(&c, cur), full, "{:?} vs evaluate for {:?}", c, cur);
        }
        if let (Some(known), Some(cur)) = (p.single_if_none_match(), cur) {
            let unchanged = &known == cur;
            let full = p.evaluate(Some(cur), true) == Verdict::NotModified;
            prop_assert_eq!(unchanged, full, "known {:?} vs current {:?}", known, cur);
        }
    }
}

// ---- patches ----

/// RFC 7396 §2's MergePatch, written again.
fn reference_merge(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(t) => t.clone(),
        _ => serde_json::Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let merged = reference_merge(t.get(k).unwrap_or(&Value::Null), v);
            t.insert(k.clone(), merged);
        }
    }
    Value::Object(t)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-c]{0,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c~/]{0,2}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn pointer() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "c", "0", "1", "-", "~0", "~1", "", "~2"]),
        0..3,
    )
    .prop_map(|segs| segs.iter().map(|s| format!("/{s}")).collect())
}

fn operation() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "add", "remove", "replace", "move", "copy", "test", "nope",
        ]),
        pointer(),
        pointer(),
        json_value(),
    )
        .prop_map(
            |(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}),
        )
}

/// Parsing and applying never panic; a successful result is JSON.
fn check_patch(format: PatchFormat, stored: &[u8], doc: &[u8]) -> Result<(), TestCaseError> {
    match Patch::parse(format, doc) {
        Err(e) => prop_assert!(matches!(e, PatchError::BadDocument(_))),
        Ok(p) => match p.apply(stored) {
            Ok(out) => {
                prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
            }
            Err(e) => prop_assert!(matches!(e, PatchError::NotJson(_) | PatchError::Failed(_))),
        },
    }
    Ok(())
}

/// A corpus or fuzz input: first byte picks the format (even: merge), then the
/// stored value, a NUL byte, and the patch document.
fn split_patch_input(b: &[u8]) -> Option<(PatchFormat, &[u8], &[u8])> {
    let (first, rest) = b.split_first()?;
    let nul = rest.iter().position(|c| *c == 0)?;
    let format = if first % 2 == 0 {
        PatchFormat::Merge
    } else {
        PatchFormat::Json
    };
    Some((format, &rest[..nul], &rest[nul + 1..]))
}

#[test]
fn patch_corpus_seeds() {
    for seed in corpus("patch") {
        let (f, stored, doc) =
            split_patch_input(&seed).expect("seed format: <format byte><stored>\\0<patch>");
        check_patch(f, stored, doc).unwrap();
    }
}

#[test]
fn patch_regressions() {
    // json-patch's rollback of a failed patch panicked ("unable to undo applied
    // patches") when a later `move` failed after an earlier one succeeded.
    let doc = br#"[{"op":"replace","path":"","value":{"/":null}},{"op":"move","from":"/~1","path":""},{"op":"move","from":"","path":""}]"#;
    let p = Patch::parse(PatchFormat::Json, doc).unwrap();
    assert!(matches!(p.apply(b"null"), Err(PatchError::Failed(_))));
}

#[test]
fn deeply_nested_documents_are_errors_not_stack_overflows() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for f in [PatchFormat::Merge, PatchFormat::Json] {
        assert!(matches!(
            Patch::parse(f, deep(100_000).as_bytes()),
            Err(PatchError::BadDocument(_))
        ));
        let p = Patch::parse(f, b"[]")
            .or_else(|_| Patch::parse(f, b"{}"))
            .unwrap();
        assert!(matches!(
            p.apply(deep(100_000).as_bytes()),
            Err(PatchError::NotJson(_))
        ));
    }
    // As deep as the parser allows, merged into itself: still fine.
    let nested = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let p = Patch::parse(PatchFormat::Merge, nested(120).as_bytes()).unwrap();
    let out = p.apply(nested(120).as_bytes()).unwrap();
    assert_eq!(out.len(), nested(120).len());
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn arbitrary_patch_inputs_never_panic(b in prop::collection::vec(any::<u8>(), 0..64), json in any::<bool>()) {
        let f = if json { PatchFormat::Json } else { PatchFormat::Merge };
        check_patch(f, &b, &b)?;
        check_patch(f, b"{}", &b)?;
        check_patch(f, &b, b"[]")?;
    }

    #[test]
    fn merge_patches_follow_rfc_7396_and_are_idempotent(doc in json_value(), patch in json_value()) {
        let p = Patch::parse(PatchFormat::Merge, &serde_json::to_vec(&patch).unwrap()).unwrap();
        let once = p.apply(&serde_json::to_vec(&doc).unwrap()).unwrap();
        let once_v: Value = serde_json::from_slice(&once).unwrap();
        prop_assert_eq!(&once_v, &reference_merge(&doc, &patch));
        let twice = p.apply(&once).unwrap();
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn arbitrary_json_patches_never_panic(doc in json_value(), ops in prop::collection::vec(operation(), 0..4)) {
        let body = serde_json::to_vec(&Value::Array(ops)).unwrap();
        check_patch(PatchFormat::Json, &serde_json::to_vec(&doc).unwrap(), &body)?;
    }

    /// Seed 002's modification history: each application of an append patch
    /// adds exactly one entry at the end, whatever was there.
    #[test]
    fn appends_append_exactly_once_per_application(
        existing in prop::collection::vec(json_value(), 0..4),
        entry in json_value(),
        times in 1usize..5,
    ) {
        let patch = json!([{"op": "add", "path": "/modifications/-", "value": entry}]);
        let p = Patch::parse(PatchFormat::Json, &serde_json::to_vec(&patch).unwrap()).unwrap();
        let mut stored = serde_json::to_vec(&json!({"modifications": existing})).unwrap();
        for _ in 0..times {
            stored = p.apply(&stored).unwrap().to_vec();
        }
        let v: Value = serde_json::from_slice(&stored).unwrap();
        let list = v["modifications"].as_array().unwrap();
        prop_assert_eq!(list.len(), existing.len() + times);
        prop_assert_eq!(&list[..existing.len()], &existing[..]);
        prop_assert!(list[existing.len()..].iter().all(|e| e == &entry));
    }

    /// A `test` that fails makes the whole patch fail (no partial application is returned).
    #[test]
    fn failing_tests_fail_the_whole_patch(doc in json_value(), value in json_value()) {
        let patch = json!([
            {"op": "add", "path": "/added", "value": value},
            {"op": "test", "path": "/added", "value": [value, 1]},
        ]);
        let p = Patch::parse(PatchFormat::Json, &serde_json::to_vec(&patch).unwrap()).unwrap();
        let r = p.apply(&serde_json::to_vec(&doc).unwrap());
        prop_assert!(matches!(r, Err(PatchError::Failed(_))), "{:?}", r);
    }
}
