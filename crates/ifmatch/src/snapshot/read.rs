//! Reading: [`SnapshotReader`] keeps a snapshot's latest version in memory,
//! checks the head with a conditional GET at most once per interval, shares
//! one refresh among concurrent callers (single flight), and serves the last
//! good version with its age and the error ([`Served::stale`]) when the store
//! fails. [`JsonSnapshotReader`] parses each version once.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use super::{HeadRecord, Keys, SResult, Snapshot, SnapshotError, check_body, inc};
use crate::clock::DynClock;
use crate::error::Error;
use crate::store::{DynStore, Fetch, Version};

/// Counters of a [`SnapshotReader`].
#[derive(Debug, Default)]
pub struct ReaderMetrics {
    /// Freshness checks sent to the store.
    pub checks: AtomicU64,
    /// Checks answered "unchanged" (no body transferred).
    pub unchanged: AtomicU64,
    /// Bodies downloaded.
    pub downloads: AtomicU64,
    /// Bytes of bodies downloaded.
    pub bytes_downloaded: AtomicU64,
    /// Checks that failed.
    pub errors: AtomicU64,
    /// Answers served from a cache whose last check failed.
    pub stale_served: AtomicU64,
    /// JSON parses (by [`JsonSnapshotReader`]).
    pub parses: AtomicU64,
}

impl ReaderMetrics {
    /// The counters as a name → value map.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("checks", g(&self.checks)),
            ("unchanged", g(&self.unchanged)),
            ("downloads", g(&self.downloads)),
            ("bytes_downloaded", g(&self.bytes_downloaded)),
            ("errors", g(&self.errors)),
            ("stale_served", g(&self.stale_served)),
            ("parses", g(&self.parses)),
        ])
    }
}

/// A value served from a reader's cache.
#[derive(Debug, Clone)]
pub struct Served<T> {
    /// The value (shared; cloning is cheap).
    pub value: Arc<T>,
    /// The snapshot version it comes from.
    pub version: u64,
    /// Time since the store last confirmed this was the latest version.
    pub age: Duration,
    /// Set when the last check failed (the store is unavailable): the value
    /// is the last good one, possibly out of date; this is why.
    pub stale: Option<Arc<SnapshotError>>,
}

impl<T> Served<T> {
    /// Whether the last check failed and this may be out of date.
    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }
}

#[derive(Debug)]
struct Cached {
    snapshot: Arc<Snapshot>,
    /// The store version of the head this snapshot was read from.
    head_version: Version,
    /// When the store last confirmed it current.
    verified: SystemTime,
}

#[derive(Debug, Default)]
struct ReaderState {
    current: Option<Cached>,
    /// When the last check finished (successful or not).
    checked: Option<SystemTime>,
    /// The last check's error, if it failed.
    error: Option<Arc<SnapshotError>>,
    /// Checks started / finished (a check that started after a caller arrived answers it).
    started: u64,
    finished: u64,
}

/// An in-process cache of a snapshot's latest version; see the module docs.
///
/// Share one reader (in an `Arc`) per process and name: callers within one
/// check interval are answered from memory; callers that find it stale share
/// one refresh.
#[derive(Debug)]
pub struct SnapshotReader {
    store: DynStore,
    keys: Keys,
    clock: DynClock,
    interval: Duration,
    state: Mutex<ReaderState>,
    refresh: tokio::sync::Mutex<()>,
    metrics: ReaderMetrics,
}

impl SnapshotReader {
    /// A reader of snapshot `name` under `prefix` in `store`, checking at most once per `interval`.
    pub fn new(
        store: DynStore,
        prefix: &str,
        name: &str,
        clock: DynClock,
        interval: Duration,
    ) -> SResult<Self> {
        Ok(SnapshotReader {
            store,
            keys: Keys::new(prefix.trim_end_matches('/'), name)?,
            clock,
            interval,
            state: Mutex::new(ReaderState::default()),
            refresh: tokio::sync::Mutex::new(()),
            metrics: ReaderMetrics::default(),
        })
    }

