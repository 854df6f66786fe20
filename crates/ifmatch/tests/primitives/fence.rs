//! `ifmatch::fence`: fenced put, delete and update with a precondition, on
//! every backend; interoperation with `lease::fenced_put`; lost responses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ifmatch::clock::{DynClock, ManualClock, SharedRng};
use ifmatch::fence::{self, Fenced, FencedWriteError};
use ifmatch::lease::{fenced_get, fenced_put};
use ifmatch::retry::RetryPolicy;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::{DynStore, Metadata, Version};
use ifmatch::update::{Decision, UpdateError};

/// A policy on a manual clock; its generator (which draws the write ids) is
/// seeded from `seed` and a per-process counter, so no two writes share an id.
fn policy(seed: u64) -> RetryPolicy {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = seed ^ (N.fetch_add(1, Ordering::Relaxed) << 32);
    let clock: DynClock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    RetryPolicy::default()
        .with_clock(clock)
        .with_rng(SharedRng::seeded(seed))
}

fn any(_: Option<&Version>) -> bool {
    true
}

async fn put(
    store: &DynStore,
    key: &str,
    body: &'static str,
    token: u64,
) -> Result<fence::FencedWrite, FencedWriteError> {
    fence::put(
        &**store,
        key,
        Bytes::from_static(body.as_bytes()),
        token,
        Metadata::new(),
        &policy(token),
        any,
    )
    .await
}

#[tokio::test]
async fn put_refuses_older_tokens_and_honours_the_precondition() {
    for (name, store) in crate::backends::backends().await {
        let w = put(&store, "f/put", "from 5", 5).await.unwrap();
        assert!(w.created, "{name}");
        // The same token writes again; a newer one too.
        let w = put(&store, "f/put", "5 again", 5).await.unwrap();
        assert!(!w.created, "{name}");
        let w6 = put(&store, "f/put", "from 6", 6).await.unwrap();
        // An older token is refused, naming both tokens and the current version.
        match put(&store, "f/put", "stale", 5).await.unwrap_err() {
            FencedWriteError::Fenced(Fenced {
                key,
                token,
                stored,
                current,
            }) => {
                assert_eq!((key.as_str(), token, stored), ("f/put", 5, 6), "{name}");
                assert_eq!(current, w6.version, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        // A precondition on a version that moved fails with the current one.
        let err = fence::put(
            &*store,
            "f/put",
            "late".into(),
            7,
            Metadata::new(),
            &policy(7),
            |v| v == Some(&Version::new("not-the-version")),
        )
        .await
        .unwrap_err();
        match err {
            FencedWriteError::Precondition { current, .. } => {
                assert_eq!(current, Some(w6.version.clone()), "{name}")
            }
            other => panic!("{name}: {other:?}"),
        }
        // The value reads back without its header, through both readers.
        let v = fenced_get(&*store, "f/put").await.unwrap();
        assert_eq!(
            (v.body.as_ref(), v.token),
            (&b"from 6"[..], Some(6)),
            "{name}"
        );
        let raw = store.get("f/put").await.unwrap();
        assert!(raw.body.starts_with(b"ifmatch-fence/1 6 "), "{name}");
        let plain = fence::unfence(raw.clone()).unwrap();
        assert_eq!(plain.body, "from 6", "{name}");
        assert_eq!(plain.meta.size, 6, "{name}");
        assert_eq!(plain.meta.version, w6.version, "{name}");
        // A HEAD gives the same size.
        let meta = fence::unfenced_meta(store.head("f/put").await.unwrap());
        assert_eq!(meta.size, 6, "{name}");
    }
}

#[tokio::test]
async fn fence_and_lease_fenced_put_share_one_format() {
    for (name, store) in crate::backends::local_backends() {
        fenced_put(
            &*store,
            "f/mix",
            "lease".into(),
            9,
            Metadata::new(),
            &policy(1),
        )
        .await
        .unwrap();
        assert!(matches!(
            put(&store, "f/mix", "older", 8).await,
            Err(FencedWriteError::Fenced(Fenced { stored: 9, .. }))
        ));
        put(&store, "f/mix", "fence", 10).await.unwrap();
        let err = fenced_put(&*store, "f/mix", "x".into(), 9, Metadata::new(), &policy(2))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("older"), "{name}: {err}");
        assert_eq!(fenced_get(&*store, "f/mix").await.unwrap().body, "fence");
        // An unfenced value is read as it is, even when it starts like a header.
        store
            .put(
                "f/plain",
                "ifmatch-fence/1 1 ab\nx".into(),
                Default::default(),
            )
            .await
            .unwrap();
        let o = fence::unfence(store.get("f/plain").await.unwrap()).unwrap();
        assert_eq!(o.body, "ifmatch-fence/1 1 ab\nx", "{name}");
        let m = fence::unfenced_meta(store.head("f/plain").await.unwrap());
        assert_eq!(m.size, 22, "{name}");
    }
}

#[tokio::test]
async fn delete_refuses_older_tokens() {
    for (name, store) in crate::backends::backends().await {
        put(&store, "f/del", "v", 6).await.unwrap();
        let err = fence::delete(&*store, "f/del", 5, &policy(1), any)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FencedWriteError::Fenced(Fenced { stored: 6, .. })),
            "{name}: {err:?}"
        );
        assert!(store.head("f/del").await.is_ok(), "{name}");
        // A precondition that does not hold: nothing deleted.
        let err = fence::delete(&*store, "f/del", 7, &policy(1), |v| v.is_none())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                FencedWriteError::Precondition {
                    current: Some(_),
                    ..
                }
            ),
            "{name}"
        );
        assert!(
            fence::delete(&*store, "f/del", 7, &policy(1), any)
                .await
                .unwrap()
        );
        assert!(store.head("f/del").await.is_err(), "{name}");
        // Already absent: nothing to delete.
        assert!(
            !fence::delete(&*store, "f/del", 7, &policy(1), any)
                .await
                .unwrap()
        );
    }
}

