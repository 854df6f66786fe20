//! Beyond the seed: concurrent creates, case folding, the rules, the
//! indistinguishable login failure, the record format and paging.

use std::collections::BTreeSet;
use std::time::Duration;

use ifmatch::accounts::{AccountsError, HashParams, UserUpdate};
use ifmatch::store::PutOptions;

use crate::backends::backends;
use crate::{fixture, fixture_with, raw, start_time, stored_hash};

/// Eight workers register one username at once: exactly one wins, the
/// others get `UserAlreadyExists`, and the stored record is the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_username_have_one_winner() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let a = f.accounts.clone();
                let b = barrier.clone();
                tokio::spawn(async move {
                    b.wait().await;
                    // Different spellings: they all fold to the same account.
                    let name = if i % 2 == 0 { "racer" } else { "RACER" };
                    (
                        i,
                        a.create(name, &format!("Racer {i}"), &format!("password-{i}"))
                            .await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            match r {
                Ok(u) => winners.push((i, u)),
                Err(AccountsError::UserAlreadyExists { username }) => assert_eq!(username, "racer"),
                Err(e) => panic!("{backend}: task {i}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "{backend}: winners {winners:?}");
        let (w, user) = &winners[0];
        assert_eq!(
            f.accounts.get("racer").await.unwrap().as_ref(),
            Some(user),
            "{backend}"
        );
        for i in 0..8 {
            let r = f
                .accounts
                .authenticate("racer", &format!("password-{i}"))
                .await;
            assert_eq!(r.is_ok(), i == *w, "{backend}: password of task {i}");
        }
    }
}

/// "Alice" and "alice" are one account, stored once under its folded name.
#[tokio::test]
async fn usernames_fold_to_lowercase() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let u = f
            .accounts
            .create("Alice", "Alice Smith", "correct horse")
            .await
            .unwrap();
        assert_eq!(u.username, "alice", "{backend}");
        assert!(raw(&store, "alice").await.is_some(), "{backend}");
        assert!(store.get("users/Alice").await.is_err(), "{backend}");
        assert!(
            matches!(
                f.accounts.create("alice", "Other", "other password").await,
                Err(AccountsError::UserAlreadyExists { .. })
            ),
            "{backend}"
        );
        assert!(
            matches!(
                f.accounts.create("ALICE", "Other", "other password").await,
                Err(AccountsError::UserAlreadyExists { .. })
            ),
            "{backend}"
        );
        assert_eq!(
            f.accounts.get("ALICE").await.unwrap(),
            Some(u.clone()),
            "{backend}"
        );
        f.accounts
            .authenticate("aLiCe", "correct horse")
            .await
            .unwrap();
        f.accounts.set_name("ALICE", "Alice Jones").await.unwrap();
        assert_eq!(
            f.accounts.get("alice").await.unwrap().unwrap().name,
            "Alice Jones",
            "{backend}"
        );
        assert_eq!(f.accounts.list_all().await.unwrap().len(), 1, "{backend}");
        assert!(f.accounts.delete("AlIcE").await.unwrap(), "{backend}");
        assert_eq!(f.accounts.get("alice").await.unwrap(), None, "{backend}");
    }
}

/// A refused create: username, name, password, the expected error, words of its message.
type RuleCase<'a> = (
    &'a str,
    &'a str,
    &'a str,
    fn(&AccountsError) -> bool,
    &'a str,
);

