//! The subcommands: parse nothing, decide nothing, call the store and render.
//!
//! Reads and conditional writes retry only transient errors
//! ([`ifmatch::Error::is_retryable`]: the request did not land) within the
//! default [`RetryPolicy`]; a conflict is never retried here — it is the
//! caller's signal (exit code 3) to re-read and decide again.

use std::io::{IsTerminal, Read, Write};

use bytes::Bytes;
use ifmatch::retry::RetryPolicy;
use ifmatch::store::{ListPage, Metadata};
use ifmatch::{Condition, DynStore, PutOptions, Version};

use crate::cli::{GetArgs, HeadArgs, LsArgs, PutArgs, RmArgs};
use crate::exit::Failure;

/// `get KEY`: the value's bytes on standard output.
pub async fn get(store: &DynStore, args: &GetArgs) -> Result<(), Failure> {
    let policy = RetryPolicy::default();
    let obj = policy.run(|| store.get(&args.key)).await?;
    tracing::debug!(key = %args.key, version = %obj.meta.version, size = obj.meta.size, "read");
    write_stdout(&obj.body)
}

/// `put KEY [FILE]`: writes the value and prints the new version.
pub async fn put(store: &DynStore, args: &PutArgs) -> Result<(), Failure> {
    let mut metadata = Metadata::new();
    for (name, value) in &args.meta {
        if metadata.insert(name.clone(), value.clone()).is_some() {
            return Err(Failure::Usage(format!(
                "metadata name '{name}' is given more than once"
            )));
        }
    }
    ifmatch::key::validate_metadata(&metadata)?;
    let condition = match (&args.if_match, args.if_absent) {
        (Some(v), _) => Condition::Matches(Version::new(v.clone())),
        (None, true) => Condition::Absent,
        (None, false) => Condition::Any,
    };
    // Check the key before waiting on standard input for a value that would be refused.
    ifmatch::key::validate_key(&args.key)?;
    let body = read_value(args.file.as_deref())?;
    let opts = PutOptions {
        condition,
        metadata,
        expires_at: None,
    };
    let policy = RetryPolicy::default();
    let version = policy
        .run(|| store.put(&args.key, body.clone(), opts.clone()))
        .await?;
    tracing::debug!(key = %args.key, %version, "written");
    write_stdout(format!("{version}\n").as_bytes())
}

/// `head KEY`: version, `size: N`, then `name: value` metadata lines.
pub async fn head(store: &DynStore, args: &HeadArgs) -> Result<(), Failure> {
    let policy = RetryPolicy::default();
    let meta = policy.run(|| store.head(&args.key)).await?;
    let mut out = format!("{}\nsize: {}\n", meta.version, meta.size);
    for (name, value) in &meta.metadata {
        out.push_str(&format!("{name}: {value}\n"));
    }
    write_stdout(out.as_bytes())
}

/// `rm KEY`: deletes, conditionally with `--if-match`.
pub async fn rm(store: &DynStore, args: &RmArgs) -> Result<(), Failure> {
    let condition = match &args.if_match {
        Some(v) => Condition::Matches(Version::new(v.clone())),
        None => Condition::Any,
    };
    let policy = RetryPolicy::default();
    policy
        .run(|| store.delete(&args.key, condition.clone()))
        .await?;
    tracing::debug!(key = %args.key, "deleted");
    Ok(())
}

/// `ls [PREFIX]`: one key per line (or a JSON array), following continuation tokens.
pub async fn ls(store: &DynStore, args: &LsArgs) -> Result<(), Failure> {
    let policy = RetryPolicy::default();
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    let mut token: Option<String> = None;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // JSON is written as it is listed: '[', the objects separated by ',', ']'.
    let mut separator = "[";
    while remaining > 0 {
        let limit = remaining.min(args.page_size) as usize;
        let page = policy
            .run(|| {
                store.list(
                    &args.prefix,
                    ListPage {
                        token: token.clone(),
                        limit,
                    },
                )
            })
            .await?;
        for entry in page.entries.iter().take(limit) {
            let line = if args.json {
                let object = serde_json::json!({
                    "key": entry.key,
                    "version": entry.version.as_str(),
                    "size": entry.size,
                });
                let line = format!("{separator}{object}\n");
                separator = ",";
                line
            } else if args.long {
                format!("{}\t{}\t{}\n", entry.key, entry.version, entry.size)
            } else {
                format!("{}\n", entry.key)
            };
            out.write_all(line.as_bytes()).map_err(output_error)?;
            remaining -= 1;
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    if args.json {
        let end = if separator == "[" { "[]\n" } else { "]\n" };
        out.write_all(end.as_bytes()).map_err(output_error)?;
    }
    out.flush().map_err(output_error)
}

/// Reads the value to put: a file, or standard input for `None` and `-`.
pub(crate) fn read_value(file: Option<&std::path::Path>) -> Result<Bytes, Failure> {
    match file {
        Some(p) if p.as_os_str() != "-" => std::fs::read(p)
            .map(Bytes::from)
            .map_err(|e| Failure::io(format!("cannot read {}", p.display()), e)),
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("ifmatch: reading the value from standard input (end it with Ctrl-D)");
            }
            let mut buf = Vec::new();
            stdin
                .lock()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::io("cannot read standard input", e))?;
            Ok(Bytes::from(buf))
        }
    }
}

/// Parses a duration like `30s`, `500ms` or `2m` (for clap).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s, 500ms, 2m)"))
}

/// A time as RFC 3339 in UTC with milliseconds.
pub fn render_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Writes to standard output and flushes (a closed pipe ends the command quietly).
pub fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    lock.write_all(bytes)
        .and_then(|()| lock.flush())
        .map_err(output_error)
}

/// A closed pipe (`ifmatch ls | head`) ends the command quietly; anything else is an error.
fn output_error(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::Reported(crate::exit::OK)
    } else {
        Failure::io("cannot write to standard output", e)
    }
}

/// A spinner with a message on standard error while long work runs (drawn
/// only on a terminal); `finish_and_clear` it when done.
pub fn spinner(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
