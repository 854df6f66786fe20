//! Seed 003, test 5.2, user authentication: 8 checks.
//!
//! The seed's step 1 ("create test user") is set-up, done by [`setup`]; the
//! checks are its steps 2 to 9, named by step number.

use ifmatch::accounts::{Accounts, AccountsError, UserUpdate};
use ifmatch::store::DynStore;

use crate::backends::backends;
use crate::{Fixture, fixture, stored_hash};

const PASSWORD: &str = "correct horse";
const NEW_PASSWORD: &str = "battery staple";

/// Step 1: the test user.
async fn setup(store: &DynStore) -> Fixture {
    let f = fixture(store);
    f.accounts
        .create("alice", "Alice Smith", PASSWORD)
        .await
        .expect("create alice");
    f
}

fn is_invalid_credentials(r: Result<ifmatch::accounts::User, AccountsError>) -> bool {
    matches!(r, Err(AccountsError::InvalidCredentials))
}

async fn change_password(accounts: &Accounts) {
    accounts
        .update("alice", UserUpdate::password(NEW_PASSWORD))
        .await
        .expect("change password");
}

/// 5.2.2: the correct password authenticates.
#[tokio::test]
async fn check_5_2_2_correct_password_succeeds() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        let user = f
            .accounts
            .authenticate("alice", PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(user.username, "alice", "{backend}");
        assert_eq!(user.name, "Alice Smith", "{backend}");
    }
}

/// 5.2.3: a wrong password fails.
#[tokio::test]
async fn check_5_2_3_wrong_password_fails() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        for wrong in [
            "wrong password",
            "correct hors",
            "correct horse ",
            "CORRECT HORSE",
            "",
        ] {
            assert!(
                is_invalid_credentials(f.accounts.authenticate("alice", wrong).await),
                "{backend}: {wrong:?}"
            );
        }
    }
}

/// 5.2.4: an unknown user fails.
#[tokio::test]
async fn check_5_2_4_unknown_user_fails() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        assert!(
            is_invalid_credentials(f.accounts.authenticate("mallory", PASSWORD).await),
            "{backend}"
        );
    }
}

/// 5.2.5: the password can be changed.
#[tokio::test]
async fn check_5_2_5_update_password() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        let before = stored_hash(&store, "alice").await;
        let user = f
            .accounts
            .update("alice", UserUpdate::password(NEW_PASSWORD))
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(user.name, "Alice Smith", "{backend}");
        let after = stored_hash(&store, "alice").await;
        assert_ne!(after, before, "{backend}");
        assert!(after.starts_with("$argon2id$"), "{backend}");
    }
}

/// 5.2.6: after the change, the old password is rejected.
#[tokio::test]
async fn check_5_2_6_old_password_rejected() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        change_password(&f.accounts).await;
        assert!(
            is_invalid_credentials(f.accounts.authenticate("alice", PASSWORD).await),
            "{backend}"
        );
    }
}

/// 5.2.7: after the change, the new password works.
#[tokio::test]
async fn check_5_2_7_new_password_works() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        change_password(&f.accounts).await;
        f.accounts
            .authenticate("alice", NEW_PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

/// 5.2.8: the display name can be changed alone; the password stays as it was.
#[tokio::test]
async fn check_5_2_8_update_name_only() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        let hash = stored_hash(&store, "alice").await;
        let user = f
            .accounts
            .update("alice", UserUpdate::name("Alice Jones"))
            .await
            .unwrap();
        assert_eq!(user.name, "Alice Jones", "{backend}");
        assert_eq!(
            f.accounts.get("alice").await.unwrap().unwrap().name,
            "Alice Jones",
            "{backend}"
        );
        assert_eq!(
            stored_hash(&store, "alice").await,
            hash,
            "{backend}: the hash changed"
        );
        f.accounts
            .authenticate("alice", PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

/// 5.2.9: updating a user that does not exist fails with `UserNotFound`,
/// and creates nothing.
#[tokio::test]
async fn check_5_2_9_update_missing_user_fails() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        for change in [
            UserUpdate::name("Ghost"),
            UserUpdate::password(NEW_PASSWORD),
            UserUpdate::default(),
        ] {
            let err = f.accounts.update("ghost", change).await.unwrap_err();
            assert!(
                matches!(&err, AccountsError::UserNotFound { username } if username == "ghost"),
                "{backend}: {err:?}"
            );
            assert_eq!(err.kind(), ifmatch::ErrorKind::NotFound, "{backend}");
        }
        assert_eq!(f.accounts.get("ghost").await.unwrap(), None, "{backend}");
    }
}
