//! Checkpoints and garbage collection: when a checkpoint is due, uploading
//! it, recording it in the head, and deleting what no checkpoint needs.
//!
//! What this module guarantees (see "Freshness and garbage collection" in the
//! module docs): a checkpoint is the exact image of the cached copy at its
//! seq, with the commit records young enough to keep; the head only names
//! checkpoints that were settled as stored; a log entry is deleted only once
//! a newer checkpoint has been in the head for the whole grace window; the
//! creation checkpoint is never deleted. Every write here treats S3's 409
//! (`Unavailable`) and lost answers as "try again", never as "exists".

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;

use super::commit::Claim;
use super::format::{Checkpoint, CommitRecord, Sidecar};
use super::{Head, Result, TenantDbError, TenantDbs, blocking, hold, local, request};
use crate::ErrorKind;
use crate::error::Error;
use crate::store::Condition;

/// Attempts at the head's compare-and-swap before giving up (the next checkpoint retries).
const HEAD_ATTEMPTS: u32 = 8;

/// The most tenants with a checkpoint queued at once.
const MAX_PENDING: usize = 256;

/// Background checkpoints running at once.
const WORKERS: usize = 2;

tokio::task_local! {
    /// Set while a background job runs, so its requests are counted apart.
    static BACKGROUND: ();
}

/// Whether the current task is background work (checkpoints, head, GC).
pub(super) fn in_background() -> bool {
    BACKGROUND.try_with(|_| ()).is_ok()
}

/// The background checkpoint work of one [`TenantDbs`]: a bounded set of
/// queued tenants, at most [`WORKERS`] running at once.
#[derive(Debug)]
pub(super) struct Background {
    pending: Mutex<HashSet<String>>,
    idle: tokio::sync::Notify,
    workers: tokio::sync::Semaphore,
}

impl Background {
    fn done(&self, tenant: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(tenant);
        if p.is_empty() {
            self.idle.notify_waiters();
        }
    }
}

impl Default for Background {
    fn default() -> Self {
        Background {
            pending: Mutex::new(HashSet::new()),
            idle: tokio::sync::Notify::new(),
            workers: tokio::sync::Semaphore::new(WORKERS),
        }
    }
}

/// Counts the tail from checkpoint `seq` on (bytes scaled, as entry sizes are not kept).
fn rebase_tail(sc: &mut Sidecar, seq: u64) {
    let left = sc.seq.saturating_sub(seq);
    sc.tail_bytes = sc.tail_bytes * left / sc.tail_entries.max(1);
    sc.tail_entries = left;
}

impl TenantDbs {
    /// Whether the log since the last known checkpoint is long enough for a new one:
    /// `checkpoint_every` commits, or page bytes of half the database.
    pub(super) fn checkpoint_due(&self, sc: &Sidecar) -> bool {
        let image = sc.hashes.len() as u64 * sc.page_size as u64;
        sc.tail_entries >= self.inner.cfg.checkpoint_every || sc.tail_bytes >= image / 2
    }

    /// Runs after a commit landed (and before it is acknowledged): schedules
    /// a background checkpoint when one is due. No store request here.
    pub(super) fn after_commit(&self, tenant: &str, local: &Option<Sidecar>) {
        if local.as_ref().is_some_and(|sc| self.checkpoint_due(sc)) {
            self.schedule_checkpoint(tenant);
        }
    }

    /// Queues a checkpoint of `tenant` on the background workers, unless one
    /// is queued already or the queue is full (the next commit asks again).
    fn schedule_checkpoint(&self, tenant: &str) {
        let bg = &self.inner.bg;
        {
            let mut p = bg.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.contains(tenant) || p.len() >= MAX_PENDING {
                return;
            }
            p.insert(tenant.to_string());
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            bg.done(tenant);
            return;
        };
        let (this, t, bg) = (self.clone(), tenant.to_string(), bg.clone());
        rt.spawn(BACKGROUND.scope((), async move {
            if let Err(e) = this.background_checkpoint(&t).await {
                tracing::warn!(tenant = %t, error = %e, "checkpoint failed (the commits stand)");
            }
            // Let go of the TenantDbs (and its cache lock) before `flush` returns.
            drop(this);
            bg.done(&t);
        }));
    }

