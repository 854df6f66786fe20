//! The commit path: the write loop, one attempt (run the closure, read the
//! pages it changed from the WAL), publishing the pages as `log/<n+1>` and
//! settling who holds that seq, tenant creation and forced imports.
//!
//! What this module guarantees (see "Exactly once" in the module docs):
//!
//! - an entry can only land at the seq its writer claimed, and re-sending the
//!   identical bytes with `If-None-Match: *` is idempotent, so [`TenantDbs::claim`]
//!   settles an unanswered or ambiguous create by re-sending until an answer
//!   decides: created, or held by our own bytes → ours; held by another
//!   writer's entry → ours can never land;
//! - the closure runs again only after such proof (or after errors that prove
//!   nothing was written); an outcome still undecided when the retry budget is
//!   spent is an `Ambiguous` error, never a re-run;
//! - a write with a commit id ([`TenantDbs::write_once`]) that finds its id
//!   among the copy's commit records returns the stored result without
//!   running the closure.

use bytes::Bytes;

use super::format::{self, CommitRecord, LogEntry, Sidecar};
use super::sync::Fresh;
use super::{
    Checkpoint, MAX_COMMIT_RESULT_BYTES, Result, TenantDbError, TenantDbs, blocking, blocking_err,
    corrupt, crash_point, hold, local,
};
use crate::ErrorKind;
use crate::error::Error;
use crate::store::Condition;

/// How [`TenantDbs::write_once`] stores and replays a result.
pub(super) struct Once<T> {
    /// The caller's commit id.
    pub id: String,
    /// Serializes a result for the log entry.
    pub encode: fn(&T) -> serde_json::Result<Vec<u8>>,
    /// Reads a stored result back.
    pub decode: fn(&[u8]) -> serde_json::Result<T>,
}

/// Who holds a key after [`TenantDbs::claim`].
pub(super) enum Claim {
    /// Our bytes: the create landed (perhaps by an earlier send).
    Ours,
    /// Another writer's bytes: ours can never land there.
    Theirs(Bytes),
    /// The key existed and is gone (collected): the copy is too old to claim it.
    Gone,
}

/// The outcome of one write attempt.
enum Step<T> {
    Done(T),
    Lost,
    Recheck,
}

/// The error for a create whose outcome stayed unknown.
fn undecided(key: &str, last: &Error) -> TenantDbError {
    Error::Ambiguous {
        key: key.to_string(),
        message: format!(
            "the commit may or may not have landed (last error: {last}); it can only ever \
             land at this seq, and a retry with the same commit id settles it"
        ),
    }
    .into()
}

impl TenantDbs {
    /// The write loop behind [`TenantDbs::write`] and [`TenantDbs::write_once`].
    pub(super) async fn write_inner<T, F>(
        &self,
        tenant: &str,
        f: F,
        once: Option<Once<T>>,
    ) -> Result<T>
    where
        F: FnMut(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let use_ = self.enter(tenant)?;
        let mut local = use_.lock.clone().lock_owned().await;
        let res = self
            .write_locked(tenant, &mut local, f, once.as_ref())
            .await;
        self.finish(tenant, &mut local, &res);
        drop(local);
        drop(use_);
        self.evict().await;
        res
    }

