//! `ifmatch lease ...`: named locks with a TTL and fencing tokens ([`ifmatch::lease`]).
//!
//! A stateless worker proves ownership with the lease handle that `acquire
//! --json` prints: the serialized [`Lease`] (name, owner id, fencing token,
//! expiry and the version of the holder's last write). `renew` and `release`
//! read it back with `--lease-json FILE` (or `-` for standard input) and hand
//! it to the library, which writes only while the record is still the
//! holder's. Nothing here decides who owns a lease.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use ifmatch::DynStore;
use ifmatch::lease::{Lease, LeaseError, Leases};

use crate::commands::{parse_duration, read_value, render_time, write_stdout};
use crate::exit::{Failure, not_found};

/// The `lease` subcommands.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Take a lease; print its owner id, fencing token and expiry.
    #[command(long_about = "\
Take the lease NAME for --ttl, waiting up to --wait for the current holder
to release it or let it expire. Prints 'owner: ID', 'token: N' and
'expires_at: TIME' lines, or with --json one JSON line: the lease handle that
'renew' and 'release' need (--lease-json) to prove ownership from another
process. The fencing token is greater than every token handed out before for
NAME. If another worker holds the lease the exit code is 3 and the message
names the holder and the time until its lease expires.

Example:
  ifmatch lease acquire nightly --ttl 5m --json > lease.json || exit
  ... work, passing the token to storage ...
  ifmatch lease release nightly --lease-json lease.json")]
    Acquire(AcquireArgs),

    /// Extend a lease you hold by its TTL from now.
    #[command(long_about = "\
Extend the lease NAME by its TTL from now. Ownership is proved by the lease
handle that 'acquire --json' printed (--lease-json FILE, '-' for standard
input). Prints the renewed lease like 'acquire' (--json: the new handle).
Exits 3 if the lease is no longer yours (it expired and was taken over, or
was released).

Example:
  ifmatch lease renew nightly --lease-json lease.json --json > lease.json.new")]
    Renew(RenewArgs),

    /// Give a lease back (only its owner can).
    #[command(long_about = "\
Release the lease NAME, keeping its fencing token so the next holder's is
greater. Ownership is proved by the lease handle that 'acquire --json'
printed (--lease-json FILE, '-' for standard input). Releasing twice is fine.
Exits 3 if another worker holds the lease now.

Example:
  ifmatch lease release nightly --lease-json lease.json")]
    Release(ReleaseArgs),

    /// Show a lease's holder, token, expiry and state.
    #[command(long_about = "\
Show what the record of lease NAME says: 'holder: ID', 'token: N',
'expires_at: TIME (in 12s)' and 'state: held|expired|released'. 'expired'
means the holder's time is up (others may take it over once the clock-skew
allowance has passed too). Exits 4 if the lease was never taken.

Example:
  ifmatch lease show nightly")]
    Show(ShowArgs),
}

/// Arguments of `lease acquire`.
#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// The lease name.
    pub name: String,
    /// How long the lease lasts unless renewed (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to wait for a held lease to become free (0s: try once).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
    /// A readable prefix for the owner id, to tell holders apart in messages.
    #[arg(long, default_value = "cli", value_name = "NAME")]
    pub holder: String,
    /// Print the lease handle as one JSON line (keep it to renew or release).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `lease renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The lease name (must match the handle's).
    pub name: String,
    /// The lease handle printed by `acquire --json` (or `renew --json`): a file, or '-'.
    #[arg(long, value_name = "FILE")]
    pub lease_json: PathBuf,
    /// Print the renewed lease handle as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `lease release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The lease name (must match the handle's).
    pub name: String,
    /// The lease handle printed by `acquire --json`: a file, or '-'.
    #[arg(long, value_name = "FILE")]
    pub lease_json: PathBuf,
}

/// Arguments of `lease show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The lease name.
    pub name: String,
}

/// Runs a `lease` subcommand.
pub async fn run(store: &DynStore, cmd: &LeaseCommand) -> Result<(), Failure> {
    let leases = Leases::new(store.clone());
    match cmd {
        LeaseCommand::Acquire(a) => {
            let leases = leases.with_holder_name(a.holder.clone());
            let lease = leases
                .acquire(&a.name, a.ttl, a.wait)
                .await
                .map_err(held_message)?;
            print_lease(&lease, a.json)
        }
        LeaseCommand::Renew(a) => {
            let mut lease = read_lease(&a.name, &a.lease_json)?;
            leases.renew(&mut lease).await?;
            print_lease(&lease, a.json)
        }
        LeaseCommand::Release(a) => {
            let lease = read_lease(&a.name, &a.lease_json)?;
            leases.release(&lease).await?;
            Ok(())
        }
        LeaseCommand::Show(a) => {
            let info = leases
                .inspect(&a.name)
                .await?
                .ok_or_else(|| not_found(format!("lease '{}' has never been acquired", a.name)))?;
            let now = SystemTime::now();
            let state = if info.released {
                "released"
            } else if info.expires_at > now {
                "held"
            } else {
                "expired"
            };
            let out = format!(
                "holder: {}\ntoken: {}\nexpires_at: {} ({})\nstate: {state}\n",
                info.owner,
                info.token,
                render_time(info.expires_at),
                relative(info.expires_at, now),
            );
            write_stdout(out.as_bytes())
        }
    }
}

/// `Held` in one line with the time left rounded to whole milliseconds.
fn held_message(e: LeaseError) -> Failure {
    match &e {
        LeaseError::Held {
            name,
            holder,
            token,
            expires_in,
            ..
        } => Failure::primitive(
            e.kind(),
            &ifmatch::Error::msg(format!(
                "lease '{name}' is held by {holder} (token {token}), expires in {}",
                humantime::format_duration(round_ms(*expires_in))
            )),
        ),
        _ => Failure::from(e),
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// "in 12s" or "12s ago".
fn relative(t: SystemTime, now: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(d) => format!("in {}", humantime::format_duration(round_ms(d))),
        Err(e) => format!("{} ago", humantime::format_duration(round_ms(e.duration()))),
    }
}

fn print_lease(lease: &Lease, json: bool) -> Result<(), Failure> {
    let out = if json {
        let mut s = serde_json::to_string(lease)
            .map_err(|e| Failure::Usage(format!("cannot encode the lease handle: {e}")))?;
        s.push('\n');
        s
    } else {
        format!(
            "owner: {}\ntoken: {}\nexpires_at: {}\n",
            lease.owner(),
            lease.token(),
            render_time(lease.expires_at())
        )
    };
    write_stdout(out.as_bytes())
}

/// Reads a lease handle and checks it is for lease `name`.
fn read_lease(name: &str, file: &std::path::Path) -> Result<Lease, Failure> {
    let bytes = read_value(Some(file))?;
    let lease: Lease = serde_json::from_slice(&bytes).map_err(|e| {
        let what = if file.as_os_str() == "-" {
            "standard input".to_string()
        } else {
            file.display().to_string()
        };
        Failure::Usage(format!(
            "{what} is not a lease handle (the JSON line 'lease acquire --json' prints): {e}"
        ))
    })?;
    if lease.name() != name {
        return Err(Failure::Usage(format!(
            "the lease handle is for lease '{}', not '{name}'",
            lease.name()
        )));
    }
    Ok(lease)
}
