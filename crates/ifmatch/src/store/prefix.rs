//! A view of a store under a key prefix.
//!
//! [`PrefixStore`] prepends a fixed prefix to every key and strips it from
//! listings, so several applications, tenants or test runs can share one
//! bucket or table without seeing each other's keys. Versions, conditions and
//! errors pass through unchanged (error messages name the full key).

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Condition, DynStore, Fetch, ListEntry, ListPage, ListResult, Object, ObjectMeta, PutOptions,
    Store, Version,
};
use crate::error::{Error, Result};
use crate::key::{validate_key, validate_prefix};

/// A store whose keys all live under `prefix/`.
#[derive(Debug, Clone)]
pub struct PrefixStore {
    inner: DynStore,
    prefix: String,
}

impl PrefixStore {
    /// Wraps `inner` so that key `k` is stored as `prefix/k`.
    ///
    /// The prefix must itself be a valid key (no leading or trailing `/`).
    pub fn new(inner: DynStore, prefix: &str) -> Result<PrefixStore> {
        validate_key(prefix)?;
        Ok(PrefixStore {
            inner,
            prefix: format!("{prefix}/"),
        })
    }

    fn full(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn strip(&self, mut meta: ObjectMeta) -> ObjectMeta {
        if let Some(k) = meta.key.strip_prefix(&self.prefix) {
            meta.key = k.to_string();
        }
        meta
    }
}

#[async_trait]
impl Store for PrefixStore {
    fn describe(&self) -> String {
        format!("{} (under {})", self.inner.describe(), self.prefix)
    }

    fn max_value_size(&self) -> Option<u64> {
        self.inner.max_value_size()
    }

    async fn get(&self, key: &str) -> Result<Object> {
        let mut o = self.inner.get(&self.full(key)?).await?;
        o.meta = self.strip(o.meta);
        Ok(o)
    }

    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        match self.inner.get_if_changed(&self.full(key)?, known).await? {
            Fetch::Unchanged => Ok(Fetch::Unchanged),
            Fetch::Changed(mut o) => {
                o.meta = self.strip(o.meta);
                Ok(Fetch::Changed(o))
            }
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        Ok(self.strip(self.inner.head(&self.full(key)?).await?))
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        self.inner.put(&self.full(key)?, body, opts).await
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.inner.delete(&self.full(key)?, condition).await
    }

    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        validate_prefix(prefix)?;
        let r = self
            .inner
            .list(&format!("{}{prefix}", self.prefix), page)
            .await?;
        let entries = r
            .entries
            .into_iter()
            .map(|e| {
                let key = e
                    .key
                    .strip_prefix(&self.prefix)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "listing under {} returned the key {:?} outside it",
                            self.prefix, e.key
                        ))
                    })?;
                Ok(ListEntry { key, ..e })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ListResult {
            entries,
            next: r.next,
        })
    }
}