/// Every rule is enforced with its own error, whose message names the rule,
/// and a refused create writes nothing.
#[tokio::test]
async fn rules_are_enforced_with_typed_errors() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let a = &f.accounts;
        let long_name = "n".repeat(257);
        let long_password = "p".repeat(1025);
        let cases: Vec<RuleCase> = vec![
            (
                "ab",
                "N",
                "password",
                |e| {
                    matches!(
                        e,
                        AccountsError::UsernameLength {
                            len: 2,
                            min: 3,
                            max: 32,
                            ..
                        }
                    )
                },
                "3-32 characters",
            ),
            (
                "a23456789012345678901234567890123",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameLength { len: 33, .. }),
                "3-32 characters",
            ),
            (
                "",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameLength { len: 0, .. }),
                "3-32 characters",
            ),
            (
                "al ice",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameCharacter { ch: ' ', .. }),
                "a-z, 0-9",
            ),
            (
                "al/ice",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameCharacter { ch: '/', .. }),
                "a-z, 0-9",
            ),
            (
                "alice@example",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameCharacter { ch: '@', .. }),
                "a-z, 0-9",
            ),
            (
                "zoë",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameCharacter { ch: 'ë', .. }),
                "a-z, 0-9",
            ),
            (
                "_alice",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameStart { ch: '_', .. }),
                "start with a letter or a digit",
            ),
            (
                "..x",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameStart { ch: '.', .. }),
                "start with a letter or a digit",
            ),
            (
                "-x-",
                "N",
                "password",
                |e| matches!(e, AccountsError::UsernameStart { ch: '-', .. }),
                "start with a letter or a digit",
            ),
            (
                "alice",
                "N",
                "seven77",
                |e| matches!(e, AccountsError::PasswordTooShort { len: 7, min: 8 }),
                "at least 8",
            ),
            (
                "alice",
                "N",
                "",
                |e| matches!(e, AccountsError::PasswordTooShort { len: 0, .. }),
                "at least 8",
            ),
            (
                "alice",
                "N",
                &long_password,
                |e| {
                    matches!(
                        e,
                        AccountsError::PasswordTooLong {
                            len: 1025,
                            max: 1024
                        }
                    )
                },
                "at most 1024 bytes",
            ),
            (
                "alice",
                &long_name,
                "password",
                |e| matches!(e, AccountsError::NameTooLong { len: 257, max: 256 }),
                "at most 256",
            ),
            (
                "alice",
                "Alice\nSmith",
                "password",
                |e| matches!(e, AccountsError::NameControlCharacter { code: 0x0a }),
                "control characters",
            ),
        ];
        for (username, name, password, is_expected, rule) in cases {
            let err = a.create(username, name, password).await.unwrap_err();
            assert!(is_expected(&err), "{backend}: {username:?}: {err:?}");
            assert!(
                err.to_string().contains(rule),
                "{backend}: {err} does not name the rule {rule:?}"
            );
            assert_eq!(err.kind(), ifmatch::ErrorKind::Invalid, "{backend}: {err}");
        }
        assert!(
            ifmatch::store::list_all(&*store, "")
                .await
                .unwrap()
                .is_empty(),
            "{backend}: a refused create wrote"
        );

        // Boundaries that pass: 3 and 32 characters, 8 characters (multi-byte
        // ones count once), 1024 bytes, a digit first, the three punctuation marks.
        a.create("abc", "", "ééééééé\u{e9}").await.unwrap();
        a.create(&"a".repeat(32), &"n".repeat(256), &"p".repeat(1024))
            .await
            .unwrap();
        a.create("0.a_b-c", "Zoë", "password").await.unwrap();

        // Updates follow the same rules and write nothing when refused.
        let before = store.get("accounts/abc").await.unwrap();
        assert!(matches!(
            a.update("abc", UserUpdate::password("short")).await,
            Err(AccountsError::PasswordTooShort { .. })
        ));
        assert!(matches!(
            a.update("abc", UserUpdate::name("a\u{7}")).await,
            Err(AccountsError::NameControlCharacter { .. })
        ));
        assert!(matches!(
            a.update("a b", UserUpdate::name("x")).await,
            Err(AccountsError::UsernameCharacter { .. })
        ));
        assert_eq!(
            store.get("accounts/abc").await.unwrap(),
            before,
            "{backend}"
        );
        // Reads and deletes refuse bad usernames instead of answering "not found".
        assert!(matches!(
            a.get("a b").await,
            Err(AccountsError::UsernameCharacter { .. })
        ));
        assert!(matches!(
            a.delete("x").await,
            Err(AccountsError::UsernameLength { .. })
        ));
        // Logins check only the maximum: a rule-breaking password is just wrong.
        assert!(matches!(
            a.authenticate("abc", "short").await,
            Err(AccountsError::InvalidCredentials)
        ));
        assert!(matches!(
            a.authenticate("abc", &long_password).await,
            Err(AccountsError::PasswordTooLong { .. })
        ));
    }
}

