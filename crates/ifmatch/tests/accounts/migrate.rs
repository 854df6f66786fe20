//! `Accounts::migrate_legacy` (`ifmatch user migrate`): a store written
//! before account ids (format-1 records at `users/<username>`, next to the
//! users' data) is moved to `accounts/<username>`; the accounts keep their
//! data; the migration is idempotent, finishes an interrupted run, leaves
//! other accounts and unreadable records alone, and can run twice at once.

use std::collections::BTreeSet;

use ifmatch::accounts::AccountsError;
use ifmatch::store::{DynStore, PutOptions, list_all};

use crate::backends::backends;
use crate::fixture;

/// A format-1 record as the version before account ids wrote it.
fn old_record(username: &str, password_hash: &str) -> bytes::Bytes {
    serde_json::to_vec(&serde_json::json!({
        "format": 1,
        "username": username,
        "name": format!("{username} (old)"),
        "password_hash": password_hash,
        "created_at": "2025-06-01T10:00:00.000Z",
        "updated_at": "2025-06-02T10:00:00.000Z",
    }))
    .unwrap()
    .into()
}

async fn put(store: &DynStore, key: &str, body: impl Into<bytes::Bytes>) {
    store
        .put(key, body.into(), PutOptions::if_absent())
        .await
        .unwrap();
}

