//! `ifmatch bench`: the figures add up, and `--json` prints exactly one object.

use std::process::Command;
use std::sync::Arc;

use ifmatch::store::memory::MemoryStore;
use ifmatch_cli::bench::contention::{ContentionArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_loses_nothing_with_ifmatch_and_counts_the_naive_losses() {
    let store = Arc::new(MemoryStore::new());
    let args = ContentionArgs {
        workers: 6,
        ops: 20,
    };
    let r = run(store.clone(), &args, 3, true).await.unwrap();
    assert_eq!(r.scenario, "contention");
    for mode in ["ifmatch", "naive", "no-jitter"] {
        let m = &r.modes[mode];
        assert_eq!(m.acknowledged + m.failed, 120, "{mode}");
        assert_eq!(
            m.lost_updates,
            m.acknowledged - m.final_value.min(m.acknowledged)
        );
        assert!(m.attempts >= m.acknowledged, "{mode}");
    }
    for mode in ["ifmatch", "no-jitter"] {
        let m = &r.modes[mode];
        assert_eq!(
            (m.acknowledged, m.final_value, m.lost_updates),
            (120, 120, 0),
            "{mode}"
        );
    }
    assert!(r.serial_limit_ops_per_sec > 0.0);
    // The scenario cleans up after itself.
    assert!(
        ifmatch::store::list_all(&*store, "ifmatch-bench/")
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn json_is_exactly_one_object_with_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ifmatch"))
        .args([
            "--store",
            &format!("file://{}", dir.path().join("s").display()),
        ])
        .args([
            "bench",
            "contention",
            "--workers",
            "3",
            "--ops",
            "5",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["scenario"], "contention");
    assert!(v["serial_limit_ops_per_sec"].as_f64().unwrap() > 0.0);
    for mode in ["ifmatch", "naive", "no-jitter"] {
        for field in [
            "acknowledged",
            "final_value",
            "lost_updates",
            "conflicts",
            "attempts",
            "wall_ms",
            "ops_per_sec",
        ] {
            assert!(
                v["modes"][mode][field].is_number(),
                "{mode}.{field} in {text}"
            );
        }
    }
    assert_eq!(v["modes"]["ifmatch"]["lost_updates"], 0);
}

#[test]
fn bad_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ifmatch"))
        .args([
            "--store",
            &format!("file://{}", dir.path().join("s").display()),
        ])
        .args(["bench", "contention", "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers"), "{err}");
}
