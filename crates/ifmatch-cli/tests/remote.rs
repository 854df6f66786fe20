//! `ifmatch doctor` and the basic commands against the real protocol servers
//! started by `scripts/test-servers start` (moto's S3, dynalite's DynamoDB).
//! On a developer machine without them these tests skip with a printed
//! reason; under `CI=true` a missing server fails.

use std::process::{Command, Output};

fn endpoint(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{var} is not set but CI=true: {what} tests must run in CI");
            }
            eprintln!(
                "SKIPPED: {what} tests need {var}; run `eval \"$(scripts/test-servers start)\"`"
            );
            None
        }
    }
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{nanos:x}", std::process::id())
}

fn ifmatch(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ifmatch"))
        .env_remove("RUST_LOG")
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run ifmatch")
}

fn assert_ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn doctor_passes_on_s3() {
    let Some(ep) = endpoint("IFMATCH_TEST_S3_ENDPOINT", "S3 (moto)") else {
        return;
    };
    let url = format!("s3://{}/doctor?endpoint={ep}", unique("doc"));
    let s3 = ifmatch::store::s3::S3Store::open(&url).await.expect("open");
    s3.create_bucket().await.expect("create bucket");
    let out = assert_ok(&ifmatch(&url, &["doctor"]), "doctor on s3");
    assert!(out.contains("All 7 checks passed"), "{out}");

    // The conflict exit code works the same on S3.
    let o = ifmatch(&url, &["put", "k", "--if-absent", "/dev/null"]);
    assert_ok(&o, "first create");
    let o = ifmatch(&url, &["put", "k", "--if-absent", "/dev/null"]);
    assert_eq!(o.status.code(), Some(3));
}

#[tokio::test]
async fn doctor_passes_on_dynamodb() {
    let Some(ep) = endpoint("IFMATCH_TEST_DYNAMODB_ENDPOINT", "DynamoDB (dynalite)") else {
        return;
    };
    let url = format!("dynamodb://{}?create=true&endpoint={ep}", unique("doc"));
    let out = assert_ok(&ifmatch(&url, &["doctor"]), "doctor on dynamodb");
    assert!(out.contains("All 7 checks passed"), "{out}");
}
