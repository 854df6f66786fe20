//! Keeping a cached copy current: the freshness rules, catching up with the
//! log, and the cold open (one listing of the tenant's keys, then the newest
//! checkpoint and the tail in parallel: two sequential round trips and
//! 2 + tail requests when the tail is contiguous).
//!
//! What this module guarantees (see "Freshness and garbage collection" in the
//! module docs): a copy is only ever advanced by applying entries in seq
//! order onto the checkpoint or copy they follow; a copy whose next entry may
//! have been collected is never advanced by replay, it reloads from the
//! newest checkpoint; and entries of this instance's undecided commits are
//! recognised by their writer id when they turn up.

use bytes::Bytes;
use futures::future::join_all;

use super::format::{Checkpoint, LogEntry, Sidecar};
use super::{Head, Result, TenantDbError, TenantDbs, blocking, corrupt, hold, local, request};
use crate::store::{Condition, ListPage, Version};

/// How fresh a copy must be before an operation uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fresh {
    /// A read: within `max_staleness` of the last check, no request at all.
    Read,
    /// A write's first attempt: the conditional create of the next entry is
    /// the freshness check.
    Write,
    /// Always check (after a lost commit or a transient error).
    Check,
}

/// The most undecided commits remembered per tenant.
const MAX_UNDECIDED: usize = 64;

/// How many listings a cold open takes before it gives up on a checkpoint
/// collected under it (each needs a newer checkpoint to age past the grace
/// window during the open).
const COLD_LISTINGS: usize = 3;

/// One listing of a tenant's keys (for a cold open and for collection).
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// `head` exists.
    pub(super) head: bool,
    /// The seqs of `checkpoint/<seq>`.
    pub(super) checkpoints: Vec<u64>,
    /// The seqs of `log/<seq>`.
    pub(super) logs: Vec<u64>,
}

impl TenantDbs {
    pub(super) async fn read_head(&self, tenant: &str) -> Result<Option<(Head, Version)>> {
        let key = self.key(tenant, "head");
        match self.get_versioned(&key).await? {
            None => Ok(None),
            Some((b, v)) => {
                let h: Head = serde_json::from_slice(&b).map_err(|e| TenantDbError::Corrupt {
                    what: key.clone(),
                    message: e.to_string(),
                })?;
                Ok(Some((h, v)))
            }
        }
    }

    /// Makes `local` the tenant's current state, as `fresh` asks. Returns
    /// false if the tenant has no database.
    pub(super) async fn ensure_current(
        &self,
        tenant: &str,
        local: &mut Option<Sidecar>,
        fresh: Fresh,
    ) -> Result<bool> {
        let cfg = &self.inner.cfg;
        if local.is_none() {
            let (paths, files) = self.paths_locked(tenant);
            let t = tenant.to_string();
            *local = blocking(move || {
                let _g = hold(&files);
                local::load_verified(&paths, &t)
            })
            .await?;
        }
        let now = cfg.clock.now_ms();
        let grace = cfg.gc_grace.as_millis() as u64;
        if let Some(sc) = local.as_mut() {
            let age = now.saturating_sub(sc.validated_ms);
            let trusted = match fresh {
                Fresh::Read => {
                    !cfg.max_staleness.is_zero() && age <= cfg.max_staleness.as_millis() as u64
                }
                // No probe: the conditional create of the next entry is the
                // check, and a copy this young cannot claim a collected seq
                // (see "Freshness and garbage collection" in the module docs).
                Fresh::Write => {
                    age < grace / 2
                        || (!cfg.max_staleness.is_zero()
                            && age <= cfg.max_staleness.as_millis() as u64)
                }
                Fresh::Check => false,
            };
            if trusted {
                bump!(self.inner.counters, cache_hits, 1);
                return Ok(true);
            }
            if age < grace / 2 {
                // Nothing after `sc.seq` can have been collected yet (see the module docs).
                self.catch_up(tenant, sc, now, None).await?;
                bump!(self.inner.counters, cache_hits, 1);
                return Ok(true);
            }
            match self.read_head(tenant).await? {
                // Entries after the newest checkpoint are never collected while we replay them;
                // an older copy loads that checkpoint instead of racing the collector.
                Some((h, _)) if h.floor <= sc.seq && h.newest() <= sc.seq => {
                    self.catch_up(tenant, sc, now, None).await?;
                    bump!(self.inner.counters, cache_hits, 1);
                    return Ok(true);
                }
                _ => {
                    // Too old to replay (or the head is gone): load afresh.
                    *local = None;
                }
            }
        }
        bump!(self.inner.counters, cache_misses, 1);
        *local = self.cold_load(tenant).await?;
        Ok(local.is_some())
    }