    /// The snapshot name.
    pub fn name(&self) -> &str {
        &self.keys.name
    }

    /// The reader's counters.
    pub fn metrics(&self) -> &ReaderMetrics {
        &self.metrics
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReaderState> {
        // Every update of the state is a few plain assignments: poisoning cannot
        // leave it half-written in a harmful way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest snapshot, from memory if checked within the interval, else
    /// after one (shared) conditional check. Serves the last good snapshot,
    /// marked [`Served::stale`], when the store fails.
    pub async fn latest(&self) -> SResult<Served<Snapshot>> {
        self.get(false).await
    }

    /// Like [`SnapshotReader::latest`], but checks the store now (still shared
    /// with concurrent callers: one check that starts after this call answers all of them).
    pub async fn refresh(&self) -> SResult<Served<Snapshot>> {
        self.get(true).await
    }

    /// The answer from the state, if it is recent enough (`None`: check).
    fn answer(
        &self,
        st: &ReaderState,
        force: bool,
        arrived: u64,
    ) -> Option<SResult<Served<Snapshot>>> {
        let now = self.clock.now();
        let answered = st.finished > arrived;
        let recent = !force
            && st
                .checked
                .map(|c| now.duration_since(c).unwrap_or_default() < self.interval)
                .unwrap_or(false);
        if !(answered || recent) {
            return None;
        }
        match (&st.current, &st.error) {
            (Some(c), err) => {
                if err.is_some() {
                    inc(&self.metrics.stale_served);
                }
                Some(Ok(Served {
                    value: c.snapshot.clone(),
                    version: c.snapshot.info.version,
                    age: now.duration_since(c.verified).unwrap_or_default(),
                    stale: err.clone(),
                }))
            }
            (None, Some(e)) => Some(Err(share(e))),
            (None, None) => None,
        }
    }

    async fn get(&self, force: bool) -> SResult<Served<Snapshot>> {
        let arrived = {
            let st = self.state();
            if !force && let Some(a) = self.answer(&st, false, u64::MAX) {
                return a;
            }
            st.started
        };
        let _flight = self.refresh.lock().await;
        {
            let mut st = self.state();
            if let Some(a) = self.answer(&st, force, arrived) {
                return a;
            }
            st.started += 1;
        }
        let result = self.check().await;
        let mut st = self.state();
        st.finished = st.started;
        st.checked = Some(self.clock.now());
        match result {
            Ok(Some(fresh)) => {
                st.current = Some(fresh);
                st.error = None;
            }
            Ok(None) => {
                if let Some(c) = st.current.as_mut() {
                    c.verified = self.clock.now();
                }
                st.error = None;
            }
            Err(e) => {
                inc(&self.metrics.errors);
                warn!(snapshot = self.keys.name, error = %e, "snapshot check failed; serving the last good version if any");
                st.error = Some(Arc::new(e));
            }
        }
        match self.answer(&st, force, arrived) {
            Some(a) => a,
            // Unreachable: a check just finished, so it answers us.
            None => Err(SnapshotError::NotFound {
                name: self.keys.name.clone(),
            }),
        }
    }

    /// One freshness check: `Ok(None)` if unchanged, `Ok(Some)` with a new snapshot.
    async fn check(&self) -> SResult<Option<Cached>> {
        let known = {
            let st = self.state();
            st.current
                .as_ref()
                .map(|c| (c.head_version.clone(), c.snapshot.clone()))
        };
        inc(&self.metrics.checks);
        // Old bodies may be pruned between reading the head and the body: re-read then.
        for round in 0..3 {
            let head_obj = match (&known, round) {
                (Some((v, _)), 0) => match self.store.get_if_changed(&self.keys.head, v).await {
                    Ok(Fetch::Unchanged) => {
                        inc(&self.metrics.unchanged);
                        return Ok(None);
                    }
                    Ok(Fetch::Changed(o)) => o,
                    Err(e) => return Err(self.not_found_or(e)),
                },
                _ => self
                    .store
                    .get(&self.keys.head)
                    .await
                    .map_err(|e| self.not_found_or(e))?,
            };
            let record = HeadRecord::parse(&self.keys, &head_obj)?;
            let info = record.current().clone();
            if let Some((_, snap)) = &known
                && snap.info == info
            {
                // The head was rewritten without a new version (cannot happen
                // with this module's writers, but cheap to allow).
                return Ok(Some(Cached {
                    snapshot: snap.clone(),
                    head_version: head_obj.meta.version,
                    verified: self.clock.now(),
                }));
            }
            let body = match self.store.get(&info.body_key).await {
                Ok(o) => o,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            check_body(&self.keys, &info, &body)?;
            inc(&self.metrics.downloads);
            self.metrics
                .bytes_downloaded
                .fetch_add(body.body.len() as u64, Ordering::Relaxed);
            debug!(
                snapshot = self.keys.name,
                version = info.version,
                "downloaded a new snapshot version"
            );
            return Ok(Some(Cached {
                snapshot: Arc::new(Snapshot {
                    name: self.keys.name.clone(),
                    info,
                    body: body.body,
                }),
                head_version: head_obj.meta.version,
                verified: self.clock.now(),
            }));
        }
        Err(SnapshotError::Store(Error::Unavailable {
            message: format!(
                "snapshot '{}' kept changing while being read",
                self.keys.name
            ),
            source: None,
        }))
    }

    fn not_found_or(&self, e: Error) -> SnapshotError {
        match e {
            Error::NotFound { .. } => SnapshotError::NotFound {
                name: self.keys.name.clone(),
            },
            e => e.into(),
        }
    }
}

/// The error to hand to every caller of one failed refresh.
fn share(e: &Arc<SnapshotError>) -> SnapshotError {
    match e.as_ref() {
        SnapshotError::NotFound { name } => SnapshotError::NotFound { name: name.clone() },
        _ => SnapshotError::Shared(e.clone()),
    }
}

/// A [`SnapshotReader`] that parses the body as JSON into `T`, once per version.
#[derive(Debug)]
pub struct JsonSnapshotReader<T> {
    reader: SnapshotReader,
    parsed: tokio::sync::Mutex<Option<(u64, String, Arc<T>)>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + Send + Sync> JsonSnapshotReader<T> {
    /// Wraps a reader.
    pub fn new(reader: SnapshotReader) -> Self {
        JsonSnapshotReader {
            reader,
            parsed: tokio::sync::Mutex::new(None),
            _t: PhantomData,
        }
    }

    /// The underlying byte reader (its metrics count parses too).
    pub fn reader(&self) -> &SnapshotReader {
        &self.reader
    }

    /// The latest value: parsed once per version and shared.
    pub async fn latest(&self) -> SResult<Served<T>> {
        let s = self.reader.latest().await?;
        self.parse(s).await
    }

    /// Like [`JsonSnapshotReader::latest`], checking the store now.
    pub async fn refresh(&self) -> SResult<Served<T>> {
        let s = self.reader.refresh().await?;
        self.parse(s).await
    }

    async fn parse(&self, s: Served<Snapshot>) -> SResult<Served<T>> {
        let mut parsed = self.parsed.lock().await;
        let value = match &*parsed {
            Some((v, id, value)) if *v == s.version && *id == s.value.info.publish_id => {
                value.clone()
            }
            _ => {
                let value: Arc<T> =
                    Arc::new(serde_json::from_slice(&s.value.body).map_err(|source| {
                        SnapshotError::Decode {
                            name: self.reader.keys.name.clone(),
                            version: s.version,
                            source,
                        }
                    })?);
                inc(&self.reader.metrics.parses);
                *parsed = Some((s.version, s.value.info.publish_id.clone(), value.clone()));
                value
            }
        };
        Ok(Served {
            value,
            version: s.version,
            age: s.age,
            stale: s.stale,
        })
    }
}
