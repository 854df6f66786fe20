//! The command line: clap definitions of the global options and the subcommands.
//!
//! Parsing only; what each command does lives in [`crate::commands`] and
//! [`crate::doctor`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit-code table, shown at the end of `ifmatch --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  error: store unavailable, outcome unknown, I/O error, a doctor check failed
  2  usage: bad arguments, an invalid key, metadata or store URL
  3  conflict: an --if-match or --if-absent condition did not hold, a lease
     is held by another (or you are not its owner), a user already exists,
     an idempotency key is in progress or was used for another payload
  4  not found: the key, lease, idempotency record, user, snapshot or
     snapshot version does not exist";

const LONG_ABOUT: &str = "\
Compare-and-swap on versioned keys, from the shell.

A key holds bytes, a little metadata and an opaque version. Every write may
name a condition: --if-absent (create only) or --if-match V (only if the key
is still at version V). A write whose condition does not hold is rejected with
exit code 3 and nothing is overwritten, so concurrent scripts can re-read and
retry instead of losing each other's updates.

Example, a safe increment of an existing counter that any number of
processes can run at once (exit code 3 means someone else won: try again):

  until v=$(ifmatch head counter | head -n1) &&
        n=$(ifmatch get counter) &&
        printf %s $((n + 1)) | ifmatch put counter --if-match \"$v\" >/dev/null
  do [ $? -eq 3 ] || exit 1; done";

/// `ifmatch`: compare-and-swap on versioned keys over any store URL.
#[derive(Debug, Parser)]
#[command(
    name = "ifmatch",
    version,
    about = "Compare-and-swap on versioned keys, from the shell",
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES_HELP,
    after_long_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// The store: file://DIR, memory:// (this process only), s3://BUCKET[/PREFIX]
    /// or dynamodb://TABLE. AWS settings come from the standard AWS environment.
    #[arg(
        long,
        global = true,
        env = "IFMATCH_STORE",
        default_value = "file://./ifmatch-data",
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub store: String,

    /// Log format on standard error (the level comes from RUST_LOG, default warn).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Human,
        value_name = "FORMAT",
        help_heading = "Global options"
    )]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines on standard error look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a key's value on standard output (exactly its bytes).
    #[command(long_about = "\
Print a key's value on standard output: exactly its bytes, binary-safe, with
no newline added. Exits 4 if the key does not exist.

Example:
  ifmatch get config/app.json > app.json")]
    Get(GetArgs),

    /// Write a key's value from a file or standard input; print the new version.
    #[command(long_about = "\
Write a key's value, read from FILE or from standard input (no FILE, or '-'),
and print the new version on standard output.

With --if-absent the write lands only if the key does not exist yet; with
--if-match V only if the key is still at version V. When the condition does
not hold nothing is written and the exit code is 3: re-read and try again.
Metadata given with --meta replaces the key's old metadata.

Examples:
  ifmatch put jobs/42 --if-absent < job.json
  v=$(ifmatch head counter | head -n1)
  echo -n 7 | ifmatch put counter --if-match \"$v\" --meta writer=cron")]
    Put(PutArgs),

    /// Print a key's version, size and metadata.
    #[command(long_about = "\
Print what is known about a key without its value: the version on the first
line, then 'size: N' (bytes), then one 'name: value' line per metadata entry.
Exits 4 if the key does not exist.

Example:
  $ ifmatch head counter
  g7
  size: 2
  writer: cron")]
    Head(HeadArgs),

    /// Delete a key (only at version V with --if-match).
    #[command(long_about = "\
Delete a key. Without a condition, deleting a key that does not exist succeeds
(deleting is idempotent). With --if-match V the key is deleted only if it is
at version V; otherwise (also when it is absent) nothing happens and the exit
code is 3.

Example:
  ifmatch rm locks/nightly --if-match \"$v\"")]
    Rm(RmArgs),

    /// List keys that start with a prefix, one per line.
    #[command(long_about = "\
