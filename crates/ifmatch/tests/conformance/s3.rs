//! Conformance on `s3://` against moto, plus S3-specific checks: conditional
//! delete, odd keys, metadata through HEAD, conditional GET, prefixes, and how
//! transport failures are classified (against tiny fake servers, no moto needed).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use ifmatch::store::s3::S3Store;
use ifmatch::store::{Condition, Fetch, ListPage, Metadata, PutOptions, Store, Version, list_all};
use ifmatch::{DynStore, Error, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::suite::{Caps, conformance as run, group_race, race as run_race};

const CAPS: Caps = Caps {
    large_values: true,
    sorted_listing: true,
};

/// The moto endpoint, or `None` to skip (see [`crate::env::endpoint`]).
fn endpoint() -> Option<String> {
    crate::env::endpoint("IFMATCH_TEST_S3_ENDPOINT", "S3 (moto)")
}

/// Opens `s3://BUCKET/PREFIX?endpoint=...` on a fresh bucket (created) and returns the URL too.
async fn open_fresh(prefix: &str) -> Option<(String, S3Store)> {
    let endpoint = endpoint()?;
    let bucket = crate::env::unique("b");
    let url = format!("s3://{bucket}/{prefix}?endpoint={endpoint}");
    let store = S3Store::open(&url).await.expect("open");
    store.create_bucket().await.expect("create bucket");
    Some((url, store))
}

/// A store on a fresh bucket under `some-prefix/`.
async fn store() -> Option<DynStore> {
    let (_, s) = open_fresh("some-prefix").await?;
    Some(Arc::new(s))
}

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.kind(),
    }
}

#[tokio::test]
async fn conformance() {
    let Some(store) = store().await else { return };
    run(store, CAPS).await;
}

/// The increment race on moto. moto's own threaded server does not decide
/// conditional puts atomically, so `scripts/test-servers` serves it one request
/// at a time (see `scripts/moto_server_serial.py`), as S3 itself is atomic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race() {
    let Some(store) = store().await else { return };
    run_race(store, 8, 50).await;
}

/// Group commit on moto: 64 tasks through two updaters on one bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_race() {
    let Some(store) = store().await else { return };
    group_race(store, 64, 10).await;
}

#[tokio::test]
async fn opened_by_url() {
    let Some((url, _)) = open_fresh("p").await else {
        return;
    };
    let s = ifmatch::store::open(&url).await.unwrap();
    assert_eq!(s.describe(), url);
    s.put("k", "v".into(), PutOptions::if_absent())
        .await
        .unwrap();
    assert_eq!(s.get("k").await.unwrap().body, Bytes::from("v"));
    let err = ifmatch::store::open(&format!("{url}&colour=blue"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("colour")),
        "{err}"
    );
    assert!(matches!(
        ifmatch::store::open("s3://Not_A_Bucket").await,
        Err(Error::InvalidInput(_))
    ));
}

/// The `DELETE` really carries `If-Match`: a stale version deletes nothing.
#[tokio::test]
async fn conditional_delete_is_conditional() {
    let Some(s) = store().await else { return };
    let v1 = s
        .put("d", "one".into(), PutOptions::if_absent())
        .await
        .unwrap();
    let v2 = s
        .put("d", "two".into(), PutOptions::if_matches(v1.clone()))
        .await
        .unwrap();
    match s.delete("d", Condition::Matches(v1.clone())).await {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "d");
            assert_eq!(expected, Condition::Matches(v1.clone()));
            assert_eq!(actual, Some(v2.clone()));
        }
        other => panic!("a stale conditional delete must conflict, got {other:?}"),
    }
    assert_eq!(s.get("d").await.unwrap().body, Bytes::from("two"));
    match s.delete("d", Condition::Absent).await {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(v2.clone())),
        other => panic!("Absent on a present key must conflict, got {other:?}"),
    }
    s.delete("d", Condition::Matches(v2.clone())).await.unwrap();
    assert_eq!(kind(s.head("d").await), ErrorKind::NotFound);
    match s.delete("d", Condition::Matches(v2)).await {
        Err(Error::Conflict { actual: None, .. }) => {}
        other => panic!("If-Match on a missing key must conflict with no version, got {other:?}"),
    }
    s.delete("d", Condition::Absent).await.unwrap();
    s.delete("d", Condition::Any).await.unwrap();
    // A version that cannot be an ETag never matches (and never reaches a header).
    s.put("d", "three".into(), PutOptions::any()).await.unwrap();
    for bad in ["a\"b", "", "with space", "new\nline"] {
        assert_eq!(
            kind(s.delete("d", Condition::Matches(Version::new(bad))).await),
            ErrorKind::Conflict,
            "{bad:?}"
        );
    }
    assert_eq!(s.get("d").await.unwrap().body, Bytes::from("three"));
}

