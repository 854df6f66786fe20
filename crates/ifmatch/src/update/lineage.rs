//! The update loop's bookkeeping in a value's metadata, and what it proves
//! about a write whose answer was lost.
//!
//! A write of the loop carries the ids of the changes it lands
//! ([`META_WRITE_ID`]: one id, or several, comma-separated, for a combined
//! write of [`super::Updater`]), the ids of the writes before it
//! ([`META_HISTORY`], oldest first, trimmed to the metadata budget) and the
//! count of changes since the key was created ([`META_SEQ`]). A write's own
//! ids are never trimmed: a combined write takes only as many changes as fit
//! beside [`MIN_HISTORY`] earlier ids ([`Lineage::fits`]), so the id of the
//! write it followed is always kept in the next write.

use crate::error::Error;
use crate::key::MAX_METADATA_BYTES;
use crate::store::{Metadata, Object, Version};

use super::{HISTORY, META_HISTORY, META_SEQ, META_WRITE_ID, MIN_HISTORY};

/// The length of the loop's own random write ids (12 hex digits).
pub(super) const WRITE_ID_LEN: usize = 12;

/// The loop's bookkeeping carried in metadata.
#[derive(Debug, Clone, Default)]
pub(super) struct Lineage {
    /// The change ids of loop writes, oldest first, the current value's own last.
    pub(super) ids: Vec<String>,
    /// Changes since creation; the history is complete when `seq <= ids.len()`.
    pub(super) seq: u64,
}

fn split(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Lineage {
    pub(super) fn of(obj: Option<&Object>) -> Lineage {
        let Some(obj) = obj else {
            return Lineage::default();
        };
        let md = &obj.meta.metadata;
        let Some(wid) = md.get(META_WRITE_ID) else {
            // Written outside the loop: no usable history.
            return Lineage {
                ids: Vec::new(),
                seq: u64::MAX,
            };
        };
        let mut ids: Vec<String> = md
            .get(META_HISTORY)
            .map(|h| split(h).collect())
            .unwrap_or_default();
        ids.extend(split(wid));
        let seq = md
            .get(META_SEQ)
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        Lineage { ids, seq }
    }

    pub(super) fn current(&self) -> Option<&str> {
        self.ids.last().map(String::as_str)
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.iter().any(|i| i == id)
    }

    fn complete(&self) -> bool {
        self.seq != u64::MAX && self.seq as usize <= self.ids.len()
    }

    /// The bytes the loop's own entries take for a write of `wids` (without the earlier ids).
    fn own_bytes(&self, wids: &[String]) -> usize {
        let seq = self.next_seq(wids.len()).len();
        let wid: usize = wids
            .iter()
            .map(|w| w.len() + 1)
            .sum::<usize>()
            .saturating_sub(1);
        META_WRITE_ID.len() + wid + META_SEQ.len() + seq + META_HISTORY.len()
    }

    fn next_seq(&self, changes: usize) -> String {
        if self.seq == u64::MAX {
            "?".to_string()
        } else {
            (self.seq + changes as u64).to_string()
        }
    }

    /// Whether a write of the changes `wids` with user `metadata` keeps
    /// within the metadata budget with room for [`MIN_HISTORY`] earlier ids.
    pub(super) fn fits(&self, metadata: &Metadata, wids: &[String]) -> bool {
        user_bytes(metadata) + self.own_bytes(wids) + MIN_HISTORY * (WRITE_ID_LEN + 1)
            <= MAX_METADATA_BYTES
    }

    /// The metadata entries of the write carrying `wids` that follows this
    /// lineage, added to the caller's `metadata`. The history keeps as many
    /// earlier ids (newest first, at most [`HISTORY`] − 1) as fit in the
    /// metadata budget ([`MAX_METADATA_BYTES`]) that the caller's own
    /// metadata and the write's own ids leave, so user metadata and the
    /// loop's bookkeeping never exceed the limit together; at least
    /// [`MIN_HISTORY`] ids must fit.
    pub(super) fn next(
        &self,
        key: &str,
        wids: &[String],
        metadata: &mut Metadata,
    ) -> Result<(), Error> {
        let user = user_bytes(metadata);
        let own = self.own_bytes(wids);
        let needed = own + MIN_HISTORY * (WRITE_ID_LEN + 1);
        if user + needed > MAX_METADATA_BYTES {
            return Err(Error::InvalidInput(format!(
                "the user metadata of key '{key}' takes {user} bytes; with the update loop's own bookkeeping ({needed} bytes) that passes the limit of {MAX_METADATA_BYTES} bytes: keep user metadata under {} bytes",
                MAX_METADATA_BYTES.saturating_sub(needed)
            )));
        }
        let room = MAX_METADATA_BYTES - user - own;
        // Newest first, as many as fit (each id costs its length plus a comma).
        let mut kept = 0usize;
        let mut bytes = 0usize;
        for id in self.ids.iter().rev().take(HISTORY - 1) {
            let cost = id.len() + usize::from(kept > 0);
            if bytes + cost > room {
                break;
            }
            bytes += cost;
            kept += 1;
        }
        let hist = self.ids[self.ids.len() - kept..].join(",");
        metadata.insert(META_WRITE_ID.into(), wids.join(","));
        metadata.insert(META_HISTORY.into(), hist);
        metadata.insert(META_SEQ.into(), self.next_seq(wids.len()));
        Ok(())
    }
}

fn user_bytes(metadata: &Metadata) -> usize {
    metadata
        .iter()
        .filter(|(k, _)| ![META_WRITE_ID, META_HISTORY, META_SEQ].contains(&k.as_str()))
        .map(|(k, v)| k.len() + v.len())
        .sum()
}

/// What the key's state says about a write whose answer did not settle it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Landed {
    /// Our write's ids are in the key's history: it landed.
    Yes,
    /// Another write followed the version ours was conditioned on: ours can never land.
    No,
    /// The key is still at the version ours was conditioned on: ours may
    /// still be on its way (late delivery), so nothing is decided yet.
    Pending,
    /// The history cannot tell.
    Unknown,
}

/// Whether `run` occurs in `ids` as a contiguous run.
fn has_run(ids: &[String], run: &[String]) -> bool {
    !run.is_empty() && ids.windows(run.len()).any(|w| w == run)
}

/// Judges the write carrying `wids`, conditioned on `base` (at `base_version`), from the key's state `now`.
///
/// A write's ids are stored together, so our write landed when they appear
/// as one run in the history. (A caller-chosen id alone may be in the
/// history from an earlier call's write; that says nothing about this one.)
pub(super) fn judge(
    base: &Lineage,
    base_version: Option<&Version>,
    wids: &[String],
    now: Option<&Object>,
) -> Landed {
    let after = Lineage::of(now);
    if has_run(&after.ids, wids) {
        return Landed::Yes;
    }
    match (base_version, now) {
        (None, None) => return Landed::Pending,
        (Some(v), Some(o)) if &o.meta.version == v => return Landed::Pending,
        _ => {}
    }
    match base.current() {
        // We conditioned on a loop write: another id after it in the history
        // begins the one write that could follow it, so ours never will.
        Some(prev) => match after.ids.iter().position(|id| id == prev) {
            Some(i) if i + 1 < after.ids.len() => Landed::No,
            _ => Landed::Unknown,
        },
        // We created the key: a complete history without our ids says another
        // writer created it, and a create can only land on an absent key.
        None if base.seq == 0 => {
            if now.is_some() && after.complete() {
                Landed::No
            } else {
                Landed::Unknown
            }
        }
        // We conditioned on a value written outside the loop.
        None => Landed::Unknown,
    }
}
