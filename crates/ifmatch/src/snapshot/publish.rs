//! Publishing: [`Snapshots`] builds a new version and commits it as n+1 with
//! a conditional write of the head (the commit point), coalesces concurrent
//! builds (superseded publishes stop, others rebuild with full jitter), rolls
//! back to a retained version, resolves lost responses by re-reading the
//! head, and deletes bodies that fell out of the retained window or can never
//! be committed.
//!
//! ## Repeated requests
//!
//! A publish or rollback given a caller-chosen **request id**
//! ([`Snapshots::publish_once`], [`Snapshots::rollback_once`]) lands at most
//! once however often it is repeated: the id is recorded in the version it
//! creates, and a request that finds its id in the head (before building,
//! and after every lost head write) answers with that version
//! ([`Published::replayed`]) instead of adding another. So a caller whose
//! answer was lost, or that got [`SnapshotError::Ambiguous`], repeats the
//! request with the same id and learns the outcome: the first request's
//! version, or a new one if the first never landed (all head writes are
//! conditional on the head they follow, so the first can no longer land
//! once the head has moved past its base). The head remembers the ids of
//! the retained versions and of the last [`REQUEST_HISTORY`] versions
//! created with an id before them; a repeat that comes after more requests
//! than that publishes again.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

#[cfg(doc)]
use super::REQUEST_HISTORY;
use super::{
    BuildGuard, GuardTicket, Head, HeadRecord, JsonSnapshotReader, Keys, META_BUILD_STARTED,
    META_PUBLISH_ID, META_ROLLED_BACK_FROM, META_VERSION, SResult, Snapshot, SnapshotConfig,
    SnapshotError, SnapshotMetrics, SnapshotReader, VersionInfo, check_body, inc, ms,
    validate_request_id,
};
use crate::ErrorKind;
use crate::clock::DynClock;
use crate::error::{BoxError, Error};
use crate::store::{Condition, DynStore, Metadata, PutOptions};

/// What the build closure is told about the version it builds.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The snapshot name.
    pub name: String,
    /// The version this build will be committed as, if it wins (write it into the artifact).
    pub version: u64,
    /// The version it builds on (`None` for the first).
    pub previous: Option<u64>,
    /// Which attempt this is (1 for the first build of this publish).
    pub attempt: u32,
    /// When this build started (the freshness it is judged by).
    pub started: SystemTime,
}

/// A publish that landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The version committed.
    pub info: VersionInfo,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Conflicts met on the way.
    pub conflicts: u32,
    /// True when this request's id was found in the head: an earlier request
    /// with the same id created this version, and nothing new was published.
    pub replayed: bool,
}

impl Published {
    /// The version number committed.
    pub fn version(&self) -> u64 {
        self.info.version
    }
}

/// What a publish did: either it committed a version, or a build at least as
/// fresh as its own landed first and it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Our artifact is the new current version.
    Published(Published),
    /// Another worker's build, started at or after ours (or after we asked,
    /// when we waited on the guard), landed; ours was not needed.
    Superseded {
        /// The version that superseded ours (the current one when we stopped).
        by: u64,
        /// Attempts made (0 if we never built: we waited on the guard).
        attempts: u32,
        /// Conflicts met.
        conflicts: u32,
    },
}

impl PublishOutcome {
    /// The version that is current because of this publish: ours, or the one that superseded it.
    pub fn version(&self) -> u64 {
        match self {
            PublishOutcome::Published(p) => p.info.version,
            PublishOutcome::Superseded { by, .. } => *by,
        }
    }
    /// Whether our artifact was committed.
    pub fn is_published(&self) -> bool {
        matches!(self, PublishOutcome::Published(_))
    }
}

// ---------------------------------------------------------------------------
// Publisher
// ---------------------------------------------------------------------------

/// The outcome of a head write.
enum Flip {
    /// Our head landed; `ours` is true when it is still the current head
    /// (false when a lost response was resolved after others published on top).
    Landed { ours: bool },
    /// Another publisher's head landed first.
    Lost(Error),
}

/// Whether it is our turn to build, under a guard.
enum Turn {
    Build(Option<GuardTicket>),
    Superseded(u64),
}