/// Keys reach S3 byte for byte: no percent-encoding leaks into the object name,
/// and listings return them exactly and in order.
#[tokio::test]
async fn odd_keys_round_trip() {
    let Some((url, s)) = open_fresh("odd prefix+%").await else {
        return;
    };
    let keys = [
        "with space",
        "ünïcødé/ключ",
        "plus+sign",
        "per%cent",
        "per%25cent",
        "eq=als",
        "hash#tag",
        "quest?ion",
        "amp&and",
        "semi;colon",
        "tilde~",
        "star*",
        "quote\"d",
        "brace{}",
        "square[]",
        "lt<gt>",
        "caret^pipe|",
        "back`tick",
        "apos'trophe",
        "at@dollar$comma,",
        "crab 🦀",
        "a/b/c.d",
        ".hidden/x",
    ];
    for k in keys {
        let v = s.put(k, k.into(), PutOptions::if_absent()).await.unwrap();
        let got = s.get(k).await.unwrap();
        assert_eq!(got.body, Bytes::from(k), "{k}");
        assert_eq!(got.meta.key, k);
        assert_eq!(s.head(k).await.unwrap().version, v, "{k}");
        assert_eq!(
            s.get_if_changed(k, &v).await.unwrap(),
            Fetch::Unchanged,
            "{k}"
        );
    }
    let listed: Vec<String> = list_all(&s, "")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // Listing by an odd prefix.
    let listed: Vec<String> = list_all(&s, "per%")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(listed, ["per%25cent", "per%cent"]);

    // The objects carry exactly "PREFIX/KEY" in the bucket: a store on the bucket root sees them so.
    let root_url = url.replacen("/odd prefix+%?", "?", 1);
    assert_ne!(root_url, url);
    let root = S3Store::open(&root_url).await.unwrap();
    let raw: BTreeSet<String> = list_all(&root, "")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let want: BTreeSet<String> = keys.iter().map(|k| format!("odd prefix+%/{k}")).collect();
    assert_eq!(raw, want);
    assert_eq!(
        root.get("odd prefix+%/crab 🦀").await.unwrap().body,
        Bytes::from("crab 🦀")
    );

    for k in keys {
        let v = s.head(k).await.unwrap().version;
        s.delete(k, Condition::Matches(v)).await.unwrap();
    }
    assert!(list_all(&s, "").await.unwrap().is_empty());
}

/// User metadata and the expiry come back from HEAD as well as GET, exactly.
#[tokio::test]
async fn metadata_round_trip_through_head() {
    let Some(s) = store().await else { return };
    let mut md = Metadata::new();
    md.insert("content-kind".into(), "json v1".into());
    md.insert("ifmatch-wid".into(), "w-123".into());
    md.insert("under_score".into(), "u".into());
    md.insert("padded".into(), "  two spaces each side  ".into());
    md.insert("looks-encoded".into(), "=?UTF-8?Q?x?=".into());
    md.insert("punct".into(), "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".into());
    md.insert("empty".into(), String::new());
    let v = s
        .put(
            "m",
            "body".into(),
            PutOptions::if_absent()
                .with_metadata(md.clone())
                .with_expiry(Some(1_900_000_000)),
        )
        .await
        .unwrap();
    let head = s.head("m").await.unwrap();
    assert_eq!(head.version, v);
    assert_eq!(head.size, 4);
    assert_eq!(head.metadata, md);
    assert_eq!(head.expires_at, Some(1_900_000_000));
    let got = s.get("m").await.unwrap();
    assert_eq!(got.meta, head);

    // The expiry name is reserved.
    let mut reserved = Metadata::new();
    reserved.insert("ifmatch-expires".into(), "1".into());
    assert_eq!(
        kind(
            s.put("m2", "x".into(), PutOptions::any().with_metadata(reserved))
                .await
        ),
        ErrorKind::Invalid
    );
}

