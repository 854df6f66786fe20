//! Snapshots: concurrent publishers each publish builds that carry their own
//! build id. At the end every retained version's body must be readable (the
//! head never points at a deleted body), versions are gap-free from 1, and
//! the build ids in the published versions obey the ledger: every build
//! reported published is there exactly once and at the version it was told,
//! every superseded or failed one is absent, each unknown one at most once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ifmatch::clock::{SharedRng, SystemClock};
use ifmatch::retry::RetryPolicy;
use ifmatch::sim::{self, Ledger, Network, Stats, Told, Violation, Weather};
use ifmatch::snapshot::{PublishOutcome, SnapshotConfig, Snapshots};
use ifmatch::store::DynStore;
use ifmatch::store::memory::MemoryStore;

const NAME: &str = "quotes";

fn config(seed: u64) -> SnapshotConfig {
    SnapshotConfig::default()
        // Keep every version, so the check can see them all.
        .with_keep(1000)
        .with_policy(
            RetryPolicy::default()
                .with_clock(SystemClock::shared())
                .with_rng(SharedRng::seeded(seed))
                .with_max_attempts(8)
                .with_delays(Duration::from_millis(1), Duration::from_millis(50))
                .with_deadline(None),
        )
}

async fn publishes(
    seed: u64,
    inner: DynStore,
    publishers: u64,
    each: u64,
) -> Result<Stats, Violation> {
    let weather = Weather::from_seed(seed);
    let net = Network::new(inner.clone(), seed, weather.config.clone());
    let ledger = Ledger::new();
    let told_version = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let snaps = Snapshots::with_config(net.client(p), config(seed ^ (p + 7) << 24));
        let (ledger, told_version) = (ledger.clone(), told_version.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let id = format!("p{p}-{i}");
                let build_id = id.clone();
                let r = snaps
                    .publish(NAME, move |ctx| {
                        let body = format!(r#"{{"build":"{build_id}","version":{}}}"#, ctx.version);
                        async move { Ok(body.into()) }
                    })
                    .await;
                match r {
                    Ok(PublishOutcome::Published(p)) => {
                        told_version.lock().unwrap().insert(id.clone(), p.version());
                        ledger.record(id, Told::Applied, "");
                    }
                    Ok(PublishOutcome::Superseded { by, .. }) => {
                        ledger.record(id, Told::Failed, format!("superseded by {by}"))
                    }
                    Err(e) if e.kind() == ifmatch::ErrorKind::Ambiguous => {
                        ledger.record(id, Told::Unknown, e.to_string())
                    }
                    Err(e) => ledger.record(id, Told::Failed, e.to_string()),
                }
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Violation(format!("a publisher panicked: {e}")))?;
    }
    net.settle().await;
    let reader = Snapshots::with_config(inner.clone(), config(seed));
    let versions = match reader.versions(NAME).await {
        Ok(v) => v,
        Err(e) if e.kind() == ifmatch::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Violation(format!("reading the versions failed: {e}"))),
    };
    let explain = |v: Violation| {
        Violation(format!(
            "{v}\nweather {} {:?}\nversions {:?}\nfaults:\n{}",
            weather.name,
            weather.config,
            versions
                .iter()
                .map(|i| (i.version, &i.publish_id))
                .collect::<Vec<_>>(),
            net.traces()
        ))
    };
    let mut found = Vec::new();
    let mut at = BTreeMap::new();
    for (i, info) in versions.iter().rev().enumerate() {
        if info.version != i as u64 + 1 {
            return Err(explain(Violation(format!(
                "versions are not gap-free from 1: position {i} holds version {}",
                info.version
            ))));
        }
        let snap = reader.get(NAME, Some(info.version)).await.map_err(|e| {
            explain(Violation(format!(
                "version {} is in the head but its body cannot be read: {e}",
                info.version
            )))
        })?;
        let body: serde_json::Value = serde_json::from_slice(&snap.body)
            .map_err(|e| Violation(format!("version {} is not JSON: {e}", info.version)))?;
        let build = body["build"].as_str().unwrap_or_default().to_string();
        if body["version"] != info.version {
            return Err(explain(Violation(format!(
                "version {} holds a build made for {}",
                info.version, body["version"]
            ))));
        }
        at.insert(build.clone(), info.version);
        found.push(build);
    }
    let mut stats = ledger.check(&found).map_err(explain)?;
    for (id, v) in told_version.lock().unwrap().iter() {
        if at.get(id) != Some(v) {
            return Err(explain(Violation(format!(
                "{id} was told version {v} but is at {:?}",
                at.get(id)
            ))));
        }
    }
    let (faults, late) = net.fault_counts();
    stats.faults = faults;
    stats.late_landed = late;
    Ok(stats)
}

#[test]
fn snapshots_publish_exactly_once() {
    sim::run_all("snapshots_publish_exactly_once", 500, |seed| {
        publishes(seed, Arc::new(MemoryStore::new()), 3, 4)
    });
}
