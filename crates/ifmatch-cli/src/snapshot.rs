//! `ifmatch snapshot ...`: publish and read versioned artifacts ([`ifmatch::snapshot`]).
//!
//! Each command is one call of [`Snapshots`]: the "build" of `publish` just
//! returns the bytes of a file (or standard input).

use std::path::PathBuf;

use bytes::Bytes;
use clap::{Args, Subcommand};
use ifmatch::DynStore;
use ifmatch::error::BoxError;
use ifmatch::snapshot::{self, PublishOutcome, Snapshots};

use crate::commands::{read_value, render_time, write_stdout};
use crate::exit::Failure;

/// The `snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Publish a file as the next version of a snapshot; print its number.
    #[command(long_about = "\
Publish the bytes of FILE ('-' for standard input) as version n+1 of snapshot
NAME, with a compare-and-swap on the head, and print the new version number.
If another publisher whose build started after ours landed first, nothing is
published and 'superseded by N' is printed (exit 0: the current version is at
least as fresh). Names are 1-128 characters of A-Z a-z 0-9 . _ -.

Example:
  ifmatch snapshot publish quotes quotes.json")]
    Publish(PublishArgs),

    /// Print a snapshot's body (the current version, or --version N).
    #[command(
        long_about = "\
Print the body of snapshot NAME on standard output, exactly its bytes: the
current version, or retained version --version N. Exits 4 if nothing was
published under NAME or version N is not retained.

Example:
  ifmatch snapshot get quotes --version 3 > quotes-v3.json",
        disable_version_flag = true
    )]
    Get(SnapshotGetArgs),

    /// List the retained versions: VERSION, SIZE, PUBLISHED (newest first).
    #[command(long_about = "\
List the retained versions of snapshot NAME, newest (current) first, one per
line: VERSION<TAB>SIZE<TAB>PUBLISHED_AT (RFC 3339), and for a rollback a
fourth field 'rollback of V'. Exits 4 if nothing was published under NAME.

Example:
  ifmatch snapshot versions quotes")]
    Versions(VersionsArgs),

    /// Republish a retained version as a new version; print its number.
    #[command(long_about = "\
Republish retained version V of snapshot NAME as a new version n+1 (its body
is V's) and print the new version number. Exits 4 if V is not retained.

Example:
  ifmatch snapshot rollback quotes 3")]
    Rollback(RollbackArgs),
}

/// Arguments of `snapshot publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The snapshot name.
    pub name: String,
    /// The artifact: a file, or '-' for standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Arguments of `snapshot get`.
#[derive(Debug, Args)]
pub struct SnapshotGetArgs {
    /// The snapshot name.
    pub name: String,
    /// A retained version instead of the current one.
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
}

/// Arguments of `snapshot versions`.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The snapshot name.
    pub name: String,
}

/// Arguments of `snapshot rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The snapshot name.
    pub name: String,
    /// The retained version to republish.
    #[arg(value_name = "V")]
    pub from: u64,
}

/// Runs a `snapshot` subcommand.
pub async fn run(store: &DynStore, cmd: &SnapshotCommand) -> Result<(), Failure> {
    let snapshots = Snapshots::new(store.clone());
    match cmd {
        SnapshotCommand::Publish(a) => {
            // Check the name before waiting on standard input.
            snapshot::validate_name(&a.name)?;
            let body: Bytes = read_value(Some(&a.file))?;
            let outcome = snapshots
                .publish(&a.name, |_ctx| {
                    let body = body.clone();
                    async move { Ok::<Bytes, BoxError>(body) }
                })
                .await?;
            let out = match outcome {
                PublishOutcome::Published(p) => format!("{}\n", p.version()),
                PublishOutcome::Superseded { by, .. } => format!("superseded by {by}\n"),
            };
            write_stdout(out.as_bytes())
        }
        SnapshotCommand::Get(a) => {
            let snap = snapshots.get(&a.name, a.version).await?;
            write_stdout(&snap.body)
        }
        SnapshotCommand::Versions(a) => {
            let mut out = String::new();
            for v in snapshots.versions(&a.name).await? {
                out.push_str(&format!(
                    "{}\t{}\t{}",
                    v.version,
                    v.size,
                    render_time(v.published())
                ));
                if let Some(from) = v.rolled_back_from {
                    out.push_str(&format!("\trollback of {from}"));
                }
                out.push('\n');
            }
            write_stdout(out.as_bytes())
        }
        SnapshotCommand::Rollback(a) => {
            let p = snapshots.rollback(&a.name, a.from).await?;
            write_stdout(format!("{}\n", p.version()).as_bytes())
        }
    }
}
