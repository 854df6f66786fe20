//! Hashes from older systems: bcrypt hashes in seed 003's format verify, and
//! a successful login upgrades them to argon2id with one conditional write.
//! Seed records are imported the documented way: written to
//! `users/<username>` (format 1) and moved by [`Accounts::migrate_legacy`].

use std::sync::Arc;

use bytes::Bytes;
use ifmatch::accounts::{Accounts, AccountsError};
use ifmatch::store::{DynStore, PutOptions};

use crate::backends::backends;
use crate::{CHEAP, fixture, racing, raw, stored_hash};

const PASSWORD: &str = "correct horse battery staple";

/// `PASSWORD` hashed by bcrypt at cost 12 as the seed's users table stores
/// it: `$2b$12$`, 60 characters.
const SEED_FORMAT_HASH: &str = "$2b$12$YUXrWVPhYAzxXUTiJR.uKul24Tt3EuRiv8NDaGZdMhrZggR6bKEvK";

/// A record shaped like a seed 003 DynamoDB item: no `format`, a Python
/// `isoformat()` timestamp without a zone, no `updated_at`.
fn seed_record(username: &str, hash: &str) -> Bytes {
    serde_json::to_vec(&serde_json::json!({
        "username": username,
        "name": "Legacy User",
        "password_hash": hash,
        "created_at": "2025-01-15T12:34:56.123456",
    }))
    .expect("json")
    .into()
}

/// Imports a seed record for `username` with `hash` the documented way: a
/// format-1 record at `users/<username>`, then the migration.
async fn import(store: &DynStore, accounts: &Accounts, username: &str, hash: &str) {
    store
        .put(
            &format!("users/{username}"),
            seed_record(username, hash),
            PutOptions::if_absent(),
        )
        .await
        .unwrap();
    let report = accounts.migrate_legacy(false).await.unwrap();
    assert_eq!(report.migrated, [username], "{report:?}");
}

/// `PASSWORD` hashed by bcrypt at the cheapest cost, in the given variant.
fn bcrypt_hash(version: bcrypt::Version) -> String {
    bcrypt::hash_with_salt(PASSWORD, 4, *b"ifmatch-legacy-1")
        .expect("bcrypt")
        .format_for_version(version)
}

/// A seed-format bcrypt hash verifies; a wrong password is refused without
/// touching the record; a right one upgrades it to argon2id, keeping the rest.
#[tokio::test]
async fn bcrypt_hash_verifies_and_is_upgraded_on_login() {
    assert_eq!(SEED_FORMAT_HASH.len(), 60);
    let cases = [
        ("seedformat", SEED_FORMAT_HASH.to_string()),
        ("legacy2a", bcrypt_hash(bcrypt::Version::TwoA)),
        ("legacy2b", bcrypt_hash(bcrypt::Version::TwoB)),
        ("legacy2y", bcrypt_hash(bcrypt::Version::TwoY)),
    ];
    for (backend, store) in backends().await {
        let f = fixture(&store);
        for (username, hash) in &cases {
            let ctx = format!("{backend}/{username}");
            import(&store, &f.accounts, username, hash).await;

            let user = f.accounts.get(username).await.unwrap().unwrap();
            assert_eq!(
                ifmatch::accounts::rfc3339(user.created_at),
                "2025-01-15T12:34:56.123Z",
                "{ctx}"
            );
            assert_eq!(user.updated_at, user.created_at, "{ctx}");

            let before = store.get(&format!("accounts/{username}")).await.unwrap();
            let wrong = f.accounts.authenticate(username, "not the password").await;
            assert!(
                matches!(wrong, Err(AccountsError::InvalidCredentials)),
                "{ctx}: {wrong:?}"
            );
            let after = store.get(&format!("accounts/{username}")).await.unwrap();
            assert_eq!(after, before, "{ctx}: a failed login wrote");

            let logged_in = f
                .accounts
                .authenticate(username, PASSWORD)
                .await
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(logged_in, user, "{ctx}");

            let rec = raw(&store, username).await.unwrap();
            let new_hash = rec["password_hash"].as_str().unwrap();
            assert!(
                new_hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
                "{ctx}: not upgraded"
            );
            assert_eq!(rec["format"], 2, "{ctx}");
            assert_eq!(
                rec["id"], *username,
                "{ctx}: a migrated account's id is its name"
            );
            assert_eq!(rec["name"], "Legacy User", "{ctx}");
            assert_eq!(rec["created_at"], "2025-01-15T12:34:56.123Z", "{ctx}");
            assert_eq!(
                rec["updated_at"], "2025-01-15T12:34:56.123Z",
                "{ctx}: an upgrade is not an update"
            );

            // The upgraded hash works, and a second login writes nothing more.
            let v = store
                .head(&format!("accounts/{username}"))
                .await
                .unwrap()
                .version;
            f.accounts
                .authenticate(username, PASSWORD)
                .await
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(
                store
                    .head(&format!("accounts/{username}"))
                    .await
                    .unwrap()
                    .version,
                v,
                "{ctx}"
            );
            assert!(
                matches!(
                    f.accounts.authenticate(username, "not the password").await,
                    Err(AccountsError::InvalidCredentials)
                ),
                "{ctx}"
            );
        }
    }
}

