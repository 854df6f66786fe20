//! End-to-end tests of the primitives' subcommands (`lease`, `idem`, `user`,
//! `snapshot`, `gc`) on a `file://` store in a temporary directory. Each `ifmatch`
//! run is a separate process, like a fleet of stateless workers.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

struct Store {
    dir: TempDir,
    url: String,
}

fn store() -> Store {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("file://{}", dir.path().join("store").display());
    Store { dir, url }
}

fn run_in(store: &Store, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ifmatch"))
        .env_remove("RUST_LOG")
        .env_remove("IFMATCH_STORE")
        .arg("--store")
        .arg(&store.url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ifmatch");
    match child.stdin.take().expect("stdin").write_all(stdin) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().expect("wait for ifmatch")
}

/// Runs `f` to completion on a fresh single-threaded runtime, for checking a
/// command's effect through the library.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn run(store: &Store, args: &[&str]) -> Output {
    run_in(store, args, b"")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

/// Asserts the exit code and exactly one `ifmatch: ` line on stderr; returns that line.
#[track_caller]
fn fails(o: Output, expected: i32) -> String {
    let err = stderr(&o);
    assert_eq!(code(&o), expected, "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {err:?}");
    assert!(lines[0].starts_with("ifmatch: "), "{err:?}");
    assert!(!err.contains("panicked"), "{err:?}");
    lines[0].to_string()
}

/// The value of a `name: value` line.
#[track_caller]
fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {out:?}"))
        .to_string()
}

