//! Identity: account ids are immutable and never reused, every change moves
//! the revision (what sessions are bound to), a user's own password change
//! checks the old one and loses to a concurrent change, and failed logins
//! back off per username and per client address.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ifmatch::accounts::AccountsError;
use ifmatch::store::DynStore;

use crate::backends::{backends, local_backends};
use crate::{fixture, racing, raw};

#[tokio::test]
async fn account_ids_are_immutable_and_never_reused() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let first = f
            .accounts
            .create("carol", "Carol", "first password")
            .await
            .unwrap();
        assert_eq!(first.revision, 1, "{backend}");
        assert_eq!(
            first.data_prefix(),
            format!("users/{}/", first.id),
            "{backend}"
        );
        let renamed = f.accounts.set_name("carol", "Carol C.").await.unwrap();
        let reset = f
            .accounts
            .set_password("carol", "second password")
            .await
            .unwrap();
        assert_eq!(
            (renamed.id.as_str(), renamed.revision),
            (first.id.as_str(), 2),
            "{backend}"
        );
        assert_eq!(
            (reset.id.as_str(), reset.revision),
            (first.id.as_str(), 3),
            "{backend}"
        );
        let checked = f
            .accounts
            .authenticate("carol", "second password")
            .await
            .unwrap();
        assert_eq!(
            checked, reset,
            "{backend}: the check reads the current revision"
        );

        assert!(f.accounts.delete("carol").await.unwrap());
        let second = f
            .accounts
            .create("carol", "", "third password")
            .await
            .unwrap();
        assert_ne!(second.id, first.id, "{backend}: an id was reused");
        assert_ne!(second.data_prefix(), first.data_prefix(), "{backend}");
        assert_eq!(
            raw(&store, "carol").await.unwrap()["id"],
            second.id.as_str()
        );
    }
}

#[tokio::test]
async fn a_password_change_checks_the_old_one_and_moves_the_revision() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        let before = f
            .accounts
            .create("dana", "", "the old password")
            .await
            .unwrap();
        let stored = store.get("accounts/dana").await.unwrap();
        let wrong = f
            .accounts
            .change_password("dana", "not the old one", "the new password", None)
            .await;
        assert!(
            matches!(wrong, Err(AccountsError::InvalidCredentials)),
            "{backend}: {wrong:?}"
        );
        let short = f
            .accounts
            .change_password("dana", "the old password", "short", None)
            .await;
        assert!(
            matches!(short, Err(AccountsError::PasswordTooShort { .. })),
            "{backend}"
        );
        assert_eq!(
            store.get("accounts/dana").await.unwrap(),
            stored,
            "{backend}: refused, yet written"
        );

        let after = f
            .accounts
            .change_password("dana", "the old password", "the new password", None)
            .await
            .unwrap();
        assert_eq!(
            (after.id.as_str(), after.revision),
            (before.id.as_str(), 2),
            "{backend}"
        );
        assert!(
            f.accounts
                .authenticate("dana", "the old password")
                .await
                .is_err()
        );
        assert_eq!(
            f.accounts
                .authenticate("dana", "the new password")
                .await
                .unwrap(),
            after,
            "{backend}"
        );
    }
}

/// A change that lands between the check of the old password and the write
/// of the new one wins: the password change is refused, nothing of it written.
#[tokio::test]
async fn a_password_change_loses_to_a_concurrent_change() {
    for (backend, store) in backends().await {
        let f = fixture(&store);
        f.accounts
            .create("erik", "Erik", "the old password")
            .await
            .unwrap();
        // The concurrent change: the operator renames erik (made on a copy).
        let scratch: DynStore = Arc::new(ifmatch::store::memory::MemoryStore::new());
        let original = store.get("accounts/erik").await.unwrap().body;
        scratch
            .put("accounts/erik", original, ifmatch::PutOptions::any())
            .await
            .unwrap();
        fixture(&scratch)
            .accounts
            .set_name("erik", "Erik (renamed)")
            .await
            .unwrap();
        let renamed = scratch.get("accounts/erik").await.unwrap().body;
        let (racing, _) = racing(&store, "accounts/erik", renamed.clone());
        let r = fixture(&racing)
            .accounts
            .change_password("erik", "the old password", "the new password", None)
            .await;
        assert!(
            matches!(r, Err(AccountsError::AccountChanged { .. })),
            "{backend}: {r:?}"
        );
        assert_eq!(
            store.get("accounts/erik").await.unwrap().body,
            renamed,
            "{backend}"
        );
        assert!(
            f.accounts
                .authenticate("erik", "the old password")
                .await
                .is_ok()
        );
    }
}

/// The back-off of `Accounts::login`, on the injected clock (see
/// `ThrottleConfig` for the schedule): five free failures per username, then
/// 1 s, 2 s, ...; refused before any hashing, even with the right password.
#[tokio::test]
async fn failed_logins_back_off_per_username_and_per_address() {
    for (backend, store) in local_backends() {
        let f = fixture(&store);
        f.accounts
            .create("fay", "", "fay's password")
            .await
            .unwrap();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for i in 0..6 {
            let r = f.accounts.login("fay", "a wrong guess", Some(ip)).await;
            assert!(
                matches!(r, Err(AccountsError::InvalidCredentials)),
                "{backend} #{i}: {r:?}"
            );
        }
        let r = f.accounts.login("fay", "fay's password", Some(ip)).await;
        match r {
            Err(e @ AccountsError::Throttled { .. }) => {
                assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{backend}");
                assert!(e.to_string().contains("for this username"), "{e}");
            }
            other => panic!("{backend}: {other:?}"),
        }
        f.clock.advance(Duration::from_secs(1));
        let fay = f
            .accounts
            .login("fay", "fay's password", Some(ip))
            .await
            .unwrap();
        assert_eq!(fay.username, "fay");
        // The success cleared fay's count: one more failure is not throttled.
        assert!(matches!(
            f.accounts.login("fay", "a wrong guess", Some(ip)).await,
            Err(AccountsError::InvalidCredentials)
        ));

        // Guessing many usernames from one address: 20 free failures in all.
        let other: IpAddr = "198.51.100.20".parse().unwrap();
        for i in 0..21 {
            let r = f
                .accounts
                .login(&format!("nobody{i}"), "a wrong guess", Some(other))
                .await;
            assert!(
                matches!(r, Err(AccountsError::InvalidCredentials)),
                "{backend} #{i}"
            );
        }
        let r = f.accounts.login("fay", "fay's password", Some(other)).await;
        assert!(
            matches!(&r, Err(e @ AccountsError::Throttled { .. }) if e.to_string().contains("from this address")),
            "{backend}: {r:?}"
        );
        // Other addresses are not affected; authenticate() is not throttled.
        f.accounts
            .login("fay", "fay's password", Some(ip))
            .await
            .unwrap();
        f.accounts
            .authenticate("fay", "fay's password")
            .await
            .unwrap();
    }
}
