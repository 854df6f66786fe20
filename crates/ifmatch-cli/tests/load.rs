//! The HTTP server under load and bad input, as a real `ifmatch serve` child
//! process on a loopback port (so its memory can be read from /proc):
//!
//! - [`load_mixed_traffic_loses_nothing_and_stays_bounded`]: 48 connections mix
//!   GETs (some conditional), If-Match increment loops and PATCH appends
//!   without If-Match: no 5xx, every acknowledged increment and append is in
//!   the final state exactly once, and the server's RSS does not grow between
//!   the two halves of the run;
//! - [`login_flood_with_default_limits_stays_under_1_gib`] and
//!   [`login_flood_without_back_off_is_bounded_by_the_hashing_pool`]: waves of
//!   300 concurrent wrong-password logins keep the peak RSS (VmHWM) under
//!   1 GiB and `/healthz` answering within 1 s;
//! - bad input: malformed `If-Match` / `If-None-Match`, bodies over the limit,
//!   slow clients (slowloris), invalid UTF-8 in paths, headers and JSON bodies
//!   all get a clear 4xx (JSON from the application), never a 5xx or a hang.
//!
//! The workload is seeded (`LOAD_SEED`); `IFMATCH_LOAD_OPS=N` runs N operations
//! per connection and half (default 40).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "load-test-operator-key";
const LOAD_SEED: u64 = 0x10ad_2026;
const CONNECTIONS: usize = 48;
const COUNTERS: usize = 8;
const LISTS: usize = 4;