#[tokio::test]
async fn conditional_get_and_stale_if_match() {
    let Some(s) = store().await else { return };
    assert_eq!(
        kind(s.get_if_changed("g", &Version::new("abc")).await),
        ErrorKind::NotFound
    );
    let v1 = s
        .put("g", "one".into(), PutOptions::if_absent())
        .await
        .unwrap();
    assert_eq!(s.get_if_changed("g", &v1).await.unwrap(), Fetch::Unchanged);
    // A version that cannot be an ETag is simply "changed".
    assert!(matches!(
        s.get_if_changed("g", &Version::new("not \"an\" etag"))
            .await
            .unwrap(),
        Fetch::Changed(_)
    ));
    let v2 = s
        .put("g", "two".into(), PutOptions::if_matches(v1.clone()))
        .await
        .unwrap();
    assert_ne!(v1, v2);
    match s.get_if_changed("g", &v1).await.unwrap() {
        Fetch::Changed(o) => {
            assert_eq!(o.body, Bytes::from("two"));
            assert_eq!(o.meta.version, v2);
        }
        Fetch::Unchanged => panic!("changed key reported unchanged"),
    }
    // A stale If-Match conflicts and reports the current version.
    match s
        .put("g", "lost".into(), PutOptions::if_matches(v1.clone()))
        .await
    {
        Err(Error::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, Condition::Matches(v1));
            assert_eq!(actual, Some(v2.clone()));
        }
        other => panic!("stale If-Match must conflict, got {other:?}"),
    }
    // If-None-Match: * on a present key conflicts and reports the current version.
    match s.put("g", "dup".into(), PutOptions::if_absent()).await {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(v2.clone())),
        other => panic!("create over a present key must conflict, got {other:?}"),
    }
    assert_eq!(s.get("g").await.unwrap().body, Bytes::from("two"));
}

#[tokio::test]
async fn if_match_on_missing_key_conflicts() {
    let Some(s) = store().await else { return };
    let v = Version::new("d41d8cd98f00b204e9800998ecf8427e");
    match s
        .put("nope", "x".into(), PutOptions::if_matches(v.clone()))
        .await
    {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "nope");
            assert_eq!(expected, Condition::Matches(v));
            assert_eq!(actual, None);
        }
        other => panic!("If-Match on a missing key must conflict, got {other:?}"),
    }
    assert_eq!(kind(s.head("nope").await), ErrorKind::NotFound);
}

/// Two prefixes in one bucket do not see each other's keys; pages follow tokens.
#[tokio::test]
async fn prefixes_are_isolated_and_pages_follow_tokens() {
    let Some((url, a)) = open_fresh("tenant-a").await else {
        return;
    };
    let b = S3Store::open(&url.replacen("/tenant-a?", "/tenant-b?", 1))
        .await
        .unwrap();
    for i in 0..7 {
        a.put(&format!("k{i}"), "a".into(), PutOptions::any())
            .await
            .unwrap();
    }
    b.put("k0", "b".into(), PutOptions::any()).await.unwrap();
    assert_eq!(a.get("k0").await.unwrap().body, Bytes::from("a"));
    assert_eq!(b.get("k0").await.unwrap().body, Bytes::from("b"));
    assert_eq!(list_all(&b, "").await.unwrap().len(), 1);

    let mut keys = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = a
            .list(
                "",
                ListPage {
                    token: token.take(),
                    limit: 3,
                },
            )
            .await
            .unwrap();
        assert!(page.entries.len() <= 3);
        keys.extend(page.entries.into_iter().map(|e| e.key));
        pages += 1;
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4", "k5", "k6"]);
    // A page larger than S3's 1000-key page is still one answer.
    let all = a
        .list(
            "",
            ListPage {
                token: None,
                limit: 5000,
            },
        )
        .await
        .unwrap();
    assert_eq!(all.entries.len(), 7);
    assert!(all.next.is_none());
}

