//! Seed 003, test 5.3, CRUD operations: 8 checks.

use std::collections::BTreeSet;

use ifmatch::accounts::{Accounts, AccountsError};
use ifmatch::store::DynStore;

use crate::backends::backends;
use crate::{Fixture, fixture};

const USERS: [&str; 5] = ["user1", "user2", "user3", "user4", "user5"];

fn password(u: &str) -> String {
    format!("{u}-password")
}

/// Step 1's five users.
async fn setup(store: &DynStore) -> Fixture {
    let f = fixture(store);
    create_five(&f.accounts).await;
    f
}

async fn create_five(accounts: &Accounts) {
    for u in USERS {
        accounts
            .create(u, &format!("Test User {u}"), &password(u))
            .await
            .expect("create");
    }
}

/// Deletes the first three (step 4).
async fn delete_three(accounts: &Accounts) {
    for u in &USERS[..3] {
        assert!(accounts.delete(u).await.expect("delete"));
    }
}

/// 5.3.1: five users can be created.
#[tokio::test]
async fn check_5_3_1_create_five_users() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        for u in USERS {
            let user = f
                .accounts
                .create(u, &format!("Test User {u}"), &password(u))
                .await
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
            assert_eq!(user.username, u, "{backend}");
        }
    }
}

/// 5.3.2: listing shows all five.
#[tokio::test]
async fn check_5_3_2_list_shows_all() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        let page = f.accounts.list(None, 100).await.unwrap();
        // Key order on every backend but DynamoDB, whose scan order is its own.
        let mut names: Vec<_> = page.users.iter().map(|u| u.username.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, USERS, "{backend}");
        assert_eq!(page.next, None, "{backend}");
        let mut all = f.accounts.list_all().await.unwrap();
        let mut first = page.users.clone();
        all.sort_by(|a, b| a.username.cmp(&b.username));
        first.sort_by(|a, b| a.username.cmp(&b.username));
        assert_eq!(all, first, "{backend}");
    }
}

/// 5.3.3: each user can be read on its own.
#[tokio::test]
async fn check_5_3_3_get_each_user() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        for u in USERS {
            let user = f
                .accounts
                .get(u)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{backend}: {u} missing"));
            assert_eq!(user.username, u, "{backend}");
            assert_eq!(user.name, format!("Test User {u}"), "{backend}");
        }
    }
}

/// 5.3.4: the first three users can be deleted (each delete reports `true`).
#[tokio::test]
async fn check_5_3_4_delete_three() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        for u in &USERS[..3] {
            assert!(
                f.accounts
                    .delete(u)
                    .await
                    .unwrap_or_else(|e| panic!("{backend}: {e}")),
                "{backend}: {u}"
            );
        }
    }
}

/// 5.3.5: deleted users are gone: not readable, not listed, cannot log in.
#[tokio::test]
async fn check_5_3_5_deleted_users_are_gone() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        delete_three(&f.accounts).await;
        let listed: BTreeSet<_> = f
            .accounts
            .list_all()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        for u in &USERS[..3] {
            assert_eq!(f.accounts.get(u).await.unwrap(), None, "{backend}: {u}");
            assert!(!listed.contains(*u), "{backend}: {u} still listed");
            assert!(
                matches!(
                    f.accounts.authenticate(u, &password(u)).await,
                    Err(AccountsError::InvalidCredentials)
                ),
                "{backend}: {u} can still log in"
            );
            assert!(
                crate::raw(&store, u).await.is_none(),
                "{backend}: {u} record left"
            );
        }
    }
}

/// 5.3.6: the other two users are still there and can log in.
#[tokio::test]
async fn check_5_3_6_remaining_users_exist() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        delete_three(&f.accounts).await;
        let mut listed: Vec<_> = f
            .accounts
            .list_all()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, ["user4", "user5"], "{backend}");
        for u in &USERS[3..] {
            assert!(f.accounts.get(u).await.unwrap().is_some(), "{backend}: {u}");
            f.accounts
                .authenticate(u, &password(u))
                .await
                .unwrap_or_else(|e| panic!("{backend}: {u}: {e}"));
        }
    }
}

/// 5.3.7: deleting a user that does not exist reports `false`.
#[tokio::test]
async fn check_5_3_7_delete_missing_user_is_false() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        assert!(!f.accounts.delete("nobody").await.unwrap(), "{backend}");
        delete_three(&f.accounts).await;
        assert!(
            !f.accounts.delete("user1").await.unwrap(),
            "{backend}: deleted twice"
        );
    }
}

/// 5.3.8: listing pages by a limit: 2 + 2 + 1, every user once, then no token.
#[tokio::test]
async fn check_5_3_8_list_with_limit_pages() {
    for (backend, store) in backends().await {
        let f = setup(&store).await;
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = f.accounts.list(token.as_deref(), 2).await.unwrap();
            assert!(page.users.len() <= 2, "{backend}");
            sizes.push(page.users.len());
            seen.extend(page.users.into_iter().map(|u| u.username));
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
            assert!(sizes.len() < 10, "{backend}: paging does not end");
        }
        assert_eq!(sizes, [2, 2, 1], "{backend}");
        if backend != "dynamodb" {
            assert_eq!(seen, USERS, "{backend}: not in key order");
        }
        seen.sort_unstable();
        assert_eq!(seen, USERS, "{backend}");
    }
}
