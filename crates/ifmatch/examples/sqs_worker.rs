//! An idempotent SQS consumer (seed 004): several worker processes consume
//! one queue that redelivers messages, workers are killed mid-message, and
//! every message's effect still lands exactly once.
//!
//! Each message stands for a screenshot to render. A worker:
//!
//! 1. receives one message (short polling: `WaitTimeSeconds=0`);
//! 2. runs the render under [`Idempotency::run`] keyed by the message id:
//!    the first delivery claims the key with a create-if-absent write, a
//!    redelivery of a finished message gets the stored result and the handler
//!    does not run, a redelivery while another worker still renders it gets
//!    `InProgress` (the message is left on the queue to come back later);
//! 3. the render's **effect** is one conditional write to a shared ledger
//!    (`ledger.json`, read-modify-write with `If-Match` through
//!    [`ifmatch::update::update`]): it adds the message id and bumps the
//!    total, unless the id is already there;
//! 4. deletes the message.
//!
//! A worker killed (SIGKILL) mid-render leaves an in-progress claim behind.
//! Its message comes back after the visibility timeout, and once the claim is
//! older than the in-progress timeout another worker takes it over with a
//! conditional write and renders again. If the dead worker had already
//! written the effect, the ledger write sees the id and applies nothing: the
//! in-progress timeout covers the claim, the conditional effect write covers
//! the effect. The seed's consumer read and then wrote in two steps and
//! judged a stale claim by a read; here only conditional writes decide.
//!
//! ## Modes
//!
//! - `sqs_worker demo [--messages N] [--workers N] [--kills N] [--store URL]`:
//!   the whole scenario. Creates a queue with a 1 s visibility timeout,
//!   enqueues N messages (30; the first `--duplicates` of them, 3, twice:
//!   SQS delivers at least once), starts N worker processes (3; each is this
//!   program in `worker` mode), SIGKILLs `--kills` of them (2) mid-message
//!   (alternately before and after the effect write) and starts replacements,
//!   waits until the queue is empty, stops the workers and checks the ledger.
//!   Prints `SUMMARY {json}` and exits 0 only if every message's effect is
//!   in the ledger exactly once and the counts add up. The store defaults to
//!   `file://` in a fresh temporary directory (safe across processes).
//! - `sqs_worker worker --queue-url URL --store URL --name NAME`: one worker;
//!   prints `BEGIN id`, `EFFECT id applied|already-applied`, `DONE id
//!   executed|duplicate` and `INPROGRESS id` lines on stdout.
//!
//! ## Running it by hand against moto
//!
//! ```text
//! eval "$(scripts/test-servers start)"       # moto serves S3, DynamoDB and SQS on one port
//! cargo run -p ifmatch --example sqs_worker -- demo --messages 30 --kills 2
//! ```
//!
//! The SQS endpoint is `--endpoint URL`, else `IFMATCH_TEST_SQS_ENDPOINT`,
//! `IFMATCH_TEST_S3_ENDPOINT` or `AWS_ENDPOINT_URL`, else the AWS default;
//! region and credentials come from the standard AWS environment. The
//! integration test `tests/sqs_worker.rs` runs the demo.
//!
//! Timings (all configurable, see `--help`): visibility timeout 1 s, render
//! 300 ms before and 300 ms after the effect write (every 7th message is slow,
//! 1.5 s, so SQS redelivers it while it is still being rendered), in-progress
//! timeout 4 s (above the slowest render, so a live render is never taken over).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use ifmatch::idempotency::{Idempotency, IdempotencyError, Outcome};
use ifmatch::retry::RetryPolicy;
use ifmatch::update::{Decision, update};
use ifmatch::{DynStore, Store};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The key of the shared ledger of applied effects.
const LEDGER: &str = "ledger.json";

/// Settings, from the command line.
#[derive(Debug, Clone)]
struct Opts {
    mode: String,
    endpoint: Option<String>,
    store: Option<String>,
    queue_url: Option<String>,
    name: String,
    messages: usize,
    duplicates: usize,
    workers: usize,
    kills: usize,
    visibility_s: i32,
    in_progress_timeout: Duration,
    render_before: Duration,
    render_after: Duration,
    slow_every: usize,
    slow_render: Duration,
    deadline: Duration,
}

