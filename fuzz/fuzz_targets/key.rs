//! Key validation accepts exactly the documented grammar (the same model as
//! `crates/ifmatch/tests/fuzz/key.rs`), and prefixes follow keys.
#![no_main]

use ifmatch::key::{MAX_KEY_BYTES, validate_key, validate_prefix};
use libfuzzer_sys::fuzz_target;

fn model(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && !key.chars().any(|c| c.is_control() || c == '\\')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

fuzz_target!(|data: &[u8]| {
    let key = String::from_utf8_lossy(data);
    let ok = validate_key(&key).is_ok();
    assert_eq!(ok, model(&key), "{key:?}");
    let trimmed = key.strip_suffix('/').unwrap_or(&key);
    assert_eq!(
        validate_prefix(&key).is_ok(),
        key.is_empty() || model(trimmed),
        "prefix {key:?}"
    );
});
