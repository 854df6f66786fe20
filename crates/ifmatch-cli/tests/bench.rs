//! `ifmatch bench`: the figures add up, and `--json` prints exactly one object.

use std::process::Command;
use std::sync::Arc;

use ifmatch::store::memory::MemoryStore;
use ifmatch_cli::bench::contention::{ContentionArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_in_process_combines_writes_and_loses_nothing() {
    let store = Arc::new(MemoryStore::new());
    let args = ContentionArgs {
        workers: 32,
        ops: 10,
        in_process: true,
        ..ContentionArgs::default()
    };
    let r = ifmatch_cli::bench::in_process::run(store.clone(), &args, 3, true)
        .await
        .unwrap();
    assert_eq!(r.scenario, "contention-in-process");
    assert_eq!(
        (r.acknowledged, r.final_value, r.lost_updates, r.failed),
        (320, 320, 0, 0)
    );
    assert!(r.puts < 320 && r.mean_batch > 1.0, "{r:?}");
    assert!(r.serial_limit_ops_per_sec > 0.0 && r.vs_serial_limit > 0.0);
    assert!(
        ifmatch::store::list_all(&*store, "ifmatch-bench/")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_loses_nothing_with_ifmatch_and_counts_the_naive_losses() {
    let store = Arc::new(MemoryStore::new());
    let args = ContentionArgs {
        workers: 6,
        ops: 20,
        ..ContentionArgs::default()
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

/// Runs `ifmatch --store file://<tmp> bench ARGS --json`; the one JSON object it prints.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ifmatch"))
        .args([
            "--store",
            &format!("file://{}", dir.path().join("s").display()),
            "bench",
        ])
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    // Everything the run wrote under the store was removed again.
    let left: Vec<_> = walk(&dir.path().join("s"));
    assert!(left.is_empty(), "{args:?} left {left:?}");
    serde_json::from_str(&text).unwrap()
}

/// The value files (`*.v`) under a file store's directory.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "v") {
            out.push(p);
        }
    }
    out
}

fn num(v: &serde_json::Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

#[test]
fn tenantdb_reads_upload_nothing_and_the_seed_uploads_the_whole_file() {
    let v = bench_json(&["tenantdb", "--requests", "3", "--cold", "1"]);
    assert_eq!(v["scenario"], "tenantdb");
    for f in [
        "cold_ms",
        "warm_read_ms",
        "warm_write_ms",
        "requests_per_warm_read",
        "uploads_per_read",
        "bytes_up_per_write",
        "naive_warm_read_ms",
        "naive_requests_per_warm_read",
        "naive_bytes_up_per_write",
    ] {
        num(&v, f);
    }
    assert_eq!(num(&v, "uploads_per_read"), 0.0, "{v}");
    // One GET that finds no newer log entry.
    assert_eq!(num(&v, "requests_per_warm_read"), 1.0, "{v}");
    assert!(num(&v, "bytes_up_per_write") > 0.0, "{v}");
    // The seed: a HEAD and a PUT of the whole file for every read.
    assert_eq!(num(&v, "naive_uploads_per_read"), 1.0, "{v}");
    assert_eq!(num(&v, "naive_requests_per_warm_read"), 2.0, "{v}");
    assert!(num(&v, "naive_bytes_up_per_write") >= num(&v, "naive_db_bytes") - 4096.0);
}

#[test]
fn tenantdb_commits_carry_pages_not_the_padded_database() {
    let v = bench_json(&["tenantdb", "--requests", "3", "--cold", "1", "--db-mb", "1"]);
    assert!(num(&v, "db_bytes") >= 1024.0 * 1024.0, "{v}");
    assert!(
        num(&v, "naive_bytes_up_per_write") >= 1024.0 * 1024.0,
        "{v}"
    );
    // A small commit on a 1 MiB database: a few pages, no checkpoint yet.
    assert!(num(&v, "bytes_up_per_write") < 100.0 * 1024.0, "{v}");
}

#[test]
fn idempotency_runs_the_duplicated_message_once() {
    let v = bench_json(&[
        "idempotency",
        "--deliveries",
        "12",
        "--workers",
        "4",
        "--unique",
        "10",
        "--unique-workers",
        "3",
        "--work-ms",
        "20",
    ]);
    assert_eq!(v["scenario"], "idempotency");
    assert_eq!(v["executed"], 1, "{v}");
    assert_eq!(v["duplicates"], 11, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["unique_executed"], 10, "{v}");
    assert_eq!(v["unique_failed"], 0, "{v}");
    assert!(num(&v, "claims_per_sec") > 0.0, "{v}");
}

#[test]
fn lease_holders_never_overlap_and_tokens_increase() {
    let v = bench_json(&[
        "lease",
        "--contenders",
        "3",
        "--rounds",
        "3",
        "--ttl-ms",
        "100",
        "--hold-ms",
        "5",
        "--skew-ms",
        "10",
    ]);
    assert_eq!(v["scenario"], "lease");
    assert_eq!(v["acquisitions"], 3, "{v}");
    assert_eq!(v["overlaps"], 0, "{v}");
    assert_eq!(v["tokens_monotonic"], true, "{v}");
    // A holder that stops renewing is replaced only after its lease expired.
    assert_eq!(v["takeovers_before_expiry"], 0, "{v}");
    assert!(num(&v, "handover_ms") > 0.0, "{v}");
    assert!(num(&v, "handover_ms") >= num(&v, "handover_min_ms"), "{v}");
}

#[test]
fn snapshot_publishes_lose_nothing_and_the_seed_design_does() {
    let v = bench_json(&[
        "snapshot",
        "--publishers",
        "3",
        "--readers",
        "2",
        "--publishes",
        "2",
        "--build-ms",
        "50",
    ]);
    assert_eq!(v["scenario"], "snapshot");
    let published = v["published"].as_u64().unwrap();
    let superseded = v["superseded"].as_u64().unwrap();
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(published + superseded, 6, "{v}");
    assert!(published >= 2, "{v}");
    assert_eq!(v["versions_gap_free"], true, "{v}");
    assert_eq!(v["lost_publishes"], 0, "{v}");
    assert_eq!(v["final_version"], published, "{v}");
    assert_eq!(v["reader_regressions"], 0, "{v}");
    assert_eq!(v["readers_current"], true, "{v}");
    // At most one body download per version per reader.
    assert!(
        v["reader_downloads"].as_u64().unwrap() <= 2 * published,
        "{v}"
    );
    // Seed 001: every unconditional PUT is acknowledged; three publishers that
    // read the same version 50 ms before writing all write the same next one.
    let acked = v["naive_acknowledged"].as_u64().unwrap();
    let fin = v["naive_final_version"].as_u64().unwrap();
    assert_eq!(acked, 6, "{v}");
    assert_eq!(
        v["naive_lost_publishes"].as_u64().unwrap(),
        acked - fin,
        "{v}"
    );
    assert!(acked > fin, "the unguarded design lost nothing: {v}");
}

#[test]
fn all_gives_one_object_keyed_by_scenario() {
    let v = bench_json(&["all", "--quick"]);
    for s in ["contention", "tenantdb", "idempotency", "lease", "snapshot"] {
        assert!(v[s].is_object(), "{s} in {v}");
    }
    assert_eq!(v["contention"]["modes"]["ifmatch"]["lost_updates"], 0);
    assert_eq!(v["idempotency"]["executed"], 1);
    assert_eq!(v["lease"]["overlaps"], 0);
    assert_eq!(v["snapshot"]["lost_publishes"], 0);
    assert_eq!(v["tenantdb"]["uploads_per_read"], 0.0);
}

#[test]
fn a_sweep_draws_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("c.svg");
    let v = bench_json(&[
        "contention",
        "--sweep",
        "1,2",
        "--ops",
        "3",
        "--repeat",
        "2",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert_eq!(runs[1]["workers"], 2);
    assert_eq!(runs[3]["workers"], 2);
    for run in runs {
        assert_eq!(run["modes"]["ifmatch"]["lost_updates"], 0);
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    assert!(chart.contains("polyline"));
}

#[test]
fn store_runs_every_call_it_counts_and_finds_every_key() {
    let r = bench_json(&["store", "--workers", "4", "--ops", "5", "--keys", "7"]);
    assert_eq!(r["scenario"], "store");
    let ops: Vec<_> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["op"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, ["put", "get", "head"]);
    for p in r["phases"].as_array().unwrap() {
        assert_eq!((num(p, "ok"), num(p, "failed")), (20.0, 0.0), "{p}");
        assert!(num(p, "ops_per_sec") > 0.0, "{p}");
    }
}

#[test]
fn bad_scenario_arguments_are_usage_errors() {
    for (args, needle) in [
        (vec!["tenantdb", "--requests", "0"], "--requests"),
        (vec!["idempotency", "--workers", "0"], "--workers"),
        (vec!["lease", "--contenders", "0"], "--contenders"),
        (
            vec!["lease", "--ttl-ms", "50", "--hold-ms", "60"],
            "--hold-ms",
        ),
        (vec!["snapshot", "--publishers", "0"], "--publishers"),
        (vec!["contention", "--svg", "x.svg"], "--sweep"),
        (vec!["contention", "--sweep", "0,2"], "--sweep"),
        (
            vec!["contention", "--sweep", "1", "--svg", "no/such/dir/c.svg"],
            "--svg",
        ),
        (vec!["tenantdb", "--requests", "lots"], "--requests"),
        (vec!["store", "--keys", "0"], "--keys"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ifmatch"))
            .args([
                "--store",
                &format!("file://{}", dir.path().join("s").display()),
                "bench",
            ])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