/// Appends `suffix` to the (unfenced) value.
fn append(
    suffix: &'static str,
) -> impl FnMut(Option<&ifmatch::Object>) -> Result<Decision, ifmatch::error::BoxError> {
    move |current| {
        let mut body = current.map(|o| o.body.to_vec()).unwrap_or_default();
        body.extend_from_slice(suffix.as_bytes());
        Ok(Decision::write(body))
    }
}

#[tokio::test]
async fn update_works_on_the_value_without_its_header() {
    for (name, store) in crate::backends::backends().await {
        put(&store, "f/upd", "a", 3).await.unwrap();
        fence::update(&*store, "f/upd", Some(4), None, &policy(1), append("b"))
            .await
            .unwrap();
        let v = fenced_get(&*store, "f/upd").await.unwrap();
        assert_eq!((v.body.as_ref(), v.token), (&b"ab"[..], Some(4)), "{name}");
        // An older token: aborted with the fenced error, nothing written.
        let err = fence::update(&*store, "f/upd", Some(3), None, &policy(2), append("x"))
            .await
            .unwrap_err();
        let UpdateError::Aborted { source, .. } = err else {
            panic!("{name}: {err:?}")
        };
        let fenced = source.downcast::<FencedWriteError>().unwrap();
        assert!(
            matches!(
                *fenced,
                FencedWriteError::Fenced(Fenced {
                    token: 3,
                    stored: 4,
                    ..
                })
            ),
            "{name}"
        );
        // Without a token: reads the value unfenced and writes it plain.
        fence::update(&*store, "f/upd", None, None, &policy(3), append("c"))
            .await
            .unwrap();
        let raw = store.get("f/upd").await.unwrap();
        assert_eq!(raw.body, "abc", "{name}");
        assert_eq!(fenced_get(&*store, "f/upd").await.unwrap().token, None);
        // A change id: the same change sent twice lands once.
        for (i, replayed) in [(4, false), (5, true)] {
            let u = fence::update(
                &*store,
                "f/upd",
                Some(5),
                Some("chg-1"),
                &policy(i),
                append("d"),
            )
            .await
            .unwrap();
            assert_eq!(u.replayed, replayed, "{name}");
        }
        let v = fenced_get(&*store, "f/upd").await.unwrap();
        assert_eq!(
            (v.body.as_ref(), v.token),
            (&b"abcd"[..], Some(5)),
            "{name}"
        );
    }
}

/// Lost responses on every put and delete: each fenced write still lands
/// exactly once and reports success, and an older token is still refused.
#[tokio::test]
async fn lost_responses_are_resolved_by_the_write_id() {
    let inner: DynStore = Arc::new(ifmatch::store::memory::MemoryStore::new());
    let faulty: DynStore = Arc::new(FaultStore::new(
        inner.clone(),
        FaultConfig {
            lost_response_rate: 1.0,
            ..FaultConfig::default()
        },
        SharedRng::seeded(7),
    ));
    let w = put(&faulty, "f/lost", "one", 2).await.unwrap();
    assert!(w.created);
    assert_eq!(inner.head("f/lost").await.unwrap().version, w.version);
    put(&faulty, "f/lost", "two", 2).await.unwrap();
    assert_eq!(fenced_get(&*inner, "f/lost").await.unwrap().body, "two");
    assert!(matches!(
        put(&faulty, "f/lost", "old", 1).await,
        Err(FencedWriteError::Fenced(_))
    ));
    assert!(
        fence::delete(&*faulty, "f/lost", 2, &policy(1), any)
            .await
            .unwrap()
    );
    assert!(inner.head("f/lost").await.is_err());
}

/// Two holders race many fenced appends (tokens 1 and 2); every write of
/// token 1 that landed landed before the first write of token 2, and the
/// final value holds exactly the writes that were acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_holders_never_write_over_a_newer_token() {
    for (name, store) in crate::backends::local_backends() {
        let mut tasks = Vec::new();
        for token in [1u64, 2] {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u32;
                for i in 0..20 {
                    let p = policy(token * 100 + i);
                    let tag: &'static str = if token == 1 { "1" } else { "2" };
                    match fence::update(&*store, "f/race", Some(token), None, &p, append(tag)).await
                    {
                        Ok(_) => ok += 1,
                        Err(UpdateError::Aborted { .. }) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
                ok
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.push(t.await.unwrap());
        }
        let v = fenced_get(&*store, "f/race").await.unwrap();
        let s = String::from_utf8(v.body.to_vec()).unwrap();
        // Exact: one character per acknowledged write, and no '1' after a '2'.
        assert_eq!(s.matches('1').count() as u32, acked[0], "{name}: {s}");
        assert_eq!(s.matches('2').count() as u32, acked[1], "{name}: {s}");
        assert!(!s.contains("21"), "{name}: {s}");
        assert_eq!(acked[1], 20, "{name}: the newer holder is never refused");
        assert_eq!(v.token, Some(2), "{name}");
    }
}