/// An `ifmatch serve` child on 127.0.0.1 with a `file://` store in a temporary directory.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = format!("file://{}", dir.path().join("store").display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_ifmatch"))
            .env_remove("RUST_LOG")
            .env_remove("IFMATCH_STORE")
            .env_remove("IFMATCH_API_KEY")
            .args([
                "--store",
                &store,
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                KEY,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ifmatch serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("ifmatch serve exited before listening")
                .expect("read stderr");
            if let Some(a) = line.split("on http://").nth(1) {
                break a.trim().parse().expect("listen address");
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The child's resident set size in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "the server exited"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client")
}

fn auth(r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    r.bearer_auth(KEY)
}

/// What the clients saw and had acknowledged.
#[derive(Default)]
struct Tally {
    increments: [u64; COUNTERS],
    appended: BTreeMap<usize, BTreeSet<String>>,
    statuses: BTreeMap<u16, u64>,
    requests: u64,
    gave_up: u64,
}

async fn send(t: &Mutex<Tally>, r: reqwest::RequestBuilder) -> reqwest::Response {
    let resp = auth(r)
        .send()
        .await
        .expect("request failed (hang or reset)");
    let mut t = t.lock().unwrap();
    t.requests += 1;
    *t.statuses.entry(resp.status().as_u16()).or_default() += 1;
    resp
}

/// One read-modify-write increment with If-Match, retried on 412.
async fn increment(c: &reqwest::Client, base: &str, k: usize, t: &Mutex<Tally>) {
    let url = format!("{base}/v1/objects/load/counter/{k}");
    for _ in 0..200 {
        let resp = send(t, c.get(&url)).await;
        let (cond, n) = match resp.status() {
            StatusCode::NOT_FOUND => (("If-None-Match", "*".to_string()), 0),
            StatusCode::OK => {
                let etag = resp.headers()["etag"].to_str().unwrap().to_string();
                let v: Value = resp.json().await.unwrap();
                (("If-Match", etag), v["n"].as_u64().unwrap())
            }
            s => panic!("GET counter: {s}"),
        };
        let put = c
            .put(&url)
            .header(cond.0, cond.1)
            .json(&json!({ "n": n + 1 }));
        match send(t, put).await.status() {
            StatusCode::OK | StatusCode::CREATED => {
                t.lock().unwrap().increments[k] += 1;
                return;
            }
            StatusCode::PRECONDITION_FAILED => continue,
            s => panic!("PUT counter: {s}"),
        }
    }
    t.lock().unwrap().gave_up += 1;
}

async fn append(c: &reqwest::Client, base: &str, k: usize, entry: String, t: &Mutex<Tally>) {
    let url = format!("{base}/v1/objects/load/list/{k}");
    let patch = json!([{ "op": "add", "path": "/entries/-", "value": entry }]);
    let req = c
        .patch(&url)
        .header("content-type", "application/json-patch+json")
        .body(patch.to_string());
    match send(t, req).await.status() {
        StatusCode::OK => {
            let fresh = t
                .lock()
                .unwrap()
                .appended
                .entry(k)
                .or_default()
                .insert(entry);
            assert!(fresh, "an entry name was used twice");
        }
        // The server's update loop ran out of attempts: not acknowledged, so it must not appear.
        StatusCode::CONFLICT => t.lock().unwrap().gave_up += 1,
        s => panic!("PATCH list: {s}"),
    }
}

async fn read(
    c: &reqwest::Client,
    base: &str,
    rng: &mut StdRng,
    etags: &mut BTreeMap<String, String>,
    t: &Mutex<Tally>,
) {
    let path = if rng.random_bool(0.5) {
        format!("load/counter/{}", rng.random_range(0..COUNTERS))
    } else {
        format!("load/list/{}", rng.random_range(0..LISTS))
    };
    let mut req = c.get(format!("{base}/v1/objects/{path}"));
    if let Some(e) = etags.get(&path) {
        req = req.header("If-None-Match", e);
    }
    let resp = send(t, req).await;
    match resp.status() {
        StatusCode::OK => {
            let etag = resp.headers()["etag"].to_str().unwrap().to_string();
            etags.insert(path, etag);
            let _ = resp.bytes().await.unwrap();
        }
        StatusCode::NOT_MODIFIED | StatusCode::NOT_FOUND => {}
        s => panic!("GET: {s}"),
    }
}

async fn phase(
    server: &Server,
    c: &reqwest::Client,
    tally: &Arc<Mutex<Tally>>,
    ops: usize,
    half: u64,
) {
    let base = server.url("");
    let mut tasks = Vec::new();
    for w in 0..CONNECTIONS {
        let (c, base, tally) = (c.clone(), base.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(LOAD_SEED ^ (half << 32) ^ w as u64);
            let mut etags = BTreeMap::new();
            for i in 0..ops {
                match rng.random_range(0..10) {
                    0..4 => increment(&c, &base, rng.random_range(0..COUNTERS), &tally).await,
                    4..7 => {
                        let k = rng.random_range(0..LISTS);
                        append(&c, &base, k, format!("h{half}-w{w}-{i}"), &tally).await
                    }
                    _ => read(&c, &base, &mut rng, &mut etags, &tally).await,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker panicked");
    }
}

/// The two timing-sensitive tests (the load run and slowloris) take turns, so
/// that one's 48 connections do not slow the other's "served promptly" check.
static TIMING: Mutex<()> = Mutex::new(());

#[test]
fn load_mixed_traffic_loses_nothing_and_stays_bounded() {
    let _turn = TIMING.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(load_run());
}

async fn load_run() {
    let ops: usize = std::env::var("IFMATCH_LOAD_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut server = Server::start(&[]);
    let c = client();
    for k in 0..LISTS {
        let url = server.url(&format!("/v1/objects/load/list/{k}"));
        let r = auth(c.put(url).json(&json!({ "entries": [] })))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let rss_start = server.rss_kib();
    let t0 = Instant::now();
    phase(&server, &c, &tally, ops, 1).await;
    let rss_half = server.rss_kib();
    let requests_half = tally.lock().unwrap().requests;
    phase(&server, &c, &tally, ops, 2).await;
    let elapsed = t0.elapsed();
    let rss_end = server.rss_kib();
    server.assert_alive();

    // The final state: exactly what was acknowledged, nothing lost, nothing doubled.
    let t = std::mem::take(&mut *tally.lock().unwrap());
    for k in 0..COUNTERS {
        let url = server.url(&format!("/v1/objects/load/counter/{k}"));
        let r = auth(c.get(url)).send().await.unwrap();
        let n = match r.status() {
            StatusCode::NOT_FOUND => 0,
            _ => r.json::<Value>().await.unwrap()["n"].as_u64().unwrap(),
        };
        assert_eq!(
            n, t.increments[k],
            "counter {k}: lost or doubled increments"
        );
    }
    for k in 0..LISTS {
        let url = server.url(&format!("/v1/objects/load/list/{k}"));
        let v: Value = auth(c.get(url)).send().await.unwrap().json().await.unwrap();
        let entries: Vec<String> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        let set: BTreeSet<String> = entries.iter().cloned().collect();
        assert_eq!(set.len(), entries.len(), "list {k}: an append landed twice");
        assert_eq!(
            Some(&set),
            t.appended.get(&k).or(Some(&BTreeSet::new())),
            "list {k}: lost appends"
        );
    }
    let server_errors: u64 = t
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "load: {} requests from {CONNECTIONS} connections in {:.1} s ({:.0}/s); statuses {:?}; \
         {} increments, {} appends, {} gave up; RSS {} -> {} ({} requests) -> {} KiB",
        t.requests,
        elapsed.as_secs_f64(),
        t.requests as f64 / elapsed.as_secs_f64(),
        t.statuses,
        t.increments.iter().sum::<u64>(),
        t.appended.values().map(BTreeSet::len).sum::<usize>(),
        t.gave_up,
        rss_start,
        rss_half,
        requests_half,
        rss_end,
    );
    assert_eq!(server_errors, 0, "5xx answers: {:?}", t.statuses);
    assert!(
        t.gave_up * 20 <= t.requests,
        "too many operations gave up: {}",
        t.gave_up
    );
    // Memory: the second half, as large as the first, may not keep growing it.
    assert!(rss_end < 256 * 1024, "server RSS {rss_end} KiB");
    assert!(
        rss_end <= rss_half + 16 * 1024,
        "server RSS grew from {rss_half} to {rss_end} KiB over the second half"
    );
}

// ---- bad input ----

/// Sends raw bytes on a new connection and returns the status and body of the answer.
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no HTTP answer to {:?}: {text:?}",
                String::from_utf8_lossy(request)
            )
        });
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn raw_request(method: &str, path: &[u8], headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(path);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Bearer ");
    r.extend_from_slice(KEY.as_bytes());
    r.extend_from_slice(format!("\r\nContent-Length: {}\r\n", body.len()).as_bytes());
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

#[track_caller]
fn assert_json_error(status: u16, body: &str, expected: u16) {
    assert_eq!(status, expected, "body: {body}");
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
}

#[test]
fn malformed_conditional_headers_get_400() {
    let server = Server::start(&[]);
    let put = raw_request("PUT", b"/v1/objects/doc", &[], b"{}");
    assert_eq!(raw(server.addr, &put).0, 201);
    let bad: [&[u8]; 9] = [
        b"If-Match: abc",
        b"If-Match: \"a\" \"b\"",
        b"If-Match: *, \"a\"",
        b"If-None-Match: W/",
        b"If-None-Match: w/\"a\"",
        b"If-Match: \"unterminated",
        b"If-Match: \"a b\"",
        b"If-None-Match: \"a\"; x",
        b"If-Match: W/ \"a\"",
    ];
    for h in bad {
        for method in ["GET", "HEAD", "PUT", "PATCH", "DELETE"] {
            let req = raw_request(
                method,
                b"/v1/objects/doc",
                &[h, b"Content-Type: application/merge-patch+json"],
                b"{}",
            );
            let (status, body) = raw(server.addr, &req);
            if method == "HEAD" {
                assert_eq!(status, 400, "{method} {}", String::from_utf8_lossy(h));
            } else {
                assert_json_error(status, &body, 400);
            }
        }
    }
    // A control character in a header value: the HTTP parser's plain 400.
    let req = raw_request("PUT", b"/v1/objects/doc", &[b"If-Match: \"\x01\""], b"{}");
    assert_eq!(raw(server.addr, &req).0, 400);
    // obs-text inside a tag is allowed by RFC 9110: it just does not match.
    let req = raw_request(
        "PUT",
        b"/v1/objects/doc",
        &[b"If-Match: \"\xff\xfe\""],
        b"{}",
    );
    let (status, body) = raw(server.addr, &req);
    assert_json_error(status, &body, 412);
}

#[test]
fn bodies_over_the_limit_get_413() {
    let server = Server::start(&["--body-limit", "65536"]);
    let big = vec![b'x'; 1 << 20];
    // With a Content-Length, and chunked without one.
    let req = raw_request("PUT", b"/v1/objects/big", &[], &big);
    let (status, body) = raw(server.addr, &req);
    assert_json_error(status, &body, 413);
    let mut chunked = b"PUT /v1/objects/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer ".to_vec();
    chunked.extend_from_slice(KEY.as_bytes());
    chunked.extend_from_slice(b"\r\n\r\n");
    for _ in 0..32 {
        chunked.extend_from_slice(b"8000\r\n");
        chunked.extend(std::iter::repeat_n(b'y', 0x8000));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw(server.addr, &chunked);
    assert_json_error(status, &body, 413);
    let req = raw_request(
        "PATCH",
        b"/v1/objects/big",
        &[b"Content-Type: application/merge-patch+json"],
        &big,
    );
    let (status, body) = raw(server.addr, &req);
    assert_json_error(status, &body, 413);
    // Just under the limit is fine.
    let req = raw_request("PUT", b"/v1/objects/big", &[], &big[..65536]);
    assert_eq!(raw(server.addr, &req).0, 201);
}

#[test]
fn invalid_utf8_and_bad_keys_get_4xx_json() {
    let server = Server::start(&[]);
    // Percent-encoded invalid UTF-8, and a key the store rejects.
    for path in [
        &b"/v1/objects/%FF%FE"[..],
        b"/v1/objects/a/%C0%AF",
        b"/v1/objects/a/../b",
        b"/v1/objects/a//b",
        b"/v1/objects/%00",
    ] {
        let (status, body) = raw(server.addr, &raw_request("GET", path, &[], b""));
        assert_json_error(status, &body, 400);
    }
    // Raw non-ASCII bytes in the request line: rejected by the HTTP parser or the key check.
    let (status, _) = raw(
        server.addr,
        &raw_request("GET", b"/v1/objects/\xff", &[], b""),
    );
    assert!((400..500).contains(&status), "{status}");
    // Invalid UTF-8 in a JSON patch body, and in the stored value being patched.
    let ct: &[u8] = b"Content-Type: application/merge-patch+json";
    assert_eq!(
        raw(
            server.addr,
            &raw_request("PUT", b"/v1/objects/j", &[], b"{\"a\":1}")
        )
        .0,
        201
    );
    let (status, body) = raw(
        server.addr,
        &raw_request("PATCH", b"/v1/objects/j", &[ct], b"{\"a\":\"\xff\"}"),
    );
    assert!(status == 400 || status == 422, "{status} {body}");
    assert_json_error(status, &body, status);
    assert_eq!(
        raw(
            server.addr,
            &raw_request("PUT", b"/v1/objects/bin", &[], b"\xff\xfe")
        )
        .0,
        201
    );
    let (status, body) = raw(
        server.addr,
        &raw_request("PATCH", b"/v1/objects/bin", &[ct], b"{}"),
    );
    assert!((400..500).contains(&status), "{status} {body}");
    assert_json_error(status, &body, status);
    // Non-ASCII in metadata and content-type headers.
    for h in [
        &b"x-ifmatch-meta-note: \xc3\xa9"[..],
        b"Content-Type: text/\xff",
    ] {
        let (status, body) = raw(
            server.addr,
            &raw_request("PUT", b"/v1/objects/m", &[h], b"x"),
        );
        assert_json_error(status, &body, 400);
    }
    // A JSON patch whose rollback once panicked the handler: a 422, and the server lives on.
    let undo = br#"[{"op":"replace","path":"","value":{"/":null}},{"op":"move","from":"/~1","path":""},{"op":"move","from":"","path":""}]"#;
    let jp: &[u8] = b"Content-Type: application/json-patch+json";
    let (status, body) = raw(
        server.addr,
        &raw_request("PATCH", b"/v1/objects/j", &[jp], undo),
    );
    assert_json_error(status, &body, 422);
    // Not a patch media type; not JSON at all.
    let (status, body) = raw(
        server.addr,
        &raw_request(
            "PATCH",
            b"/v1/objects/j",
            &[b"Content-Type: text/plain"],
            b"{}",
        ),
    );
    assert_json_error(status, &body, 415);
    let (status, body) = raw(
        server.addr,
        &raw_request("PATCH", b"/v1/objects/j", &[ct], b"{not json"),
    );
    assert!(status == 400 || status == 422, "{status} {body}");
    assert_json_error(status, &body, status);
}

/// Slowloris: many connections trickle their headers; the server keeps serving
/// everyone else, and closes the slow ones once the request timeout passes.
#[test]
fn slow_clients_neither_block_others_nor_stay_forever() {
    let _turn = TIMING.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--request-timeout", "2"]);
    let slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        })
        .collect();
    // Others are served promptly meanwhile.
    for _ in 0..20 {
        let t = Instant::now();
        let (status, _) = raw(
            server.addr,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a request waited {:?}",
            t.elapsed()
        );
    }
    // Trickle one header byte per 200 ms; the server must hang up within a few seconds.
    let start = Instant::now();
    let mut open: Vec<TcpStream> = slow;
    let mut buf = [0u8; 256];
    while !open.is_empty() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
        open.retain_mut(|s| {
            if s.write_all(b"X").is_err() {
                return false;
            }
            match s.read(&mut buf) {
                Ok(0) => false, // closed
                Ok(_) => false, // answered (408) and closing
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    true
                }
                Err(_) => false, // reset
            }
        });
    }
    eprintln!(
        "slowloris: 64 slow connections closed after {:.1} s, {} still open",
        start.elapsed().as_secs_f64(),
        open.len()
    );
    assert!(
        open.is_empty(),
        "{} slow connections still open after {:?}",
        open.len(),
        start.elapsed()
    );
}

// ---- a login flood (docs/SECURITY.md, "Password hashing under load") ----

/// Concurrent wrong-password logins per wave.
const FLOOD: usize = 300;

impl Server {
    /// The child's peak resident set size (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM line")
    }
}