#[tokio::test]
async fn missing_bucket_is_not_a_conflict_or_not_found() {
    let Some(endpoint) = endpoint() else { return };
    let url = format!(
        "s3://{}/p?endpoint={endpoint}",
        crate::env::unique("nobucket")
    );
    let s = S3Store::open(&url).await.unwrap();
    for r in [
        s.get("k").await.map(|_| ()),
        s.put("k", "x".into(), PutOptions::any()).await.map(|_| ()),
        s.put("k", "x".into(), PutOptions::if_absent())
            .await
            .map(|_| ()),
        s.put("k", "x".into(), PutOptions::if_matches(Version::new("abc")))
            .await
            .map(|_| ()),
        s.delete("k", Condition::Matches(Version::new("abc"))).await,
        s.list("", ListPage::default()).await.map(|_| ()),
    ] {
        match r {
            Err(e @ Error::Other { .. }) => {
                assert!(e.to_string().contains("does not exist"), "{e}")
            }
            other => panic!("expected Other(bucket does not exist), got {other:?}"),
        }
    }
}

/// Reads one HTTP/1.1 request (head and a Content-Length body); `None` at end of stream.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((head, buf[head_end..head_end + len].to_vec()))
}

/// A fake S3 on loopback: answers every request with `status` (`None`:
/// reads the request and hangs up without answering).
async fn fake_s3(status: Option<u16>) -> String {
    fake_s3_logged(status, "").await.0
}

/// [`fake_s3`] answering with S3 error code `code`, and the request lines it got.
async fn fake_s3_logged(
    status: Option<u16>,
    code: &'static str,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let requests = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                let Some((head, _)) = read_request(&mut sock).await else {
                    return;
                };
                let line = head.lines().next().unwrap_or_default().to_string();
                requests.lock().unwrap().push(line);
                if let Some(status) = status {
                    let code = if code.is_empty() {
                        format!("Fake{status}")
                    } else {
                        code.to_string()
                    };
                    let body = format!("<Error><Code>{code}</Code></Error>");
                    let response = format!(
                        "HTTP/1.1 {status} Fake\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(response.as_bytes()).await;
                }
                // Dropping the socket hangs up.
            });
        }
    });
    (format!("http://{addr}"), log)
}

async fn fake_store(endpoint: &str) -> S3Store {
    S3Store::open(&format!(
        "s3://fake-bucket/p?endpoint={endpoint}&region=us-east-1"
    ))
    .await
    .unwrap()
}

/// Where nothing listens, every operation is retryable `Unavailable`: nothing was sent.
#[tokio::test]
async fn refused_connection_is_unavailable() {
    // Bind and drop to find a port that refuses connections.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = fake_store(&format!("http://127.0.0.1:{port}")).await;
    let v = Version::new("abc");
    let results = [
        s.get("k").await.map(|_| ()),
        s.head("k").await.map(|_| ()),
        s.put("k", "x".into(), PutOptions::any()).await.map(|_| ()),
        s.put("k", "x".into(), PutOptions::if_absent())
            .await
            .map(|_| ()),
        s.put("k", "x".into(), PutOptions::if_matches(v.clone()))
            .await
            .map(|_| ()),
        s.delete("k", Condition::Matches(v)).await,
        s.list("", ListPage::default()).await.map(|_| ()),
    ];
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(kind(r), ErrorKind::Unavailable, "operation {i}");
    }
}

/// A write whose answer is lost is `Ambiguous`; a read is `Unavailable`.
#[tokio::test]
async fn lost_answer_is_ambiguous_for_writes() {
    let s = fake_store(&fake_s3(None).await).await;
    let v = Version::new("abc");
    assert_eq!(kind(s.get("k").await), ErrorKind::Unavailable);
    assert_eq!(kind(s.head("k").await), ErrorKind::Unavailable);
    assert_eq!(
        kind(s.list("", ListPage::default()).await),
        ErrorKind::Unavailable
    );
    assert_eq!(
        kind(s.put("k", "x".into(), PutOptions::if_absent()).await),
        ErrorKind::Ambiguous
    );
    assert_eq!(
        kind(
            s.put("k", "x".into(), PutOptions::if_matches(v.clone()))
                .await
        ),
        ErrorKind::Ambiguous
    );
    assert_eq!(
        kind(s.put("k", "x".into(), PutOptions::any()).await),
        ErrorKind::Ambiguous
    );
    assert_eq!(
        kind(s.delete("k", Condition::Matches(v)).await),
        ErrorKind::Ambiguous
    );
}