const USAGE: &str = "usage: sqs_worker demo|worker [options]
  --endpoint URL        SQS endpoint (default: $IFMATCH_TEST_SQS_ENDPOINT, $IFMATCH_TEST_S3_ENDPOINT, $AWS_ENDPOINT_URL)
  --store URL           store for claims and the ledger (demo default: file:// in a temporary directory)
  --queue-url URL       the queue (worker mode)
  --name NAME           the worker's name (worker mode)
  --messages N          messages to enqueue (demo, 30)
  --duplicates N        of which the first N are sent twice (demo, 3)
  --workers N           worker processes (demo, 3)
  --kills N             workers to SIGKILL mid-message (demo, 2)
  --visibility-s N      the queue's visibility timeout in seconds (demo, 1)
  --in-progress-ms N    idempotency in-progress timeout (4000)
  --render-ms A,B       render time before and after the effect write (300,300)
  --slow-every N        every Nth message renders slowly (7; 0 for none)
  --slow-ms N           the slow render time (1500)
  --deadline-s N        give up after this long (demo, 50)";

fn parse_opts() -> Result<Opts, BoxError> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    // The mode may be left out (then it is `demo`): `sqs_worker --kills 1`.
    let mode = match args.peek() {
        Some(a) if !a.starts_with('-') => args.next().unwrap_or_default(),
        _ => "demo".to_string(),
    };
    let mut o = Opts {
        mode,
        endpoint: None,
        store: None,
        queue_url: None,
        name: format!("w{}", std::process::id()),
        messages: 30,
        duplicates: 3,
        workers: 3,
        kills: 2,
        visibility_s: 1,
        in_progress_timeout: Duration::from_millis(4000),
        render_before: Duration::from_millis(300),
        render_after: Duration::from_millis(300),
        slow_every: 7,
        slow_render: Duration::from_millis(1500),
        deadline: Duration::from_secs(50),
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let ms = |v: &str| -> Result<Duration, BoxError> { Ok(Duration::from_millis(v.parse()?)) };
        match flag.as_str() {
            "--endpoint" => o.endpoint = Some(value),
            "--store" => o.store = Some(value),
            "--queue-url" => o.queue_url = Some(value),
            "--name" => o.name = value,
            "--messages" => o.messages = value.parse()?,
            "--duplicates" => o.duplicates = value.parse()?,
            "--workers" => o.workers = value.parse()?,
            "--kills" => o.kills = value.parse()?,
            "--visibility-s" => o.visibility_s = value.parse()?,
            "--in-progress-ms" => o.in_progress_timeout = ms(&value)?,
            "--render-ms" => {
                let (a, b) = value
                    .split_once(',')
                    .ok_or("--render-ms takes BEFORE,AFTER")?;
                o.render_before = ms(a)?;
                o.render_after = ms(b)?;
            }
            "--slow-every" => o.slow_every = value.parse()?,
            "--slow-ms" => o.slow_render = ms(&value)?,
            "--deadline-s" => o.deadline = Duration::from_secs(value.parse()?),
            other => return Err(format!("unknown option {other}\n{USAGE}").into()),
        }
    }
    if o.endpoint.is_none() {
        o.endpoint = [
            "IFMATCH_TEST_SQS_ENDPOINT",
            "IFMATCH_TEST_S3_ENDPOINT",
            "AWS_ENDPOINT_URL",
        ]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()));
    }
    Ok(o)
}

#[tokio::main]
async fn main() {
    let result = match parse_opts() {
        Ok(o) if o.mode == "demo" => demo(o).await,
        Ok(o) if o.mode == "worker" => worker(o).await,
        Ok(o) => Err(format!("unknown mode {:?}\n{USAGE}", o.mode).into()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("sqs_worker: {e}");
        std::process::exit(1);
    }
}

async fn sqs_client(endpoint: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(ep) = endpoint {
        loader = loader.endpoint_url(ep);
    }
    let sdk = loader.load().await;
    let mut conf = aws_sdk_sqs::config::Builder::from(&sdk);
    if sdk.region().is_none() {
        conf = conf.region(aws_sdk_sqs::config::Region::new("us-east-1"));
    }
    Client::from_conf(conf.build())
}

/// One message: which screenshot to render.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Job {
    id: String,
    url: String,
}

/// What a render returns (stored as the idempotency result).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Rendered {
    id: String,
    by: String,
    /// False if a worker that died had already applied the effect.
    applied_now: bool,
}

/// The shared ledger of applied effects.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    /// Effects applied (bumped once per landed write that added an id).
    total: u64,
    /// Message id → the worker whose render applied it.
    rendered: BTreeMap<String, String>,
}