/// An unknown user, a wrong password and a username that cannot exist all
/// give the very same error.
#[tokio::test]
async fn unknown_user_fails_like_a_wrong_password() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        f.accounts
            .create("alice", "Alice", "correct horse")
            .await
            .unwrap();
        let wrong = f
            .accounts
            .authenticate("alice", "wrong password")
            .await
            .unwrap_err();
        let unknown = f
            .accounts
            .authenticate("bob", "wrong password")
            .await
            .unwrap_err();
        let impossible = f
            .accounts
            .authenticate("no such user!", "wrong password")
            .await
            .unwrap_err();
        assert!(
            matches!(wrong, AccountsError::InvalidCredentials),
            "{backend}"
        );
        for other in [&unknown, &impossible] {
            assert!(
                matches!(other, AccountsError::InvalidCredentials),
                "{backend}: {other:?}"
            );
            assert_eq!(other.to_string(), wrong.to_string(), "{backend}");
            assert_eq!(format!("{other:?}"), format!("{wrong:?}"), "{backend}");
            assert_eq!(other.kind(), wrong.kind(), "{backend}");
        }
    }
}

/// The default configuration hashes with OWASP's argon2id parameters.
#[tokio::test]
async fn default_hashing_is_owasp_argon2id() {
    for (backend, store) in backends().await {
        let f = fixture_with(&store, HashParams::default());
        assert_eq!(HashParams::default(), HashParams::new(19456, 2, 1));
        f.accounts
            .create("alice", "Alice", "correct horse")
            .await
            .unwrap();
        let hash = stored_hash(&store, "alice").await;
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{backend}: {hash}"
        );
        f.accounts
            .authenticate("alice", "correct horse")
            .await
            .unwrap();
        assert!(matches!(
            f.accounts.authenticate("nobody", "correct horse").await,
            Err(AccountsError::InvalidCredentials)
        ));
    }
}

/// The record holds exactly the documented fields, with timestamps from the
/// injected clock; updates move `updated_at` only.
#[tokio::test]
async fn record_format_and_timestamps() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        f.accounts
            .create("alice", "Alice", "correct horse")
            .await
            .unwrap();
        let rec = raw(&store, "alice").await.unwrap();
        let fields: BTreeSet<_> = rec
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from([
                "format",
                "id",
                "username",
                "name",
                "password_hash",
                "revision",
                "created_at",
                "updated_at"
            ]),
            "{backend}"
        );
        assert_eq!(rec["format"], ifmatch::accounts::RECORD_FORMAT, "{backend}");
        assert_eq!(rec["revision"], 1, "{backend}");
        let id = rec["id"].as_str().unwrap().to_string();
        assert!(ifmatch::accounts::is_account_id(&id), "{backend}: {id}");
        assert_eq!(rec["created_at"], "2026-01-15T12:34:56.000Z", "{backend}");
        assert_eq!(rec["updated_at"], "2026-01-15T12:34:56.000Z", "{backend}");

        f.clock.advance(Duration::from_millis(90_250));
        let u = f
            .accounts
            .set_password("alice", "battery staple")
            .await
            .unwrap();
        assert_eq!(u.created_at, start_time(), "{backend}");
        assert_eq!(
            u.updated_at,
            start_time() + Duration::from_millis(90_250),
            "{backend}"
        );
        let rec = raw(&store, "alice").await.unwrap();
        assert_eq!(rec["created_at"], "2026-01-15T12:34:56.000Z", "{backend}");
        assert_eq!(rec["updated_at"], "2026-01-15T12:36:26.250Z", "{backend}");
        assert_eq!(
            (rec["id"].as_str(), &rec["revision"]),
            (Some(id.as_str()), &serde_json::json!(2)),
            "{backend}: every change moves the revision, never the id"
        );
        assert_eq!(u.revision, 2, "{backend}");
        assert_eq!(f.accounts.get("alice").await.unwrap(), Some(u), "{backend}");
    }
}

