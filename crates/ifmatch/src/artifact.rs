//! Snapshot artifacts built outside this process: publish uploaded bytes
//! with a precondition on the version they were built from, read the latest
//! version only when the reader's copy is stale, and take a build lease.
//!
//! [`crate::snapshot::Snapshots`] runs the build closure itself. A builder
//! written in another language (the quotes cache of seeds 000/001 is Java)
//! builds on its own and uploads the result; this module adapts the three
//! things it needs, through the snapshot module's public API only:
//!
//! - [`publish_upload`] publishes the bytes as version n+1 when
//!   `precondition(n)` holds for the version n it would follow (an HTTP
//!   `If-Match: "n"`), else [`ArtifactError::Precondition`] names the current
//!   version. Concurrent uploads follow [`Snapshots::publish`]'s rules: an
//!   upload whose publish loses to one that arrived later is
//!   [`PublishOutcome::Superseded`]; one that loses to an earlier upload is
//!   published on top of it (its precondition checked again first). The
//!   build start the rules compare is when the upload reached this process.
//!   [`publish_upload_once`] does the same at most once per caller-chosen
//!   request id ([`Snapshots::publish_once`]), so an upload repeated after a
//!   lost answer is answered with the version the first one created.
//! - [`latest_unless`] reads the current version's record (one GET of the
//!   head) and downloads the body only when the caller's `fresh` check says
//!   its copy is stale, so a poller whose copy is current costs one small
//!   request and transfers no body.
//! - [`acquire_build`] takes the build lease of a snapshot, the same lease
//!   [`crate::snapshot::LeaseBuildGuard`] takes, so uploaders and in-process
//!   publishers coalesce their rebuilds. A caller that had to wait for another
//!   builder gets [`BuildTurn::Superseded`] instead when that builder
//!   published a build started after the caller asked.

use std::time::Duration;

use bytes::Bytes;

use crate::error::BoxError;
use crate::lease::{Lease, LeaseError, Leases};
use crate::snapshot::{PublishOutcome, Snapshot, SnapshotError, Snapshots, VersionInfo};

/// The name of the lease that guards the builds of snapshot `name` (the
/// lease [`crate::snapshot::LeaseBuildGuard`] takes).
pub fn build_lease_name(name: &str) -> String {
    format!("snapshot-build/{name}")
}

/// Why an upload, read or build lease failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The upload's precondition does not hold for the current version.
    #[error("precondition failed on snapshot '{name}': {}", describe(.current))]
    Precondition {
        /// The snapshot name.
        name: String,
        /// The current version (`None`: nothing published yet).
        current: Option<u64>,
    },
    /// The snapshot operation failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The build lease could not be taken or given back.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

fn describe(current: &Option<u64>) -> String {
    match current {
        Some(v) => format!("its current version is {v}"),
        None => "nothing has been published".to_string(),
    }
}

impl ArtifactError {
    /// The classification, for exit codes and HTTP statuses.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            ArtifactError::Precondition { .. } => crate::ErrorKind::Conflict,
            ArtifactError::Snapshot(e) => e.kind(),
            ArtifactError::Lease(e) => e.kind(),
        }
    }
}

/// The build closure's refusal: the version it would follow fails the precondition.
#[derive(Debug, thiserror::Error)]
#[error("the upload's precondition does not hold")]
struct BaseMoved {
    current: Option<u64>,
}

/// Publishes `body` as the next version of `name` when `precondition(n)`
/// holds for the version n it would follow (`None`: nothing published yet);
/// see the module docs.
///
/// `precondition` is checked before every attempt, so an upload that must
/// follow version n fails once another publisher got in first.
pub async fn publish_upload<P>(
    snapshots: &Snapshots,
    name: &str,
    body: Bytes,
    precondition: P,
) -> Result<PublishOutcome, ArtifactError>
where
    P: Fn(Option<u64>) -> bool,
{
    upload(snapshots, name, None, body, precondition).await
}

/// [`publish_upload`], at most once per `request_id` (see
/// [`Snapshots::publish_once`]): when the upload with this id already
/// landed, the answer is its version ([`crate::snapshot::Published::replayed`]),
/// checked before the precondition, which that version may since have
/// changed.
pub async fn publish_upload_once<P>(
    snapshots: &Snapshots,
    name: &str,
    request_id: &str,
    body: Bytes,
    precondition: P,
) -> Result<PublishOutcome, ArtifactError>
where
    P: Fn(Option<u64>) -> bool,
{
    upload(snapshots, name, Some(request_id), body, precondition).await
}

