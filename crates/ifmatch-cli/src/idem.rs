//! `ifmatch idem ...`: look at idempotency records ([`ifmatch::idempotency`]).
//!
//! Read-only: the records are written by workers through
//! [`ifmatch::idempotency::Idempotency::run`]; this only shows one.

use clap::{Args, Subcommand};
use ifmatch::DynStore;
use ifmatch::idempotency::Idempotency;

use crate::commands::{render_time, write_stdout};
use crate::exit::{Failure, not_found};

/// The `idem` subcommands.
#[derive(Debug, Subcommand)]
pub enum IdemCommand {
    /// Show an idempotency record: state, payload hash, times, stored result.
    #[command(long_about = "\
Show the idempotency record of KEY as workers running
Idempotency::run left it, without changing it: 'state: in-progress|completed',
'payload_hash: HEX' (SHA-256 of the canonical JSON payload),
'claimed_at', 'updated_at' and 'expires_at' (RFC 3339; for an in-progress
claim the time it goes stale, for a completed one when the result expires),
'version: V' and 'result: JSON' (completed records only). Exits 4 if there
is no record.

Example:
  ifmatch idem show screenshots/r-1")]
    Show(IdemShowArgs),
}

/// Arguments of `idem show`.
#[derive(Debug, Args)]
pub struct IdemShowArgs {
    /// The idempotency key.
    pub key: String,
}

/// Runs an `idem` subcommand.
pub async fn run(store: &DynStore, cmd: &IdemCommand) -> Result<(), Failure> {
    let idem = Idempotency::new(store.clone());
    match cmd {
        IdemCommand::Show(a) => {
            let info = idem.inspect(&a.key).await?.ok_or_else(|| {
                not_found(format!(
                    "no idempotency record for key '{}' (at '{}')",
                    a.key,
                    idem.record_key(&a.key)
                ))
            })?;
            let mut out = format!(
                "state: {}\npayload_hash: {}\nclaimed_at: {}\nupdated_at: {}\nexpires_at: {}\nversion: {}\n",
                info.state,
                info.payload_hash,
                render_time(info.claimed_at),
                render_time(info.updated_at),
                render_time(info.expires_at),
                info.version,
            );
            if let Some(result) = &info.result {
                out.push_str(&format!("result: {result}\n"));
            }
            write_stdout(out.as_bytes())
        }
    }
}
