//! `deploy/aws/template.yaml` grants the Lambda function exactly the IAM
//! actions its store calls need, and nothing else.
//!
//! Two halves tie the template to the code:
//! - the template's IAM policy, rendered for each `StoreBackend` (the
//!   `!If` conditions resolved), grants exactly the actions the backends
//!   declare (`ifmatch::store::s3::IAM_OBJECT_ACTIONS` / `IAM_BUCKET_ACTIONS`,
//!   `ifmatch::store::dynamodb::IAM_ACTIONS`), only on the bucket prefix and
//!   the table;
//! - every `Store` call, with every condition, is sent to the real test
//!   servers (moto, dynalite) through a recording proxy, and the actions
//!   those requests need are exactly the declared ones: a new store call that
//!   needs a permission the template lacks fails here.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use ifmatch::store::dynamodb::{self, DynamoStore};
use ifmatch::store::s3::{self, S3Store};
use ifmatch::store::{Condition, Fetch, ListPage, PutOptions};
use ifmatch::{DynStore, Error};
use serde_json::{Value, json};

const TEMPLATE: &str = include_str!("../../../deploy/aws/template.yaml");

// ---- the template, rendered ------------------------------------------------

/// The template as JSON, with `!If` resolved for `backend`, `AWS::NoValue`
/// dropped, and `!Ref` / `!GetAtt` / `!Sub` of the resources the policy
/// names replaced by recognisable placeholders.
fn render(backend: &str) -> Value {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(TEMPLATE).expect("valid YAML");
    resolve(&yaml, backend).expect("the template is not empty")
}

fn placeholder(name: &str) -> String {
    match name {
        "Bucket" => "BUCKET".into(),
        "Bucket.Arn" => "arn:aws:s3:::BUCKET".into(),
        "StorePrefix" => "PREFIX".into(),
        "Table" => "TABLE".into(),
        "Table.Arn" => "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE".into(),
        "OperatorKey" => "SECRET_ARN".into(),
        "LogGroup.Arn" => "LOG_GROUP_ARN".into(),
        other => format!("<{other}>"),
    }
}

fn condition(name: &str, backend: &str) -> bool {
    match name {
        "UseS3" => backend == "s3",
        "UseDynamoDB" => backend == "dynamodb",
        "HasAlarmTopic" => false,
        other => panic!("unknown condition {other}"),
    }
}

/// `None` for `!Ref AWS::NoValue` (the caller drops it).
fn resolve(v: &serde_yaml_ng::Value, backend: &str) -> Option<Value> {
    use serde_yaml_ng::Value as Y;
    Some(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => serde_json::to_value(n).expect("a number"),
        Y::String(s) => json!(s),
        Y::Sequence(items) => {
            Value::Array(items.iter().filter_map(|i| resolve(i, backend)).collect())
        }
        Y::Mapping(m) => Value::Object(
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), resolve(v, backend)?)))
                .collect(),
        ),
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            match (tag.trim_start_matches('!'), &t.value) {
                ("Ref", Y::String(r)) if r == "AWS::NoValue" => return None,
                ("Ref" | "GetAtt", Y::String(r)) => json!(placeholder(r)),
                ("Sub", Y::String(s)) => {
                    let mut out = s.clone();
                    while let Some(start) = out.find("${") {
                        let end = start + out[start..].find('}').expect("closed ${...}");
                        let name = out[start + 2..end].to_string();
                        out.replace_range(start..=end, &placeholder(&name));
                    }
                    json!(out)
                }
                ("If", Y::Sequence(args)) if args.len() == 3 => {
                    let name = args[0].as_str().expect("a condition name");
                    let chosen = if condition(name, backend) {
                        &args[1]
                    } else {
                        &args[2]
                    };
                    return resolve(chosen, backend);
                }
                (other, value) => json!({ other: resolve(value, backend) }),
            }
        }
    })
}