async fn upload<P>(
    snapshots: &Snapshots,
    name: &str,
    request_id: Option<&str>,
    body: Bytes,
    precondition: P,
) -> Result<PublishOutcome, ArtifactError>
where
    P: Fn(Option<u64>) -> bool,
{
    let build = |ctx: crate::snapshot::BuildContext| {
        let out = if precondition(ctx.previous) {
            Ok(body.clone())
        } else {
            Err(Box::new(BaseMoved {
                current: ctx.previous,
            }) as BoxError)
        };
        std::future::ready(out)
    };
    let result = match request_id {
        Some(id) => snapshots.publish_once(name, id, build).await,
        None => snapshots.publish(name, build).await,
    };
    match result {
        Ok(outcome) => Ok(outcome),
        Err(SnapshotError::Build { name, source }) => match source.downcast::<BaseMoved>() {
            Ok(moved) => Err(ArtifactError::Precondition {
                name,
                current: moved.current,
            }),
            Err(source) => Err(SnapshotError::Build { name, source }.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// What [`latest_unless`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Latest {
    /// The caller's copy is current (by its `fresh` check): the current version's record, no body.
    Fresh(VersionInfo),
    /// The current version with its body.
    Full(Snapshot),
}

/// The current version of `name`, with its body unless `fresh` says the
/// caller's copy of that version is current.
///
/// With `fresh` given it costs one GET of the head, plus (when stale) the
/// download of the version it named; without, it is [`Snapshots::latest`].
pub async fn latest_unless<F>(
    snapshots: &Snapshots,
    name: &str,
    fresh: Option<F>,
) -> Result<Latest, ArtifactError>
where
    F: FnOnce(&VersionInfo) -> bool,
{
    let Some(fresh) = fresh else {
        return Ok(Latest::Full(snapshots.latest(name).await?));
    };
    let versions = snapshots.versions(name).await?;
    let Some(current) = versions.into_iter().next() else {
        return Err(SnapshotError::NotFound {
            name: name.to_string(),
        }
        .into());
    };
    if fresh(&current) {
        return Ok(Latest::Fresh(current));
    }
    match snapshots.get(name, Some(current.version)).await {
        Ok(s) => Ok(Latest::Full(s)),
        // Published over and pruned since the head was read: the newest, then.
        Err(SnapshotError::VersionNotRetained { .. }) => {
            Ok(Latest::Full(snapshots.latest(name).await?))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whose turn it is to build, as [`acquire_build`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildTurn {
    /// Build: the build lease is held (release it after publishing).
    Build(Lease),
    /// The builder the caller waited for published a build started after the
    /// caller asked: the current version is as fresh as the caller's would be.
    Superseded(VersionInfo),
}

/// Takes the build lease of snapshot `name` for `ttl` from `leases`, waiting
/// up to `wait` for another builder; see the module docs.
///
/// [`LeaseError::Held`] when another builder held it for the whole wait.
pub async fn acquire_build(
    snapshots: &Snapshots,
    leases: &Leases,
    name: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<BuildTurn, ArtifactError> {
    crate::snapshot::validate_name(name)?;
    let lease_name = build_lease_name(name);
    let asked_ms = snapshots.config().policy.clock.now_ms();
    let lease = match leases.acquire(&lease_name, ttl, Duration::ZERO).await {
        Ok(lease) => return Ok(BuildTurn::Build(lease)),
        Err(LeaseError::Held { .. }) if !wait.is_zero() => {
            leases.acquire(&lease_name, ttl, wait).await?
        }
        Err(e) => return Err(e.into()),
    };
    // We waited for another builder: did it publish a build started after we asked?
    let current = match snapshots.versions(name).await {
        Ok(versions) => versions.into_iter().next(),
        Err(SnapshotError::NotFound { .. }) => None,
        Err(e) => {
            release_quietly(leases, &lease).await;
            return Err(e.into());
        }
    };
    match current {
        Some(info) if info.build_started_ms >= asked_ms => {
            release_quietly(leases, &lease).await;
            Ok(BuildTurn::Superseded(info))
        }
        _ => Ok(BuildTurn::Build(lease)),
    }
}

/// Gives a build lease back; a failure only costs the wait until it expires.
async fn release_quietly(leases: &Leases, lease: &Lease) {
    if let Err(e) = leases.release(lease).await {
        tracing::warn!(lease = lease.name(), error = %e, "releasing the build lease failed; it will expire");
    }
}
