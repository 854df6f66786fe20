//! `memory://`: an in-process store for tests and single-process use.
//!
//! Versions come from one counter per store and never repeat, even after a
//! key is deleted and created again. [`MemoryStore::with_content_versions`]
//! makes them behave like S3's ETags instead (a hash of the body: the same
//! bytes give the same version), so tests can meet S3's semantics without S3.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{
    Condition, Fetch, ListEntry, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version, check_condition, page_sorted,
};
use crate::error::{Error, Result};
use crate::key::{validate_key, validate_metadata, validate_prefix};

/// An in-memory store. Cheap to create; everything is lost when it is dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Object>>,
    counter: AtomicU64,
    content_versions: bool,
}

impl MemoryStore {
    /// A new, empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, empty store whose versions are a hash of the body, like S3's
    /// ETags of single-part uploads: writing the same bytes again gives the
    /// same version (so a version can come back: A, B, A), and a change of
    /// metadata alone does not change it.
    pub fn with_content_versions() -> Self {
        MemoryStore {
            content_versions: true,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Object>> {
        // A panic while holding the lock cannot leave a half-written map entry
        // (every mutation is a single insert or remove), so poisoning is ignored.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory://".to_string()
    }

    async fn get(&self, key: &str) -> Result<Object> {
        validate_key(key)?;
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::not_found(key))
    }

    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        validate_key(key)?;
        match self.lock().get(key) {
            None => Err(Error::not_found(key)),
            Some(o) if &o.meta.version == known => Ok(Fetch::Unchanged),
            Some(o) => Ok(Fetch::Changed(o.clone())),
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        self.lock()
            .get(key)
            .map(|o| o.meta.clone())
            .ok_or_else(|| Error::not_found(key))
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        validate_key(key)?;
        validate_metadata(&opts.metadata)?;
        let mut map = self.lock();
        check_condition(key, &opts.condition, map.get(key).map(|o| &o.meta.version))?;
        let version = if self.content_versions {
            let digest = Sha256::digest(&body);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            Version::new(hex)
        } else {
            let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
            Version::new(format!("m{n}"))
        };
        map.insert(
            key.to_string(),
            Object {
                meta: ObjectMeta {
                    key: key.to_string(),
                    version: version.clone(),
                    size: body.len() as u64,
                    metadata: opts.metadata,
                    expires_at: opts.expires_at,
                },
                body,
            },
        );
        Ok(version)
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        validate_key(key)?;
        let mut map = self.lock();
        let current = map.get(key).map(|o| &o.meta.version);
        check_condition(key, &condition, current)?;
        map.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        validate_prefix(prefix)?;
        let all = self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| ListEntry {
                key: k.clone(),
                version: o.meta.version.clone(),
                size: o.meta.size,
            })
            .collect();
        page_sorted(all, &page)
    }
}
