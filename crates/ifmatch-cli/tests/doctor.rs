//! The doctor against a correct store and against stores that ignore conditions.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{intercept, list_all};
use ifmatch::{Condition, DynStore, Object, PutOptions, Result, Store, Version};
use ifmatch_cli::doctor;

/// Which conditions the broken store drops.
#[derive(Debug, Clone, Copy)]
enum Ignore {
    /// Every condition becomes `Any`.
    All,
    /// Only `If-Match` is ignored; create-if-absent still works (a common S3-compatible bug).
    IfMatch,
}

/// Delegates to a [`MemoryStore`] but drops conditions, and yields like a
/// network store would, so concurrent workers interleave.
#[derive(Debug)]
struct IgnoresConditions {
    inner: MemoryStore,
    ignore: Ignore,
}

impl IgnoresConditions {
    fn new(ignore: Ignore) -> Arc<Self> {
        Arc::new(IgnoresConditions {
            inner: MemoryStore::new(),
            ignore,
        })
    }

    fn strip(&self, c: Condition) -> Condition {
        match (self.ignore, c) {
            (Ignore::All, _) => Condition::Any,
            (Ignore::IfMatch, Condition::Matches(_)) => Condition::Any,
            (Ignore::IfMatch, c) => c,
        }
    }
}

#[async_trait]
impl intercept::Intercept for IgnoresConditions {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn describe(&self) -> String {
        "ignores-conditions://".into()
    }
    async fn get(&self, key: &str) -> Result<Object> {
        tokio::task::yield_now().await;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, body: Bytes, mut opts: PutOptions) -> Result<Version> {
        tokio::task::yield_now().await;
        opts.condition = self.strip(opts.condition);
        self.inner.put(key, body, opts).await
    }
    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.inner.delete(key, self.strip(condition)).await
    }
}

fn failed(report: &doctor::Report) -> Vec<&'static str> {
    report.failures().map(|c| c.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_correct_store_passes_and_is_left_clean() {
    let store: DynStore = Arc::new(MemoryStore::new());
    store
        .put("mine", Bytes::from_static(b"x"), PutOptions::any())
        .await
        .unwrap();
    let report = doctor::run(store.clone()).await;
    assert!(report.passed, "{}", report.render_table());
    assert_eq!(report.checks.len(), 7);
    let race = report.race.as_ref().unwrap();
    assert_eq!((race.final_value, race.expected), (Some(200), 200));
    assert!(race.attempts >= 200);
    assert!(report.prefix.starts_with("ifmatch-doctor/"));
    assert!(report.cleanup.error.is_none() && report.cleanup.leftover.is_empty());
    let left: Vec<String> = list_all(&*store, "")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(left, ["mine"]);
    let table = report.render_table();
    assert!(table.contains("All 7 checks passed"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["checks"][5]["id"], "concurrent-race");
}

#[tokio::test]
async fn a_store_that_ignores_every_condition_fails() {
    let broken = IgnoresConditions::new(Ignore::All);
    let report = doctor::run(broken.clone()).await;
    eprintln!("{}", report.render_table());
    assert!(!report.passed);
    assert_eq!(
        failed(&report),
        [
            "create-exclusive",
            "stale-if-match",
            "if-match-missing",
            "conditional-delete",
            "concurrent-race"
        ],
        "{}",
        report.render_table()
    );
    let race = report.race.as_ref().unwrap();
    assert!(race.final_value.unwrap() < 200, "{race:?}");
    let stale = report.check("stale-if-match").unwrap();
    assert!(
        stale.detail.contains("ignores If-Match"),
        "{}",
        stale.detail
    );
    let table = report.render_table();
    assert!(
        table.contains("FAIL") && table.contains("Do not use it"),
        "{table}"
    );
    // It still cleans up after itself.
    assert!(list_all(&*broken, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_store_that_ignores_only_if_match_fails() {
    let broken = IgnoresConditions::new(Ignore::IfMatch);
    let report = doctor::run(broken).await;
    assert_eq!(
        failed(&report),
        [
            "stale-if-match",
            "if-match-missing",
            "conditional-delete",
            "concurrent-race"
        ],
        "{}",
        report.render_table()
    );
    let race = report.race.unwrap();
    let lost = race.expected - race.final_value.unwrap();
    assert!(lost > 0, "{race:?}");
}