/// A record written by a newer version (a higher `format`) is refused and
/// never rewritten; a corrupt one is reported, not treated as absent.
#[tokio::test]
async fn newer_or_corrupt_records_are_left_alone() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let newer = serde_json::json!({"format": 3, "id": "nova", "username": "nova", "name": "N", "password_hash": "$argon2id$...", "created_at": "2026-01-01T00:00:00Z", "email": "n@example.invalid"});
        store
            .put(
                "accounts/nova",
                serde_json::to_vec(&newer).unwrap().into(),
                PutOptions::if_absent(),
            )
            .await
            .unwrap();
        let before = store.get("accounts/nova").await.unwrap();
        assert!(
            matches!(
                f.accounts.get("nova").await,
                Err(AccountsError::UnsupportedFormat {
                    found: 3,
                    supported: 2,
                    ..
                })
            ),
            "{backend}"
        );
        assert!(
            matches!(
                f.accounts.set_name("nova", "x").await,
                Err(AccountsError::UnsupportedFormat { .. })
            ),
            "{backend}"
        );
        assert!(
            matches!(
                f.accounts.authenticate("nova", "whatever1").await,
                Err(AccountsError::UnsupportedFormat { .. })
            ),
            "{backend}"
        );
        assert_eq!(
            store.get("accounts/nova").await.unwrap(),
            before,
            "{backend}: rewritten"
        );

        store
            .put("accounts/junk", "not json".into(), PutOptions::if_absent())
            .await
            .unwrap();
        let err = f.accounts.get("junk").await.unwrap_err();
        assert!(
            matches!(err, AccountsError::CorruptRecord { .. }),
            "{backend}: {err:?}"
        );
        store.put("accounts/plain", serde_json::to_vec(&serde_json::json!({"format": 2, "id": "plain", "username": "plain", "name": "P", "password_hash": "hunter22", "created_at": "2026-01-01T00:00:00Z"})).unwrap().into(), PutOptions::if_absent()).await.unwrap();
        let err = f
            .accounts
            .authenticate("plain", "hunter22")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AccountsError::CorruptRecord { reason, .. } if !reason.contains("hunter22")),
            "{backend}: {err:?}"
        );
    }
}

/// Paging: every user exactly once, in key order (DynamoDB: scan order), pages of the limit; the
/// limit's range is checked.
#[tokio::test]
async fn list_pagination() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let mut names: Vec<String> = (0..7).map(|i| format!("user{i}")).collect();
        for n in names.iter().rev() {
            f.accounts.create(n, n, "password").await.unwrap();
        }
        let mut pages = Vec::new();
        let mut token = None;
        loop {
            let page = f.accounts.list(token.as_deref(), 3).await.unwrap();
            pages.push(
                page.users
                    .iter()
                    .map(|u| u.username.clone())
                    .collect::<Vec<_>>(),
            );
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 1],
            "{backend}"
        );
        names.sort();
        let mut all = pages.concat();
        if backend != "dynamodb" {
            assert_eq!(all, names, "{backend}: not in key order");
        }
        all.sort();
        assert_eq!(all, names, "{backend}");
        assert_eq!(
            f.accounts.list(None, 7).await.unwrap().next,
            None,
            "{backend}"
        );
        for bad in [0, ifmatch::accounts::MAX_PAGE_LIMIT + 1] {
            assert!(
                matches!(
                    f.accounts.list(None, bad).await,
                    Err(AccountsError::InvalidPageLimit { .. })
                ),
                "{backend}"
            );
        }
        // Account records have a namespace of their own: the users' data
        // (under users/<id>/) is never paged through, so a page of 7 holds 7
        // users however much data there is. Keys below accounts/ that are not
        // account records are not listed.
        let first = f.accounts.list(None, 7).await.unwrap().users;
        for user in &first {
            for i in 0..3 {
                store
                    .put(
                        &format!("{}data-{i}", user.data_prefix()),
                        "x".into(),
                        PutOptions::any(),
                    )
                    .await
                    .unwrap();
            }
        }
        assert_eq!(
            f.accounts.list(None, 7).await.unwrap().users,
            first,
            "{backend}"
        );
        store
            .put("accounts/Not A User", "{}".into(), PutOptions::any())
            .await
            .unwrap();
        let mut all: Vec<_> = f
            .accounts
            .list_all()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        all.sort();
        assert_eq!(all, names, "{backend}");
    }
}

/// Every write lands but its response is lost: create, update and delete
/// still report what happened (settled by write id), instead of "already
/// exists" for the caller's own account.
#[tokio::test]
async fn lost_responses_are_settled_not_misreported() {
    use ifmatch::clock::SharedRng;
    use ifmatch::store::fault::{FaultConfig, FaultStore};
    for (backend, store) in backends().await {
        let config = FaultConfig {
            lost_response_rate: 1.0,
            ..FaultConfig::default()
        };
        let lossy: ifmatch::store::DynStore =
            std::sync::Arc::new(FaultStore::new(store.clone(), config, SharedRng::seeded(5)));
        let f = fixture(&lossy);
        let u = f
            .accounts
            .create("alice", "Alice", "correct horse")
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(u.username, "alice", "{backend}");
        f.accounts
            .set_password("alice", "battery staple")
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        f.accounts
            .authenticate("alice", "battery staple")
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(
            f.accounts.delete("alice").await.unwrap(),
            "{backend}: delete"
        );
        assert!(raw(&store, "alice").await.is_none(), "{backend}");
    }
}