// ---------------------------------------------------------------- worker ----

async fn worker(o: Opts) -> Result<(), BoxError> {
    let queue_url = o.queue_url.clone().ok_or("worker mode needs --queue-url")?;
    let store_url = o.store.clone().ok_or("worker mode needs --store")?;
    let sqs = sqs_client(o.endpoint.as_deref()).await;
    let store = ifmatch::store::open(&store_url).await?;
    let idem = Idempotency::new(store.clone())
        .with_in_progress_timeout(o.in_progress_timeout)
        .with_retry(RetryPolicy::default().with_max_attempts(20));
    loop {
        let got = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(1)
            // Never long-poll: the test moto answers one request at a time.
            .wait_time_seconds(0)
            .send()
            .await;
        let messages = match got {
            Ok(r) => r.messages.unwrap_or_default(),
            Err(e) => {
                eprintln!("{}: receive failed: {e:?}", o.name);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        for m in messages {
            let (Some(body), Some(receipt)) = (m.body(), m.receipt_handle()) else {
                continue;
            };
            let job: Job = match serde_json::from_str(body) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("{}: dropping a malformed message: {e}", o.name);
                    delete(&sqs, &queue_url, receipt, &o.name).await;
                    continue;
                }
            };
            let outcome = idem.run(&job.id, &job, || render(&o, &*store, &job)).await;
            match outcome {
                Ok(Outcome::Executed(_)) => {
                    println!("DONE {} executed", job.id);
                    delete(&sqs, &queue_url, receipt, &o.name).await;
                }
                Ok(Outcome::Duplicate(_)) => {
                    println!("DONE {} duplicate", job.id);
                    delete(&sqs, &queue_url, receipt, &o.name).await;
                }
                // Another worker renders it now (or died doing so and its
                // claim is not stale yet): leave the message; it comes back
                // after the visibility timeout.
                Err(IdempotencyError::InProgress { .. }) => println!("INPROGRESS {}", job.id),
                Err(e) => eprintln!("{}: {}: {e}", o.name, job.id),
            }
        }
    }
}

async fn delete(sqs: &Client, queue_url: &str, receipt: &str, name: &str) {
    if let Err(e) = sqs
        .delete_message()
        .queue_url(queue_url)
        .receipt_handle(receipt)
        .send()
        .await
    {
        // A redelivered message has a newer receipt handle; whoever holds it deletes it.
        eprintln!("{name}: delete failed: {e:?}");
    }
}

/// The render: some work, the effect (one conditional ledger write), more work.
async fn render(o: &Opts, store: &dyn Store, job: &Job) -> Result<Rendered, String> {
    println!("BEGIN {}", job.id);
    let n: usize = job
        .id
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let slow = o.slow_every > 0 && n % o.slow_every == o.slow_every - 1;
    tokio::time::sleep(if slow { o.slow_render } else { o.render_before }).await;
    let applied_now = apply_effect(store, &job.id, &o.name).await?;
    println!(
        "EFFECT {} {}",
        job.id,
        if applied_now {
            "applied"
        } else {
            "already-applied"
        }
    );
    tokio::time::sleep(o.render_after).await;
    Ok(Rendered {
        id: job.id.clone(),
        by: o.name.clone(),
        applied_now,
    })
}

