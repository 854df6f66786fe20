//! `dynamodb://` on dynalite (conformance, the concurrent race, DynamoDB
//! specifics) and on moto (conformance, TTL). Moto's DynamoDB has lost updates
//! under concurrent conditional writes, so the race runs on dynalite only.

use std::collections::{BTreeMap, BTreeSet};

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveStatus,
};
use bytes::Bytes;
use ifmatch::store::dynamodb::{DynamoStore, ITEM_SIZE_LIMIT, MAX_VALUE_SIZE};
use ifmatch::store::{self, Condition, Fetch, ListPage, Metadata, PutOptions, Store};
use ifmatch::{DynStore, Error, ErrorKind};

const DYNALITE: (&str, &str) = ("IFMATCH_TEST_DYNAMODB_ENDPOINT", "DynamoDB (dynalite)");
const MOTO: (&str, &str) = ("IFMATCH_TEST_MOTO_DYNAMODB_ENDPOINT", "DynamoDB (moto)");

/// The server's endpoint, or `None` to skip (see [`crate::env::endpoint`]).
fn server((var, what): (&str, &str)) -> Option<String> {
    crate::env::endpoint(var, what)
}

/// The URL of a new table on `endpoint`, created on open.
fn fresh_url(endpoint: &str) -> (String, String) {
    let table = crate::env::unique("t");
    let url = format!("dynamodb://{table}?create=true&endpoint={endpoint}");
    (table, url)
}

/// A store on a new table of `endpoint`, opened through [`store::open`].
async fn fresh(endpoint: &str) -> (DynStore, String) {
    let (table, url) = fresh_url(endpoint);
    let store = store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    (store, table)
}

/// A plain SDK client on `endpoint`, for looking behind the store's back.
async fn sdk(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&conf)
}

const CAPS: crate::suite::Caps = crate::suite::Caps {
    large_values: false,
    sorted_listing: false,
};

#[tokio::test]
async fn conformance_dynalite() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, _) = fresh(&endpoint).await;
    crate::suite::conformance(store, CAPS).await;
}

#[tokio::test]
async fn conformance_moto() {
    let Some(endpoint) = server(MOTO) else { return };
    let (store, _) = fresh(&endpoint).await;
    crate::suite::conformance(store, CAPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_dynalite() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, _) = fresh(&endpoint).await;
    crate::suite::race(store, 8, 50).await;
}

/// Group commit on dynalite: 64 tasks through two updaters on one table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_race_dynalite() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, _) = fresh(&endpoint).await;
    crate::suite::group_race(store, 64, 10).await;
}