/// What a login flood did to the server.
#[derive(Debug, Default)]
struct Flood {
    statuses: BTreeMap<u16, u64>,
    retry_after_missing: u64,
    healthz_max: Duration,
    healthz_probes: u64,
    peak_rss_kib: u64,
}

/// `waves` waves of [`FLOOD`] concurrent logins with a wrong password (to an
/// existing user and to unknown ones, which cost the same dummy hash), while
/// `/healthz` is probed every 25 ms.
async fn login_flood(server: &Server, waves: usize) -> Flood {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(FLOOD)
        .build()
        .unwrap();
    let r = auth(c.post(server.url("/v1/users")))
        .json(&json!({"username": "victim", "password": "the victim's password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (done, url) = (done.clone(), server.url("/healthz"));
        tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let (mut max, mut n) = (Duration::ZERO, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let r = c.get(&url).send().await.expect("/healthz did not answer");
                assert_eq!(r.status(), StatusCode::OK);
                max = max.max(t.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (max, n)
        })
    };
    let mut flood = Flood::default();
    for wave in 0..waves {
        let tasks: Vec<_> = (0..FLOOD)
            .map(|i| {
                let (c, url) = (c.clone(), server.url("/v1/sessions"));
                let username = if i % 2 == 0 {
                    "victim".to_string()
                } else {
                    format!("nobody{wave}x{i}")
                };
                tokio::spawn(async move {
                    let r = c
                        .post(url)
                        .json(&json!({"username": username, "password": "a wrong guess"}))
                        .send()
                        .await
                        .expect("a login got no answer");
                    (r.status().as_u16(), r.headers().contains_key("retry-after"))
                })
            })
            .collect();
        for t in tasks {
            let (status, retry_after) = t.await.unwrap();
            *flood.statuses.entry(status).or_default() += 1;
            if status == 429 && !retry_after {
                flood.retry_after_missing += 1;
            }
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (flood.healthz_max, flood.healthz_probes) = probe.await.unwrap();
    flood.peak_rss_kib = server.peak_rss_kib();
    flood
}

fn check_flood(what: &str, flood: &Flood, waves: usize) {
    eprintln!(
        "login flood ({what}): {waves} x {FLOOD} wrong-password logins; statuses {:?}; \
         peak RSS (VmHWM) {} KiB = {:.0} MiB; /healthz max {} ms over {} probes",
        flood.statuses,
        flood.peak_rss_kib,
        flood.peak_rss_kib as f64 / 1024.0,
        flood.healthz_max.as_millis(),
        flood.healthz_probes
    );
    let answered: u64 = flood.statuses.values().sum();
    assert_eq!(answered, (waves * FLOOD) as u64);
    assert!(
        flood.statuses.keys().all(|s| *s == 401 || *s == 429),
        "only 401 (checked) and 429 (refused before hashing): {:?}",
        flood.statuses
    );
    assert_eq!(flood.retry_after_missing, 0, "a 429 without Retry-After");
    assert!(
        flood.peak_rss_kib < 1024 * 1024,
        "peak RSS {} KiB is over 1 GiB",
        flood.peak_rss_kib
    );
    assert!(
        flood.healthz_max < Duration::from_secs(1),
        "/healthz took {:?}",
        flood.healthz_max
    );
    assert!(flood.healthz_probes > 0);
}

/// With the default limits: the first wave finds the hashing queue (one
/// thread per CPU, eight waiting each) and refuses the rest at once with 429;
/// then the failed-login back-off refuses the username and the address
/// before any hashing. Before the bounded pool and the back-off, the same
/// flood ran every argon2id hash at once on tokio's blocking pool (19 MiB
/// each): 5.4 GB in the security review.
#[test]
fn login_flood_with_default_limits_stays_under_1_gib() {
    let _turn = TIMING.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    let flood = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(login_flood(&server, 3));
    check_flood("default limits", &flood, 3);
    assert!(
        flood.statuses.get(&429).copied().unwrap_or(0) > 0,
        "neither the queue nor the back-off refused anything: {:?}",
        flood.statuses
    );
}

/// With the back-off turned off, only the hashing pool bounds the flood:
/// memory stays at the pool's size however many waves arrive, and every
/// login is either checked (401) or refused at once (429).
#[test]
fn login_flood_without_back_off_is_bounded_by_the_hashing_pool() {
    let _turn = TIMING.lock().unwrap_or_else(|e| e.into_inner());
    let off = u32::MAX.to_string();
    let server = Server::start(&[
        "--login-free-failures",
        &off,
        "--login-free-failures-address",
        &off,
    ]);
    let flood = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(login_flood(&server, 5));
    check_flood("no back-off", &flood, 5);
    assert!(
        flood.statuses.get(&401).copied().unwrap_or(0) >= 5,
        "{:?}",
        flood.statuses
    );
}

/// Issue 13, resource bounds: one SQL batch that writes 400 MB (a recursive
/// CTE inserting `randomblob`s) is refused by the per-commit cap (64 MiB by
/// default) with a 422 `limit_exceeded` naming the limit, before anything is
/// uploaded, and the server's peak RSS stays under 400 MiB (the WAL is
/// checked from its frame headers, never read whole). The tenant stays usable.
#[test]
fn a_400_mb_sql_batch_is_refused_within_bounded_memory() {
    let mut server = Server::start(&["--sql-time-limit", "300000"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = client();
        let url = server.url("/v1/db");
        let before = server.peak_rss_kib();
        let started = Instant::now();
        let r = auth(c.post(&url))
            .timeout(Duration::from_secs(300))
            .json(&json!({"tenant": "hog", "statements": [
                {"sql": "CREATE TABLE big (b BLOB)"},
                {"sql": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) \
                         INSERT INTO big SELECT randomblob(1000000) FROM n"}
            ]}))
            .send()
            .await
            .expect("an answer");
        let status = r.status();
        let body = r.text().await.expect("body");
        let peak = server.peak_rss_kib();
        eprintln!(
            "400 MB batch: {status} in {:.1} s; peak RSS {} MiB before, {} MiB after",
            started.elapsed().as_secs_f64(),
            before / 1024,
            peak / 1024
        );
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.contains("limit_exceeded"), "{body}");
        assert!(body.contains("commit size limit"), "{body}");
        assert!(peak < 400 * 1024, "peak RSS {} MiB", peak / 1024);
        // Nothing was committed, and the tenant takes a normal batch afterwards.
        let r = auth(c.post(&url))
            .json(&json!({"tenant": "hog", "statements": [
                {"sql": "CREATE TABLE small (x INTEGER)"},
                {"sql": "INSERT INTO small VALUES (1)"},
                {"sql": "SELECT count(*) FROM sqlite_master WHERE name = 'big'"}
            ]}))
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["results"][2]["rows"][0][0], json!(0), "{v}");
    });
    server.assert_alive();
}
