//! The server under the whole fault model, deterministically: two servers
//! (each with its own faulty connection to one shared store, as two Lambda
//! instances would have) behind a round-robin "load balancer", and clients
//! that send JSON-Patch appends (`PATCH /v1/objects/...`), SQL inserts
//! (`POST /v1/db`) or snapshot publishes (`PUT /v1/snapshots/...`), each
//! change with its own id. A publish answered `superseded` (200: a newer
//! upload landed first) counts as refused: its body must not be published.
//!
//! With an `Idempotency-Key` a client retries every request that got no
//! final answer (a 5xx, 504 `outcome_unknown`, 409 `idempotency_in_progress`,
//! or an answer the simulated network lost) with the same key, on whichever
//! server is next. Without one it does not retry. At the end every change
//! acknowledged with a 2xx must be present exactly once, every change
//! refused with a final 4xx absent, and every other one present at most
//! once; with the key, every change must have been settled (a 2xx or a final
//! 4xx) within its retries.
//!
//! `IFMATCH_SIM_SEEDS`, `IFMATCH_SIM_SECONDS` and `IFMATCH_SIM_SEED` work as
//! for the library's simulation (`ifmatch::sim`).
//!
//! The same scenarios also run, on a few seeds and in real time, with the
//! faults injected between the servers and the real test servers (S3 on
//! moto, DynamoDB on dynalite; `scripts/test-servers`). There the clients
//! only lose answers and never drop a connection: a dropped request's claim
//! goes stale only after a minute of real time.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use http::{Request, StatusCode};
use ifmatch::clock::{SharedRng, SystemClock};
use ifmatch::retry::RetryPolicy;
use ifmatch::sim::{self, Ledger, Network, Stats, Told, Violation, Weather};
use ifmatch::snapshot::{SnapshotError, Snapshots};
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::prefix::PrefixStore;
use ifmatch::store::{DynStore, PutOptions};
use ifmatch::tenantdb::{TenantDbs, TenantDbsConfig};
use ifmatch_server::{AppState, ServerConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

#[path = "../../ifmatch/tests/common/backends.rs"]
mod backends;

const LIST: &str = "archive/CHG-1.json";
const TENANT: &str = "flashcards";
const SNAPSHOT: &str = "sim";
const SERVERS: u64 = 2;
/// How often a client with an `Idempotency-Key` tries one change at most,
/// not counting the polls answered `idempotency_in_progress`.
const TRIES: u32 = 40;
/// How long (virtual time) a client with a key keeps polling a claim in
/// progress: a claim whose request died goes stale after twice the request
/// timeout, and a retry that takes it over may be dropped too.
const PATIENCE: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Work {
    Patch,
    Sql,
    Publish,
}

impl Work {
    /// Changes per client: a publisher sends one, so that every version
    /// stays within the server's retained window (5) for the final read.
    fn changes(self) -> u64 {
        match self {
            Work::Publish => 1,
            Work::Patch | Work::Sql => 4,
        }
    }
}

struct Servers {
    routers: Vec<Router>,
    _dirs: Vec<tempfile::TempDir>,
}

fn servers(net: &Network, seed: u64) -> Servers {
    let mut routers = Vec::new();
    let mut dirs = Vec::new();
    for s in 0..SERVERS {
        let dir = tempfile::tempdir().expect("a cache directory");
        let rng = SharedRng::seeded(seed ^ (s + 1) << 48);
        let config = ServerConfig {
            db_cache_dir: Some(dir.path().to_path_buf()),
            clock: SystemClock::shared(),
            rng: rng.clone(),
            retry: ServerConfig::default()
                .retry
                .with_clock(SystemClock::shared())
                .with_rng(rng),
            ..ServerConfig::default()
        };
        let state = AppState::new(net.client(100 + s), config).expect("a server");
        routers.push(ifmatch_server::router(state));
        dirs.push(dir);
    }
    Servers {
        routers,
        _dirs: dirs,
    }
}

fn request(work: Work, id: &str, key: Option<&str>) -> Request<Body> {
    let (method, uri, ct, body) = match work {
        Work::Patch => (
            "PATCH",
            format!("/v1/objects/{LIST}"),
            "application/json-patch+json",
            json!([{"op": "add", "path": "/items/-", "value": id}]),
        ),
        Work::Sql => (
            "POST",
            "/v1/db".to_string(),
            "application/json",
            json!({"tenant": TENANT, "statements": [
                {"sql": "CREATE TABLE IF NOT EXISTS items(op TEXT)"},
                {"sql": "INSERT INTO items(op) VALUES (?)", "params": [id]},
            ]}),
        ),
        Work::Publish => (
            "PUT",
            format!("/v1/snapshots/{SNAPSHOT}"),
            "application/octet-stream",
            json!(id),
        ),
    };
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ct);
    if let Some(k) = key {
        b = b.header("idempotency-key", format!("\"{k}\""));
    }
    b.body(Body::from(body.to_string())).expect("a request")
}

