//! Runs the `sqs_worker` example (seed 004) against moto's SQS: 30 messages
//! (3 of them sent twice), 3 worker processes, a 1 s visibility timeout (so messages come back), two
//! workers SIGKILLed mid-message (one before and one after its effect write)
//! and replaced. Every message's effect must be in the ledger exactly once,
//! every idempotency record completed, and the handler must have run exactly
//! once per message plus once per killed render.
//!
//! The SQS endpoint is `IFMATCH_TEST_SQS_ENDPOINT`, else moto's
//! `IFMATCH_TEST_S3_ENDPOINT` (moto serves every service on one port). On a
//! developer machine without it the test prints `SKIPPED:` and passes; under
//! `CI=true` it fails. The claims and the ledger live in a `file://` store in a
//! temporary directory that the worker processes share.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use ifmatch::Store;
use ifmatch::idempotency::{Idempotency, RecordState};
use ifmatch::store::file::FileStore;

const MESSAGES: usize = 30;

/// The SQS endpoint, `None` (skip) on a developer machine without one; panics under CI.
fn endpoint() -> Option<String> {
    for var in ["IFMATCH_TEST_SQS_ENDPOINT", "IFMATCH_TEST_S3_ENDPOINT"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return Some(v);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "IFMATCH_TEST_SQS_ENDPOINT / IFMATCH_TEST_S3_ENDPOINT is not set but CI=true: the SQS worker test must run in CI (start scripts/test-servers)"
        );
    }
    eprintln!(
        "SKIPPED: the SQS worker test needs IFMATCH_TEST_SQS_ENDPOINT or IFMATCH_TEST_S3_ENDPOINT (moto); run `eval \"$(scripts/test-servers start)\"` first"
    );
    None
}

/// The newest modification time of the files under `path`.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// The example's binary. A `cargo test` of the package or the workspace
/// builds it with the tests; `cargo test --test sqs_worker` does not, so if
/// it is missing or older than the crate's sources it is built here (with
/// `-p ifmatch`: rebuilding after a `--workspace` build could resolve the
/// dependencies' features differently and rebuild them all).
fn example_binary() -> PathBuf {
    // This test runs from TARGET/PROFILE/deps/; the example lands in TARGET/PROFILE/examples/.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in TARGET/PROFILE/deps");
    let target_dir = profile_dir.parent().expect("TARGET/PROFILE");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name");
    let bin = profile_dir
        .join("examples")
        .join(format!("sqs_worker{}", std::env::consts::EXE_SUFFIX));
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = ["src", "examples", "Cargo.toml"]
        .iter()
        .filter_map(|p| newest_mtime(&crate_dir.join(p)))
        .max();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(sources)) = (built, sources)
        && built >= sources
    {
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    // Drop what cargo sets for this test's own crate (CARGO_MANIFEST_DIR,
    // CARGO_PKG_*, ...): some build scripts (ring's) rerun when those change,
    // and then the nested build would rebuild half the dependency tree, and
    // the next ordinary build all of it again. User settings
    // (CARGO_HOME, CARGO_TARGET_DIR, CARGO_PROFILE_*, ...) are kept.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_for_this_crate = name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_this_crate {
            build.env_remove(name);
        }
    }
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "-p",
            "ifmatch",
            "--example",
            "sqs_worker",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build
        .status()
        .expect("run cargo build --example sqs_worker");
    assert!(status.success(), "building the sqs_worker example failed");
    assert!(bin.exists(), "no example binary at {}", bin.display());
    bin
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_kills_apply_every_effect_exactly_once() {
    let Some(endpoint) = endpoint() else { return };
    let bin = example_binary();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "ifmatch-sqs-worker-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let store_url = format!("file://{}", dir.0.display());

    let started = Instant::now();
    let out = tokio::process::Command::new(&bin)
        .args(["demo", "--messages", &MESSAGES.to_string()])
        .args(["--duplicates", "3", "--workers", "3", "--kills", "2"])
        .args(["--deadline-s", "50"])
        .args(["--store", &store_url, "--endpoint", &endpoint])
        .output()
        .await
        .expect("run the sqs_worker example");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("sqs_worker demo took {elapsed:?}; its stderr:\n{stderr}");
    let summary: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .map(|j| serde_json::from_str(j).expect("SUMMARY is JSON"))
        .unwrap_or_else(|| panic!("no SUMMARY line; stdout:\n{stdout}"));
    eprintln!("summary: {summary}");
    assert!(out.status.success(), "the demo failed: {summary}");
    assert_eq!(summary["ok"], true, "{summary}");
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    // Two workers were killed mid-message, one on each side of the effect write.
    assert_eq!(n("killed_before_effect"), 1, "{summary}");
    assert_eq!(n("killed_after_effect"), 1, "{summary}");
    assert_eq!(n("workers_started"), 5, "{summary}");
    // Exactly one handler run per message, plus one takeover per killed render.
    assert_eq!(n("handler_runs"), MESSAGES as u64 + 2, "{summary}");
    assert_eq!(n("effects_applied"), MESSAGES as u64, "{summary}");
    // The render taken over after its effect had landed applied nothing.
    assert_eq!(n("effects_already_applied"), 1, "{summary}");
    assert_eq!(n("ledger_total"), MESSAGES as u64, "{summary}");
    // The three messages sent twice: the second copy got the stored result.
    assert!(n("duplicates") >= 3, "{summary}");

    // Check the store ourselves: the ledger holds every message exactly once...
    let store = std::sync::Arc::new(FileStore::open(&dir.0).unwrap());
    let ledger: serde_json::Value =
        serde_json::from_slice(&store.get("ledger.json").await.unwrap().body).unwrap();
    assert_eq!(ledger["total"], MESSAGES as u64, "{ledger}");
    let rendered = ledger["rendered"].as_object().expect("rendered map");
    let mut ids: Vec<&String> = rendered.keys().collect();
    ids.sort();
    let mut expected: Vec<String> = (0..MESSAGES).map(|i| format!("shot-{i}")).collect();
    expected.sort();
    assert_eq!(
        ids,
        expected.iter().collect::<Vec<_>>(),
        "every message rendered once"
    );
    // ... and every idempotency record is completed with the render's result.
    let idem = Idempotency::new(store);
    for id in &expected {
        let rec = idem.inspect(id).await.unwrap().expect("a record");
        assert_eq!(rec.state, RecordState::Completed, "{id}");
        let result = rec.result.expect("a stored result");
        assert_eq!(result["id"], id.as_str(), "{id}: {result}");
    }
    assert!(
        elapsed.as_secs() < 60,
        "the demo took {elapsed:?}, over a minute"
    );
}