List the keys that start with PREFIX (all keys without one), one per line.
With --long each line is KEY, VERSION and SIZE separated by tabs; with --json
the output is one JSON array of {\"key\", \"version\", \"size\"} objects.
Follows the store's continuation tokens to the end, or stops after --limit keys.

Examples:
  ifmatch ls jobs/ --long
  ifmatch ls jobs/ --json | jq -r '.[].key'")]
    Ls(LsArgs),

    /// Check that the store really enforces conditional writes.
    #[command(long_about = "\
Check that the store given with --store really gives ifmatch's guarantees,
under a fresh random prefix (ifmatch-doctor/<random>/) that is removed
afterwards: create-if-absent is exclusive (also among 8 concurrent creates),
a stale If-Match is rejected, If-Match on a missing key is rejected, a
conditional GET answers 'unchanged' for the current version, a conditional
delete honours its version, 8 workers x 25 concurrent increments end at
exactly 200, and metadata round-trips.

Some S3-compatible services silently ignore If-Match; this command catches
that. Prints a pass/fail table (or JSON with --json) and exits 0 only if
every check passes, 1 otherwise.

Example:
  ifmatch doctor --store s3://my-bucket/app")]
    Doctor(DoctorArgs),

    /// Named locks with a TTL and fencing tokens: acquire, renew, release, show.
    #[command(
        subcommand,
        long_about = "\
Named locks (leases) with a TTL, renewal, release by the owner only, and a
fencing token that strictly increases per name. 'acquire --json' prints the
lease handle that proves ownership to a later 'renew' or 'release' from any
process. A lease held by someone else, or a renew/release by a non-owner,
exits 3.

Example:
  ifmatch lease acquire nightly --ttl 2m --json > lease.json
  ifmatch lease show nightly
  ifmatch lease release nightly --lease-json lease.json"
    )]
    Lease(crate::lease::LeaseCommand),

    /// Idempotency records: show one.
    #[command(
        subcommand,
        long_about = "\
Inspect the idempotency records that workers write through the library's
Idempotency::run (claim, run once, store the result).

Example:
  ifmatch idem show screenshots/r-1"
    )]
    Idem(crate::idem::IdemCommand),

    /// User accounts: add, passwd, rm, ls (passwords from standard input).
    #[command(
        subcommand,
        long_about = "\
User accounts with argon2id password hashes. Passwords are read from standard
input (without echo on a terminal); hashes are never printed. Adding a user
that exists exits 3; a password or username that breaks the rules exits 2.

Example:
  printf '%s\\n' \"$PASSWORD\" | ifmatch user add alice --name 'Alice Smith'
  ifmatch user ls"
    )]
    User(crate::user::UserCommand),

    /// Versioned snapshots: publish, get, versions, rollback.
    #[command(
        subcommand,
        long_about = "\
Publish an artifact as version n+1 of a named snapshot with compare-and-swap,
read the current or a retained version, list retained versions, and roll back
by republishing an old version as a new one.

Example:
  ifmatch snapshot publish quotes quotes.json
  ifmatch snapshot get quotes > current.json"
    )]
    Snapshot(crate::snapshot::SnapshotCommand),

    /// Tenant databases: export, import, query, exec, stats.
    #[command(subcommand)]
    Db(crate::db::DbCommand),

    /// Measure ifmatch side by side with the seeds' designs on a store.
    #[command(long_about = "\
Run a benchmark scenario against the store, measuring ifmatch and the design
of the incident it comes from side by side in one run (ratios survive a noisy
machine). Prints a table, or exactly one JSON object on stdout with --json.
Keys are written under ifmatch-bench/ and removed afterwards.

Scenarios: contention, tenantdb, idempotency, lease, snapshot, and all (every
scenario with small defaults, under a minute on file://).

Examples:
  ifmatch bench contention --workers 8 --ops 50 --store file://./bench-data
  ifmatch bench contention --sweep 1,2,4,8,16 --svg contention.svg
  ifmatch bench tenantdb --requests 50 --db-mb 20
  ifmatch bench all --json --store s3://bucket/bench")]
    Bench(crate::bench::BenchArgs),

    /// Remove expired leases, idempotency records and sessions (stores without TTL).
    #[command(long_about = "\
Remove expired records: leases (a day after they lapsed, the lease
retention), idempotency records (completed ones once their result expired,
in-progress ones once stale) and the HTTP server's sessions (once their token
expired), judged by the expiry each record was written with, plus --grace.
DynamoDB removes these by TTL; file://, memory:// and s3:// keep them until
this (or the sweeper of 'ifmatch serve') removes them. A record is deleted
only with a delete conditional on the version just read, so one renewed
meanwhile is never removed. Records without an expiry are never touched.