/// Adds `id` to the ledger and bumps the total, unless `id` is there already;
/// true if this call applied it. One read-modify-write with `If-Match`.
async fn apply_effect(store: &dyn Store, id: &str, by: &str) -> Result<bool, String> {
    let policy = RetryPolicy::default().with_max_attempts(100);
    let mut applied = false;
    update(store, LEDGER, &policy, |cur| {
        let mut ledger: Ledger = match cur {
            Some(o) => serde_json::from_slice(&o.body)?,
            None => Ledger::default(),
        };
        if ledger.rendered.contains_key(id) {
            applied = false;
            return Ok(Decision::Keep);
        }
        ledger.rendered.insert(id.to_string(), by.to_string());
        ledger.total += 1;
        applied = true;
        Ok(Decision::write(serde_json::to_vec(&ledger)?))
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(applied)
}

// ------------------------------------------------------------------ demo ----

/// What the demo saw and checked, printed as `SUMMARY {json}`.
#[derive(Debug, Default, Serialize)]
struct Summary {
    ok: bool,
    problems: Vec<String>,
    queue_url: String,
    store: String,
    messages: usize,
    workers_started: usize,
    killed_before_effect: usize,
    killed_after_effect: usize,
    /// Handler runs (BEGIN lines): one per message plus one per kill.
    handler_runs: usize,
    /// Effects applied, by the EFFECT lines.
    effects_applied: usize,
    /// Renders that found their effect already applied by a dead worker.
    effects_already_applied: usize,
    /// Deliveries answered from the stored result (at least one per
    /// message sent twice).
    duplicates: usize,
    /// Deliveries that found another worker's fresh claim.
    in_progress: usize,
    ledger_total: u64,
    ledger_entries: usize,
    elapsed_ms: u128,
}

/// The kinds of worker lines the kill plan looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Begin,
    Effect,
    Other,
}

impl Summary {
    /// Counts one worker line.
    fn record(&mut self, line: &str) -> Line {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.nth(1)) {
            (Some("BEGIN"), _) => {
                self.handler_runs += 1;
                Line::Begin
            }
            (Some("EFFECT"), Some("applied")) => {
                self.effects_applied += 1;
                Line::Effect
            }
            (Some("EFFECT"), _) => {
                self.effects_already_applied += 1;
                Line::Effect
            }
            (Some("DONE"), Some("duplicate")) => {
                self.duplicates += 1;
                Line::Other
            }
            (Some("INPROGRESS"), _) => {
                self.in_progress += 1;
                Line::Other
            }
            _ => Line::Other,
        }
    }
}

struct Worker {
    name: String,
    child: Child,
    begins: usize,
    effects: usize,
}

async fn spawn_worker(
    o: &Opts,
    queue_url: &str,
    store: &str,
    idx: usize,
    tx: &mpsc::UnboundedSender<(usize, String)>,
) -> Result<Worker, BoxError> {
    let name = format!("w{idx}");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("worker")
        .args(["--queue-url", queue_url, "--store", store, "--name", &name])
        .args([
            "--in-progress-ms",
            &o.in_progress_timeout.as_millis().to_string(),
        ])
        .args([
            "--render-ms",
            &format!(
                "{},{}",
                o.render_before.as_millis(),
                o.render_after.as_millis()
            ),
        ])
        .args(["--slow-every", &o.slow_every.to_string()])
        .args(["--slow-ms", &o.slow_render.as_millis().to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if let Some(ep) = &o.endpoint {
        cmd.args(["--endpoint", ep]);
    }
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send((idx, line)).is_err() {
                break;
            }
        }
    });
    Ok(Worker {
        name,
        child,
        begins: 0,
        effects: 0,
    })
}

