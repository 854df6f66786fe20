//! The tenant-database record decoders and the WAL parser never panic (nor
//! over-allocate: libFuzzer's -malloc_limit_mb), and what decodes re-encodes
//! to the same bytes. Most mutations break the SHA-256 seal; a second pass
//! re-seals the input so the field decoding behind the checksum is reached too.
#![no_main]

use ifmatch::tenantdb::format::{Checkpoint, LogEntry, Sidecar, parse_wal};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(e) = LogEntry::decode(bytes) {
        assert_eq!(e.encode(), bytes);
    }
    if let Ok(c) = Checkpoint::decode(bytes) {
        assert_eq!(c.to_bytes(), bytes);
    }
    if let Ok(s) = Sidecar::decode(bytes) {
        assert_eq!(s.encode(), bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Re-seal: replace the last 32 bytes by the SHA-256 of the rest.
    if data.len() >= 32 {
        use sha2::Digest;
        let body = &data[..data.len() - 32];
        let mut sealed = body.to_vec();
        sealed.extend_from_slice(&sha2::Sha256::digest(body));
        check(&sealed);
    }
    for ps in [512, 4096] {
        let _ = parse_wal(data, ps);
    }
});