/// Publishes, lists, reads and rolls back snapshots in a store; makes readers.
///
/// Cheap to clone (clones share metrics). Each CLI command is one call:
/// `publish` → [`Snapshots::publish`], `get` → [`Snapshots::get`] (or
/// [`Snapshots::latest`]), `versions` → [`Snapshots::versions`], `rollback`
/// → [`Snapshots::rollback`].
#[derive(Clone, Debug)]
pub struct Snapshots {
    store: DynStore,
    config: Arc<SnapshotConfig>,
    metrics: Arc<SnapshotMetrics>,
}

impl Snapshots {
    /// Snapshots in `store` with the default configuration.
    pub fn new(store: DynStore) -> Self {
        Self::with_config(store, SnapshotConfig::default())
    }

    /// Snapshots in `store` with `config`.
    pub fn with_config(store: DynStore, mut config: SnapshotConfig) -> Self {
        config.keep = config.keep.max(1);
        Snapshots {
            store,
            config: Arc::new(config),
            metrics: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SnapshotConfig {
        &self.config
    }

    /// The publisher's counters.
    pub fn metrics(&self) -> &SnapshotMetrics {
        &self.metrics
    }

    fn clock(&self) -> &DynClock {
        &self.config.policy.clock
    }

    fn keys(&self, name: &str) -> SResult<Keys> {
        Keys::new(&self.config.prefix, name)
    }

    /// Builds and publishes a new version of `name`; see the module docs.
    ///
    /// `build` gets a [`BuildContext`] and returns the artifact's bytes. It
    /// runs once per attempt, so it may run several times (each time for a
    /// new version number), or not at all when a guarded build by another
    /// worker answers the request. A build error stops the publish.
    pub async fn publish<F, Fut>(&self, name: &str, build: F) -> SResult<PublishOutcome>
    where
        F: FnMut(BuildContext) -> Fut,
        Fut: Future<Output = Result<Bytes, BoxError>>,
    {
        self.publish_with(name, None, build).await
    }

    /// [`Snapshots::publish`], at most once per `request_id` (1–128 printable
    /// ASCII characters, chosen by the caller): when a version created with
    /// this id is found in the head, that version is the answer
    /// ([`Published::replayed`]) and nothing is built or published; see
    /// "Repeated requests" in the module docs. A request that finds its id
    /// is never answered `Superseded`.
    pub async fn publish_once<F, Fut>(
        &self,
        name: &str,
        request_id: &str,
        build: F,
    ) -> SResult<PublishOutcome>
    where
        F: FnMut(BuildContext) -> Fut,
        Fut: Future<Output = Result<Bytes, BoxError>>,
    {
        validate_request_id(request_id)?;
        self.publish_with(name, Some(request_id), build).await
    }

    async fn publish_with<F, Fut>(
        &self,
        name: &str,
        request_id: Option<&str>,
        mut build: F,
    ) -> SResult<PublishOutcome>
    where
        F: FnMut(BuildContext) -> Fut,
        Fut: Future<Output = Result<Bytes, BoxError>>,
    {
        let keys = self.keys(name)?;
        let asked_ms = self.clock().now_ms();
        let ticket = match &self.config.guard {
            None => None,
            Some(guard) => match self.take_turn(guard.as_ref(), &keys, asked_ms).await {
                Ok(Turn::Build(t)) => t,
                Ok(Turn::Superseded(by)) => {
                    // What superseded us may be our own earlier request.
                    if let Some(id) = request_id {
                        let head = self
                            .read_head(&keys)
                            .await
                            .inspect_err(|_| inc(&self.metrics.failed))?;
                        if let Some(p) = replay(head.as_ref(), id, 0, 0) {
                            return Ok(PublishOutcome::Published(self.replayed(&keys, p)));
                        }
                    }
                    inc(&self.metrics.superseded);
                    info!(
                        snapshot = name,
                        by, "a build started after our request landed; not rebuilding"
                    );
                    return Ok(PublishOutcome::Superseded {
                        by,
                        attempts: 0,
                        conflicts: 0,
                    });
                }
                Err(e) => {
                    inc(&self.metrics.failed);
                    return Err(e);
                }
            },
        };
        let result = self
            .commit_loop(&keys, None, request_id, true, &mut build)
            .await;
        if let (Some(guard), Some(ticket)) = (&self.config.guard, ticket)
            && let Err(e) = guard.release(name, ticket).await
        {
            warn!(snapshot = name, error = %e, "releasing the build guard failed; it will expire");
        }
        self.count(&result);
        result
    }

    /// Republishes retained version `version` of `name` as a new version n+1
    /// (with [`VersionInfo::rolled_back_from`] set). Retries on conflict; a
    /// rollback is never superseded.
    pub async fn rollback(&self, name: &str, version: u64) -> SResult<Published> {
        self.rollback_with(name, version, None).await
    }

    /// [`Snapshots::rollback`], at most once per `request_id` (as for
    /// [`Snapshots::publish_once`]): when a version created with this id is
    /// found in the head, that version is the answer
    /// ([`Published::replayed`]), even if `version` is no longer retained.
    pub async fn rollback_once(
        &self,
        name: &str,
        version: u64,
        request_id: &str,
    ) -> SResult<Published> {
        validate_request_id(request_id)?;
        self.rollback_with(name, version, Some(request_id)).await
    }

    async fn rollback_with(
        &self,
        name: &str,
        version: u64,
        request_id: Option<&str>,
    ) -> SResult<Published> {
        let result = self.rollback_inner(name, version, request_id).await;
        match &result {
            Ok(p) if p.replayed => {}
            Ok(_) => {
                inc(&self.metrics.published);
                inc(&self.metrics.rollbacks);
            }
            Err(_) => inc(&self.metrics.failed),
        }
        result
    }

    async fn rollback_inner(
        &self,
        name: &str,
        version: u64,
        request_id: Option<&str>,
    ) -> SResult<Published> {
        let keys = self.keys(name)?;
        // Look for our earlier request first: the version it rolled back
        // from may have been pruned since.
        if let Some(id) = request_id
            && let Some(p) = replay(self.read_head(&keys).await?.as_ref(), id, 0, 0)
        {
            return Ok(self.replayed(&keys, p));
        }
        let old = self.get(name, Some(version)).await?;
        let body = old.body;
        let mut build = |_ctx: BuildContext| {
            let body = body.clone();
            async move { Ok::<Bytes, BoxError>(body) }
        };
        match self
            .commit_loop(&keys, Some(version), request_id, false, &mut build)
            .await?
        {
            PublishOutcome::Published(p) if p.replayed => Ok(p),
            PublishOutcome::Published(p) => {
                info!(
                    snapshot = name,
                    from = version,
                    to = p.info.version,
                    "rolled back"
                );
                Ok(p)
            }
            // commit_loop never supersedes when told not to.
            PublishOutcome::Superseded { .. } => Err(SnapshotError::Corrupt {
                name: name.to_string(),
                key: keys.head,
                reason: "a rollback was reported superseded".into(),
            }),
        }
    }

    /// The retained versions of `name`, newest (current) first.
    pub async fn versions(&self, name: &str) -> SResult<Vec<VersionInfo>> {
        let keys = self.keys(name)?;
        match self.read_head(&keys).await? {
            Some(h) => Ok(h.record.versions),
            None => Err(SnapshotError::NotFound {
                name: name.to_string(),
            }),
        }
    }

    /// Reads version `version` of `name` (the current one for `None`) from the store, uncached.
    pub async fn get(&self, name: &str, version: Option<u64>) -> SResult<Snapshot> {
        let keys = self.keys(name)?;
        // A reader racing the pruning of old bodies re-reads the head.
        for _ in 0..3 {
            let head = self
                .read_head(&keys)
                .await?
                .ok_or_else(|| SnapshotError::NotFound {
                    name: name.to_string(),
                })?;
            let info = match version {
                None => head.record.current().clone(),
                Some(v) => match head.record.versions.iter().find(|i| i.version == v) {
                    Some(i) => i.clone(),
                    None => {
                        return Err(SnapshotError::VersionNotRetained {
                            name: name.to_string(),
                            version: v,
                            retained: head.record.versions.iter().map(|i| i.version).collect(),
                        });
                    }
                },
            };
            match self.read_body(&keys, &info).await {
                Ok(body) => {
                    return Ok(Snapshot {
                        name: name.to_string(),
                        info,
                        body,
                    });
                }
                Err(SnapshotError::Store(Error::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(SnapshotError::Store(Error::Unavailable {
            message: format!("snapshot '{name}' kept changing while being read"),
            source: None,
        }))
    }

    /// Reads the current version of `name` from the store, uncached (see [`Snapshots::reader`] for a cache).
    pub async fn latest(&self, name: &str) -> SResult<Snapshot> {
        self.get(name, None).await
    }

    /// A cached reader of `name`'s latest version, checking at most once per
    /// [`SnapshotConfig::check_interval`].
    pub fn reader(&self, name: &str) -> SResult<SnapshotReader> {
        SnapshotReader::new(
            self.store.clone(),
            &self.config.prefix,
            name,
            self.clock().clone(),
            self.config.check_interval,
        )
    }

    /// A cached reader that parses `name`'s latest version as JSON, once per version.
    pub fn json_reader<T: DeserializeOwned + Send + Sync>(
        &self,
        name: &str,
    ) -> SResult<JsonSnapshotReader<T>> {
        Ok(JsonSnapshotReader::new(self.reader(name)?))
    }

    fn count(&self, result: &SResult<PublishOutcome>) {
        match result {
            Ok(PublishOutcome::Published(p)) if p.replayed => {}
            Ok(PublishOutcome::Published(_)) => inc(&self.metrics.published),
            Ok(PublishOutcome::Superseded { .. }) => inc(&self.metrics.superseded),
            Err(_) => inc(&self.metrics.failed),
        }
    }

    /// Waits until it is our turn to build, or a build started after we asked lands.
    async fn take_turn(&self, guard: &dyn BuildGuard, keys: &Keys, asked_ms: u64) -> SResult<Turn> {
        let clock = self.clock().clone();
        let started = clock.now();
        let mut waited = false;
        loop {
            match guard.try_acquire(&keys.name).await {
                Ok(Some(ticket)) => {
                    // Whoever held the guard may have published a build started
                    // after we asked: then there is nothing left for us to do.
                    if waited && let Some(by) = self.fresh_since(keys, asked_ms).await? {
                        if let Err(e) = guard.release(&keys.name, ticket).await {
                            warn!(snapshot = keys.name, error = %e, "releasing the build guard failed; it will expire");
                        }
                        return Ok(Turn::Superseded(by));
                    }
                    return Ok(Turn::Build(Some(ticket)));
                }
                Ok(None) => {
                    if !waited {
                        inc(&self.metrics.guard_waits);
                        debug!(
                            snapshot = keys.name,
                            "another worker is building; waiting for its result"
                        );
                    }
                    waited = true;
                }
                Err(e) => {
                    // The guard is an optimisation: without it we still publish safely.
                    warn!(snapshot = keys.name, error = %e, "build guard unavailable; building unguarded");
                    return Ok(Turn::Build(None));
                }
            }
            if let Some(by) = self.fresh_since(keys, asked_ms).await? {
                return Ok(Turn::Superseded(by));
            }
            let waited_for = clock.now().duration_since(started).unwrap_or_default();
            if waited_for >= self.config.guard_max_wait {
                warn!(
                    snapshot = keys.name,
                    "waited too long for the build guard; building unguarded"
                );
                return Ok(Turn::Build(None));
            }
            clock.sleep(self.config.guard_poll).await;
        }
    }

    /// The current version, if its build started at or after `since_ms` (a cheap HEAD).
    async fn fresh_since(&self, keys: &Keys, since_ms: u64) -> SResult<Option<u64>> {
        let policy = &self.config.policy;
        let meta = policy
            .run(|| async {
                match self.store.head(&keys.head).await {
                    Ok(m) => Ok(Some(m)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        let Some(meta) = meta else { return Ok(None) };
        let num = |name: &str| meta.metadata.get(name).and_then(|s| s.parse::<u64>().ok());
        let (version, started) = match (num(META_VERSION), num(META_BUILD_STARTED)) {
            (Some(v), Some(s)) => (v, s),
            // A head without our metadata: read the record itself.
            _ => match self.read_head(keys).await? {
                Some(h) => {
                    let c = h.record.current();
                    (c.version, c.build_started_ms)
                }
                None => return Ok(None),
            },
        };
        Ok((started >= since_ms).then_some(version))
    }

    /// Reads and parses the head, `None` if nothing was published; transient errors are retried.
    async fn read_head(&self, keys: &Keys) -> SResult<Option<Head>> {
        let obj = self
            .config
            .policy
            .run(|| async {
                match self.store.get(&keys.head).await {
                    Ok(o) => Ok(Some(o)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        match obj {
            None => Ok(None),
            Some(o) => Ok(Some(Head {
                record: HeadRecord::parse(keys, &o)?,
                version: o.meta.version,
            })),
        }
    }

    async fn read_body(&self, keys: &Keys, info: &VersionInfo) -> SResult<Bytes> {
        let obj = self
            .config
            .policy
            .run(|| self.store.get(&info.body_key))
            .await?;
        check_body(keys, info, &obj)?;
        Ok(obj.body)
    }

    /// Build, write the body, flip the head; on conflict supersede or rebuild.
    async fn commit_loop<F, Fut>(
        &self,
        keys: &Keys,
        rolled_back_from: Option<u64>,
        request_id: Option<&str>,
        may_supersede: bool,
        build: &mut F,
    ) -> SResult<PublishOutcome>
    where
        F: FnMut(BuildContext) -> Fut,
        Fut: Future<Output = Result<Bytes, BoxError>>,
    {
        let policy = &self.config.policy;
        let clock = self.clock().clone();
        let name = keys.name.as_str();
        let mut attempts = policy.start();
        let mut conflicts = 0u32;
        loop {
            attempts.begin();
            inc(&self.metrics.attempts);
            let base = self.read_head(keys).await?;
            if let Some(id) = request_id
                && let Some(p) = replay(base.as_ref(), id, attempts.made(), conflicts)
            {
                return Ok(PublishOutcome::Published(self.replayed(keys, p)));
            }
            let previous = base.as_ref().map(|h| h.record.current().version);
            let version = previous.unwrap_or(0) + 1;

            let started = clock.now();
            let started_ms = clock.now_ms();
            debug!(
                snapshot = name,
                version,
                attempt = attempts.made(),
                "building"
            );
            let body = build(BuildContext {
                name: name.to_string(),
                version,
                previous,
                attempt: attempts.made(),
                started,
            })
            .await
            .map_err(|source| SnapshotError::Build {
                name: name.to_string(),
                source,
            })?;
            let build_ms = ms(clock.now().duration_since(started).unwrap_or_default());
            inc(&self.metrics.builds);
            self.metrics
                .build_ms_total
                .fetch_add(build_ms, Ordering::Relaxed);
            self.metrics
                .build_ms_last
                .store(build_ms, Ordering::Relaxed);

            let publish_id = format!("{:016x}", policy.rng.next_u64());
            let info = VersionInfo {
                version,
                body_key: keys.body(version, &publish_id),
                size: body.len() as u64,
                build_started_ms: started_ms,
                published_ms: 0,
                publish_id,
                rolled_back_from,
                request_id: request_id.map(str::to_string),
            };
            self.write_body(&info, body).await?;

            let mut info = info;
            info.published_ms = clock.now_ms();
            let record = HeadRecord::next(
                base.as_ref().map(|h| &h.record),
                name,
                info.clone(),
                self.config.keep,
            );
            let condition = match &base {
                Some(h) => Condition::Matches(h.version.clone()),
                None => Condition::Absent,
            };
            match self.flip(keys, &record, condition).await {
                Ok(Flip::Landed { ours }) => {
                    info!(
                        snapshot = name,
                        version,
                        attempts = attempts.made(),
                        conflicts,
                        build_ms,
                        bytes = info.size,
                        "published"
                    );
                    self.metrics
                        .bytes_published
                        .fetch_add(info.size, Ordering::Relaxed);
                    self.metrics.bytes_last.store(info.size, Ordering::Relaxed);
                    if ours {
                        self.prune(keys, base.as_ref(), &record).await;
                    }
                    return Ok(PublishOutcome::Published(Published {
                        info,
                        attempts: attempts.made(),
                        conflicts,
                        replayed: false,
                    }));
                }
                Ok(Flip::Lost(err)) => {
                    conflicts += 1;
                    inc(&self.metrics.conflicts);
                    // Our body can never be committed now: remove it.
                    self.delete_body(&info.body_key).await;
                    let winner = self.read_head(keys).await?;
                    // The winner may be our own earlier request.
                    if let Some(id) = request_id
                        && let Some(p) = replay(winner.as_ref(), id, attempts.made(), conflicts)
                    {
                        return Ok(PublishOutcome::Published(self.replayed(keys, p)));
                    }
                    if may_supersede && let Some(w) = &winner {
                        let cur = w.record.current();
                        if cur.build_started_ms >= started_ms {
                            info!(
                                snapshot = name,
                                ours = version,
                                by = cur.version,
                                "superseded by a build at least as fresh"
                            );
                            return Ok(PublishOutcome::Superseded {
                                by: cur.version,
                                attempts: attempts.made(),
                                conflicts,
                            });
                        }
                    }
                    if !attempts.backoff().await {
                        warn!(
                            snapshot = name,
                            attempts = attempts.made(),
                            "giving up after repeated conflicts"
                        );
                        return Err(SnapshotError::Conflict {
                            name: name.to_string(),
                            attempts: attempts.made(),
                            conflicts,
                            last: err,
                        });
                    }
                    warn!(
                        snapshot = name,
                        attempt = attempts.made(),
                        "conflict with an older build; rebuilding"
                    );
                    // The head may have moved again while we slept: the next attempt reads it afresh.
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes an immutable body with `If-None-Match: *`.
    async fn write_body(&self, info: &VersionInfo, body: Bytes) -> SResult<()> {
        let mut metadata = Metadata::new();
        metadata.insert(META_VERSION.into(), info.version.to_string());
        metadata.insert(META_BUILD_STARTED.into(), info.build_started_ms.to_string());
        metadata.insert(META_PUBLISH_ID.into(), info.publish_id.clone());
        if let Some(from) = info.rolled_back_from {
            metadata.insert(META_ROLLED_BACK_FROM.into(), from.to_string());
        }
        let opts = PutOptions::if_absent().with_metadata(metadata);
        for _ in 0..self.config.policy.max_attempts.max(2) {
            let r = self
                .config
                .policy
                .run(|| self.store.put(&info.body_key, body.clone(), opts.clone()))
                .await;
            match r {
                Ok(_) => return Ok(()),
                // The key is ours alone (it carries our random publish id):
                // "already exists" means our write landed (a lost answer, or a
                // duplicated delivery answering 412 to our own write).
                Err(Error::Conflict { .. }) => return Ok(()),
                // Send the same body again: an existing key then answers for it.
                Err(Error::Ambiguous { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The head was not touched: this publish did not happen (a body that
        // lands later is an orphan, which the next publish's pruning removes).
        Err(SnapshotError::Store(Error::Unavailable {
            message: format!(
                "could not write snapshot body '{}': every answer was lost",
                info.body_key
            ),
            source: None,
        }))
    }

    /// Flips the head: the commit point.
    ///
    /// An answer that does not settle the flip — `Ambiguous` (lost, or the
    /// request may still land later), or a `Conflict` that may answer a
    /// duplicated delivery of our own flip — is settled from the head: our
    /// publish id at our version means it landed; another publish id there
    /// means ours never will (only one head can follow our base); a head
    /// still below our version means ours may be on its way, and **the same
    /// flip is sent again** (same record, same condition: at most one copy
    /// lands). Undecided within the budget is [`SnapshotError::Ambiguous`],
    /// never "lost" (which would delete a body the head may point at).
    async fn flip(&self, keys: &Keys, record: &HeadRecord, condition: Condition) -> SResult<Flip> {
        let ours = record.current();
        let body = Bytes::from(
            serde_json::to_vec(record)
                .map_err(|e| SnapshotError::Store(Error::other("encoding a head record", e)))?,
        );
        let opts = PutOptions {
            condition,
            metadata: record.metadata(),
            expires_at: None,
        };
        let ambiguous = || SnapshotError::Ambiguous {
            name: keys.name.clone(),
            version: ours.version,
        };
        let policy = &self.config.policy;
        let mut attempts = policy.start();
        // Whether a send may have landed without our knowing.
        let mut unsettled = false;
        loop {
            attempts.begin();
            match self.store.put(&keys.head, body.clone(), opts.clone()).await {
                Ok(_) => return Ok(Flip::Landed { ours: true }),
                // Decided below, from the head (which also marks the flip
                // unsettled if the head cannot decide): a lost answer, or a
                // conflict that may answer our own duplicated write.
                Err(Error::Ambiguous { .. } | Error::Conflict { .. }) => {}
                Err(e) if e.is_retryable() => {
                    if attempts.backoff().await {
                        continue;
                    }
                    return Err(if unsettled { ambiguous() } else { e.into() });
                }
                Err(e) if unsettled => {
                    debug!(snapshot = keys.name, error = %e, "flip undecided");
                    return Err(ambiguous());
                }
                Err(e) => return Err(e.into()),
            }
            let now = match self.read_head(keys).await {
                Ok(now) => now,
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    // Cannot look (a brownout): our flip may have landed.
                    unsettled = true;
                    if attempts.backoff().await {
                        continue;
                    }
                    return Err(ambiguous());
                }
                Err(e) => return Err(e),
            };
            match now.as_ref().map(|h| {
                let known = h.record.known().find(|i| i.version == ours.version);
                (h, known)
            }) {
                Some((h, Some(i))) if i.publish_id == ours.publish_id => {
                    return Ok(Flip::Landed {
                        ours: h.record.current().publish_id == ours.publish_id,
                    });
                }
                Some((h, Some(_))) => {
                    return Ok(Flip::Lost(Error::conflict(
                        &keys.head,
                        opts.condition.clone(),
                        Some(h.version.clone()),
                    )));
                }
                // The head is still below our version (or absent, for a
                // first publish): ours may be on its way. Send it again.
                Some((h, None)) if h.record.current().version < ours.version => {}
                None if opts.condition == Condition::Absent => {}
                // Our version is no longer retained, or the head vanished.
                _ => return Err(ambiguous()),
            }
            unsettled = true;
            if !attempts.backoff().await {
                return Err(ambiguous());
            }
        }
    }

    /// Logs and counts a repeated request answered from the head.
    fn replayed(&self, keys: &Keys, p: Published) -> Published {
        inc(&self.metrics.replayed);
        info!(
            snapshot = keys.name,
            version = p.info.version,
            "this request already landed; answering with its version"
        );
        p
    }

    async fn delete_body(&self, key: &str) {
        match self.store.delete(key, Condition::Any).await {
            Ok(()) => inc(&self.metrics.pruned),
            Err(e) => {
                inc(&self.metrics.prune_errors);
                debug!(key, error = %e, "could not delete a snapshot body; a later publish will");
            }
        }
    }

    /// After our head landed: delete bodies that fell out of the window, and
    /// orphans that can never be committed. Best effort.
    async fn prune(&self, keys: &Keys, base: Option<&Head>, record: &HeadRecord) {
        let kept: HashSet<&str> = record
            .versions
            .iter()
            .map(|i| i.body_key.as_str())
            .collect();
        if let Some(base) = base {
            for old in &base.record.versions {
                if !kept.contains(old.body_key.as_str()) {
                    self.delete_body(&old.body_key).await;
                }
            }
        }
        let current = record.current().version;
        let listed = match crate::store::list_all(self.store.as_ref(), &keys.bodies).await {
            Ok(l) => l,
            Err(e) => {
                inc(&self.metrics.prune_errors);
                debug!(snapshot = keys.name, error = %e, "could not list snapshot bodies for pruning");
                return;
            }
        };
        for entry in listed {
            if kept.contains(entry.key.as_str()) {
                continue;
            }
            match keys.body_version(&entry.key) {
                Some(n) if n <= current => self.delete_body(&entry.key).await,
                _ => {}
            }
        }
    }
}

/// The version request `id` created, if `head` knows it, as the answer to a repeat.
fn replay(head: Option<&Head>, id: &str, attempts: u32, conflicts: u32) -> Option<Published> {
    let info = head?.record.created_by(id)?.clone();
    Some(Published {
        info,
        attempts,
        conflicts,
        replayed: true,
    })
}
