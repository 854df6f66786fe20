//! `ifmatch bench all`: every scenario with small defaults, one after the
//! other on the same store; under a minute on `file://`.

use clap::Args;
use ifmatch::{DynStore, Error};
use serde::Serialize;

use super::contention::{self, ContentionArgs, ContentionReport};
use super::idempotency::{self, IdempotencyArgs, IdempotencyReport};
use super::lease::{self, LeaseArgs, LeaseReport};
use super::snapshot::{self, SnapshotArgs, SnapshotReport};
use super::tenantdb::{self, TenantDbArgs, TenantDbReport};

/// `ifmatch bench all` arguments.
#[derive(Debug, Clone, Default, Args)]
pub struct AllArgs {
    /// Scale every scenario down further (for slow stores such as a local S3 emulator).
    #[arg(long)]
    pub quick: bool,
}

/// Every scenario's report, keyed by scenario.
#[derive(Debug, Clone, Serialize)]
pub struct AllReport {
    /// See [`contention`].
    pub contention: ContentionReport,
    /// See [`tenantdb`].
    pub tenantdb: TenantDbReport,
    /// See [`idempotency`].
    pub idempotency: IdempotencyReport,
    /// See [`lease`].
    pub lease: LeaseReport,
    /// See [`snapshot`].
    pub snapshot: SnapshotReport,
}

/// Runs every scenario with small settings.
pub async fn run(
    store: DynStore,
    args: &AllArgs,
    seed: u64,
    json: bool,
) -> Result<AllReport, Error> {
    let q = args.quick;
    let say = |what: &str| {
        if !json {
            eprintln!("bench all: {what}");
        }
    };
    say("contention");
    let contention = contention::run(
        store.clone(),
        &ContentionArgs {
            workers: 4,
            ops: if q { 5 } else { 25 },
            ..ContentionArgs::default()
        },
        seed,
        json,
    )
    .await?;
    say("tenantdb");
    let tenantdb = tenantdb::run(
        store.clone(),
        &TenantDbArgs {
            requests: if q { 5 } else { 20 },
            db_mb: 0,
            cold: if q { 1 } else { 3 },
            ..TenantDbArgs::default()
        },
        json,
    )
    .await?;
    say("idempotency");
    let idempotency = idempotency::run(
        store.clone(),
        &IdempotencyArgs {
            deliveries: if q { 10 } else { 50 },
            unique: if q { 10 } else { 100 },
            ..IdempotencyArgs::default()
        },
        json,
    )
    .await?;
    say("lease");
    let lease = lease::run(
        store.clone(),
        &LeaseArgs {
            contenders: 3,
            rounds: if q { 3 } else { 6 },
            ..LeaseArgs::default()
        },
        seed,
        json,
    )
    .await?;
    say("snapshot");
    let snapshot = snapshot::run(
        store.clone(),
        &SnapshotArgs {
            publishers: 3,
            readers: if q { 1 } else { 3 },
            publishes: if q { 2 } else { 4 },
            ..SnapshotArgs::default()
        },
        seed,
        json,
    )
    .await?;
    Ok(AllReport {
        contention,
        tenantdb,
        idempotency,
        lease,
        snapshot,
    })
}

/// Every scenario's table, one after the other.
pub fn render(r: &AllReport) -> String {
    [
        contention::render(&r.contention),
        tenantdb::render(&r.tenantdb),
        idempotency::render(&r.idempotency),
        lease::render(&r.lease),
        snapshot::render(&r.snapshot),
    ]
    .join("\n")
}
