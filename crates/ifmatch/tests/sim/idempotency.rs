//! Idempotency: several workers deliver the same messages, each in its own
//! order, through `Idempotency::run`, whose records suffer the whole fault
//! model. The handler counts its executions. At the end, for every message:
//! the handler ran at most once (no claim is taken over within the
//! in-progress timeout, so a second run would be a double execution); every
//! delivery that returned `Ok` got that one execution's result; and a
//! message some delivery got `Ok` for was executed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ifmatch::clock::{SharedRng, SystemClock};
use ifmatch::idempotency::Idempotency;
use ifmatch::retry::RetryPolicy;
use ifmatch::sim::{self, Network, Stats, Violation, Weather};
use ifmatch::store::memory::MemoryStore;

type Runs = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

async fn deliveries(seed: u64, workers: u64, messages: u64) -> Result<Stats, Violation> {
    let weather = Weather::from_seed(seed);
    let net = Network::new(Arc::new(MemoryStore::new()), seed, weather.config.clone());
    let runs: Runs = Arc::default();
    let answers = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let idem = Idempotency::new(net.client(w))
            .with_clock(SystemClock::shared())
            .with_rng(SharedRng::seeded(seed ^ (w + 1) << 36))
            .with_retry(
                RetryPolicy::default()
                    .with_clock(SystemClock::shared())
                    .with_rng(SharedRng::seeded(seed ^ (w + 1) << 44))
                    .with_max_attempts(10)
                    .with_delays(Duration::from_millis(1), Duration::from_millis(100))
                    .with_deadline(None),
            )
            .with_wait(Duration::from_secs(30), Duration::from_millis(50));
        let (runs, answers) = (runs.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = 0u64;
            for i in 0..messages {
                let key = format!("msg-{}", (i * (w + 1) * 5 + w) % messages);
                let payload = serde_json::json!({ "key": key });
                let (runs, k) = (runs.clone(), key.clone());
                let handler = || async move {
                    let mut m = runs.lock().unwrap_or_else(|e| e.into_inner());
                    let list = m.entry(k.clone()).or_default();
                    let result = format!("{k}/run-{}/worker-{w}", list.len() + 1);
                    list.push(result.clone());
                    Ok::<_, std::io::Error>(result)
                };
                match idem.run(&key, &payload, handler).await {
                    Ok(out) => {
                        answers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(key)
                            .or_default()
                            .insert(out.into_value());
                    }
                    Err(_) => failed += 1,
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t
            .await
            .map_err(|e| Violation(format!("a worker panicked: {e}")))?;
    }
    net.settle().await;
    let runs = runs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let answers = answers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let explain = |what: String| {
        Violation(format!(
            "{what}\nweather {} {:?}\nruns {runs:?}\nanswers {answers:?}\nfaults:\n{}",
            weather.name,
            weather.config,
            net.traces()
        ))
    };
    for (key, list) in &runs {
        if list.len() > 1 {
            return Err(explain(format!("{key} was executed {} times", list.len())));
        }
    }
    let mut acked = 0;
    for (key, got) in &answers {
        let ran: BTreeSet<String> = runs
            .get(key)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if got != &ran {
            return Err(explain(format!(
                "deliveries of {key} got {got:?} but the handler's one execution returned {ran:?}"
            )));
        }
        acked += 1;
    }
    let (faults, late) = net.fault_counts();
    Ok(Stats {
        acked,
        failed,
        faults,
        late_landed: late,
        ..Stats::default()
    })
}

#[test]
fn idempotency_executes_at_most_once_and_answers_one_result() {
    sim::run_all(
        "idempotency_executes_at_most_once_and_answers_one_result",
        500,
        |seed| deliveries(seed, 4, 6),
    );
}
