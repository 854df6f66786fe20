//! Patch parsing and application never panic; results are JSON; merge
//! patches are idempotent. Input: a format byte (even: merge patch, odd: JSON
//! patch), the stored value, a NUL byte, the patch document.
#![no_main]

use ifmatch_server::patch::{Patch, PatchFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let (stored, doc) = match rest.iter().position(|b| *b == 0) {
        Some(n) => (&rest[..n], &rest[n + 1..]),
        None => (&b"{}"[..], rest),
    };
    let format = if first % 2 == 0 {
        PatchFormat::Merge
    } else {
        PatchFormat::Json
    };
    let Ok(patch) = Patch::parse(format, doc) else {
        return;
    };
    if let Ok(out) = patch.apply(stored) {
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        if format == PatchFormat::Merge {
            let twice = patch
                .apply(&out)
                .expect("a merge patch applies to its own result");
            assert_eq!(twice, out, "merge patch not idempotent");
        }
    }
});