Makes one whole pass (or examines at most --limit records) and prints what
it did. Exits 1 if a record could not be read or deleted.

Examples:
  ifmatch gc --store s3://bucket/app
  ifmatch gc --limit 1000 --json")]
    Gc(crate::gc::GcArgs),

    /// Serve the store over HTTP: objects with ETags, snapshots, leases, idempotency, accounts, tenant databases.
    #[command(long_about = "\
Serve the store given with --store over HTTP: GET/HEAD/PUT/PATCH/DELETE of
/v1/objects/KEY with strong ETags and RFC 9110 preconditions (If-Match,
If-None-Match) and lease fencing tokens (Fencing-Token), listing
(GET /v1/objects?prefix=), snapshots (/v1/snapshots/NAME), leases
(/v1/leases/NAME), idempotency keys (/v1/idempotency/KEY), accounts and
sessions (/v1/users, /v1/sessions, /v1/me) and per-user SQL databases
(POST /v1/db, /v1/db/export, /v1/db/import, /v1/db/info); plus /healthz,
/metrics (Prometheus) and /openapi.json. docs/CLIENTS.md shows them from
Java, Node.js and Python.

Every /v1 request sends 'Authorization: Bearer TOKEN': the operator key
(--api-key or IFMATCH_API_KEY) or a session token from POST /v1/sessions.
Users reach their own SQL database; objects, leases and idempotency keys are
the operator's unless --user-prefixes lets users use users/ACCOUNT_ID/...
(their account id, shown by GET /v1/me; never their reusable username).
Only the operator registers users unless --open-registration. Without an
operator key the server only listens on a loopback address. SIGTERM or
ctrl-c stops accepting connections and finishes the requests in flight.

Limits (docs/SECURITY.md): password hashes run on --hash-workers dedicated
threads behind a queue of --hash-queue (429 beyond); failed logins back off
per username and per client address; expired sessions, leases and
idempotency records are swept every --gc-interval.

Example:
  IFMATCH_API_KEY=s3cret ifmatch serve --listen 0.0.0.0:8080 --store s3://bucket/app")]
    Serve(ServeArgs),
}

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,

    /// The operator key that /v1 requests must send as a bearer token.
    #[arg(
        long,
        env = "IFMATCH_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// Refuse (428) a PUT or DELETE of an existing key without If-Match or If-None-Match.
    #[arg(long)]
    pub require_preconditions: bool,

    /// The largest request body accepted, in bytes (413 beyond).
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub body_limit: usize,

    /// The longest a request may take, in seconds (504 beyond).
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,

    /// Let anyone register a user (POST /v1/users without credentials); by default only the operator may.
    #[arg(long)]
    pub open_registration: bool,

    /// Let session users use objects, snapshots, leases and idempotency keys under users/ACCOUNT_ID/ (otherwise those are operator-only).
    #[arg(long)]
    pub user_prefixes: bool,

    /// How long a session token from POST /v1/sessions is accepted, in seconds.
    #[arg(long, default_value_t = 86_400, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl: u64,

    /// The local cache directory of tenant databases (default: a directory under the system's temporary directory, removed on exit).
    #[arg(long, value_name = "DIR")]
    pub db_cache: Option<PathBuf>,

    /// The longest a POST /v1/db batch may run, in milliseconds (422 beyond).
    #[arg(long, default_value_t = 5_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub sql_time_limit: u64,

    /// The most rows a POST /v1/db batch may return (422 beyond).
    #[arg(long, default_value_t = 10_000, value_name = "ROWS")]
    pub sql_max_rows: usize,

    /// Password hashes computed at once, each on a dedicated thread with 19 MiB (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub hash_workers: Option<u64>,

    /// Password hashes that may wait for a thread; beyond, 429 with Retry-After (default: 8 per worker).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub hash_queue: Option<u64>,

    /// Failed logins per username before the back-off starts (then 1 s, 2 s, ... up to --login-max-backoff-user).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub login_free_failures: u32,

    /// The longest back-off per username, in seconds (short: anyone can fail logins for any name).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub login_max_backoff_user: u64,

    /// Failed logins per client address (IPv6: per /64) before its back-off starts.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub login_free_failures_address: u32,

    /// The longest back-off per client address, in seconds.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub login_max_backoff_address: u64,

    /// Take the client's address for the login back-off from this header (its last address), set by a proxy you trust; default: the TCP peer.
    #[arg(long, value_name = "HEADER")]
    pub client_ip_header: Option<String>,

    /// Seconds between two sweeps of expired sessions, leases and idempotency records; 0 turns the sweeper off (default: 60, off on dynamodb://, whose TTL removes them).
    #[arg(long, value_name = "SECONDS")]
    pub gc_interval: Option<u64>,

    /// The most records one sweep examines.
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_budget: u64,
    /// The most page bytes one tenant-database commit may change (422 `limit_exceeded` beyond; default 64 MiB).
    #[arg(long, default_value_t = ifmatch::tenantdb::DEFAULT_MAX_COMMIT_BYTES, value_name = "BYTES")]
    pub db_max_commit_bytes: u64,

    /// The most bytes one tenant database may grow to (422 `limit_exceeded` beyond; default 1 GiB).
    #[arg(long, default_value_t = ifmatch::tenantdb::DEFAULT_MAX_TENANT_BYTES, value_name = "BYTES")]
    pub db_max_bytes: u64,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key to read.
    pub key: String,
}

