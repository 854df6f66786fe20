//! Micro-benchmarks of the hot paths: file:// put and get, key validation, and
//! the update loop's overhead against a bare conditional put.
//!
//! Run with `cargo bench -p ifmatch --bench hot_paths`. Settings are kept
//! small (few samples, short measurement) so a run takes about a minute.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use ifmatch::DynStore;
use ifmatch::key::validate_key;
use ifmatch::retry::RetryPolicy;
use ifmatch::store::PutOptions;
use ifmatch::update::update_json;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn open(rt: &Runtime, url: &str) -> DynStore {
    rt.block_on(ifmatch::store::open(url))
        .expect("open the store")
}

fn keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate_key");
    g.bench_function("short", |b| {
        b.iter(|| validate_key(black_box("counters/page-views")))
    });
    let long = format!("tenants/{}/log/{:020}", "a".repeat(100), 42);
    g.bench_function("long", |b| b.iter(|| validate_key(black_box(&long))));
    g.bench_function("rejected", |b| {
        b.iter(|| validate_key(black_box("bad//key/../x")))
    });
    g.finish();
}

fn file_store(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&rt, &format!("file://{}", dir.path().display()));
    let body = Bytes::from(vec![7u8; 1024]);
    let mut g = c.benchmark_group("file");
    g.bench_function("put_any_1KiB", |b| {
        b.iter(|| {
            rt.block_on(store.put("bench/put", body.clone(), PutOptions::any()))
                .expect("put")
        })
    });
    let mut v = rt
        .block_on(store.put("bench/cas", body.clone(), PutOptions::any()))
        .expect("put");
    g.bench_function("put_if_match_1KiB", |b| {
        b.iter(|| {
            v = rt
                .block_on(store.put("bench/cas", body.clone(), PutOptions::if_matches(v.clone())))
                .expect("conditional put");
        })
    });
    g.bench_function("get_1KiB", |b| {
        b.iter(|| rt.block_on(store.get("bench/cas")).expect("get"))
    });
    g.bench_function("head", |b| {
        b.iter(|| rt.block_on(store.head("bench/cas")).expect("head"))
    });
    g.finish();
}

/// One increment of a JSON counter three ways: a bare conditional put with the
/// version already known (the floor), a GET then a conditional put by hand,
/// and the update loop (GET, closure, conditional put with a write id).
fn update_overhead(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = RetryPolicy::default();
    for (name, url) in [
        ("memory", "memory://".to_string()),
        ("file", format!("file://{}", dir.path().display())),
    ] {
        let store = open(&rt, &url);
        let mut g = c.benchmark_group(format!("increment_{name}"));
        let mut n = 0u64;
        let mut v = rt
            .block_on(store.put("bench/bare", "0".into(), PutOptions::any()))
            .expect("put");
        g.bench_function("bare_conditional_put", |b| {
            b.iter(|| {
                n += 1;
                v = rt
                    .block_on(store.put(
                        "bench/bare",
                        n.to_string().into(),
                        PutOptions::if_matches(v.clone()),
                    ))
                    .expect("conditional put");
            })
        });
        rt.block_on(store.put("bench/manual", "0".into(), PutOptions::any()))
            .expect("put");
        g.bench_function("get_then_conditional_put", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let o = store.get("bench/manual").await.expect("get");
                    let x: u64 = std::str::from_utf8(&o.body)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    store
                        .put(
                            "bench/manual",
                            (x + 1).to_string().into(),
                            PutOptions::if_matches(o.meta.version),
                        )
                        .await
                        .expect("conditional put")
                })
            })
        });
        g.bench_function("update_loop", |b| {
            b.iter(|| {
                rt.block_on(update_json(
                    &*store,
                    "bench/loop",
                    &policy,
                    |x: Option<u64>| Ok(Some(x.unwrap_or(0) + 1)),
                ))
                .expect("update")
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = keys, file_store, update_overhead
}
criterion_main!(benches);
