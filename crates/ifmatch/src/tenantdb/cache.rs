//! The local cache of a [`TenantDbs`](super::TenantDbs): opening a cache
//! directory (its exclusive `flock`, and the cleanup of what a crashed process
//! left), the per-tenant slots that an operation holds in use
//! ([`InUse`]), the per-tenant file locks that blocking tasks hold, the
//! bookkeeping after an operation, and eviction.
//!
//! What it guarantees: one [`TenantDbs`] owns a cache directory at a time; a
//! tenant in use is never evicted; a cached copy that failed locally (I/O or
//! corruption) is dropped and re-fetched next time, never served; the cache
//! is brought back under `cache_budget` (least recently used first) and
//! `cache_max_age` after each operation. See "Cache" in the module docs.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use super::format::Sidecar;
use super::local::{self, Paths};
use super::stats::Counters;
use super::{Inner, Result, TenantDbError, TenantDbs, TenantDbsConfig, blocking};
use crate::error::Error;
use crate::store::DynStore;

pub(super) type TenantLock = Arc<tokio::sync::Mutex<Option<Sidecar>>>;

#[derive(Debug)]
pub(super) struct Slot {
    lock: TenantLock,
    users: usize,
    last_used_ms: u64,
    bytes: u64,
}

pub(super) type FileLock = Arc<Mutex<()>>;

pub(super) fn hold(l: &FileLock) -> std::sync::MutexGuard<'_, ()> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub(super) fn file_lock(&self, stem: &str) -> FileLock {
        let mut m = self.files.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(stem.to_string()).or_default().clone()
    }
}

/// Holds a tenant's slot in use (never evicted) until dropped.
pub(super) struct InUse {
    inner: Arc<Inner>,
    stem: String,
    pub(super) lock: TenantLock,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let now = self.inner.cfg.clock.now_ms();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get_mut(&self.stem) {
            s.users = s.users.saturating_sub(1);
            s.last_used_ms = now;
        }
    }
}