/// Arguments of `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key to write.
    pub key: String,

    /// Read the value from FILE ('-' or none: standard input).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Write only if the key is at version V (If-Match); exit 3 otherwise.
    #[arg(long, value_name = "V", conflicts_with = "if_absent", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub if_match: Option<String>,

    /// Write only if the key does not exist (If-None-Match: *); exit 3 otherwise.
    #[arg(long)]
    pub if_absent: bool,

    /// Store metadata NAME=VALUE with the value (repeatable). Names are a-z, 0-9,
    /// '-' and '_'; values printable ASCII; names starting with 'ifmatch-' are reserved.
    #[arg(long = "meta", value_name = "NAME=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
}

/// Arguments of `head`.
#[derive(Debug, Args)]
pub struct HeadArgs {
    /// The key to describe.
    pub key: String,
}

/// Arguments of `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The key to delete.
    pub key: String,

    /// Delete only if the key is at version V; exit 3 otherwise (also when it is absent).
    #[arg(long, value_name = "V", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub if_match: Option<String>,
}

/// Arguments of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// List only keys that start with this prefix.
    #[arg(default_value = "")]
    pub prefix: String,

    /// Print KEY<TAB>VERSION<TAB>SIZE instead of the key alone.
    #[arg(long, short = 'l', conflicts_with = "json")]
    pub long: bool,

    /// Print one JSON array of {"key", "version", "size"} objects.
    #[arg(long)]
    pub json: bool,

    /// Stop after N keys.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Keys asked of the store per page (hidden: for tests of continuation tokens).
    #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub page_size: u64,
}

/// Arguments of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses one `--meta NAME=VALUE`.
fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    if name.is_empty() {
        return Err(format!("empty metadata name in {s:?}"));
    }
    if name.starts_with(ifmatch::key::RESERVED_METADATA_PREFIX) {
        return Err(format!(
            "metadata names starting with '{}' are reserved for ifmatch itself",
            ifmatch::key::RESERVED_METADATA_PREFIX
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn meta_parsing() {
        assert_eq!(parse_meta("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_meta("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_meta("novalue").is_err());
        assert!(parse_meta("=x").is_err());
        assert!(parse_meta("ifmatch-wid=x").is_err());
    }

    #[test]
    fn if_match_and_if_absent_exclude_each_other() {
        let r = Cli::try_parse_from(["ifmatch", "put", "k", "--if-match", "v", "--if-absent"]);
        assert!(r.is_err());
        let r = Cli::try_parse_from(["ifmatch", "rm", "k", "--if-absent"]);
        assert!(r.is_err());
    }
}