    async fn write_locked<T, F>(
        &self,
        tenant: &str,
        local: &mut Option<Sidecar>,
        f: F,
        once: Option<&Once<T>>,
    ) -> Result<T>
    where
        F: FnMut(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let mut f = Some(f);
        let policy = self.inner.cfg.retry.clone();
        let mut attempts = policy.start();
        let mut conflicts = 0u32;
        let mut fresh = Fresh::Write;
        loop {
            attempts.begin();
            if attempts.made() > 1 {
                bump!(self.inner.counters, retries, 1);
            }
            match self.attempt(tenant, local, &mut f, once, fresh).await {
                Ok(Step::Done(v)) => return Ok(v),
                Ok(Step::Lost) => {
                    conflicts += 1;
                    // The copy caught up while settling the loss: the next
                    // create is the check again.
                    fresh = Fresh::Write;
                    bump!(self.inner.counters, conflicts, 1);
                    tracing::debug!(tenant, conflicts, "tenant commit lost, catching up");
                }
                Ok(Step::Recheck) => fresh = Fresh::Check,
                // Retryable means nothing of this attempt was written (see `claim`).
                Err(TenantDbError::Store(e)) if e.is_retryable() => {
                    fresh = Fresh::Check;
                    if !attempts.backoff().await {
                        return Err(TenantDbError::Store(e));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            if !attempts.backoff().await {
                return Err(TenantDbError::Conflict {
                    tenant: tenant.to_string(),
                    attempts: attempts.made(),
                    conflicts,
                });
            }
        }
    }

    /// One attempt of a write.
    async fn attempt<T, F>(
        &self,
        tenant: &str,
        local: &mut Option<Sidecar>,
        f: &mut Option<F>,
        once: Option<&Once<T>>,
        fresh: Fresh,
    ) -> Result<Step<T>>
    where
        F: FnMut(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let exists = self.ensure_current(tenant, local, fresh).await?;
        if !exists {
            self.create(tenant, local).await?;
        }
        let sc = local.clone().ok_or_else(|| TenantDbError::NotFound {
            tenant: tenant.to_string(),
        })?;
        if let Some(o) = once
            && let Some(r) = sc.records.iter().find(|r| r.id == o.id)
        {
            let v = (o.decode)(&r.result).map_err(|e| TenantDbError::Corrupt {
                what: format!("the stored result of commit '{}'", o.id),
                message: e.to_string(),
            })?;
            bump!(self.inner.counters, replays, 1);
            return Ok(Step::Done(v));
        }
        let (paths, files) = self.paths_locked(tenant);
        // Move the closure to a blocking thread and back.
        let mut owned: F = f.take().ok_or_else(|| {
            TenantDbError::Panicked("the closure was lost by an earlier panic".into())
        })?;
        let ps = sc.page_size;
        let limits = self.limits(&sc);
        let (owned, out) = tokio::task::spawn_blocking(move || {
            let g = hold(&files);
            let r = local::run_write(&paths, ps, &limits, &mut owned);
            drop(g);
            (owned, r)
        })
        .await
        .map_err(blocking_err)?;
        *f = Some(owned);
        let (value, wal) = out?;
        let now = self.inner.cfg.clock.now_ms();
        let record = match once {
            None => None,
            Some(o) => {
                let result = match (o.encode)(&value) {
                    Ok(r) if r.len() <= MAX_COMMIT_RESULT_BYTES => r,
                    Ok(r) => {
                        self.drop_wal(tenant).await?;
                        return Err(TenantDbError::InvalidInput(format!(
                            "the result of commit '{}' is {} bytes, more than the {} an \
                             idempotent commit can store",
                            o.id,
                            r.len(),
                            MAX_COMMIT_RESULT_BYTES
                        )));
                    }
                    Err(e) => {
                        self.drop_wal(tenant).await?;
                        return Err(TenantDbError::InvalidInput(format!(
                            "the result of commit '{}' cannot be serialized: {e}",
                            o.id
                        )));
                    }
                };
                Some(CommitRecord {
                    id: o.id.clone(),
                    seq: sc.seq + 1,
                    at_ms: now,
                    result,
                })
            }
        };
        let (pages, page_count) = match wal {
            Some(w) => {
                let count = w.page_count.unwrap_or(sc.hashes.len() as u32);
                (w.pages, count)
            }
            // Nothing changed: nothing to upload, unless the commit id must be recorded.
            None if record.is_some() => (Vec::new(), sc.hashes.len() as u32),
            None => return Ok(Step::Done(value)),
        };
        let grace = self.inner.cfg.gc_grace.as_millis() as u64;
        if grace > 0 && now.saturating_sub(sc.validated_ms) >= grace / 2 {
            // Too long since the base was checked to claim its successor safely.
            self.drop_wal(tenant).await?;
            return Ok(Step::Recheck);
        }
        if self
            .publish(tenant, local, pages, page_count, record)
            .await?
        {
            Ok(Step::Done(value))
        } else {
            Ok(Step::Lost)
        }
    }

    /// The size bounds of a commit on top of `sc`.
    fn limits(&self, sc: &Sidecar) -> local::Limits {
        local::Limits {
            max_commit: self.inner.cfg.max_commit_bytes,
            max_tenant: self.inner.cfg.max_tenant_bytes,
            old_bytes: sc.hashes.len() as u64 * sc.page_size as u64,
        }
    }

    pub(super) async fn drop_wal(&self, tenant: &str) -> Result<()> {
        let (paths, files) = self.paths_locked(tenant);
        blocking(move || {
            let _g = hold(&files);
            paths.clear_side_files()
        })
        .await
    }

    /// Creates `key` with `body` (`If-None-Match: *`) and settles who holds it.
    ///
    /// A `Conflict` is settled by reading the key back. An `Ambiguous` answer
    /// (the create may have landed, now or later), an `Unavailable` one (S3's
    /// 409 `ConditionalRequestConflict` included: nothing written) or a failed
    /// read-back decide nothing: the identical bytes are sent again, with
    /// backoff, until an answer decides. Errors: `Ambiguous` when a send may
    /// have landed and nothing decided within the retry budget; otherwise the
    /// last error, and then nothing of ours was written.
    pub(super) async fn claim(&self, key: &str, body: &Bytes) -> Result<Claim> {
        let policy = &self.inner.cfg.retry;
        let mut attempts = policy.start();
        let mut maybe_sent = false;
        loop {
            attempts.begin();
            let last = match self.put(key, body.clone(), Condition::Absent).await {
                Ok(_) => return Ok(Claim::Ours),
                Err(e) => match e.kind() {
                    ErrorKind::Conflict => match self.get_once(key).await {
                        Ok(Some(b)) if b == *body => return Ok(Claim::Ours),
                        Ok(Some(b)) => return Ok(Claim::Theirs(b)),
                        Ok(None) if !maybe_sent => return Ok(Claim::Gone),
                        // Gone after a send of ours may have landed: sending again
                        // could claim a collected seq, and nothing decides.
                        Ok(None) => return Err(undecided(key, &e)),
                        Err(read) => read,
                    },
                    ErrorKind::Ambiguous => {
                        maybe_sent = true;
                        e
                    }
                    ErrorKind::Unavailable => e,
                    _ if maybe_sent => return Err(undecided(key, &e)),
                    _ => return Err(e.into()),
                },
            };
            if !attempts.backoff().await {
                return Err(if maybe_sent {
                    undecided(key, &last)
                } else {
                    crate::retry::exhausted(last, attempts.made()).into()
                });
            }
        }
    }

    /// Publishes `pages` as the commit after `local`'s seq. True if it landed
    /// (the cached file then holds it); false if another writer's commit took
    /// that seq (the cached file has caught up with it).
    pub(super) async fn publish(
        &self,
        tenant: &str,
        local: &mut Option<Sidecar>,
        pages: Vec<(u32, Vec<u8>)>,
        page_count: u32,
        commit: Option<CommitRecord>,
    ) -> Result<bool> {
        let sc = local.clone().ok_or_else(|| TenantDbError::NotFound {
            tenant: tenant.to_string(),
        })?;
        let sent_ms = self.inner.cfg.clock.now_ms();
        let entry = LogEntry {
            seq: sc.seq + 1,
            writer: self.inner.rng.next_u64(),
            page_size: sc.page_size,
            page_count,
            pages,
            commit,
        };
        let body = Bytes::from(entry.encode());
        let key = self.log_key(tenant, entry.seq);
        let claim = match self.claim(&key, &body).await {
            Ok(c) => c,
            Err(e) => {
                self.drop_wal(tenant).await?;
                if e.kind() == ErrorKind::Ambiguous {
                    self.remember_undecided(tenant, entry.seq, entry.writer);
                }
                return Err(e);
            }
        };
        drop(body);
        let (paths, files) = self.paths_locked(tenant);
        match claim {
            Claim::Ours => {
                crash_point("tenantdb-commit-landed");
                bump!(self.inner.counters, commits, 1);
                let mut copy = sc;
                // Current as of the send: nothing after our seq can be collected
                // before a checkpoint past it has aged a grace window.
                copy.validated_ms = sent_ms;
                let keep_after = self.records_keep_after();
                let copy = blocking(move || {
                    let _g = hold(&files);
                    paths.clear_side_files()?;
                    local::apply_entries(
                        &paths,
                        &mut copy,
                        std::slice::from_ref(&entry),
                        keep_after,
                    )?;
                    Ok(copy)
                })
                .await?;
                *local = Some(copy);
                self.after_commit(tenant, local);
                Ok(true)
            }
            Claim::Theirs(b) => {
                self.drop_wal(tenant).await?;
                let theirs = LogEntry::decode(&b).map_err(|e| corrupt(key.clone(), e))?;
                if theirs.seq != entry.seq {
                    return Err(TenantDbError::Corrupt {
                        what: key,
                        message: format!("holds seq {}", theirs.seq),
                    });
                }
                let mut copy = sc;
                self.catch_up(tenant, &mut copy, sent_ms, Some(theirs))
                    .await?;
                *local = Some(copy);
                Ok(false)
            }
            Claim::Gone => {
                // Our copy is older than the collected log: load afresh next time.
                *local = None;
                blocking(move || {
                    let _g = hold(&files);
                    paths.remove_all()
                })
                .await?;
                Ok(false)
            }
        }
    }

    /// Creates the tenant with the schema hook; on losing the race, loads the winner's.
    pub(super) async fn create(&self, tenant: &str, local: &mut Option<Sidecar>) -> Result<()> {
        let dir = self.inner.cfg.cache_dir.clone();
        let stem = local::stem(tenant);
        let schema = self.inner.cfg.schema.clone();
        let (_, files) = self.paths_locked(tenant);
        let (ps, image) = blocking(move || {
            let _g = hold(&files);
            local::build_image(&dir, &stem, |tx| schema(tx))
        })
        .await?;
        self.publish_image(tenant, local, ps, image).await
    }

    /// Claims `checkpoint/0` with `image`: the tenant's creation.
    async fn publish_image(
        &self,
        tenant: &str,
        local: &mut Option<Sidecar>,
        ps: u32,
        image: Vec<u8>,
    ) -> Result<()> {
        let now = self.inner.cfg.clock.now_ms();
        let body = Bytes::from(Checkpoint::encode(0, ps, &image));
        let claim = match self.claim(&self.ckp_key(tenant, 0), &body).await {
            Ok(c) => c,
            // Whichever creation lands is the tenant, and no closure ran yet:
            // an undecided creation is just a transient failure.
            Err(e) if e.kind() == ErrorKind::Ambiguous => {
                return Err(Error::Unavailable {
                    message: format!("creating tenant '{tenant}': {e}"),
                    source: None,
                }
                .into());
            }
            Err(e) => return Err(e),
        };
        drop(body);
        match claim {
            Claim::Ours => {
                bump!(self.inner.counters, checkpoints, 1);
                let (paths, files) = self.paths_locked(tenant);
                let t = tenant.to_string();
                let sc = blocking(move || {
                    let _g = hold(&files);
                    local::install_image(&paths, &t, 0, ps, &image, Vec::new(), now)
                })
                .await?;
                *local = Some(sc);
                self.init_head(tenant).await;
                Ok(())
            }
            Claim::Theirs(_) | Claim::Gone => {
                *local = self.cold_load(tenant).await?;
                Ok(())
            }
        }
    }

    pub(super) async fn import_locked(
        &self,
        tenant: &str,
        local: &mut Option<Sidecar>,
        ps: u32,
        image: Vec<u8>,
        force: bool,
    ) -> Result<()> {
        let exists = self.ensure_current(tenant, local, Fresh::Check).await?;
        if !exists {
            let new = local::Limits {
                max_commit: u64::MAX,
                max_tenant: self.inner.cfg.max_tenant_bytes,
                old_bytes: 0,
            };
            new.check(0, image.len() as u64)?;
            self.publish_image(tenant, local, ps, image.clone()).await?;
            // A racing creator may have won; fall through to replace it when forced.
            let ours = local.as_ref().map(|s| s.seq == 0).unwrap_or(false) && {
                let (paths, files) = self.paths_locked(tenant);
                blocking(move || {
                    let _g = hold(&files);
                    local::read_image(&paths)
                })
                .await?
                    == image
            };
            if ours {
                return Ok(());
            }
        }
        if !force {
            return Err(TenantDbError::Exists {
                tenant: tenant.to_string(),
            });
        }
        let policy = self.inner.cfg.retry.clone();
        let mut attempts = policy.start();
        let mut conflicts = 0;
        loop {
            attempts.begin();
            self.ensure_current(tenant, local, Fresh::Check).await?;
            let sc = local.clone().ok_or_else(|| TenantDbError::NotFound {
                tenant: tenant.to_string(),
            })?;
            if sc.page_size != ps {
                return Err(Error::InvalidInput(format!(
                    "the file's page size {ps} differs from the tenant's {}",
                    sc.page_size
                ))
                .into());
            }
            let pages: Vec<(u32, Vec<u8>)> = image
                .chunks(ps as usize)
                .enumerate()
                .filter(|(i, p)| sc.hashes.get(*i) != Some(&format::page_hash(p)))
                .map(|(i, p)| (i as u32 + 1, p.to_vec()))
                .collect();
            let page_count = (image.len() / ps as usize) as u32;
            if pages.is_empty() && page_count as usize == sc.hashes.len() {
                return Ok(());
            }
            self.limits(&sc)
                .check(pages.len() as u64 * ps as u64, image.len() as u64)?;
            if self.publish(tenant, local, pages, page_count, None).await? {
                return Ok(());
            }
            conflicts += 1;
            bump!(self.inner.counters, conflicts, 1);
            if !attempts.backoff().await {
                return Err(TenantDbError::Conflict {
                    tenant: tenant.to_string(),
                    attempts: attempts.made(),
                    conflicts,
                });
            }
        }
    }
}
