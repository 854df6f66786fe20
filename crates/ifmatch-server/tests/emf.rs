//! The CloudWatch Embedded Metric Format recorder: the exact documents for
//! known metrics (golden), checked against the specification, and the
//! metrics a real router run produces (conflicts, retries, ambiguous
//! outcomes, tenant-database cache hits and misses, latency).

#[path = "support/emf_spec.rs"]
mod emf_spec;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{
    Condition, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store, Version,
};
use ifmatch::{DynStore, Error};
use ifmatch_server::emf::{EmfConfig, EmfRecorder};
use ifmatch_server::telemetry::{DURATION_METRIC, REQUESTS_METRIC};
use ifmatch_server::{AppState, ServerConfig, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const T: u64 = 1_767_225_600_000;

#[test]
fn documents_match_the_golden_emf_lines() {
    let rec = EmfRecorder::new(EmfConfig::default().with_dimension("FunctionName", "ifm"));
    let emf = rec.handle();
    metrics::with_local_recorder(&rec, || {
        ifmatch_server::telemetry::describe();
        metrics::counter!("ifmatch_update_conflicts_total").increment(2);
        metrics::counter!("ifmatch_retries_total").increment(3);
        metrics::counter!("ifmatch_update_failures_total", "reason" => "ambiguous").increment(1);
        metrics::counter!("ifmatch_tenantdb_cache_hits_total").increment(4);
        metrics::counter!("ifmatch_tenantdb_cache_misses_total").increment(1);
        // Labels that are not dimensions are summed away.
        for (method, status) in [("GET", "200"), ("PUT", "412")] {
            let labels = [
                ("method", method),
                ("route", "/v1/objects/{*key}"),
                ("status", status),
            ];
            metrics::counter!(REQUESTS_METRIC, &labels).increment(1);
        }
        metrics::histogram!(DURATION_METRIC, "route" => "/healthz").record(0.25);
        metrics::histogram!(DURATION_METRIC, "route" => "/v1/me").record(0.5);
        metrics::counter!("never_moved_total").increment(0);
    });
    let mut out = Vec::new();
    emf.flush(T, &mut out).unwrap();
    let docs = emf_spec::parse(&out);
    let directive = |dims: Value, metrics: Value| {
        json!({"Timestamp": T, "CloudWatchMetrics": [
            {"Namespace": "ifmatch", "Dimensions": [dims], "Metrics": metrics}
        ]})
    };
    let golden = vec![
        json!({
            "_aws": directive(json!(["FunctionName"]), json!([
                {"Name": "ifmatch_http_request_duration_seconds", "Unit": "Seconds"},
                {"Name": "ifmatch_http_requests_total", "Unit": "Count"},
                {"Name": "ifmatch_retries_total", "Unit": "Count"},
                {"Name": "ifmatch_tenantdb_cache_hits_total", "Unit": "Count"},
                {"Name": "ifmatch_tenantdb_cache_misses_total", "Unit": "Count"},
                {"Name": "ifmatch_update_conflicts_total", "Unit": "Count"},
            ])),
            "FunctionName": "ifm",
            "ifmatch_http_request_duration_seconds": [0.25, 0.5],
            "ifmatch_http_requests_total": 2,
            "ifmatch_retries_total": 3,
            "ifmatch_tenantdb_cache_hits_total": 4,
            "ifmatch_tenantdb_cache_misses_total": 1,
            "ifmatch_update_conflicts_total": 2,
        }),
        json!({
            "_aws": directive(json!(["FunctionName", "reason"]), json!([
                {"Name": "ifmatch_update_failures_total", "Unit": "Count"},
            ])),
            "FunctionName": "ifm",
            "reason": "ambiguous",
            "ifmatch_update_failures_total": 1,
        }),
    ];
    // The histogram's values may come in either order; sort them before comparing.
    let mut docs = docs;
    if let Some(Value::Array(vs)) = docs[0].get_mut(DURATION_METRIC) {
        vs.sort_by(|a, b| a.as_f64().partial_cmp(&b.as_f64()).unwrap());
    }
    assert_eq!(docs, golden);
    // Each document is exactly one line.
    assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 2);

    // A flush reports what happened since the previous one: nothing now.
    let mut again = Vec::new();
    emf.flush(T + 1, &mut again).unwrap();
    assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));
}

