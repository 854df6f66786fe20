//! Store URL parsing never panics and fails only with `InvalidInput`.
#![no_main]

use ifmatch::Error;
use ifmatch::store::validate_url;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let url = String::from_utf8_lossy(data);
    if let Err(e) = validate_url(&url) {
        assert!(matches!(e, Error::InvalidInput(_)), "{url:?}: {e}");
    }
});
