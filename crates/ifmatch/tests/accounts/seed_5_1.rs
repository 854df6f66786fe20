//! Seed 003, test 5.1, user registration: 6 checks.
//!
//! The seed hashed with bcrypt (check 3: "60 chars, starts with `$2b$`");
//! ours is argon2id, so check 3 looks for the argon2id PHC prefix instead.

use ifmatch::accounts::AccountsError;

use crate::backends::backends;
use crate::{fixture, raw, start_time, stored_hash};

/// 5.1.1: create a new user with username, name and password.
#[tokio::test]
async fn check_5_1_1_create_new_user() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let user = f
            .accounts
            .create("alice", "Alice Smith", "correct horse")
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(user.username, "alice", "{backend}");
        assert_eq!(user.name, "Alice Smith", "{backend}");
        assert_eq!(user.created_at, start_time(), "{backend}");
        assert_eq!(user.updated_at, start_time(), "{backend}");
    }
}

/// 5.1.2: the user exists in storage (one record under `accounts/<username>`).
#[tokio::test]
async fn check_5_1_2_user_exists_in_storage() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        f.accounts
            .create("alice", "Alice Smith", "correct horse")
            .await
            .unwrap();
        let rec = raw(&store, "alice")
            .await
            .unwrap_or_else(|| panic!("{backend}: no record"));
        assert_eq!(rec["username"], "alice", "{backend}");
        assert_eq!(rec["name"], "Alice Smith", "{backend}");
        let keys = ifmatch::store::list_all(&*store, "").await.unwrap();
        let keys: Vec<_> = keys.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["accounts/alice"], "{backend}");
    }
}

/// 5.1.3: the password is stored hashed (argon2id with the configured
/// parameters), never in plain text.
#[tokio::test]
async fn check_5_1_3_password_is_hashed_with_argon2id() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        f.accounts
            .create("alice", "Alice Smith", "correct horse")
            .await
            .unwrap();
        let hash = stored_hash(&store, "alice").await;
        assert!(
            hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{backend}: {hash}"
        );
        assert!(!hash.contains("correct horse"), "{backend}");
        let body = store.get("accounts/alice").await.unwrap().body;
        assert!(
            !String::from_utf8_lossy(&body).contains("correct horse"),
            "{backend}"
        );
        // A second user with the same password gets a different salt, so a different hash.
        f.accounts
            .create("bob", "Bob", "correct horse")
            .await
            .unwrap();
        assert_ne!(stored_hash(&store, "bob").await, hash, "{backend}");
    }
}

/// 5.1.4: `get` returns the right data, and no hash (`User` has no such field;
/// its debug form shows none either).
#[tokio::test]
async fn check_5_1_4_get_returns_data_without_hash() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let created = f
            .accounts
            .create("alice", "Alice Smith", "correct horse")
            .await
            .unwrap();
        let got = f
            .accounts
            .get("alice")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{backend}"));
        assert_eq!(got, created, "{backend}");
        let shown = format!("{got:?}");
        assert!(
            !shown.contains("argon2") && !shown.contains('$'),
            "{backend}: {shown}"
        );
    }
}

/// 5.1.5: a duplicate username is refused with `UserAlreadyExists`, and the
/// first user's record is untouched.
#[tokio::test]
async fn check_5_1_5_duplicate_username_is_refused() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        f.accounts
            .create("alice", "Alice Smith", "correct horse")
            .await
            .unwrap();
        let before = store.get("accounts/alice").await.unwrap();
        let err = f
            .accounts
            .create("alice", "Impostor", "other password")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AccountsError::UserAlreadyExists { username } if username == "alice"),
            "{backend}: {err:?}"
        );
        assert_eq!(err.kind(), ifmatch::ErrorKind::Conflict, "{backend}");
        let after = store.get("accounts/alice").await.unwrap();
        assert_eq!(after, before, "{backend}: the record changed");
        f.accounts
            .authenticate("alice", "correct horse")
            .await
            .unwrap();
    }
}

/// 5.1.6: `get` of a user that does not exist returns `None`.
#[tokio::test]
async fn check_5_1_6_get_missing_user_is_none() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        assert_eq!(f.accounts.get("nobody").await.unwrap(), None, "{backend}");
        f.accounts
            .create("alice", "Alice Smith", "correct horse")
            .await
            .unwrap();
        assert_eq!(f.accounts.get("nobody").await.unwrap(), None, "{backend}");
    }
}