    /// Waits until no background work is queued or running.
    pub(super) async fn wait_idle(&self) {
        let bg = &self.inner.bg;
        loop {
            let idle = bg.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if bg
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return;
            }
            idle.await;
        }
    }

    /// One background checkpoint: checks the head (another writer may have
    /// checkpointed), copies the image under the tenant's lock, then uploads
    /// it and updates the head without holding the lock.
    async fn background_checkpoint(&self, tenant: &str) -> Result<()> {
        let _permit = self.inner.bg.workers.acquire().await;
        let use_ = self.enter(tenant)?;
        let newest = self.read_head(tenant).await?.map(|(h, _)| h.newest());
        let (seq, body) = {
            let mut local = use_.lock.clone().lock_owned().await;
            let Some(sc) = local.as_mut() else {
                return Ok(());
            };
            let since = sc.seq.saturating_sub(sc.tail_entries);
            if let Some(newest) = newest
                && newest > since
                && newest <= sc.seq
            {
                // Someone else checkpointed: count from there (bytes scaled, as sizes are unknown).
                rebase_tail(sc, newest);
            }
            if !self.checkpoint_due(sc) {
                return Ok(());
            }
            let body = self
                .checkpoint_body(tenant, sc.seq, sc.page_size, sc.records.clone())
                .await?;
            (sc.seq, body)
        };
        self.upload_checkpoint(tenant, seq, body).await?;
        let mut local = use_.lock.clone().lock_owned().await;
        if let Some(sc) = local.as_mut()
            && sc.seq >= seq
            && sc.seq.saturating_sub(sc.tail_entries) < seq
        {
            rebase_tail(sc, seq);
        }
        Ok(())
    }

    /// The encoded checkpoint of the cached file (which must be at `seq`).
    async fn checkpoint_body(
        &self,
        tenant: &str,
        seq: u64,
        ps: u32,
        records: Vec<CommitRecord>,
    ) -> Result<Bytes> {
        let (paths, files) = self.paths_locked(tenant);
        let body = blocking(move || {
            let _g = hold(&files);
            // One copy of the image: read straight into the record.
            let len = paths.db_len()?;
            let mut buf = Checkpoint::header(seq, ps, &records, len as usize);
            local::read_image_into(&paths, &mut buf)?;
            Ok(Checkpoint::seal(buf))
        })
        .await?;
        Ok(Bytes::from(body))
    }

    /// Stores a checkpoint, records it in the head and collects what no
    /// checkpoint needs any more.
    async fn upload_checkpoint(&self, tenant: &str, seq: u64, body: Bytes) -> Result<()> {
        match self.claim(&self.ckp_key(tenant, seq), &body).await? {
            Claim::Ours => bump!(self.inner.counters, checkpoints, 1),
            // Another writer's checkpoint of the same seq: the same image.
            Claim::Theirs(_) => {}
            // Collected already: a newer checkpoint is past it.
            Claim::Gone => return Ok(()),
        }
        drop(body);
        self.record_checkpoint(tenant, seq).await
    }

    /// Adds checkpoint `seq` to the head, advances the floor, and collects.
    async fn record_checkpoint(&self, tenant: &str, seq: u64) -> Result<()> {
        let grace = self.inner.cfg.gc_grace.as_millis() as u64;
        let key = self.key(tenant, "head");
        let policy = self.inner.cfg.retry.clone();
        let mut attempts = policy.start();
        for _ in 0..HEAD_ATTEMPTS {
            attempts.begin();
            let now = self.inner.cfg.clock.now_ms();
            let (mut head, cond) = match self.read_head(tenant).await? {
                Some((h, v)) => (h, Condition::Matches(v)),
                None => (Head::default(), Condition::Absent),
            };
            let old_floor = head.floor;
            if !head.checkpoints.iter().any(|c| c.0 == seq) {
                head.checkpoints.push((seq, now));
                head.checkpoints.sort();
            }
            let floor = head
                .checkpoints
                .iter()
                .filter(|c| now.saturating_sub(c.1) >= grace)
                .map(|c| c.0)
                .max()
                .unwrap_or(0)
                .max(old_floor);
            head.floor = floor;
            head.checkpoints.retain(|c| c.0 >= floor);
            let b = serde_json::to_vec(&head).map_err(|e| TenantDbError::Corrupt {
                what: key.clone(),
                message: e.to_string(),
            })?;
            match self.put(&key, b.into(), cond).await {
                Ok(_) => {
                    if floor > old_floor {
                        self.collect(tenant, floor).await?;
                    }
                    return Ok(());
                }
                // Lost to another head update, S3's 409 (nothing written), or a
                // lost answer: re-read and apply again (adding the same
                // checkpoint twice changes nothing).
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Conflict | ErrorKind::Unavailable | ErrorKind::Ambiguous
                    ) =>
                {
                    if !attempts.backoff().await {
                        return Err(e.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes log entries `≤ floor` and checkpoints `< floor` (but never the creation checkpoint).
    async fn collect(&self, tenant: &str, floor: u64) -> Result<()> {
        let listing = self.list_tenant(tenant).await?;
        for seq in listing.logs {
            if seq <= floor {
                self.delete_settled(&self.log_key(tenant, seq)).await?;
            }
        }
        for seq in listing.checkpoints {
            if seq > 0 && seq < floor {
                self.delete_settled(&self.ckp_key(tenant, seq)).await?;
            }
        }
        Ok(())
    }

    /// Deletes `key` for good: an unconditional delete is idempotent, so a
    /// lost answer or S3's 409 is retried, and "not found" is success.
    async fn delete_settled(&self, key: &str) -> Result<()> {
        self.inner
            .cfg
            .retry
            .run(|| async {
                request(&self.inner.counters, "delete");
                match self.inner.store.delete(key, Condition::Any).await {
                    Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
                    Err(Error::Ambiguous { key, message }) => Err(Error::Unavailable {
                        message: format!("deleting '{key}': {message}"),
                        source: None,
                    }),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(Into::into)
    }
}