    /// Fetches and applies every log entry after `sc.seq` (`first`, when
    /// given, is the entry right after it, already fetched).
    pub(super) async fn catch_up(
        &self,
        tenant: &str,
        sc: &mut Sidecar,
        checked_ms: u64,
        first: Option<LogEntry>,
    ) -> Result<()> {
        let mut entries: Vec<LogEntry> = first.into_iter().collect();
        let mut next = sc.seq + 1 + entries.len() as u64;
        // One probe when current (the common case); then windows of parallel
        // GETs that double up to 16, so a long tail is not fetched one by one.
        let mut window = 1u64;
        'fetch: loop {
            let gets = (next..next + window).map(|s| {
                let key = self.log_key(tenant, s);
                async move { (self.get(&key).await, key) }
            });
            for (got, key) in join_all(gets).await {
                let Some(b) = got? else {
                    break 'fetch;
                };
                entries.push(self.decode_entry(&key, &b, next)?);
                next += 1;
            }
            window = (window * 2).min(16);
        }
        self.apply(tenant, sc, entries, checked_ms).await
    }

    fn decode_entry(&self, key: &str, body: &[u8], want: u64) -> Result<LogEntry> {
        let e = LogEntry::decode(body).map_err(|e| corrupt(key.to_string(), e))?;
        if e.seq != want {
            return Err(TenantDbError::Corrupt {
                what: key.to_string(),
                message: format!("holds seq {}", e.seq),
            });
        }
        Ok(e)
    }

    /// Applies fetched entries (in seq order, right after `sc.seq`) to the cached copy.
    async fn apply(
        &self,
        tenant: &str,
        sc: &mut Sidecar,
        entries: Vec<LogEntry>,
        checked_ms: u64,
    ) -> Result<()> {
        self.settle_undecided(tenant, &entries);
        let (paths, files) = self.paths_locked(tenant);
        let mut copy = sc.clone();
        copy.validated_ms = checked_ms;
        let keep_after = self.records_keep_after();
        let copy = blocking(move || {
            let _g = hold(&files);
            if entries.is_empty() {
                return Ok(copy);
            }
            local::apply_entries(&paths, &mut copy, &entries, keep_after)?;
            Ok(copy)
        })
        .await?;
        *sc = copy;
        Ok(())
    }

    /// Remembers a commit of ours whose outcome stayed unknown, to recognise
    /// its entry (by writer id) if it turns up.
    pub(super) fn remember_undecided(&self, tenant: &str, seq: u64, writer: u64) {
        bump!(self.inner.counters, undecided, 1);
        let mut m = self
            .inner
            .undecided
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let v = m.entry(tenant.to_string()).or_default();
        if v.len() >= MAX_UNDECIDED {
            v.remove(0);
        }
        v.push((seq, writer));
    }

    /// Settles remembered undecided commits against entries being applied:
    /// ours (same writer id) landed; another's at that seq means ours never will.
    fn settle_undecided(&self, tenant: &str, entries: &[LogEntry]) {
        let mut m = self
            .inner
            .undecided
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(v) = m.get_mut(tenant) else {
            return;
        };
        v.retain(|(seq, writer)| {
            let Some(e) = entries.iter().find(|e| e.seq == *seq) else {
                return true;
            };
            if e.writer == *writer {
                bump!(self.inner.counters, undecided_landed, 1);
                tracing::info!(tenant, seq, "a commit whose outcome was unknown did land");
            } else {
                bump!(self.inner.counters, undecided_lost, 1);
                tracing::info!(
                    tenant,
                    seq,
                    "a commit whose outcome was unknown did not land"
                );
            }
            false
        });
        if v.is_empty() {
            m.remove(tenant);
        }
    }

    /// Loads the tenant from the store: one listing of its keys, then the
    /// newest listed checkpoint and the listed tail in parallel.
    pub(super) async fn cold_load(&self, tenant: &str) -> Result<Option<Sidecar>> {
        let now = self.inner.cfg.clock.now_ms();
        // A listed checkpoint can be collected before we fetch it only once a
        // newer one has aged past the grace window: list again, a few times.
        for _ in 0..COLD_LISTINGS {
            let listing = self.list_tenant(tenant).await?;
            let Some(&want) = listing.checkpoints.iter().max() else {
                if listing.head {
                    return Err(TenantDbError::Corrupt {
                        what: self.key(tenant, "head"),
                        message: "no checkpoint found".into(),
                    });
                }
                // Neither a checkpoint nor a head: no such tenant (yet).
                return Ok(None);
            };
            let mut tail: Vec<u64> = listing.logs.into_iter().filter(|s| *s > want).collect();
            tail.sort_unstable();
            // The listing is the tail unless it has a gap (then replay one by one).
            let listed_tail = tail
                .iter()
                .enumerate()
                .all(|(i, s)| *s == want + 1 + i as u64);
            if !listed_tail {
                tail.clear();
            }
            let tail_gets = join_all(tail.iter().map(|s| {
                let key = self.log_key(tenant, *s);
                async move { (self.get(&key).await, key) }
            }));
            let ckp_key = self.ckp_key(tenant, want);
            let (body, fetched) = futures::join!(self.get(&ckp_key), tail_gets);
            let Some(body) = body? else {
                continue;
            };
            let mut entries = Vec::new();
            for (i, (got, key)) in fetched.into_iter().enumerate() {
                match got? {
                    Some(b) => entries.push(self.decode_entry(&key, &b, want + 1 + i as u64)?),
                    None => break,
                }
            }
            let complete = listed_tail && entries.len() == tail.len();
            if !listing.head {
                // A creator crashed before writing the head: repair it.
                self.init_head(tenant).await;
            }
            let mut sc = self.install_checkpoint(tenant, &body, want, now).await?;
            drop(body);
            self.apply(tenant, &mut sc, entries, now).await?;
            if !complete {
                self.catch_up(tenant, &mut sc, now, None).await?;
            }
            // Otherwise current as of the listing, which came after this call began.
            return Ok(Some(sc));
        }
        Err(TenantDbError::Corrupt {
            what: self.key(tenant, "checkpoint/"),
            message: format!(
                "the newest listed checkpoint was gone when fetched, {COLD_LISTINGS} times"
            ),
        })
    }

    /// Decodes a checkpoint and installs it as the tenant's cached copy.
    async fn install_checkpoint(
        &self,
        tenant: &str,
        body: &Bytes,
        want: u64,
        now: u64,
    ) -> Result<Sidecar> {
        let key = self.ckp_key(tenant, want);
        let (paths, files) = self.paths_locked(tenant);
        let t = tenant.to_string();
        let body = body.clone();
        blocking(move || {
            let ck = Checkpoint::decode_ref(&body).map_err(|e| corrupt(key, e))?;
            let _g = hold(&files);
            local::install_image(&paths, &t, ck.seq, ck.page_size, ck.image, ck.records, now)
        })
        .await
    }

    /// All of the tenant's keys in one listing (one request while they fit
    /// in a page; a nested tenant's keys are skipped).
    pub(super) async fn list_tenant(&self, tenant: &str) -> Result<Listing> {
        let mut l = Listing::default();
        self.list_keys(&self.key(tenant, ""), |rest| {
            if rest == "head" {
                l.head = true;
            } else if let Some(seq) = rest.strip_prefix("log/").and_then(|s| s.parse().ok()) {
                l.logs.push(seq);
            } else if let Some(seq) = rest
                .strip_prefix("checkpoint/")
                .and_then(|s| s.parse().ok())
            {
                l.checkpoints.push(seq);
            }
        })
        .await?;
        Ok(l)
    }

    /// Lists every key under `prefix`, page by page, handing `each` the part after the prefix.
    async fn list_keys(&self, prefix: &str, mut each: impl FnMut(&str)) -> Result<()> {
        let mut token = None;
        loop {
            let tok = token.take();
            let page = self
                .inner
                .cfg
                .retry
                .run(|| {
                    request(&self.inner.counters, "list");
                    self.inner.store.list(
                        prefix,
                        ListPage {
                            token: tok.clone(),
                            limit: 1000,
                        },
                    )
                })
                .await?;
            for e in &page.entries {
                if let Some(rest) = e.key.strip_prefix(prefix) {
                    each(rest);
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }

    /// Writes the first head (best effort: a cold open repairs a missing one).
    pub(super) async fn init_head(&self, tenant: &str) {
        let h = Head {
            checkpoints: vec![(0, self.inner.cfg.clock.now_ms())],
            floor: 0,
        };
        if let Ok(b) = serde_json::to_vec(&h) {
            let key = self.key(tenant, "head");
            let b = Bytes::from(b);
            let r = self
                .inner
                .cfg
                .retry
                .run(|| self.put(&key, b.clone(), Condition::Absent))
                .await;
            if let Err(e) = r
                && e.kind() != crate::ErrorKind::Conflict
            {
                tracing::debug!(tenant, error = %e, "could not write the head");
            }
        }
    }
}
