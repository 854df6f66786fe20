//! The optional in-process cache of completed results
//! ([`Idempotency::with_cache`](super::Idempotency::with_cache)): bounded,
//! least recently used first out, and entries past their record's expiry are
//! never returned.
//!
//! It only answers repeated duplicates without a read; the store's records
//! stay the only thing that decides whether a handler runs.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// A bounded least-recently-used cache of completed results.
#[derive(Debug, Default)]
pub(super) struct Cache {
    pub(super) capacity: usize,
    pub(super) tick: u64,
    pub(super) entries: HashMap<String, CacheEntry>,
    pub(super) order: BTreeMap<u64, String>,
}

#[derive(Debug)]
pub(super) struct CacheEntry {
    hash: String,
    result: Value,
    expires_at_ms: u64,
    tick: u64,
}

impl Cache {
    pub(super) fn get(&mut self, key: &str, now_ms: u64) -> Option<(String, Value)> {
        let expired = self.entries.get(key)?.expires_at_ms <= now_ms;
        if expired {
            self.remove(key);
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.get_mut(key)?;
        self.order.remove(&e.tick);
        e.tick = tick;
        self.order.insert(tick, key.to_string());
        Some((e.hash.clone(), e.result.clone()))
    }

    pub(super) fn put(&mut self, key: &str, hash: &str, result: &Value, expires_at_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        self.remove(key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.order.insert(self.tick, key.to_string());
        self.entries.insert(
            key.to_string(),
            CacheEntry {
                hash: hash.to_string(),
                result: result.clone(),
                expires_at_ms,
                tick: self.tick,
            },
        );
    }

    pub(super) fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_lru() {
        let mut c = Cache {
            capacity: 2,
            ..Cache::default()
        };
        c.put("a", "h", &Value::from(1), 100);
        c.put("b", "h", &Value::from(2), 100);
        assert!(c.get("a", 0).is_some()); // a is now the most recent
        c.put("c", "h", &Value::from(3), 100);
        assert!(c.get("b", 0).is_none());
        assert!(c.get("a", 0).is_some());
        assert!(c.get("c", 0).is_some());
        assert!(c.get("c", 100).is_none(), "expired entries are dropped");
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.order.len(), 1);
    }
}
