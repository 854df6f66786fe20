//! Leases: workers take one lease in turn and, while holding it, do a *blind*
//! read-modify-write of a counter (safe only if two holders never overlap).
//! The lease store suffers the whole fault model. At the end the counter
//! must equal the number of critical sections run (no increment lost to an
//! overlap), and the fencing tokens, in the order the sections ran, must
//! strictly increase.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ifmatch::clock::{SharedRng, SystemClock};
use ifmatch::lease::Leases;
use ifmatch::retry::RetryPolicy;
use ifmatch::sim::{self, Network, Stats, Violation, Weather};
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{DynStore, PutOptions};

async fn sections(seed: u64, workers: u64, rounds: u64) -> Result<Stats, Violation> {
    let weather = Weather::from_seed(seed);
    let leases_store: DynStore = Arc::new(MemoryStore::new());
    let data: DynStore = Arc::new(MemoryStore::new());
    let net = Network::new(leases_store, seed, weather.config.clone());
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (data, tokens) = (data.clone(), tokens.clone());
        let leases = Leases::new(net.client(w))
            .with_clock(SystemClock::shared())
            .with_rng(SharedRng::seeded(seed ^ (w + 1) << 32))
            .with_retry(
                RetryPolicy::default()
                    .with_clock(SystemClock::shared())
                    .with_rng(SharedRng::seeded(seed ^ (w + 1) << 40))
                    .with_max_attempts(10)
                    .with_delays(Duration::from_millis(1), Duration::from_millis(100))
                    .with_deadline(None),
            );
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            for _ in 0..rounds {
                let Ok(lease) = leases
                    .acquire("job", Duration::from_secs(10), Duration::from_secs(600))
                    .await
                else {
                    // Could not settle (the store failed too often): try again.
                    continue;
                };
                // The critical section, well inside the TTL.
                let n: u64 = match data.get("counter").await {
                    Ok(o) => serde_json::from_slice(&o.body).unwrap_or(0),
                    Err(_) => 0,
                };
                tokio::time::sleep(Duration::from_millis(3)).await;
                let body = serde_json::to_vec(&(n + 1)).unwrap_or_default();
                if data
                    .put("counter", body.into(), PutOptions::any())
                    .await
                    .is_err()
                {
                    return Err(Violation("the fault-free data store failed".into()));
                }
                tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(lease.token());
                done += 1;
                // A failed release leaves the lease to expire; the others wait it out.
                let _ = leases.release(&lease).await;
            }
            Ok(done)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t
            .await
            .map_err(|e| Violation(format!("a worker panicked: {e}")))??;
    }
    net.settle().await;
    let n: u64 = match data.get("counter").await {
        Ok(o) => serde_json::from_slice(&o.body).unwrap_or(0),
        Err(_) => 0,
    };
    let tokens = tokens.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let explain = |what: String| {
        Violation(format!(
            "{what}\nweather {} {:?}\ntokens {tokens:?}\nfaults:\n{}",
            weather.name,
            weather.config,
            net.traces()
        ))
    };
    if n != total {
        return Err(explain(format!(
            "two holders overlapped: {total} critical sections but the counter is {n}"
        )));
    }
    if !tokens.windows(2).all(|w| w[0] < w[1]) {
        return Err(explain("fencing tokens did not strictly increase".into()));
    }
    let (faults, late) = net.fault_counts();
    Ok(Stats {
        acked: total,
        faults,
        late_landed: late,
        ..Stats::default()
    })
}

#[test]
fn leases_exclude_under_every_fault() {
    sim::run_all("leases_exclude_under_every_fault", 500, |seed| {
        sections(seed, 3, 5)
    });
}
