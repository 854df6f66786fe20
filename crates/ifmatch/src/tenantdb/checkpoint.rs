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

use bytes::Bytes;

use super::commit::Claim;
use super::format::{Checkpoint, CommitRecord, Sidecar};
use super::{Head, Result, TenantDbError, TenantDbs, blocking, hold, local, request};
use crate::ErrorKind;
use crate::error::Error;
use crate::store::Condition;

/// Attempts at the head's compare-and-swap before giving up (the next checkpoint retries).
const HEAD_ATTEMPTS: u32 = 8;

impl TenantDbs {
    /// Whether the log since the last known checkpoint is long enough for a new one:
    /// `checkpoint_every` commits, or page bytes of half the database.
    pub(super) fn checkpoint_due(&self, sc: &Sidecar) -> bool {
        let image = sc.hashes.len() as u64 * sc.page_size as u64;
        sc.tail_entries >= self.inner.cfg.checkpoint_every || sc.tail_bytes >= image / 2
    }

    /// Runs after a commit landed: checkpoints when one is due. A failure is
    /// logged; the commit stands, and the next commit tries again.
    pub(super) async fn after_commit(&self, tenant: &str, local: &mut Option<Sidecar>) {
        if let Some(sc) = local.as_mut()
            && self.checkpoint_due(sc)
            && let Err(e) = self.maybe_checkpoint(tenant, sc).await
        {
            tracing::warn!(tenant, seq = sc.seq, error = %e, "checkpoint failed (the commit stands)");
        }
    }

    /// Writes a checkpoint unless another writer wrote one this copy does not know of.
    async fn maybe_checkpoint(&self, tenant: &str, sc: &mut Sidecar) -> Result<()> {
        let since = sc.seq.saturating_sub(sc.tail_entries);
        if let Some((h, _)) = self.read_head(tenant).await? {
            let newest = h.newest();
            if newest > since && newest <= sc.seq {
                // Someone else checkpointed: count from there (bytes scaled, as sizes are unknown).
                let left = sc.seq - newest;
                sc.tail_bytes = sc.tail_bytes * left / sc.tail_entries.max(1);
                sc.tail_entries = left;
                if !self.checkpoint_due(sc) {
                    return Ok(());
                }
            }
        }
        let records = sc.records.clone();
        self.checkpoint(tenant, sc.seq, sc.page_size, records)
            .await?;
        sc.tail_entries = 0;
        sc.tail_bytes = 0;
        Ok(())
    }

    /// Uploads a checkpoint at `seq` (the cached file, which must be at
    /// `seq`), records it in the head and collects what no checkpoint needs
    /// any more.
    pub(super) async fn checkpoint(
        &self,
        tenant: &str,
        seq: u64,
        ps: u32,
        records: Vec<CommitRecord>,
    ) -> Result<()> {
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
        let body = Bytes::from(body);
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
        for seq in self.list_seqs(tenant, "log/").await? {
            if seq <= floor {
                self.delete_settled(&self.log_key(tenant, seq)).await?;
            }
        }
        for seq in self.list_seqs(tenant, "checkpoint/").await? {
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
