//! Property-based fuzz tests of the library's parsers and decoders, bounded so
//! they run in every `cargo test` (seeded: the same cases on every run).
//!
//! - [`key`]: key, prefix and metadata validation accept exactly the documented
//!   grammar, and every valid key round-trips through the `file://` store;
//! - [`store_url`]: store URL parsing never panics, accepts generated valid URLs and
//!   rejects each kind of defect;
//! - [`format`]: the tenant-database records decode what they encode, reject
//!   corrupt bytes and never allocate more than their input justifies.
//!
//! Each property also replays the seed inputs committed under
//! `fuzz/corpus/<target>/` (shared with the `cargo fuzz` targets in `fuzz/`).
//! `PROPTEST_CASES=N` runs more cases, `PROPTEST_RNG_SEED=S` other ones.

mod alloc;
mod format;
mod key;
mod store_url;

use std::path::PathBuf;

use proptest::test_runner::{Config, RngSeed};

/// The fixed seed of these tests (override with `PROPTEST_RNG_SEED`).
const SEED: u64 = 0x1f_a7c3_2026;

/// A proptest configuration running `cases` cases unless `PROPTEST_CASES` says otherwise.
pub fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(SEED);
    }
    c
}

/// The seed inputs of one cargo-fuzz target, from `fuzz/corpus/<target>/` at the
/// workspace root (at least one, or the test fails: a missing corpus is a bug).
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
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
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}
