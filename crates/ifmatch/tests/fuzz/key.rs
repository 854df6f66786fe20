//! Key, prefix and metadata validation: exactly the documented grammar, and
//! every valid key round-trips through a real store.

use std::collections::BTreeSet;

use ifmatch::key::{MAX_KEY_BYTES, validate_key, validate_metadata, validate_prefix};
use ifmatch::store::{self, Metadata, PutOptions};
use ifmatch::{Error, ErrorKind};
use proptest::prelude::*;

/// The rules of `ifmatch::key`, written again independently.
fn model_accepts(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && !key.chars().any(|c| c.is_control() || c == '\\')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// Characters that make keys interesting: separators, dots, escapes, controls, non-ASCII.
fn key_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => Just('/'),
        2 => Just('.'),
        1 => prop::sample::select(vec![
            '\\', '\0', '\n', '\u{7f}', '\u{85}', '%', '~', ' ', '-', '_', ':', '*', '?', '#',
            'é', 'ж', '😀', '\u{200b}', '\u{feff}',
        ]),
        1 => any::<char>(),
    ]
}

fn key_like() -> impl Strategy<Value = String> {
    prop::collection::vec(key_char(), 0..24).prop_map(|v| v.into_iter().collect())
}

/// A valid segment: no '/', no control character, no '\\', not '.' or '..'.
fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(
        key_char().prop_filter("segment char", |c| {
            *c != '/' && *c != '\\' && !c.is_control()
        }),
        1..12,
    )
    .prop_map(|v| v.into_iter().collect::<String>())
    .prop_filter("dot segments", |s| s != "." && s != "..")
}

/// A valid key of 1 to 4 segments; sometimes one very long segment (the file
/// store shortens long file names).
fn valid_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(segment(), 1..5).prop_map(|s| s.join("/")),
        1 => (segment(), 200usize..400).prop_map(|(s, n)| s.repeat(n).chars().take(n).collect()),
    ]
    .prop_filter("length", |k: &String| {
        k.len() <= MAX_KEY_BYTES && model_accepts(k)
    })
}

fn check_key(key: &str) -> Result<(), TestCaseError> {
    let got = validate_key(key);
    prop_assert_eq!(got.is_ok(), model_accepts(key), "key {:?}: {:?}", key, got);
    if let Err(e) = got {
        prop_assert_eq!(e.kind(), ErrorKind::Invalid);
        let Error::InvalidKey { key: shown, reason } = &e else {
            return Err(TestCaseError::fail(format!("not InvalidKey: {e}")));
        };
        // The message quotes at most 80 characters of the key, and says why.
        prop_assert!(shown.chars().count() <= 80);
        prop_assert!(key.starts_with(shown.as_str()));
        prop_assert!(!reason.is_empty());
    }
    // A prefix is a key, optionally followed by one '/'.
    prop_assert_eq!(validate_prefix(key).is_ok(), {
        let trimmed = key.strip_suffix('/').unwrap_or(key);
        key.is_empty() || model_accepts(trimmed)
    });
    Ok(())
}

#[test]
fn corpus_seeds_follow_the_model() {
    for seed in crate::corpus("key") {
        let key = String::from_utf8_lossy(&seed);
        check_key(&key).unwrap();
    }
}

#[test]
fn regressions() {
    // Edge cases kept as named seeds.
    for k in [
        "a/./b",
        "a/..",
        ".../a",
        "a/.../b",
        "\u{85}",
        "a\u{2028}b",
        "ß/ǅ",
        "~",
    ] {
        check_key(k).unwrap();
    }
    check_key(&"é".repeat(512)).unwrap(); // exactly 1024 bytes: accepted
    check_key(&format!("{}a", "é".repeat(512))).unwrap(); // 1025 bytes: rejected
}

proptest! {
    #![proptest_config(crate::config(2048))]

    #[test]
    fn validation_is_exactly_the_documented_grammar(key in key_like()) {
        check_key(&key)?;
    }

    #[test]
    fn arbitrary_strings_never_panic(key in any::<String>()) {
        check_key(&key)?;
    }

    #[test]
    fn joined_valid_segments_are_valid_keys(key in valid_key()) {
        prop_assert!(validate_key(&key).is_ok(), "{:?}", key);
        let with_slash = format!("{key}/");
        prop_assert!(validate_prefix(&with_slash).is_ok());
        let broken = [format!("/{key}"), with_slash, format!("{key}//x"), format!("{key}/..")];
        for b in &broken {
            prop_assert!(validate_key(b).is_err(), "{:?}", b);
        }
    }

    #[test]
    fn metadata_follows_the_documented_rules(
        entries in prop::collection::btree_map("[a-z0-9_A-Z-]{0,70}", "[ -~é\t]{0,40}", 0..4),
    ) {
        let md: Metadata = entries;
        let name_ok = |n: &str| {
            (1..=64).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        let value_ok = |v: &str| v.bytes().all(|b| (0x20..0x7f).contains(&b));
        let total: usize = md.iter().map(|(n, v)| n.len() + v.len()).sum();
        let expected = md.iter().all(|(n, v)| name_ok(n) && value_ok(v)) && total <= ifmatch::key::MAX_METADATA_BYTES;
        prop_assert_eq!(validate_metadata(&md).is_ok(), expected);
    }
}

proptest! {
    // Each case opens a real file store: fewer cases.
    #![proptest_config(crate::config(96))]

    /// Valid keys round-trip through the `file://` store's key encoding: each
    /// reads back its own value, and a listing returns exactly the keys written,
    /// also when one key is a prefix ("folder") of another.
    #[test]
    fn valid_keys_round_trip_through_the_file_store(
        keys in prop::collection::btree_set(valid_key(), 1..6),
        nest in any::<bool>(),
    ) {
        let mut keys: BTreeSet<String> = keys;
        if nest {
            // A key that is also a folder of another.
            let first = keys.iter().next().cloned().unwrap();
            let child = format!("{first}/child");
            if child.len() <= MAX_KEY_BYTES {
                keys.insert(child);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = store::open(&url).await.unwrap();
            for k in &keys {
                s.put(k, k.clone().into_bytes().into(), PutOptions::if_absent()).await.unwrap();
            }
            for k in &keys {
                let got = s.get(k).await.unwrap();
                prop_assert_eq!(&got.body[..], k.as_bytes());
                prop_assert_eq!(&got.meta.key, k);
            }
            let listed: BTreeSet<String> = store::list_all(&*s, "").await.unwrap()
                .into_iter().map(|e| e.key).collect();
            prop_assert_eq!(&listed, &keys);
            Ok(())
        })?;
    }
}