/// The basic contract, checked directly here as well (both servers).
async fn basics(store: &dyn Store) {
    // Create, read back with metadata, head without the value.
    let mut meta = Metadata::new();
    meta.insert("kind".into(), "greeting".into());
    meta.insert("empty".into(), String::new());
    let v1 = store
        .put(
            "a/one",
            Bytes::from_static(b"hello"),
            PutOptions::if_absent().with_metadata(meta.clone()),
        )
        .await
        .unwrap();
    let got = store.get("a/one").await.unwrap();
    assert_eq!(got.body, Bytes::from_static(b"hello"));
    assert_eq!(got.version(), &v1);
    assert_eq!(got.meta.metadata, meta);
    assert_eq!(got.meta.size, 5);
    assert_eq!(got.meta.expires_at, None);
    let head = store.head("a/one").await.unwrap();
    assert_eq!(head, got.meta);

    // A second create conflicts and reports the current version.
    let err = store
        .put("a/one", Bytes::new(), PutOptions::if_absent())
        .await
        .unwrap_err();
    match err {
        Error::Conflict {
            key,
            expected,
            actual,
        } => {
            assert_eq!(key, "a/one");
            assert_eq!(expected, Condition::Absent);
            assert_eq!(actual, Some(v1.clone()));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Conditional update, then the stale version conflicts.
    let v2 = store
        .put("a/one", Bytes::new(), PutOptions::if_matches(v1.clone()))
        .await
        .unwrap();
    assert_ne!(v1, v2);
    let got = store.get("a/one").await.unwrap();
    assert_eq!(got.body, Bytes::new(), "an empty value round-trips");
    assert!(got.meta.metadata.is_empty());
    match store
        .put(
            "a/one",
            Bytes::from_static(b"x"),
            PutOptions::if_matches(v1.clone()),
        )
        .await
        .unwrap_err()
    {
        Error::Conflict { actual, .. } => assert_eq!(actual, Some(v2.clone())),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // get_if_changed.
    assert_eq!(
        store.get_if_changed("a/one", &v2).await.unwrap(),
        Fetch::Unchanged
    );
    match store.get_if_changed("a/one", &v1).await.unwrap() {
        Fetch::Changed(o) => assert_eq!(o.version(), &v2),
        Fetch::Unchanged => panic!("v1 is stale"),
    }
    assert_eq!(
        store
            .get_if_changed("a/missing", &v1)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    // Conditional deletes.
    let err = store
        .delete("a/one", Condition::Matches(v1.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = store.delete("a/one", Condition::Absent).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    store
        .delete("a/one", Condition::Matches(v2.clone()))
        .await
        .unwrap();
    store.delete("a/one", Condition::Absent).await.unwrap();
    store.delete("a/one", Condition::Any).await.unwrap();
    match store
        .delete("a/one", Condition::Matches(v2.clone()))
        .await
        .unwrap_err()
    {
        Error::Conflict { actual, .. } => assert_eq!(actual, None),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store
        .put("a/one", Bytes::new(), PutOptions::if_matches(v2))
        .await
        .unwrap_err()
    {
        Error::Conflict { actual, .. } => assert_eq!(actual, None),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.get("a/one").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store.head("a/one").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn basics_dynalite() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, _) = fresh(&endpoint).await;
    basics(&*store).await;
}

#[tokio::test]
async fn basics_moto() {
    let Some(endpoint) = server(MOTO) else { return };
    let (store, _) = fresh(&endpoint).await;
    basics(&*store).await;
}

/// Values past 400 KB fail with TooLarge before sending; `max_value_size` and
/// (where the server counts sizes exactly like DynamoDB, `exact_sizes`) a value
/// filling the item exactly to the limit both land.
async fn sizes(store: &dyn Store, exact_sizes: bool) {
    assert_eq!(store.max_value_size(), Some(MAX_VALUE_SIZE));
    let v = store
        .put(
            "big/max",
            Bytes::from(vec![7u8; MAX_VALUE_SIZE as usize]),
            PutOptions::any(),
        )
        .await
        .unwrap();
    let got = store.get("big/max").await.unwrap();
    assert_eq!(got.version(), &v);
    assert_eq!(got.body.len() as u64, MAX_VALUE_SIZE);
    assert_eq!(store.head("big/max").await.unwrap().size, MAX_VALUE_SIZE);

    // Key "big/edge" (k: 1 + 8), ver (3 + 32), sz (2 + 4 for six digits), v (1 + n):
    // the item is exactly 400 KB by DynamoDB's rules when n = 409600 - 51.
    let edge = (ITEM_SIZE_LIMIT - 51) as usize;
    let put_edge = |n: usize| store.put("big/edge", Bytes::from(vec![1u8; n]), PutOptions::any());
    let landed = if exact_sizes {
        put_edge(edge).await.unwrap();
        Some(edge)
    } else {
        // moto caps items at 405000 bytes (its own guess at the real limit),
        // so it rejects this item itself: its ValidationException must come
        // back as TooLarge too.
        match put_edge(edge).await.unwrap_err() {
            Error::TooLarge { key, size, limit } => {
                assert_eq!(key, "big/edge");
                assert_eq!(size, ITEM_SIZE_LIMIT);
                assert_eq!(limit, ITEM_SIZE_LIMIT);
            }
            other => panic!("expected TooLarge from the server, got {other:?}"),
        }
        None
    };
    let edge_len = || async {
        match store.get("big/edge").await {
            Ok(o) => Some(o.body.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(edge_len().await, landed);

    match store
        .put(
            "big/edge",
            Bytes::from(vec![1u8; edge + 1]),
            PutOptions::any(),
        )
        .await
        .unwrap_err()
    {
        Error::TooLarge { key, size, limit } => {
            assert_eq!(key, "big/edge");
            assert_eq!(size, ITEM_SIZE_LIMIT + 1);
            assert_eq!(limit, ITEM_SIZE_LIMIT);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let err = store
        .put(
            "big/over",
            Bytes::from(vec![0u8; 400 * 1024]),
            PutOptions::any(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    // Metadata counts too.
    let mut meta = Metadata::new();
    meta.insert("pad".into(), "p".repeat(1500));
    let err = store
        .put(
            "big/edge",
            Bytes::from(vec![1u8; edge]),
            PutOptions::any().with_metadata(meta),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    // The failed writes changed nothing.
    assert_eq!(edge_len().await, landed);
    assert_eq!(
        store.head("big/over").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn too_large_dynalite() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, _) = fresh(&endpoint).await;
    sizes(&*store, true).await;
}

#[tokio::test]
async fn too_large_moto() {
    let Some(endpoint) = server(MOTO) else { return };
    let (store, _) = fresh(&endpoint).await;
    sizes(&*store, false).await;
}

/// Writes an expiring record and reads the raw item: `exp` holds the expiry.
async fn check_exp_attribute(endpoint: &str, store: &dyn Store, table: &str) {
    let expires = 1_900_000_000;
    store
        .put(
            "ttl/soon",
            Bytes::from_static(b"x"),
            PutOptions::any().with_expiry(Some(expires)),
        )
        .await
        .unwrap();
    store
        .put("ttl/never", Bytes::from_static(b"y"), PutOptions::any())
        .await
        .unwrap();
    assert_eq!(
        store.head("ttl/soon").await.unwrap().expires_at,
        Some(expires)
    );
    assert_eq!(
        store.get("ttl/soon").await.unwrap().meta.expires_at,
        Some(expires)
    );
    assert_eq!(store.head("ttl/never").await.unwrap().expires_at, None);

    let client = sdk(endpoint).await;
    let raw = |key: &'static str| {
        let client = client.clone();
        async move {
            client
                .get_item()
                .table_name(table)
                .key("k", AttributeValue::S(key.into()))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .unwrap()
        }
    };
    let item = raw("ttl/soon").await;
    assert_eq!(
        item.get("exp"),
        Some(&AttributeValue::N(expires.to_string()))
    );
    assert_eq!(item.get("sz"), Some(&AttributeValue::N("1".into())));
    assert!(matches!(item.get("ver"), Some(AttributeValue::S(_))));
    assert!(matches!(item.get("v"), Some(AttributeValue::B(_))));
    assert_eq!(raw("ttl/never").await.get("exp"), None);

    // Rewriting without an expiry removes it.
    store
        .put("ttl/soon", Bytes::from_static(b"x"), PutOptions::any())
        .await
        .unwrap();
    assert_eq!(raw("ttl/soon").await.get("exp"), None);
}

#[tokio::test]
async fn ttl_moto() {
    let Some(endpoint) = server(MOTO) else { return };
    let (store, table) = fresh(&endpoint).await;
    let ttl = sdk(&endpoint)
        .await
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let desc = ttl.time_to_live_description().unwrap();
    assert_eq!(desc.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(desc.attribute_name(), Some("exp"));
    check_exp_attribute(&endpoint, &*store, &table).await;

    // Opening again with create=true finds TTL already on and keeps it.
    let again = store::open(&format!(
        "dynamodb://{table}?create=true&endpoint={endpoint}"
    ))
    .await
    .unwrap();
    assert!(again.head("ttl/never").await.is_ok());
}

#[tokio::test]
async fn ttl_dynalite() {
    // dynalite may not support UpdateTimeToLive: opening must still succeed
    // (with a warning), and the attribute is written all the same.
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, table) = fresh(&endpoint).await;
    check_exp_attribute(&endpoint, &*store, &table).await;
}

/// Delete and re-create, many times: no version ever comes back.
async fn no_aba(store: &dyn Store) {
    let mut seen = std::collections::HashSet::new();
    let mut previous: Option<ifmatch::Version> = None;
    for i in 0..20 {
        let v = store
            .put("aba", Bytes::from(format!("{i}")), PutOptions::if_absent())
            .await
            .unwrap();
        assert!(seen.insert(v.clone()), "version {v} repeated");
        let v2 = store
            .put(
                "aba",
                Bytes::from_static(b"same bytes"),
                PutOptions::if_matches(v.clone()),
            )
            .await
            .unwrap();
        assert!(seen.insert(v2.clone()), "version {v2} repeated");
        if let Some(old) = &previous {
            // A version from before the delete never matches the new record.
            let err = store
                .put("aba", Bytes::new(), PutOptions::if_matches(old.clone()))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict);
        }
        store
            .delete("aba", Condition::Matches(v2.clone()))
            .await
            .unwrap();
        previous = Some(v2);
    }
}

#[tokio::test]
async fn no_aba_dynalite() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, _) = fresh(&endpoint).await;
    no_aba(&*store).await;
}

#[tokio::test]
async fn no_aba_moto() {
    let Some(endpoint) = server(MOTO) else { return };
    let (store, _) = fresh(&endpoint).await;
    no_aba(&*store).await;
}

/// Many keys under several prefixes; a filtered scan listed with small pages
/// (each of `limits`) returns every matching key exactly once and nothing else.
async fn pagination(store: &dyn Store, limits: &[usize]) {
    let prefixes = ["p/a/", "p/b/", "p/c/", "q/"];
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut writes = Vec::new();
    for i in 0..90 {
        // Uneven: "p/b/" is sparse, so many scan pages hold none of it.
        let prefix = match i % 9 {
            0 => "p/b/",
            1..=4 => "p/a/",
            5..=7 => "p/c/",
            _ => "q/",
        };
        let key = format!("{prefix}{i:03}");
        expected.entry(prefix).or_default().insert(key.clone());
        writes.push(key);
    }
    futures::future::try_join_all(
        writes
            .iter()
            .map(|k| store.put(k, Bytes::from(k.clone()), PutOptions::any())),
    )
    .await
    .unwrap();

    let list = |prefix: &'static str, limit: usize| async move {
        let mut out = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = store.list(prefix, ListPage { token, limit }).await.unwrap();
            pages += 1;
            assert!(page.entries.len() <= limit, "page over the limit");
            assert!(pages < 200, "listing {prefix} does not end");
            for e in &page.entries {
                assert_eq!(e.size, e.key.len() as u64);
            }
            out.extend(page.entries.into_iter().map(|e| e.key));
            match page.next {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    };
    for &limit in limits {
        for prefix in prefixes {
            let keys = list(prefix, limit).await;
            let unique: BTreeSet<String> = keys.iter().cloned().collect();
            assert_eq!(
                unique.len(),
                keys.len(),
                "duplicates in {prefix} limit {limit}"
            );
            assert_eq!(&unique, &expected[prefix], "{prefix} limit {limit}");
        }
        let all = list("p/", limit).await;
        assert_eq!(all.len(), 80, "p/ limit {limit}");
        let everything = list("", limit).await;
        assert_eq!(everything.len(), 90, "all keys, limit {limit}");
        assert_eq!(
            everything.iter().collect::<BTreeSet<_>>().len(),
            90,
            "duplicates listing everything with limit {limit}"
        );
    }
    // Full pages: exactly `limit` entries and no next page when nothing follows.
    let page = store
        .list(
            "p/b/",
            ListPage {
                token: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 10);
    assert!(page.next.is_none(), "10 keys under p/b/, none left");
    assert!(
        store
            .list("nothing/", ListPage::default())
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert_eq!(
        store
            .list(
                "p/",
                ListPage {
                    token: None,
                    limit: 0
                }
            )
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Invalid
    );
}

#[tokio::test]
async fn pagination_dynalite() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, _) = fresh(&endpoint).await;
    pagination(&*store, &[1, 2, 3, 7, 50, 1000]).await;
}

#[tokio::test]
async fn pagination_moto() {
    // moto evaluates a filtered scan over the whole table on every request
    // (about 50 ms here), so fewer page sizes.
    let Some(endpoint) = server(MOTO) else { return };
    let (store, _) = fresh(&endpoint).await;
    pagination(&*store, &[3, 1000]).await;
}

#[tokio::test]
async fn missing_table_is_a_clear_error() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let table = crate::env::unique("missing");
    let err = store::open(&format!("dynamodb://{table}?endpoint={endpoint}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&table), "{msg}");
    assert!(msg.contains("?create=true"), "{msg}");
}

#[tokio::test]
async fn wrong_key_schema_is_rejected() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let table = crate::env::unique("t");
    sdk(&endpoint)
        .await
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let err = DynamoStore::open(&format!(
        "dynamodb://{table}?create=true&endpoint={endpoint}"
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("partition key 'k'"), "{err}");
}

#[tokio::test]
async fn url_errors() {
    // Parsing fails before any request, so no server is needed.
    for (url, needle) in [
        ("dynamodb://tbl?bogus=1", "bogus"),
        ("dynamodb://tbl?create=maybe", "create"),
        ("dynamodb://x", "table name"),
        ("dynamodb://bad*name", "table name"),
    ] {
        let err = store::open(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{url}: {err}");
        assert!(err.to_string().contains(needle), "{url}: {err}");
    }
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    // Needs the test environment's credentials, so it runs where the servers do.
    if server(DYNALITE).is_none() {
        return;
    }
    // Nothing listens on port 9 of loopback: refused before sending, so retryable.
    let err = store::open("dynamodb://tbl?endpoint=http://127.0.0.1:9&region=us-east-1")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn describe_names_the_table() {
    let Some(endpoint) = server(DYNALITE) else {
        return;
    };
    let (store, table) = fresh(&endpoint).await;
    assert_eq!(store.describe(), format!("dynamodb://{table}"));
}

/// A fake DynamoDB endpoint on loopback: answers `DescribeTable` with a valid
/// table and every other operation as `respond` says, counting the requests,
/// so the error mapping and the write retry policy can be checked exactly.
mod fake {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the fake does with a data request.
    #[derive(Clone, Copy, Debug)]
    pub enum Reply {
        /// Read the request, then close the connection without answering.
        Hangup,
        /// Answer with this status and error type.
        Error(u16, &'static str),
    }

    /// A running fake; its thread ends with the test process.
    pub struct Fake {
        /// `http://127.0.0.1:PORT`.
        pub endpoint: String,
        /// How many requests other than `DescribeTable` arrived.
        pub data_requests: Arc<AtomicUsize>,
    }

    pub fn start(reply: Reply) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let data_requests = Arc::new(AtomicUsize::new(0));
        let count = data_requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || serve(stream, reply, &count));
            }
        });
        Fake {
            endpoint,
            data_requests,
        }
    }

    fn serve(stream: TcpStream, reply: Reply, count: &AtomicUsize) {
        let mut writer = match stream.try_clone() {
            Ok(w) => w,
            Err(_) => return,
        };
        let mut reader = BufReader::new(stream);
        loop {
            let mut target = String::new();
            let mut length = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                if let Some((name, value)) = trimmed.split_once(':') {
                    let value = value.trim();
                    match name.to_ascii_lowercase().as_str() {
                        "x-amz-target" => target = value.to_string(),
                        "content-length" => length = value.parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let (status, payload) = if target.ends_with(".DescribeTable") {
                (
                    200,
                    r#"{"Table":{"TableName":"fake","TableStatus":"ACTIVE","KeySchema":[{"AttributeName":"k","KeyType":"HASH"}],"AttributeDefinitions":[{"AttributeName":"k","AttributeType":"S"}]}}"#.to_string(),
                )
            } else {
                count.fetch_add(1, Ordering::SeqCst);
                match reply {
                    Reply::Hangup => return,
                    Reply::Error(status, kind) => (
                        status,
                        format!(
                            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"fake {kind}"}}"#
                        ),
                    ),
                }
            };
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{payload}",
                payload.len()
            );
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// Opens a store on a fake endpoint and sends one put and one delete.
async fn against_fake(reply: fake::Reply) -> (Error, Error, usize) {
    let fake = fake::start(reply);
    let store = DynamoStore::open(&format!(
        "dynamodb://fake?endpoint={}&region=us-east-1",
        fake.endpoint
    ))
    .await
    .unwrap();
    let put = store
        .put("k", Bytes::from_static(b"v"), PutOptions::if_absent())
        .await
        .unwrap_err();
    let delete = store.delete("k", Condition::Any).await.unwrap_err();
    let n = fake.data_requests.load(std::sync::atomic::Ordering::SeqCst);
    (put, delete, n)
}

#[tokio::test]
async fn lost_write_response_is_ambiguous_and_not_retried() {
    // Needs the test environment's credentials, so it runs where the servers do.
    if server(DYNALITE).is_none() {
        return;
    }
    let (put, delete, n) = against_fake(fake::Reply::Hangup).await;
    assert_eq!(put.kind(), ErrorKind::Ambiguous, "{put}");
    assert_eq!(delete.kind(), ErrorKind::Ambiguous, "{delete}");
    assert!(matches!(&put, Error::Ambiguous { key, .. } if key == "k"));
    assert_eq!(n, 2, "each write was sent exactly once (no SDK retry)");
}

#[tokio::test]
async fn write_errors_map_by_kind() {
    if server(DYNALITE).is_none() {
        return;
    }
    for (reply, kind) in [
        (
            fake::Reply::Error(400, "ThrottlingException"),
            ErrorKind::Unavailable,
        ),
        (
            fake::Reply::Error(400, "ProvisionedThroughputExceededException"),
            ErrorKind::Unavailable,
        ),
        (
            fake::Reply::Error(503, "ServiceUnavailable"),
            ErrorKind::Unavailable,
        ),
        // A 500 may follow a write that landed.
        (
            fake::Reply::Error(500, "InternalServerError"),
            ErrorKind::Ambiguous,
        ),
        (
            fake::Reply::Error(400, "AccessDeniedException"),
            ErrorKind::Other,
        ),
        (
            fake::Reply::Error(400, "ResourceNotFoundException"),
            ErrorKind::Invalid,
        ),
    ] {
        let (put, delete, n) = against_fake(reply).await;
        assert_eq!(put.kind(), kind, "{reply:?}: {put}");
        assert_eq!(delete.kind(), kind, "{reply:?}: {delete}");
        assert_eq!(n, 2, "{reply:?}: each write was sent exactly once");
    }
}