/// The function role's policy statements, by `Sid`.
fn statements(template: &Value) -> Vec<Value> {
    let policies = template["Resources"]["FunctionRole"]["Properties"]["Policies"]
        .as_array()
        .expect("the role has inline policies");
    policies
        .iter()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn actions(statement: &Value) -> BTreeSet<String> {
    match &statement["Action"] {
        Value::String(a) => BTreeSet::from([a.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|a| a.as_str().expect("an action").to_string())
            .collect(),
        other => panic!("statement without actions: {other}"),
    }
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn by_sid<'a>(stmts: &'a [Value], sid: &str) -> Option<&'a Value> {
    stmts.iter().find(|s| s["Sid"] == sid)
}

#[test]
fn the_s3_deployment_grants_exactly_the_s3_backends_actions_on_the_prefix() {
    let t = render("s3");
    let stmts = statements(&t);
    let objects = by_sid(&stmts, "StoreObjects").expect("a StoreObjects statement");
    assert_eq!(actions(objects), set(s3::IAM_OBJECT_ACTIONS));
    assert_eq!(objects["Resource"], "arn:aws:s3:::BUCKET/PREFIX/*");
    let list = by_sid(&stmts, "StoreList").expect("a StoreList statement");
    assert_eq!(actions(list), set(s3::IAM_BUCKET_ACTIONS));
    assert_eq!(list["Resource"], "arn:aws:s3:::BUCKET");
    assert_eq!(
        list["Condition"],
        json!({"StringLike": {"s3:prefix": ["PREFIX/*"]}})
    );
    assert!(
        by_sid(&stmts, "StoreItems").is_none(),
        "no DynamoDB rights on S3"
    );
    assert_eq!(
        t["Resources"]["Function"]["Properties"]["Environment"]["Variables"]["IFMATCH_STORE"],
        "s3://BUCKET/PREFIX"
    );
    common_rights(&stmts);
}

#[test]
fn the_dynamodb_deployment_grants_exactly_the_dynamodb_backends_actions_on_the_table() {
    let t = render("dynamodb");
    let stmts = statements(&t);
    let items = by_sid(&stmts, "StoreItems").expect("a StoreItems statement");
    assert_eq!(actions(items), set(dynamodb::IAM_ACTIONS));
    assert_eq!(
        items["Resource"],
        "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE"
    );
    assert!(by_sid(&stmts, "StoreObjects").is_none() && by_sid(&stmts, "StoreList").is_none());
    let table = &t["Resources"]["Table"]["Properties"];
    // The item schema of `ifmatch::store::dynamodb`: partition key `k`, TTL on `exp`.
    assert_eq!(
        table["KeySchema"],
        json!([{"AttributeName": "k", "KeyType": "HASH"}])
    );
    assert_eq!(
        table["TimeToLiveSpecification"],
        json!({"AttributeName": "exp", "Enabled": true})
    );
    assert_eq!(
        t["Resources"]["Function"]["Properties"]["Environment"]["Variables"]["IFMATCH_STORE"],
        "dynamodb://TABLE"
    );
    common_rights(&stmts);
}

/// Besides the store: writing its own logs and reading its own secret, and
/// never a wildcard; the key itself is never in the environment.
fn common_rights(stmts: &[Value]) {
    let logs = by_sid(stmts, "Logs").expect("a Logs statement");
    assert_eq!(
        actions(logs),
        set(&["logs:CreateLogStream", "logs:PutLogEvents"])
    );
    assert_eq!(logs["Resource"], "LOG_GROUP_ARN");
    let key = by_sid(stmts, "OperatorKey").expect("an OperatorKey statement");
    assert_eq!(actions(key), set(&["secretsmanager:GetSecretValue"]));
    assert_eq!(key["Resource"], "SECRET_ARN");
    for s in stmts {
        assert_eq!(s["Effect"], "Allow", "{s}");
        assert!(
            actions(s).iter().all(|a| !a.contains('*')),
            "wildcard action in {s}"
        );
        assert!(
            !s["Resource"].to_string().contains("\"*\""),
            "wildcard resource in {s}"
        );
    }
    let t = render("s3");
    let env = &t["Resources"]["Function"]["Properties"]["Environment"]["Variables"];
    assert_eq!(env["IFMATCH_API_KEY_SECRET_ARN"], "SECRET_ARN");
    assert!(
        env.get("IFMATCH_API_KEY").is_none(),
        "the key must not be a plain environment variable"
    );
}

// ---- the store calls, recorded ---------------------------------------------

/// The endpoint in `var`; `None` (skip, said on stderr) on a developer
/// machine without it, a panic under `CI=true`.
fn endpoint(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{var} is not set but CI=true: start scripts/test-servers")
        }
        _ => {
            eprintln!("SKIPPED: needs {var}; run `eval \"$(scripts/test-servers start)\"` first");
            None
        }
    }
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One request that passed the proxy.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    target: Option<String>,
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, usize::MAX).await.expect("a request body");
    p.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        target: parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let url = format!(
        "{}{}",
        p.upstream,
        parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
    );
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    headers.remove(http::header::CONTENT_LENGTH);
    let answer = p
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("the test server answers");
    let mut resp = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if k != http::header::TRANSFER_ENCODING && k != http::header::CONNECTION {
            resp = resp.header(k, v);
        }
    }
    let bytes = answer.bytes().await.expect("a response body");
    resp.body(Body::from(bytes)).expect("a response")
}

/// Starts a recording proxy to `upstream` on 127.0.0.1; returns its URL and the log.
async fn proxy(upstream: &str) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        client: reqwest::Client::new(),
        seen: seen.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

/// A fresh bucket or table name (lowercase, at most 63 characters).
fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