async fn keys(store: &DynStore) -> BTreeSet<String> {
    list_all(&**store, "")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

/// A hash of `password` with the fixture's cheap parameters, made by
/// creating a throw-away account on a scratch store.
async fn hash_of(password: &str) -> String {
    let scratch: DynStore = std::sync::Arc::new(ifmatch::store::memory::MemoryStore::new());
    fixture(&scratch)
        .accounts
        .create("scratch", "", password)
        .await
        .unwrap();
    crate::stored_hash(&scratch, "scratch").await
}

#[tokio::test]
async fn a_store_from_before_account_ids_is_migrated_once() {
    let alice_hash = hash_of("alice's password").await;
    for (backend, store) in backends().await {
        let f = fixture(&store);
        // What the previous version left: two accounts, their data, and
        // things under users/ that are not account records.
        put(&store, "users/alice", old_record("alice", &alice_hash)).await;
        put(&store, "users/bob", old_record("bob", &alice_hash)).await;
        put(&store, "users/alice/notes", "alice's notes").await;
        put(&store, "users/alice/profile/photo", "jpeg").await;
        put(&store, "users/bob/x", "bob's").await;
        put(&store, "users/Not A User", "{}").await;
        put(&store, "users/junk", "not json").await;
        // Before the migration the old accounts cannot log in, and their
        // names cannot be taken by someone else.
        assert!(matches!(
            f.accounts.authenticate("alice", "alice's password").await,
            Err(AccountsError::InvalidCredentials)
        ));
        assert!(
            matches!(
                f.accounts
                    .create("alice", "", "a newcomer's password")
                    .await,
                Err(AccountsError::UserAlreadyExists { .. })
            ),
            "{backend}"
        );

        // A dry run reports and writes nothing.
        let before = keys(&store).await;
        let mut dry = f.accounts.migrate_legacy(true).await.unwrap();
        dry.migrated.sort(); // DynamoDB lists in its scan order
        assert_eq!(dry.migrated, ["alice", "bob"], "{backend}");
        assert_eq!(dry.keys_examined, 7, "{backend}");
        assert_eq!(keys(&store).await, before, "{backend}: a dry run wrote");

        let mut report = f.accounts.migrate_legacy(false).await.unwrap();
        report.migrated.sort();
        assert_eq!(report.migrated, ["alice", "bob"], "{backend}");
        assert!(report.finished.is_empty(), "{backend}");
        assert_eq!(report.skipped.len(), 1, "{backend}: {report:?}");
        assert_eq!(report.skipped[0].0, "junk", "{backend}");
        let expected: BTreeSet<String> = [
            "accounts/alice",
            "accounts/bob",
            "users/alice/notes",
            "users/alice/profile/photo",
            "users/bob/x",
            "users/Not A User",
            "users/junk",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(keys(&store).await, expected, "{backend}");

        // Alice logs in with her old password; her id is her name, so her
        // data is where it was.
        let alice = f
            .accounts
            .authenticate("alice", "alice's password")
            .await
            .unwrap();
        assert_eq!(alice.id, "alice", "{backend}");
        assert_eq!(alice.data_prefix(), "users/alice/", "{backend}");
        assert_eq!(alice.name, "alice (old)", "{backend}");
        assert_eq!(
            ifmatch::accounts::rfc3339(alice.updated_at),
            "2025-06-02T10:00:00.000Z",
            "{backend}"
        );

        // Running it again changes nothing.
        let again = f.accounts.migrate_legacy(false).await.unwrap();
        assert!(
            again.migrated.is_empty() && again.finished.is_empty(),
            "{backend}: {again:?}"
        );
        assert_eq!(keys(&store).await, expected, "{backend}");

        // Once deleted, the name goes to a new account with a new id: the
        // old data is out of its reach.
        assert!(f.accounts.delete("alice").await.unwrap());
        let newcomer = f
            .accounts
            .create("alice", "", "a newcomer's password")
            .await
            .unwrap();
        assert_ne!(newcomer.data_prefix(), "users/alice/", "{backend}");
    }
}

#[tokio::test]
async fn an_interrupted_migration_is_finished_and_other_accounts_are_left_alone() {
    let hash = hash_of("a password of old").await;
    for (backend, store) in backends().await {
        let f = fixture(&store);
        // carl: copied by a run that stopped before deleting the old record.
        put(&store, "users/carl", old_record("carl", &hash)).await;
        f.accounts.migrate_legacy(false).await.unwrap();
        put(&store, "users/carl", old_record("carl", &hash)).await;
        // dora: an accounts/ record of a different account by that name.
        let scratch: DynStore = std::sync::Arc::new(ifmatch::store::memory::MemoryStore::new());
        fixture(&scratch)
            .accounts
            .create("dora", "", "the other dora")
            .await
            .unwrap();
        let other_dora = scratch.get("accounts/dora").await.unwrap().body;
        put(&store, "accounts/dora", other_dora.clone()).await;
        put(&store, "users/dora", old_record("dora", &hash)).await;

        let report = f.accounts.migrate_legacy(false).await.unwrap();
        assert!(report.migrated.is_empty(), "{backend}: {report:?}");
        assert_eq!(report.finished, ["carl"], "{backend}");
        assert_eq!(report.skipped.len(), 1, "{backend}: {report:?}");
        assert_eq!(report.skipped[0].0, "dora", "{backend}");
        assert!(
            report.skipped[0].1.contains("another account"),
            "{backend}: {report:?}"
        );
        assert!(store.get("users/carl").await.is_err(), "{backend}");
        assert_eq!(
            store.get("accounts/dora").await.unwrap().body,
            other_dora,
            "{backend}"
        );
        assert!(
            store.get("users/dora").await.is_ok(),
            "{backend}: left alone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_migrations_at_once_move_each_account_once() {
    let hash = hash_of("a password of old").await;
    let names: Vec<String> = (0..12).map(|i| format!("user{i:02}")).collect();
    for (backend, store) in backends().await {
        for n in &names {
            put(&store, &format!("users/{n}"), old_record(n, &hash)).await;
        }
        let (a, b) = (fixture(&store), fixture(&store));
        let (ra, rb) = tokio::join!(
            a.accounts.migrate_legacy(false),
            b.accounts.migrate_legacy(false)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let moved: BTreeSet<&String> = ra.migrated.iter().chain(&rb.migrated).collect();
        assert_eq!(
            moved.len(),
            ra.migrated.len() + rb.migrated.len(),
            "{backend}: an account was moved twice"
        );
        let done: BTreeSet<&String> = moved
            .iter()
            .copied()
            .chain(ra.finished.iter())
            .chain(&rb.finished)
            .collect();
        assert_eq!(done, names.iter().collect(), "{backend}");
        let users = a.accounts.list_all().await.unwrap();
        assert_eq!(users.len(), names.len(), "{backend}");
        assert!(users.iter().all(|u| u.id == u.username), "{backend}");
        assert!(
            list_all(&*store, "users/").await.unwrap().is_empty(),
            "{backend}"
        );
    }
}
