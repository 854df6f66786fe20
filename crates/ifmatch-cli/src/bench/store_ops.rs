//! `ifmatch bench store`: the raw store's throughput on distinct keys.
//!
//! W tasks × N operations straight on the [`Store`], no HTTP, no update loop:
//! unconditional PUTs, GETs and HEADs (the store call behind an HTTP
//! conditional GET that answers 304) spread over `--keys` distinct keys.
//! These are the figures `scripts/bench-server` puts beside the HTTP
//! server's, so a reader sees what the server adds to the store it serves
//! (issue 14, goal 3). Every operation is checked: a GET or HEAD of a key
//! written in the PUT phase that does not find it is counted as `failed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use ifmatch::store::PutOptions;
use ifmatch::{DynStore, Error};
use serde::Serialize;

use super::{median, ms, progress, round2};

/// `ifmatch bench store` arguments.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Concurrent tasks.
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Operations per task, in each phase.
    #[arg(long, default_value_t = 50)]
    pub ops: usize,
    /// Distinct keys the operations spread over.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
}

/// One phase of the run: one kind of store call.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// `put`, `get` or `head`.
    pub op: &'static str,
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed (or did not find a key written before).
    pub failed: u64,
    /// Wall-clock time of the phase.
    pub wall_ms: f64,
    /// Successful calls per second.
    pub ops_per_sec: f64,
    /// Median latency of one call.
    pub p50_ms: f64,
}

/// The `store` report.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    /// Always `"store"`.
    pub scenario: &'static str,
    /// The store measured.
    pub store: String,
    /// Concurrent tasks.
    pub workers: usize,
    /// Operations per task, per phase.
    pub ops: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Bytes per value.
    pub size: usize,
    /// The phases, in the order they ran: put, get, head.
    pub phases: Vec<Phase>,
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
    Head,
}

/// Runs the three phases under a fresh prefix and removes its keys afterwards.
pub async fn run(store: DynStore, args: &StoreArgs, json: bool) -> Result<StoreReport, Error> {
    super::require(
        args.workers >= 1 && args.ops >= 1 && args.keys >= 1,
        "--workers, --ops and --keys must be at least 1",
    )?;
    let prefix = format!("ifmatch-bench/store/{}/", super::run_id());
    // Every key exists before the timed phases, so GET and HEAD always find one.
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    for k in 0..args.keys {
        store
            .put(&format!("{prefix}k{k}"), body.clone(), PutOptions::any())
            .await?;
    }
    let mut phases = Vec::new();
    for (op, name) in [(Op::Put, "put"), (Op::Get, "get"), (Op::Head, "head")] {
        phases.push(phase(&store, args, &prefix, &body, op, name, json).await?);
    }
    super::cleanup(&store, &prefix).await;
    Ok(StoreReport {
        scenario: "store",
        store: store.describe(),
        workers: args.workers,
        ops: args.ops,
        keys: args.keys,
        size: args.size,
        phases,
    })
}

async fn phase(
    store: &DynStore,
    args: &StoreArgs,
    prefix: &str,
    body: &bytes::Bytes,
    op: Op,
    name: &'static str,
    json: bool,
) -> Result<Phase, Error> {
    let bar = progress((args.workers * args.ops) as u64, json, name);
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.workers);
    for t in 0..args.workers {
        let (store, bar, failed) = (store.clone(), bar.clone(), failed.clone());
        let (prefix, body, args) = (prefix.to_string(), body.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<Duration> = Vec::with_capacity(args.ops);
            for i in 0..args.ops {
                let key = format!("{prefix}k{}", (t * args.ops + i) % args.keys);
                let t0 = Instant::now();
                let ok = match op {
                    Op::Put => store
                        .put(&key, body.clone(), PutOptions::any())
                        .await
                        .is_ok(),
                    Op::Get => store.get(&key).await.is_ok(),
                    Op::Head => store.head(&key).await.is_ok(),
                };
                if ok {
                    lat.push(t0.elapsed());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                bar.inc(1);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(
            t.await
                .map_err(|e| Error::other("a benchmark task failed", e))?,
        );
    }
    let wall = started.elapsed();
    bar.finish_and_clear();
    let ok = lat.len() as u64;
    Ok(Phase {
        op: name,
        ok,
        failed: failed.load(Ordering::Relaxed),
        wall_ms: round2(ms(wall)),
        ops_per_sec: round2(ok as f64 / wall.as_secs_f64().max(1e-9)),
        p50_ms: round2(ms(median(lat))),
    })
}

/// The report as a table.
pub fn render(r: &StoreReport) -> String {
    let mut s = format!(
        "store: {} tasks x {} calls per phase on {} keys of {} bytes, on {}\n\n\
         {:<6} {:>8} {:>7} {:>10} {:>10} {:>8}\n",
        r.workers,
        r.ops,
        r.keys,
        r.size,
        r.store,
        "op",
        "ok",
        "failed",
        "wall ms",
        "ops/s",
        "p50 ms"
    );
    for p in &r.phases {
        s.push_str(&format!(
            "{:<6} {:>8} {:>7} {:>10.1} {:>10.1} {:>8.2}\n",
            p.op, p.ok, p.failed, p.wall_ms, p.ops_per_sec, p.p50_ms
        ));
    }
    s
}