impl TenantDbs {
    /// Opens the tenant databases of `store` with a cache in `cfg.cache_dir`.
    ///
    /// Cached copies left by an earlier process are kept and re-validated on first use.
    pub fn open(store: DynStore, cfg: TenantDbsConfig) -> Result<TenantDbs> {
        fs::create_dir_all(&cfg.cache_dir)
            .map_err(|e| local::io("creating the cache directory", e))?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.cache_dir.join(".lock"))
            .map_err(|e| local::io("opening the cache lock", e))?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(TenantDbError::CacheInUse);
        }
        let mut slots = HashMap::new();
        let entries =
            fs::read_dir(&cfg.cache_dir).map_err(|e| local::io("listing the cache", e))?;
        let entries: Vec<fs::DirEntry> = entries.flatten().collect();
        let names: std::collections::HashSet<String> = entries
            .iter()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        for entry in &entries {
            let name = entry.file_name().to_string_lossy().to_string();
            // Leftovers of a crash: temporary files, and databases without a sidecar.
            let orphan = name
                .strip_suffix(".db")
                .is_some_and(|stem| !names.contains(&format!("{stem}.meta")));
            if name.ends_with(".tmp")
                || name.contains(".new.")
                || name.contains(".import.")
                || orphan
            {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!(file = %name, error = %e, "could not remove a cache leftover");
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".meta") else {
                continue;
            };
            let paths = Paths::new(&cfg.cache_dir, stem);
            let last_used_ms = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            slots.insert(
                stem.to_string(),
                Slot {
                    lock: Arc::new(tokio::sync::Mutex::new(None)),
                    users: 0,
                    last_used_ms,
                    bytes: paths.bytes(),
                },
            );
        }
        Ok(TenantDbs {
            inner: Arc::new(Inner {
                store,
                rng: cfg.retry.rng.clone(),
                cfg,
                counters: Counters::default(),
                files: Mutex::new(HashMap::new()),
                slots: Mutex::new(slots),
                undecided: Mutex::new(HashMap::new()),
                bg: Arc::default(),
                _lock_file: lock_file,
            }),
        })
    }

    /// The bytes the cache holds now.
    pub fn cache_bytes(&self) -> u64 {
        let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.values().map(|s| s.bytes).sum()
    }

    /// Whether a tenant currently has a copy in the cache.
    pub fn is_cached(&self, tenant: &str) -> bool {
        let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.contains_key(&local::stem(tenant))
    }

    /// The tenant's cache files and the lock that every blocking task on them
    /// holds: a cancelled operation's blocking task may still be running when
    /// the next operation starts, and must finish first.
    pub(super) fn paths_locked(&self, tenant: &str) -> (Paths, FileLock) {
        let stem = local::stem(tenant);
        let paths = Paths::new(&self.inner.cfg.cache_dir, &stem);
        (paths, self.inner.file_lock(&stem))
    }

    /// Validates the tenant id and marks its slot in use.
    pub(super) fn enter(&self, tenant: &str) -> Result<InUse> {
        crate::key::validate_key(&self.key(tenant, "head"))?;
        // Keeps one tenant's keys from nesting inside another's: tenant `a`
        // keeps `a/head`, `a/log/<seq>` and `a/checkpoint/<seq>`, so a nested
        // tenant `a/log` (or `a/head/..`) would land among them. Only a later
        // segment can do that; a first segment can be any name (a user
        // called `log` still gets a database).
        if tenant
            .split('/')
            .skip(1)
            .any(|s| s == "log" || s == "checkpoint" || s == "head")
        {
            return Err(Error::InvalidKey {
                key: tenant.chars().take(80).collect(),
                reason: "a nested tenant id may not have a 'log', 'checkpoint' or 'head' \
                         segment after its first"
                    .into(),
            }
            .into());
        }
        let stem = local::stem(tenant);
        let now = self.inner.cfg.clock.now_ms();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(stem.clone()).or_insert_with(|| Slot {
            lock: Arc::new(tokio::sync::Mutex::new(None)),
            users: 0,
            last_used_ms: now,
            bytes: 0,
        });
        slot.users += 1;
        slot.last_used_ms = now;
        Ok(InUse {
            inner: self.inner.clone(),
            stem,
            lock: slot.lock.clone(),
        })
    }

    /// After an operation: on a local failure drop the cached copy (it is
    /// re-fetched next time); record the slot's size.
    pub(super) fn finish<T>(&self, tenant: &str, local: &mut Option<Sidecar>, res: &Result<T>) {
        let (paths, files) = self.paths_locked(tenant);
        if matches!(
            res,
            Err(TenantDbError::Io { .. }) | Err(TenantDbError::Corrupt { .. })
        ) {
            *local = None;
            let _g = hold(&files);
            if let Err(e) = paths.remove_all() {
                tracing::warn!(tenant, error = %e, "could not drop a bad cached copy");
            }
        }
        let bytes = paths.bytes();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get_mut(&local::stem(tenant)) {
            s.bytes = bytes;
        }
    }

    /// Evicts tenants past the maximum age, then least recently used ones
    /// while the cache is over budget. Tenants in use are skipped.
    pub(super) async fn evict(&self) {
        let inner = self.inner.clone();
        let r = blocking(move || {
            let now = inner.cfg.clock.now_ms();
            let max_age = inner.cfg.cache_max_age.as_millis() as u64;
            let mut slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            let mut total: u64 = slots.values().map(|s| s.bytes).sum();
            let mut order: Vec<(u64, String)> = slots
                .iter()
                .filter(|(_, s)| s.users == 0)
                .map(|(k, s)| (s.last_used_ms, k.clone()))
                .collect();
            order.sort();
            for (last, stem) in order {
                let too_old = now.saturating_sub(last) > max_age;
                if !too_old && total <= inner.cfg.cache_budget {
                    continue;
                }
                let Some(slot) = slots.get(&stem) else {
                    continue;
                };
                let Ok(mut guard) = slot.lock.try_lock() else {
                    continue;
                };
                let files = inner.file_lock(&stem);
                let Ok(_g) = files.try_lock() else {
                    continue;
                };
                Paths::new(&inner.cfg.cache_dir, &stem).remove_all()?;
                *guard = None;
                drop(guard);
                total = total.saturating_sub(slot.bytes);
                slots.remove(&stem);
                bump!(inner.counters, evictions, 1);
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cache eviction failed");
        }
    }
}