async fn demo(o: Opts) -> Result<(), BoxError> {
    let started = Instant::now();
    let (store_url, temp_dir) = match &o.store {
        Some(s) => (s.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("ifmatch-sqs-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            (format!("file://{}", dir.display()), Some(dir))
        }
    };
    let sqs = sqs_client(o.endpoint.as_deref()).await;
    let queue = format!(
        "ifmatch-sqs-demo-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let queue_url = sqs
        .create_queue()
        .queue_name(&queue)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            o.visibility_s.to_string(),
        )
        .send()
        .await
        .map_err(|e| format!("cannot create queue {queue}: {e:?}"))?
        .queue_url
        .ok_or("CreateQueue returned no queue URL")?;
    eprintln!("demo: queue {queue_url}, store {store_url}");
    // The first few are sent twice, as SQS itself may deliver a message twice.
    for i in (0..o.messages).chain(0..o.duplicates.min(o.messages)) {
        let job = Job {
            id: format!("shot-{i}"),
            url: format!("https://example.com/page/{i}"),
        };
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(serde_json::to_string(&job)?)
            .send()
            .await
            .map_err(|e| format!("send: {e:?}"))?;
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut workers: Vec<Worker> = Vec::new();
    for _ in 0..o.workers {
        let idx = workers.len();
        workers.push(spawn_worker(&o, &queue_url, &store_url, idx, &tx).await?);
    }
    let mut s = Summary {
        queue_url: queue_url.clone(),
        store: store_url.clone(),
        messages: o.messages,
        workers_started: o.workers,
        ..Summary::default()
    };
    // Kill plan: kill k strikes worker k (the first workers, then their
    // replacements) when it reports its 2nd message: even kills right after
    // BEGIN (before the effect), odd ones right after EFFECT (the effect has
    // landed, the result is not stored yet). Each victim gets a replacement.
    let mut kills_done = 0usize;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let outcome: Result<(), String> = loop {
        tokio::select! {
            line = rx.recv() => {
                let Some((idx, line)) = line else { break Err("all workers' output closed".into()) };
                let kind = s.record(&line);
                let Some(w) = workers.get_mut(idx) else { continue };
                match kind {
                    Line::Begin => w.begins += 1,
                    Line::Effect => w.effects += 1,
                    Line::Other => {}
                }
                let strike = kills_done < o.kills
                    && idx == kills_done
                    && if kills_done.is_multiple_of(2) {
                        kind == Line::Begin && w.begins == 2
                    } else {
                        kind == Line::Effect && w.effects == 2
                    };
                if strike {
                    // SIGKILL: no cleanup, the claim stays in progress.
                    w.child.start_kill().map_err(|e| format!("kill: {e}"))?;
                    let _ = w.child.wait().await;
                    eprintln!("demo: killed {} mid-message ({line})", w.name);
                    if kind == Line::Begin {
                        s.killed_before_effect += 1
                    } else {
                        s.killed_after_effect += 1
                    }
                    kills_done += 1;
                    let idx = workers.len();
                    workers.push(spawn_worker(&o, &queue_url, &store_url, idx, &tx).await?);
                    s.workers_started += 1;
                }
            }
            _ = check.tick() => {
                if started.elapsed() > o.deadline {
                    break Err(format!("the queue did not drain within {:?}", o.deadline));
                }
                if kills_done < o.kills || s.effects_applied < o.messages {
                    continue;
                }
                match queue_depth(&sqs, &queue_url).await {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => eprintln!("demo: {e}"),
                }
            }
        }
    };
    for w in workers.iter_mut() {
        let _ = w.child.start_kill();
        let _ = w.child.wait().await;
    }
    // Lines the workers printed before they stopped.
    drop(tx);
    while let Ok((_, line)) = rx.try_recv() {
        s.record(&line);
    }
    if let Err(e) = outcome {
        s.problems.push(e);
    }

    // Check the ledger: every message exactly once, counts exact.
    let store: DynStore = ifmatch::store::open(&store_url).await?;
    let ledger: Ledger = match store.get(LEDGER).await {
        Ok(obj) => serde_json::from_slice(&obj.body)?,
        Err(e) => {
            s.problems.push(format!("no ledger: {e}"));
            Ledger::default()
        }
    };
    s.ledger_total = ledger.total;
    s.ledger_entries = ledger.rendered.len();
    let kills = s.killed_before_effect + s.killed_after_effect;
    for i in 0..o.messages {
        if !ledger.rendered.contains_key(&format!("shot-{i}")) {
            s.problems.push(format!("shot-{i} was never rendered"));
        }
    }
    if ledger.total != o.messages as u64 || ledger.rendered.len() != o.messages {
        s.problems.push(format!(
            "ledger total {} with {} entries, expected {}",
            ledger.total,
            ledger.rendered.len(),
            o.messages
        ));
    }
    if s.effects_applied != o.messages {
        s.problems.push(format!(
            "{} effects applied, expected {}",
            s.effects_applied, o.messages
        ));
    }
    if s.handler_runs != o.messages + kills {
        s.problems.push(format!(
            "{} handler runs, expected {} (one per message plus one per kill)",
            s.handler_runs,
            o.messages + kills
        ));
    }
    if s.duplicates < o.duplicates.min(o.messages) {
        s.problems.push(format!(
            "{} deliveries got the stored result, expected at least {}",
            s.duplicates,
            o.duplicates.min(o.messages)
        ));
    }
    if s.effects_already_applied != s.killed_after_effect {
        s.problems.push(format!(
            "{} renders found their effect applied, expected {}",
            s.effects_already_applied, s.killed_after_effect
        ));
    }
    let _ = sqs.delete_queue().queue_url(&queue_url).send().await;
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    s.ok = s.problems.is_empty();
    s.elapsed_ms = started.elapsed().as_millis();
    println!("SUMMARY {}", serde_json::to_string(&s)?);
    if s.ok {
        Ok(())
    } else {
        Err(format!("check failed: {:?}", s.problems).into())
    }
}

/// Messages left in the queue, visible or in flight.
async fn queue_depth(sqs: &Client, queue_url: &str) -> Result<u64, String> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| format!("GetQueueAttributes: {e:?}"))?;
    let map = attrs.attributes.unwrap_or_default();
    let n = |k: QueueAttributeName| -> u64 {
        map.get(&k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX / 4)
    };
    Ok(n(QueueAttributeName::ApproximateNumberOfMessages)
        + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}