/// Every `Store` method, with every condition, answered both ways.
async fn exercise(s: &DynStore) {
    let body = |b: &'static str| Bytes::from_static(b.as_bytes());
    let v1 = s
        .put("a", body("1"), PutOptions::if_absent())
        .await
        .unwrap();
    let err = s
        .put("a", body("x"), PutOptions::if_absent())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let v2 = s
        .put("a", body("2"), PutOptions::if_matches(v1.clone()))
        .await
        .unwrap();
    let err = s
        .put("a", body("3"), PutOptions::if_matches(v1.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let meta = [("owner".to_string(), "t".to_string())]
        .into_iter()
        .collect();
    s.put(
        "dir/b",
        body("b"),
        PutOptions::any()
            .with_metadata(meta)
            .with_expiry(Some(4_000_000_000)),
    )
    .await
    .unwrap();
    assert_eq!(s.get("a").await.unwrap().body, body("2"));
    assert!(matches!(
        s.get("missing").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(s.get_if_changed("a", &v2).await.unwrap(), Fetch::Unchanged);
    assert!(matches!(
        s.get_if_changed("a", &v1).await.unwrap(),
        Fetch::Changed(_)
    ));
    assert_eq!(s.head("dir/b").await.unwrap().size, 1);
    let first = s
        .list(
            "",
            ListPage {
                token: None,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.entries.len(), 1);
    let rest = s
        .list(
            "",
            ListPage {
                token: first.next.clone(),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.entries.len() + rest.entries.len(), 2);
    assert_eq!(
        s.list("dir/", ListPage::default())
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
    let err = s.delete("a", Condition::Matches(v1)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    s.delete("a", Condition::Matches(v2)).await.unwrap();
    s.delete("dir/b", Condition::Any).await.unwrap();
    s.delete("a", Condition::Absent).await.unwrap();
}

/// The IAM action an S3 REST request needs, and the object key or list prefix it touches.
fn s3_action(r: &Seen, bucket: &str) -> (String, String) {
    let rest = r
        .path
        .strip_prefix(&format!("/{bucket}"))
        .expect("path-style, in the bucket");
    let object = rest.trim_start_matches('/');
    if object.is_empty() {
        let prefix = r
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("prefix="))
            .unwrap_or("")
            .replace("%2F", "/");
        let action = match r.method.as_str() {
            "GET" if r.query.contains("list-type=2") => "s3:ListBucket",
            _ => "s3:<bucket operation>",
        };
        return (action.to_string(), prefix);
    }
    let action = match r.method.as_str() {
        "GET" | "HEAD" => "s3:GetObject",
        // PutObject, and multipart uploads (POST, PUT ?partNumber) alike.
        "PUT" | "POST" => "s3:PutObject",
        "DELETE" => "s3:DeleteObject",
        _ => "s3:<object operation>",
    };
    (action.to_string(), object.replace("%2F", "/"))
}

#[tokio::test]
async fn every_s3_store_call_needs_only_the_declared_actions_on_the_prefix() {
    let Some(moto) = endpoint("IFMATCH_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = unique("iam");
    S3Store::open(&format!("s3://{bucket}?endpoint={moto}"))
        .await
        .unwrap()
        .create_bucket()
        .await
        .unwrap();
    let (url, seen) = proxy(&moto).await;
    let store: DynStore = Arc::new(
        S3Store::open(&format!("s3://{bucket}/pre?endpoint={url}"))
            .await
            .unwrap(),
    );
    exercise(&store).await;

    let mut used = BTreeSet::new();
    for r in seen.lock().unwrap().iter() {
        let (action, key) = s3_action(r, &bucket);
        assert!(key.starts_with("pre/"), "{r:?} reaches outside the prefix");
        used.insert(action);
    }
    let declared: BTreeSet<String> = s3::IAM_OBJECT_ACTIONS
        .iter()
        .chain(s3::IAM_BUCKET_ACTIONS)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        used, declared,
        "the S3 store's requests vs. its declared IAM actions"
    );
}

#[tokio::test]
async fn every_dynamodb_store_call_needs_only_the_declared_actions() {
    let Some(dynalite) = endpoint("IFMATCH_TEST_DYNAMODB_ENDPOINT") else {
        return;
    };
    let table = unique("iam");
    DynamoStore::open(&format!(
        "dynamodb://{table}?create=true&endpoint={dynalite}"
    ))
    .await
    .unwrap();
    let (url, seen) = proxy(&dynalite).await;
    let store: DynStore = Arc::new(
        DynamoStore::open(&format!("dynamodb://{table}?endpoint={url}"))
            .await
            .unwrap(),
    );
    exercise(&store).await;

    let used: BTreeSet<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            let target = r
                .target
                .as_deref()
                .expect("DynamoDB requests name their operation");
            let op = target.rsplit('.').next().unwrap_or(target);
            format!("dynamodb:{op}")
        })
        .collect();
    assert_eq!(
        used,
        set(dynamodb::IAM_ACTIONS),
        "the DynamoDB store's requests vs. its declared IAM actions"
    );
}
