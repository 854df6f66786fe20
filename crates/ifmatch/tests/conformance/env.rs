//! Where the test servers are: from the environment printed by `scripts/test-servers start`.

/// The endpoint in `var`, or `None` (skip) on a developer machine without the
/// server. Under CI (`CI=true`) a missing server is a failure, never a skip.
pub fn endpoint(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("CI")
                .map(|v| v == "true" || v == "1")
                .unwrap_or(false)
            {
                panic!(
                    "{var} is not set but CI=true: {what} tests must run in CI (start scripts/test-servers)"
                );
            }
            eprintln!(
                "SKIPPED: {what} tests need {var}; run `eval \"$(scripts/test-servers start)\"` first"
            );
            None
        }
    }
}

/// A name unique to this test run, usable in bucket and table names (lowercase, digits, '-').
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