#[test]
fn more_than_100_values_continue_in_further_documents() {
    let rec = EmfRecorder::new(EmfConfig::default());
    let emf = rec.handle();
    metrics::with_local_recorder(&rec, || {
        for i in 0..250 {
            metrics::histogram!("latency").record(f64::from(i));
        }
        metrics::counter!("hits").increment(7);
    });
    let mut out = Vec::new();
    emf.flush(T, &mut out).unwrap();
    let docs = emf_spec::parse(&out);
    let sizes: Vec<usize> = docs
        .iter()
        .map(|d| d["latency"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    // The counter is reported once, with the first chunk; no dimensions at all is an empty set.
    assert_eq!(docs[0]["hits"], 7);
    assert!(docs[1].get("hits").is_none() && docs[2].get("hits").is_none());
    assert_eq!(
        docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([[]])
    );
    let mut all: Vec<f64> = docs
        .iter()
        .flat_map(|d| d["latency"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_f64())
        .collect();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(all, (0..250).map(f64::from).collect::<Vec<_>>());
}

#[test]
fn the_checker_rejects_documents_that_break_the_specification() {
    let good = json!({
        "_aws": {"Timestamp": T, "CloudWatchMetrics": [
            {"Namespace": "n", "Dimensions": [["D"]], "Metrics": [{"Name": "m", "Unit": "Count"}]}
        ]},
        "D": "x", "m": 1
    });
    assert_eq!(emf_spec::check(&good), Ok(()));
    let broken = |path: &[&str], v: Value| {
        let mut doc = good.clone();
        let mut at = &mut doc;
        for p in &path[..path.len() - 1] {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        at[path[path.len() - 1]] = v;
        emf_spec::check(&doc)
    };
    assert!(broken(&["_aws", "Timestamp"], json!("now")).is_err());
    assert!(broken(&["D"], json!(3)).is_err());
    assert!(broken(&["m"], json!("1")).is_err());
    assert!(broken(&["m"], json!(vec![1; 101])).is_err());
    let directive = ["_aws", "CloudWatchMetrics", "0"];
    let at = |k: &'static str| [&directive[..], &[k]].concat();
    assert!(broken(&at("Metrics"), json!([{"Name": "m", "Unit": "Counts"}])).is_err());
    assert!(broken(&at("Metrics"), json!([{"Unit": "Count"}])).is_err());
    assert!(broken(&at("Dimensions"), json!([["Missing"]])).is_err());
}

/// A store that loses the first conditional write of each key to a competing
/// writer, and answers the next one `Ambiguous` although it landed: one
/// conflict, one retry and one ambiguous outcome settled, deterministically.
#[derive(Debug)]
struct Racing {
    inner: MemoryStore,
    puts: AtomicU32,
}

#[async_trait]
impl Store for Racing {
    fn describe(&self) -> String {
        "racing".into()
    }
    async fn get(&self, key: &str) -> ifmatch::Result<Object> {
        self.inner.get(key).await
    }
    async fn get_if_changed(&self, key: &str, known: &Version) -> ifmatch::Result<Fetch> {
        self.inner.get_if_changed(key, known).await
    }
    async fn head(&self, key: &str) -> ifmatch::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> ifmatch::Result<Version> {
        if !matches!(opts.condition, Condition::Matches(_)) {
            return self.inner.put(key, body, opts).await;
        }
        match self.puts.fetch_add(1, Ordering::SeqCst) {
            0 => {
                let rival = PutOptions::default();
                self.inner
                    .put(key, Bytes::from_static(b"{\"n\":10}"), rival)
                    .await?;
                self.inner.put(key, body, opts).await
            }
            1 => {
                self.inner.put(key, body, opts).await?;
                Err(Error::Ambiguous {
                    key: key.into(),
                    message: "the answer was lost".into(),
                })
            }
            _ => self.inner.put(key, body, opts).await,
        }
    }
    async fn delete(&self, key: &str, condition: Condition) -> ifmatch::Result<()> {
        self.inner.delete(key, condition).await
    }
    async fn list(&self, prefix: &str, page: ListPage) -> ifmatch::Result<ListResult> {
        self.inner.list(prefix, page).await
    }
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body.to_string())).unwrap();
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_router_run_reports_conflicts_retries_ambiguity_cache_and_latency() {
    let emf = EmfRecorder::install(EmfConfig::default().with_dimension("FunctionName", "f"))
        .expect("the only recorder of this test process");
    let store: DynStore = Arc::new(Racing {
        inner: MemoryStore::new(),
        puts: AtomicU32::new(0),
    });
    let cache = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        api_key: Some("k".into()),
        db_cache_dir: Some(cache.path().to_path_buf()),
        // No waiting between attempts: this test sleeps for nothing.
        retry: ServerConfig::default()
            .retry
            .with_delays(Duration::ZERO, Duration::ZERO),
        ..ServerConfig::default()
    };
    let state = AppState::new(store, config).unwrap();
    let app = router(state.clone());
    let auth = ("authorization", "Bearer k");

    let create = [auth, ("if-none-match", "*")];
    assert_eq!(
        call(&app, "PUT", "/v1/objects/c", &create, r#"{"n":1}"#).await,
        201
    );
    let patch = [auth, ("content-type", "application/merge-patch+json")];
    assert_eq!(
        call(&app, "PATCH", "/v1/objects/c", &patch, r#"{"m":2}"#).await,
        200
    );
    let db = [auth, ("content-type", "application/json")];
    let write = r#"{"tenant": "t1", "statements": [{"sql": "CREATE TABLE n (x)"}]}"#;
    assert_eq!(call(&app, "POST", "/v1/db", &db, write).await, 200);
    let read = r#"{"tenant": "t1", "statements": [{"sql": "SELECT count(*) FROM n"}]}"#;
    assert_eq!(call(&app, "POST", "/v1/db", &db, read).await, 200);

    let mut out = Vec::new();
    emf.flush(T, &mut out).unwrap();
    let docs = emf_spec::parse(&out);
    let f = [("FunctionName", "f")];
    let count = |name: &str| {
        emf_spec::value(&docs, name, &f)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {name} in {}", String::from_utf8_lossy(&out)))
    };
    assert_eq!(count("ifmatch_update_conflicts_total"), 1);
    assert!(count("ifmatch_retries_total") >= 1);
    assert_eq!(count("ifmatch_update_ambiguous_resolved_total"), 1);
    // The same counts the tenant databases keep themselves.
    let stats = state.tenant_dbs().expect("a cache directory").stats();
    assert!(
        stats.cache_misses >= 1 && stats.cache_hits >= 1,
        "{stats:?}"
    );
    assert_eq!(
        count("ifmatch_tenantdb_cache_misses_total"),
        stats.cache_misses
    );
    assert_eq!(count("ifmatch_tenantdb_cache_hits_total"), stats.cache_hits);
    assert_eq!(count(REQUESTS_METRIC), 4);
    let latencies = emf_spec::value(&docs, DURATION_METRIC, &f).and_then(Value::as_array);
    assert_eq!(latencies.map(Vec::len), Some(4));
    let unit = docs
        .iter()
        .flat_map(|d| {
            d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|m| m["Name"] == DURATION_METRIC)
        .map(|m| m["Unit"].clone());
    assert_eq!(unit, Some(json!("Seconds")));
}