/// Whether an answer is final for a client that retries with its key.
fn is_final(status: StatusCode, body: &Value) -> bool {
    !(status.is_server_error()
        || (status == StatusCode::CONFLICT && body["error"] == "idempotency_in_progress"))
}

async fn run(seed: u64, work: Work, with_key: bool) -> Result<Stats, Violation> {
    run_on(Arc::new(MemoryStore::new()), seed, work, with_key, true).await
}

/// One schedule on `inner`; `drops`: clients with a key also drop connections.
async fn run_on(
    inner: DynStore,
    seed: u64,
    work: Work,
    with_key: bool,
    drops: bool,
) -> Result<Stats, Violation> {
    let weather = Weather::from_seed(seed);
    inner
        .put(
            LIST,
            json!({"items": []}).to_string().into(),
            PutOptions::any(),
        )
        .await
        .map_err(|e| Violation(format!("setup: {e}")))?;
    let net = Network::new(inner.clone(), seed, weather.config.clone());
    let s = servers(&net, seed);
    let ledger = Ledger::new();
    let mut tasks = Vec::new();
    for c in 0..3u64 {
        let (routers, ledger) = (s.routers.clone(), ledger.clone());
        // The client's own network: which answers it loses.
        let lossy = SharedRng::seeded(seed ^ (c + 1) << 52);
        tasks.push(tokio::spawn(async move {
            for i in 0..work.changes() {
                let id = format!("c{c}-{i}");
                let key = with_key.then(|| format!("key-{id}"));
                let mut told = (Told::Unknown, "no answer".to_string());
                let give_up = tokio::time::Instant::now() + PATIENCE;
                let (mut attempt, mut polls) = (0u32, 0u64);
                while attempt < if with_key { TRIES } else { 1 }
                    && tokio::time::Instant::now() < give_up
                {
                    let turn = c + i + u64::from(attempt) + polls;
                    let router = routers[(turn % SERVERS) as usize].clone();
                    let call = router.oneshot(request(work, &id, key.as_deref()));
                    let response = if with_key && drops && lossy.unit() < 0.2 {
                        // The connection drops mid-request (a client timeout, a
                        // Lambda killed): the handler is cancelled wherever it is,
                        // its claim stays in progress until it goes stale.
                        let after = Duration::from_micros(lossy.up_to(30_000));
                        match tokio::time::timeout(after, call).await {
                            Ok(r) => r,
                            Err(_) => {
                                told = (Told::Unknown, "connection dropped".into());
                                attempt += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    } else {
                        call.await
                    }
                    .map_err(|e| Violation(format!("the router failed: {e}")))?;
                    let status = response.status();
                    let bytes = to_bytes(response.into_body(), usize::MAX)
                        .await
                        .map_err(|e| Violation(format!("reading an answer: {e}")))?;
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    if status == StatusCode::INTERNAL_SERVER_ERROR {
                        return Err(Violation(format!("{id}: a bare 500: {body}")));
                    }
                    if status == StatusCode::GATEWAY_TIMEOUT
                        && body["error"] != "outcome_unknown"
                        && body["error"] != "timeout"
                    {
                        return Err(Violation(format!(
                            "{id}: a 504 of no documented kind: {body}"
                        )));
                    }
                    if with_key && lossy.unit() < 0.15 {
                        // The answer is lost on the way back: retry.
                        told = (Told::Unknown, format!("answer lost ({status})"));
                    } else if status.is_success() && body["outcome"] == "superseded" {
                        // Final, and not published.
                        told = (Told::Failed, "superseded".into());
                        break;
                    } else if status.is_success() {
                        told = (Told::Applied, String::new());
                        break;
                    } else if !is_final(status, &body) {
                        told = (Told::Unknown, format!("{status} {}", body["error"]));
                    } else {
                        told = (Told::Failed, format!("{status} {}", body["error"]));
                        break;
                    }
                    // A claim in progress goes stale after twice the request
                    // timeout: honour Retry-After, patiently (virtual time).
                    let wait = if body["error"] == "idempotency_in_progress" {
                        polls += 1;
                        Duration::from_secs(5)
                    } else {
                        attempt += 1;
                        Duration::from_millis(20 << attempt.min(5))
                    };
                    tokio::time::sleep(wait).await;
                }
                ledger.record(id, told.0, told.1);
            }
            Ok::<(), Violation>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Violation(format!("a client panicked: {e}")))??;
    }
    net.settle().await;
    let found = read_back(work, &inner).await?;
    let explain = |v: Violation| {
        Violation(format!(
            "{v}\nweather {} {:?}\nfound {found:?}\nfaults:\n{}",
            weather.name,
            weather.config,
            net.traces()
        ))
    };
    let mut stats = ledger.check(&found).map_err(explain)?;
    if with_key && stats.unknown > 0 {
        return Err(explain(Violation(format!(
            "changes still unsettled after {TRIES} tries with their Idempotency-Key: {:?}",
            ledger.unknowns()
        ))));
    }
    let (faults, late) = net.fault_counts();
    stats.faults = faults;
    stats.late_landed = late;
    Ok(stats)
}

/// The change ids the store holds at the end, read without faults.
async fn read_back(work: Work, inner: &DynStore) -> Result<Vec<String>, Violation> {
    match work {
        Work::Patch => {
            let o = inner
                .get(LIST)
                .await
                .map_err(|e| Violation(format!("final read: {e}")))?;
            let v: Value = serde_json::from_slice(&o.body)
                .map_err(|e| Violation(format!("the list is not JSON: {e}")))?;
            Ok(v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect())
        }
        Work::Sql => {
            let dir = tempfile::tempdir().map_err(|e| Violation(e.to_string()))?;
            let dbs = TenantDbs::open(
                inner.clone(),
                TenantDbsConfig::new(dir.path())
                    .with_retry(RetryPolicy::default().with_rng(SharedRng::seeded(1))),
            )
            .map_err(|e| Violation(format!("opening the tenant databases: {e}")))?;
            let rows = dbs
                .read(TENANT, |c| {
                    let mut st = c.prepare("SELECT op FROM items")?;
                    let rows = st
                        .query_map([], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await;
            match rows {
                Ok(r) => Ok(r),
                Err(e) if e.kind() == ifmatch::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Violation(format!("final read of the tenant: {e}"))),
            }
        }
        Work::Publish => {
            let snapshots = Snapshots::new(inner.clone());
            let versions = match snapshots.versions(SNAPSHOT).await {
                Ok(v) => v,
                Err(SnapshotError::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(Violation(format!("final read of the versions: {e}"))),
            };
            let numbers: Vec<u64> = versions.iter().map(|v| v.version).collect();
            let expected: Vec<u64> = (1..=numbers.len() as u64).rev().collect();
            if numbers != expected {
                return Err(Violation(format!(
                    "versions {numbers:?}: not gap-free from 1 (or more than the window keeps)"
                )));
            }
            let mut found = Vec::new();
            for v in numbers.into_iter().rev() {
                let snap = snapshots
                    .get(SNAPSHOT, Some(v))
                    .await
                    .map_err(|e| Violation(format!("final read of version {v}: {e}")))?;
                let id: String = serde_json::from_slice(&snap.body)
                    .map_err(|e| Violation(format!("version {v} is not a change id: {e}")))?;
                found.push(id);
            }
            Ok(found)
        }
    }
}

#[test]
fn patch_appends_with_idempotency_keys_land_exactly_once() {
    sim::run_all(
        "patch_appends_with_idempotency_keys_land_exactly_once",
        200,
        |seed| run(seed, Work::Patch, true),
    );
}

#[test]
fn patch_appends_without_keys_never_land_twice() {
    sim::run_all("patch_appends_without_keys_never_land_twice", 200, |seed| {
        run(seed, Work::Patch, false)
    });
}

#[test]
fn sql_inserts_with_idempotency_keys_land_exactly_once() {
    sim::run_all(
        "sql_inserts_with_idempotency_keys_land_exactly_once",
        80,
        |seed| run(seed, Work::Sql, true),
    );
}

#[test]
fn sql_inserts_without_keys_never_land_twice() {
    sim::run_all("sql_inserts_without_keys_never_land_twice", 80, |seed| {
        run(seed, Work::Sql, false)
    });
}

#[test]
fn snapshot_publishes_with_idempotency_keys_land_exactly_once() {
    sim::run_all(
        "snapshot_publishes_with_idempotency_keys_land_exactly_once",
        150,
        |seed| run(seed, Work::Publish, true),
    );
}

#[test]
fn snapshot_publishes_without_keys_never_land_twice() {
    sim::run_all(
        "snapshot_publishes_without_keys_never_land_twice",
        80,
        |seed| run(seed, Work::Publish, false),
    );
}

/// The scenarios with faults between the servers and the real test servers
/// (each schedule under a fresh prefix), on a few seeds, in real time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patch_and_sql_through_faults_to_the_real_test_servers() {
    let seeds: Vec<u64> = sim::Seeds::for_scenario("real_test_servers", 3)
        .take(3)
        .collect();
    for (backend, root) in backends::remote_backends().await {
        for &seed in &seeds {
            for (work, with_key) in [
                (Work::Patch, true),
                (Work::Patch, false),
                (Work::Sql, true),
                (Work::Sql, false),
            ] {
                let inner: DynStore = Arc::new(
                    PrefixStore::new(root.clone(), &backends::unique("sim")).expect("a prefix"),
                );
                let stats = run_on(inner, seed, work, with_key, false)
                    .await
                    .unwrap_or_else(|v| {
                        panic!(
                            "{backend}, {work:?}, key {with_key}: seed {seed} violates exactly-once: {v}\n\
                             replay: IFMATCH_SIM_SEED={seed} cargo test --workspace --test sim real_test_servers"
                        )
                    });
                println!("{backend} {work:?} key {with_key} seed {seed}: {stats}");
            }
        }
    }
}