fn write_file(s: &Store, name: &str, body: &str) -> String {
    let path = s.dir.path().join(name);
    std::fs::write(&path, body).expect("write file");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn lease_acquire_show_conflict_release_and_fencing() {
    let s = store();
    let handle = ok(run(
        &s,
        &["lease", "acquire", "nightly", "--ttl", "30s", "--json"],
    ));
    assert_eq!(handle.lines().count(), 1, "{handle:?}");
    let lease: serde_json::Value = serde_json::from_str(&handle).unwrap();
    let owner = lease["owner"].as_str().unwrap().to_string();
    let token = lease["token"].as_u64().unwrap();
    let file = write_file(&s, "lease.json", &handle);

    let show = ok(run(&s, &["lease", "show", "nightly"]));
    assert_eq!(field(&show, "holder"), owner);
    assert_eq!(field(&show, "token"), token.to_string());
    assert_eq!(field(&show, "state"), "held");
    assert!(field(&show, "expires_at").contains(" (in "), "{show}");

    // Another "process" is told who holds it and for how long.
    let line = fails(run(&s, &["lease", "acquire", "nightly"]), 3);
    assert!(line.contains(&owner), "{line}");
    assert!(line.contains("expires in"), "{line}");

    // Renew with the handle (from standard input) works; the human output has the lines.
    let renewed = ok(run_in(
        &s,
        &["lease", "renew", "nightly", "--lease-json", "-"],
        handle.as_bytes(),
    ));
    assert_eq!(field(&renewed, "owner"), owner);
    assert_eq!(field(&renewed, "token"), token.to_string());
    field(&renewed, "expires_at");

    ok(run(
        &s,
        &["lease", "release", "nightly", "--lease-json", &file],
    ));
    let show = ok(run(&s, &["lease", "show", "nightly"]));
    assert_eq!(field(&show, "state"), "released");
    // Releasing twice is fine.
    ok(run(
        &s,
        &["lease", "release", "nightly", "--lease-json", &file],
    ));

    let next = ok(run(&s, &["lease", "acquire", "nightly", "--ttl", "1m"]));
    let next_owner = field(&next, "owner");
    let next_token: u64 = field(&next, "token").parse().unwrap();
    assert!(next_token > token, "{next_token} > {token}");
    assert_ne!(next_owner, owner);

    // The old holder is no longer the owner: renew and release exit 3.
    let line = fails(
        run(&s, &["lease", "renew", "nightly", "--lease-json", &file]),
        3,
    );
    assert!(line.contains("not held by"), "{line}");
    let line = fails(
        run(&s, &["lease", "release", "nightly", "--lease-json", &file]),
        3,
    );
    assert!(line.contains(&next_owner), "{line}");
    assert_eq!(
        field(&ok(run(&s, &["lease", "show", "nightly"])), "state"),
        "held"
    );
}

#[test]
fn lease_usage_errors() {
    let s = store();
    fails(run(&s, &["lease", "show", "never"]), 4);
    let o = run(&s, &["lease", "acquire", "x", "--ttl", "soon"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let handle = ok(run(&s, &["lease", "acquire", "a", "--json"]));
    let line = fails(
        run_in(
            &s,
            &["lease", "release", "b", "--lease-json", "-"],
            handle.as_bytes(),
        ),
        2,
    );
    assert!(line.contains("'a'"), "{line}");
    fails(
        run_in(
            &s,
            &["lease", "release", "a", "--lease-json", "-"],
            b"not json",
        ),
        2,
    );
}

#[test]
fn idem_show_prints_a_record_run_through_the_library() {
    use ifmatch::idempotency::Idempotency;
    let s = store();
    block_on(async {
        let store = ifmatch::store::open(&s.url).await.unwrap();
        let idem = Idempotency::new(store);
        let payload = serde_json::json!({"request_id": "r-1"});
        idem.run("shots/r-1", &payload, || async {
            Ok::<_, std::io::Error>("s3://shots/r-1.png".to_string())
        })
        .await
        .unwrap();
    });
    let out = ok(run(&s, &["idem", "show", "shots/r-1"]));
    assert_eq!(field(&out, "state"), "completed");
    let hash = ifmatch::idempotency::payload_hash(&serde_json::json!({"request_id": "r-1"}));
    assert_eq!(field(&out, "payload_hash"), hash.unwrap());
    assert_eq!(field(&out, "result"), r#""s3://shots/r-1.png""#);
    for f in ["claimed_at", "updated_at", "expires_at", "version"] {
        field(&out, f);
    }
    fails(run(&s, &["idem", "show", "shots/none"]), 4);
}

#[test]
fn user_add_ls_passwd_rm() {
    let s = store();
    assert_eq!(
        ok(run_in(
            &s,
            &["user", "add", "Alice", "--name", "Alice Smith"],
            b"correct horse\n"
        )),
        "alice\n"
    );
    ok(run_in(
        &s,
        &["user", "add", "bob", "--name", "Bob"],
        b"battery staple",
    ));
    let line = fails(
        run_in(
            &s,
            &["user", "add", "alice", "--name", "Other"],
            b"another pass\n",
        ),
        3,
    );
    assert!(line.contains("already exists"), "{line}");
    let line = fails(
        run_in(&s, &["user", "add", "carol", "--name", "Carol"], b"short\n"),
        2,
    );
    assert!(line.contains("password is too short"), "{line}");
    fails(
        run_in(&s, &["user", "add", "x", "--name", "X"], b"long enough\n"),
        2,
    );
    fails(run_in(&s, &["user", "add", "dave", "--name", "D"], b""), 2);

    let ls = ok(run(&s, &["user", "ls"]));
    let names: Vec<&str> = ls.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(
        ls.lines().next().unwrap().contains("\tAlice Smith\t"),
        "{ls}"
    );
    assert!(!ls.contains("$argon2"), "never a hash: {ls}");
    // Page tokens are followed; --limit stops early.
    let paged = ok(run(&s, &["user", "ls", "--page-size", "1"]));
    assert_eq!(paged, ls);
    assert_eq!(
        ok(run(&s, &["user", "ls", "--limit", "1"])).lines().count(),
        1
    );

    ok(run_in(
        &s,
        &["user", "passwd", "alice"],
        b"new password 1\n",
    ));
    block_on(async {
        let store = ifmatch::store::open(&s.url).await.unwrap();
        let accounts = ifmatch::accounts::Accounts::new(store, Default::default()).unwrap();
        accounts
            .authenticate("alice", "new password 1")
            .await
            .unwrap();
        assert!(
            accounts
                .authenticate("alice", "correct horse")
                .await
                .is_err()
        );
    });
    fails(run_in(&s, &["user", "passwd", "alice"], b"tiny\n"), 2);
    fails(
        run_in(&s, &["user", "passwd", "nobody"], b"new password 1\n"),
        4,
    );

    ok(run(&s, &["user", "rm", "bob"]));
    fails(run(&s, &["user", "rm", "bob"]), 4);
    assert_eq!(ok(run(&s, &["user", "ls"])).lines().count(), 1);
}

/// `user migrate` on a store written before account ids, `user show`, and
/// `gc` removing an expired record.
#[test]
fn user_migrate_show_and_gc() {
    let s = store();
    let legacy = br#"{"format":1,"username":"olga","name":"Olga","password_hash":"$2b$04$abcdefghijklmnopqrstuuN1kDWfjK1UUSD3F1gYKVMhCNh7sQV3u","created_at":"2025-01-01T00:00:00.000Z"}"#;
    ok(run_in(&s, &["put", "users/olga"], legacy));
    ok(run_in(&s, &["put", "users/olga/notes"], b"hers"));
    let dry = ok(run(&s, &["user", "migrate", "--dry-run"]));
    assert!(
        dry.contains("migrated olga\n") && dry.starts_with("migrated"),
        "{dry}"
    );
    assert!(dry.contains("dry run: 1 migrated"), "{dry}");
    fails(run(&s, &["user", "show", "olga"]), 4);
    let out = ok(run(&s, &["user", "migrate"]));
    assert!(
        out.contains("1 migrated, 0 finished, 0 skipped (2 keys"),
        "{out}"
    );
    let again = ok(run(&s, &["user", "migrate"]));
    assert!(
        again.contains("0 migrated, 0 finished, 0 skipped"),
        "{again}"
    );
    let show = ok(run(&s, &["user", "show", "olga"]));
    assert!(
        show.starts_with("id: olga\nprefix: users/olga/\nname: Olga\nrevision: 1\n"),
        "{show}"
    );
    assert_eq!(ok(run(&s, &["get", "users/olga/notes"])), "hers");
    let ls = ok(run(&s, &["user", "ls"]));
    assert!(
        ls.starts_with("olga\tOlga\t") && ls.ends_with("\tolga\n"),
        "{ls}"
    );

    // An expired session record (written as the server writes them) goes.
    block_on(async {
        let store = ifmatch::store::open(&s.url).await.unwrap();
        let expired = ifmatch::PutOptions::any().with_expiry(Some(1));
        store
            .put("sessions/old", "{}".into(), expired)
            .await
            .unwrap();
    });
    let report = ok(run(&s, &["gc", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    fails(run(&s, &["get", "sessions/old"]), 4);
}

#[test]
fn snapshot_publish_versions_get_rollback() {
    let s = store();
    let first = write_file(&s, "v1.json", "{\"quotes\":1}");
    assert_eq!(
        ok(run(&s, &["snapshot", "publish", "quotes", &first])),
        "1\n"
    );
    assert_eq!(
        ok(run_in(
            &s,
            &["snapshot", "publish", "quotes", "-"],
            b"{\"quotes\":2}"
        )),
        "2\n"
    );
    let versions = ok(run(&s, &["snapshot", "versions", "quotes"]));
    let nums: Vec<&str> = versions
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(nums, ["2", "1"]);
    assert_eq!(
        versions.lines().next().unwrap().split('\t').nth(1),
        Some("12")
    );

    assert_eq!(
        run(&s, &["snapshot", "get", "quotes"]).stdout,
        b"{\"quotes\":2}"
    );
    assert_eq!(
        run(&s, &["snapshot", "get", "quotes", "--version", "1"]).stdout,
        b"{\"quotes\":1}"
    );

    assert_eq!(ok(run(&s, &["snapshot", "rollback", "quotes", "1"])), "3\n");
    assert_eq!(
        run(&s, &["snapshot", "get", "quotes"]).stdout,
        b"{\"quotes\":1}"
    );
    let versions = ok(run(&s, &["snapshot", "versions", "quotes"]));
    assert!(
        versions
            .lines()
            .next()
            .unwrap()
            .ends_with("\trollback of 1"),
        "{versions}"
    );

    fails(run(&s, &["snapshot", "get", "quotes", "--version", "9"]), 4);
    fails(run(&s, &["snapshot", "get", "nothing"]), 4);
    fails(run(&s, &["snapshot", "versions", "nothing"]), 4);
    fails(run(&s, &["snapshot", "publish", "bad/name", "-"]), 2);
}

#[test]
fn every_new_command_has_help_with_an_example() {
    let s = store();
    for cmd in [
        &["lease", "acquire"][..],
        &["lease", "renew"],
        &["lease", "release"],
        &["lease", "show"],
        &["idem", "show"],
        &["user", "add"],
        &["user", "passwd"],
        &["user", "rm"],
        &["user", "ls"],
        &["snapshot", "publish"],
        &["snapshot", "get"],
        &["snapshot", "versions"],
        &["snapshot", "rollback"],
        &["lease"],
        &["idem"],
        &["user"],
        &["snapshot"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = ok(run(&s, &args));
        assert!(out.contains("Example:"), "{cmd:?}: {out}");
    }
    let help = ok(run(&s, &["--help"]));
    assert!(
        help.contains("a lease") && help.contains("user already exists"),
        "{help}"
    );
}