/// 503 (SlowDown) means S3 did nothing: retryable. 500 on a write: maybe landed.
/// 403: not retryable.
#[tokio::test]
async fn statuses_are_classified() {
    let v = Version::new("abc");
    let s = fake_store(&fake_s3(Some(503)).await).await;
    assert_eq!(kind(s.get("k").await), ErrorKind::Unavailable);
    assert_eq!(
        kind(s.put("k", "x".into(), PutOptions::if_absent()).await),
        ErrorKind::Unavailable
    );
    assert_eq!(
        kind(s.delete("k", Condition::Matches(v.clone())).await),
        ErrorKind::Unavailable
    );

    let s = fake_store(&fake_s3(Some(500)).await).await;
    assert_eq!(kind(s.get("k").await), ErrorKind::Unavailable);
    assert_eq!(
        kind(
            s.put("k", "x".into(), PutOptions::if_matches(v.clone()))
                .await
        ),
        ErrorKind::Ambiguous
    );
    assert_eq!(
        kind(s.delete("k", Condition::Matches(v.clone())).await),
        ErrorKind::Ambiguous
    );

    let s = fake_store(&fake_s3(Some(403)).await).await;
    assert_eq!(kind(s.get("k").await), ErrorKind::Other);
    assert_eq!(
        kind(s.put("k", "x".into(), PutOptions::if_absent()).await),
        ErrorKind::Other
    );
    assert_eq!(
        kind(s.delete("k", Condition::Matches(v)).await),
        ErrorKind::Other
    );
}

// Failed before the fix: object_store re-sent an unconditional PUT (and
// DELETE) whose answer was lost, up to three more times. A re-sent blind
// write can land after a compare-and-swap write that landed in between and
// overwrite it; a re-sent delete can delete a value created in between.
// Writes are now sent once and a lost answer is Ambiguous.
#[tokio::test]
async fn a_write_whose_answer_is_lost_is_sent_once() {
    let (endpoint, log) = fake_s3_logged(None, "").await;
    let s = fake_store(&endpoint).await;
    let v = Version::new("abc");
    for i in 0..4 {
        let (method, r) = match i {
            0 => (
                "PUT",
                s.put("k", "x".into(), PutOptions::any()).await.map(drop),
            ),
            1 => (
                "PUT",
                s.put("k", "x".into(), PutOptions::if_absent())
                    .await
                    .map(drop),
            ),
            2 => ("DELETE", s.delete("k", Condition::Any).await),
            _ => ("DELETE", s.delete("k", Condition::Matches(v.clone())).await),
        };
        assert_eq!(kind(r), ErrorKind::Ambiguous, "write {i}");
        let sent = log.lock().unwrap().drain(..).collect::<Vec<_>>();
        assert_eq!(
            sent.len(),
            1,
            "write {i} was sent {} times: {sent:?}",
            sent.len()
        );
        assert!(sent[0].starts_with(method), "{sent:?}");
    }
}

// Failed before the fix: S3's 409 ConditionalRequestConflict (a conditional
// write racing another one in flight on the same key; nothing was written)
// was read as a Conflict, i.e. "the key is not in the state you expected",
// so a create-if-absent looked like "exists" and an HTTP client got 409.
#[tokio::test]
async fn s3_409_conditional_request_conflict_is_retryable() {
    let (endpoint, log) = fake_s3_logged(Some(409), "ConditionalRequestConflict").await;
    let s = fake_store(&endpoint).await;
    let v = Version::new("abc");
    let results: [Result<(), Error>; 3] = [
        s.put("k", "x".into(), PutOptions::if_absent())
            .await
            .map(drop),
        s.put("k", "x".into(), PutOptions::if_matches(v.clone()))
            .await
            .map(drop),
        s.delete("k", Condition::Matches(v)).await,
    ];
    for (i, r) in results.into_iter().enumerate() {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "write {i}: {e}");
        assert!(e.to_string().contains("ConditionalRequestConflict"), "{e}");
    }
    // Each was sent once: ifmatch's own retry layer decides when to try again.
    assert_eq!(log.lock().unwrap().len(), 3);
}
