//! End-to-end tests of the `ifmatch` binary on a `file://` store in a temporary directory.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use tempfile::TempDir;

/// A fresh file store in a temporary directory.
struct Store {
    _dir: TempDir,
    url: String,
}

fn store() -> Store {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("file://{}", dir.path().join("store").display());
    Store { _dir: dir, url }
}

/// The binary with a clean environment and `--store` set.
fn ifmatch(store: &Store) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ifmatch"));
    c.env_remove("RUST_LOG")
        .env_remove("IFMATCH_STORE")
        .arg("--store")
        .arg(&store.url);
    c
}

/// Runs `ifmatch ARGS` with `stdin` as standard input.
fn run_in(store: &Store, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = ifmatch(store)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ifmatch");
    // The binary may exit before reading its input (a usage error): a broken pipe is fine.
    match child.stdin.take().expect("stdin").write_all(stdin) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().expect("wait for ifmatch")
}

fn run(store: &Store, args: &[&str]) -> Output {
    run_in(store, args, b"")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(o: Output) -> String {
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    stdout(&o)
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

/// `put` and return the printed version.
#[track_caller]
fn put(s: &Store, key: &str, value: &[u8], extra: &[&str]) -> String {
    let mut args = vec!["put", key];
    args.extend_from_slice(extra);
    let out = ok(run_in(s, &args, value));
    assert!(out.ends_with('\n') && out.lines().count() == 1, "{out:?}");
    out.trim_end().to_string()
}

#[test]
fn put_get_round_trip_is_binary_safe() {
    let s = store();
    let value: Vec<u8> = (0..=255u8).chain(b"\n\r\0 end\n".iter().copied()).collect();
    put(&s, "bin/blob", &value, &[]);
    let got = run(&s, &["get", "bin/blob"]);
    assert_eq!(code(&got), 0);
    assert_eq!(got.stdout, value, "exact bytes, no newline added");

    // From a file and from '-'.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value.bin");
    std::fs::write(&file, b"from a file").unwrap();
    put(&s, "f", b"", &[file.to_str().unwrap()]);
    assert_eq!(run(&s, &["get", "f"]).stdout, b"from a file");
    put(&s, "f", b"from stdin", &["-"]);
    assert_eq!(run(&s, &["get", "f"]).stdout, b"from stdin");
    // An empty value is a value.
    put(&s, "empty", b"", &[]);
    let got = run(&s, &["get", "empty"]);
    assert_eq!((code(&got), got.stdout.len()), (0, 0));
}

#[test]
fn second_if_absent_put_is_a_conflict_naming_the_key() {
    let s = store();
    put(&s, "jobs/42", b"first", &["--if-absent"]);
    let o = run_in(&s, &["put", "jobs/42", "--if-absent"], b"second");
    assert!(o.stdout.is_empty());
    let line = fails(o, 3);
    assert!(line.contains("conflict"), "{line}");
    assert!(line.contains("'jobs/42'"), "{line}");
    assert_eq!(run(&s, &["get", "jobs/42"]).stdout, b"first");
}

#[test]
fn stale_if_match_is_a_conflict() {
    let s = store();
    let v1 = put(&s, "k", b"one", &[]);
    let v2 = put(&s, "k", b"two", &["--if-match", &v1]);
    assert_ne!(v1, v2);
    let line = fails(run_in(&s, &["put", "k", "--if-match", &v1], b"lost"), 3);
    assert!(line.contains("'k'") && line.contains(&v2), "{line}");
    assert_eq!(run(&s, &["get", "k"]).stdout, b"two");
    // If-Match on a missing key is a conflict too.
    fails(run_in(&s, &["put", "nope", "--if-match", &v2], b"x"), 3);
    // --if-match and --if-absent exclude each other: a usage error.
    let o = run_in(&s, &["put", "k", "--if-match", &v2, "--if-absent"], b"x");
    assert_eq!(code(&o), 2);
}

#[test]
fn head_prints_version_size_and_metadata() {
    let s = store();
    let v = put(
        &s,
        "doc",
        b"hello",
        &["--meta", "writer=cron job", "--meta", "a-b=x=y"],
    );
    let out = ok(run(&s, &["head", "doc"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [v.as_str(), "size: 5", "a-b: x=y", "writer: cron job"]
    );
    // A put replaces the metadata.
    let v2 = put(&s, "doc", b"hi", &["--if-match", &v]);
    let out = ok(run(&s, &["head", "doc"]));
    assert_eq!(out, format!("{v2}\nsize: 2\n"));
    // Bad and reserved metadata names are usage errors.
    fails(run_in(&s, &["put", "doc", "--meta", "Upper=x"], b"x"), 2);
    assert_eq!(
        code(&run_in(
            &s,
            &["put", "doc", "--meta", "ifmatch-wid=x"],
            b"x"
        )),
        2
    );
    fails(run(&s, &["head", "missing"]), 4);
}

#[test]
fn rm_honours_if_match() {
    let s = store();
    let v1 = put(&s, "lock", b"a", &[]);
    let v2 = put(&s, "lock", b"b", &[]);
    let line = fails(run(&s, &["rm", "lock", "--if-match", &v1]), 3);
    assert!(line.contains("'lock'"), "{line}");
    assert_eq!(run(&s, &["get", "lock"]).stdout, b"b");
    ok(run(&s, &["rm", "lock", "--if-match", &v2]));
    fails(run(&s, &["get", "lock"]), 4);
    // Conditional delete of a missing key conflicts; unconditional is idempotent.
    fails(run(&s, &["rm", "lock", "--if-match", &v2]), 3);
    ok(run(&s, &["rm", "lock"]));
    // --if-absent makes no sense for rm and is not offered.
    assert_eq!(code(&run(&s, &["rm", "lock", "--if-absent"])), 2);
}

#[test]
fn ls_lists_by_prefix_and_follows_tokens() {
    let s = store();
    for k in ["a/1", "a/2", "a/sub/3", "ab", "b/1"] {
        put(&s, k, k.as_bytes(), &[]);
    }
    let all = ok(run(&s, &["ls"]));
    assert_eq!(all, "a/1\na/2\na/sub/3\nab\nb/1\n");
    assert_eq!(ok(run(&s, &["ls", "a/"])), "a/1\na/2\na/sub/3\n");
    assert_eq!(ok(run(&s, &["ls", "a"])), "a/1\na/2\na/sub/3\nab\n");
    assert_eq!(ok(run(&s, &["ls", "zzz"])), "");
    // Pages of 2 keys: the continuation tokens are followed to the end.
    assert_eq!(ok(run(&s, &["ls", "--page-size", "2"])), all);
    assert_eq!(
        ok(run(&s, &["ls", "--page-size", "2", "--limit", "3"])),
        "a/1\na/2\na/sub/3\n"
    );
    assert_eq!(ok(run(&s, &["ls", "--limit", "1"])), "a/1\n");
    let long = ok(run(&s, &["ls", "--long", "b/"]));
    let fields: Vec<&str> = long.trim_end().split('\t').collect();
    let head = ok(run(&s, &["head", "b/1"]));
    assert_eq!(fields, ["b/1", head.lines().next().unwrap(), "3"]);
    assert_eq!(code(&run(&s, &["ls", "--limit", "0"])), 2);
}

#[test]
fn ls_json_is_one_array_with_versions_and_sizes() {
    let s = store();
    assert_eq!(ok(run(&s, &["ls", "--json"])), "[]\n");
    let v1 = put(&s, "a/1", b"one", &[]);
    let v2 = put(&s, "a/2", b"three", &[]);
    put(&s, "b/1", b"x", &[]);
    let out = ok(run(&s, &["ls", "a/", "--json", "--page-size", "1"]));
    let parsed: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(
        parsed,
        serde_json::json!([
            {"key": "a/1", "version": v1, "size": 3},
            {"key": "a/2", "version": v2, "size": 5},
        ])
    );
    let out = ok(run(&s, &["ls", "--json", "--limit", "1"]));
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 1);
    assert_eq!(code(&run(&s, &["ls", "--json", "--long"])), 2);
}

#[test]
fn usage_errors_exit_2() {
    let s = store();
    for args in [
        &["frobnicate"][..],
        &["put"],
        &["get"],
        &["get", "a", "b"],
        &["--log-format", "xml", "ls"],
    ] {
        let o = run(&s, args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    let o = run(&s, &["--help"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("Exit codes:"));
    for cmd in ["get", "put", "head", "rm", "ls", "doctor"] {
        let o = run(&s, &[cmd, "--help"]);
        assert_eq!(code(&o), 0, "{cmd}");
        assert!(stdout(&o).len() > 200, "{cmd} has real help");
    }
}

#[test]
fn missing_key_exits_4_with_one_line() {
    let s = store();
    let line = fails(run(&s, &["get", "nope"]), 4);
    assert_eq!(line, "ifmatch: key 'nope' not found");
}

#[test]
fn invalid_key_is_a_clear_usage_error() {
    let s = store();
    let line = fails(run(&s, &["get", "../x"]), 2);
    assert!(
        line.contains("invalid key") && line.contains("../x"),
        "{line}"
    );
    let o = run_in(&s, &["put", "../x"], b"x");
    let line = fails(o, 2);
    assert!(line.contains("'..'"), "{line}");
    fails(run(&s, &["put", "/abs", "/dev/null"]), 2);
    // A bad store URL too.
    let o = Command::new(env!("CARGO_BIN_EXE_ifmatch"))
        .args(["--store", "ftp://x", "get", "k"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let line = fails(o, 2);
    assert!(line.contains("unknown store scheme"), "{line}");
}

#[test]
fn store_comes_from_the_environment() {
    let s = store();
    let mut c = Command::new(env!("CARGO_BIN_EXE_ifmatch"));
    let o = c
        .env("IFMATCH_STORE", &s.url)
        .env_remove("RUST_LOG")
        .args(["put", "env-key", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(ok(run(&s, &["ls"])), "env-key\n");
}

#[test]
fn doctor_passes_on_a_file_store_and_cleans_up() {
    let s = store();
    put(&s, "user/data", b"keep me", &[]);
    let out = ok(run(&s, &["doctor"]));
    assert!(out.contains("All 7 checks passed"), "{out}");
    assert_eq!(out.matches("PASS").count(), 7, "{out}");
    let o = run(&s, &["doctor", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    assert_eq!(code(&o), 0, "{json:#}");
    assert_eq!(json["passed"], true);
    assert_eq!(json["checks"].as_array().unwrap().len(), 7);
    assert_eq!(json["race"]["final_value"], 200);
    // Only the user's key is left.
    assert_eq!(ok(run(&s, &["ls"])), "user/data\n");
}

/// The acceptance test: three shell loops increment one key 30 times each
/// (`head` for the version, `get`, `put --if-match`, retry on exit 3) and
/// the key ends at exactly 90.
#[test]
fn three_shell_loops_increment_to_exactly_90() {
    let s = store();
    let script = r#"
set -u
ERR=$(mktemp)
trap 'rm -f "$ERR"' EXIT
n=0
conflicts=0
while [ "$n" -lt 30 ]; do
  if out=$("$BIN" head counter 2>"$ERR"); then
    v=${out%%$'\n'*}
    cur=$("$BIN" get counter) || exit 10
    printf %s "$((cur + 1))" | "$BIN" put counter --if-match "$v" >/dev/null 2>"$ERR"
    rc=$?
  else
    rc=$?
    [ "$rc" -eq 4 ] || { echo "head exited $rc: $(cat "$ERR")" >&2; exit 11; }
    printf 1 | "$BIN" put counter --if-absent >/dev/null 2>"$ERR"
    rc=$?
  fi
  case $rc in
    0) n=$((n + 1)) ;;
    3) conflicts=$((conflicts + 1)) ;;
    *) echo "put exited $rc: $(cat "$ERR")" >&2; exit 12 ;;
  esac
done
echo "$conflicts"
"#;
    let started = Instant::now();
    let loops: Vec<_> = (0..3)
        .map(|_| {
            Command::new("bash")
                .arg("-c")
                .arg(script)
                .env("BIN", env!("CARGO_BIN_EXE_ifmatch"))
                .env("IFMATCH_STORE", &s.url)
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn bash")
        })
        .collect();
    let mut conflicts = 0u64;
    for child in loops {
        let o = child.wait_with_output().unwrap();
        assert_eq!(code(&o), 0, "loop failed: {}", stderr(&o));
        conflicts += stdout(&o).trim().parse::<u64>().unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!("3 shell loops x 30 increments: {elapsed:.2?}, {conflicts} conflicts retried");
    assert_eq!(run(&s, &["get", "counter"]).stdout, b"90");
}

/// Processes that start at once on a store directory that does not exist yet
/// must all open it (none may see the others' half-made layout as a foreign directory).
#[test]
fn concurrent_first_use_of_a_new_store_directory() {
    for round in 0..40 {
        let s = store();
        let children: Vec<_> = (0..8)
            .map(|_| {
                ifmatch(&s)
                    .args(["head", "k"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn ifmatch")
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().unwrap();
            assert_eq!(code(&o), 4, "round {round}: {}", stderr(&o));
        }
    }
}