/// An argon2 hash with parameters other than the configured ones is rehashed too.
#[tokio::test]
async fn argon2_hash_with_old_parameters_is_rehashed() {
    for (backend, store) in backends().await {
        let old = fixture(&store);
        old.accounts
            .create("carol", "Carol", PASSWORD)
            .await
            .unwrap();
        assert!(
            stored_hash(&store, "carol").await.contains("m=64,t=1,p=1"),
            "{backend}"
        );
        let newer = crate::fixture_with(&store, ifmatch::accounts::HashParams::new(128, 1, 1));
        newer
            .accounts
            .authenticate("carol", PASSWORD)
            .await
            .unwrap();
        assert!(
            stored_hash(&store, "carol")
                .await
                .starts_with("$argon2id$v=19$m=128,t=1,p=1$"),
            "{backend}"
        );
    }
}

/// Losing the upgrade race is harmless: when the password is changed between
/// the login's read and its upgrade write, the login still succeeds, the
/// upgrade is skipped, and the password change stands.
#[tokio::test]
async fn losing_the_upgrade_race_is_harmless() {
    for (backend, store) in backends().await {
        // The concurrent password change, prepared on a scratch store: a
        // record of the same user with a new argon2id hash.
        let scratch: DynStore = Arc::new(ifmatch::store::memory::MemoryStore::new());
        let other = fixture(&scratch);
        other
            .accounts
            .create("dave", "Dave (renamed)", "changed by another worker")
            .await
            .unwrap();
        let changed = scratch.get("accounts/dave").await.unwrap().body;

        import(
            &store,
            &fixture(&store).accounts,
            "dave",
            &bcrypt_hash(bcrypt::Version::TwoB),
        )
        .await;
        let (racing, intruded) = racing(&store, "accounts/dave", changed.clone());
        let f = fixture(&racing);
        let user = f
            .accounts
            .authenticate("dave", PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(
            intruded.load(std::sync::atomic::Ordering::SeqCst),
            "{backend}: the login did not try to upgrade"
        );
        assert_eq!(
            user.name, "Legacy User",
            "{backend}: the login saw the record it verified"
        );

        // The other worker's write stands, untouched by the upgrade.
        assert_eq!(
            store.get("accounts/dave").await.unwrap().body,
            changed,
            "{backend}"
        );
        f.accounts
            .authenticate("dave", "changed by another worker")
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(
            matches!(
                f.accounts.authenticate("dave", PASSWORD).await,
                Err(AccountsError::InvalidCredentials)
            ),
            "{backend}"
        );
    }
}

/// Many logins of one bcrypt user at once: all succeed, the record ends up
/// argon2id, and every upgrade but the first lost its race harmlessly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_upgrade_once() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        import(
            &store,
            &f.accounts,
            "erin",
            &bcrypt_hash(bcrypt::Version::TwoY),
        )
        .await;
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let a = f.accounts.clone();
                tokio::spawn(async move { a.authenticate("erin", PASSWORD).await })
            })
            .collect();
        for t in tasks {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
        }
        let hash = stored_hash(&store, "erin").await;
        assert!(hash.starts_with("$argon2id$"), "{backend}: {hash}");
        assert!(
            CHEAP.memory_kib == 64 && hash.contains("m=64,t=1,p=1"),
            "{backend}"
        );
        f.accounts.authenticate("erin", PASSWORD).await.unwrap();
    }
}
