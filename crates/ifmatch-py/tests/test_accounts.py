"""Accounts: immutable account ids, revisions, and the failed-login back-off."""

from __future__ import annotations

from typing import Callable

import pytest

import ifmatch

CHEAP_HASH = (64, 1, 1)  # argon2id parameters for tests; production keeps OWASP's


def test_an_account_id_is_immutable_and_never_reused(store: ifmatch.Store) -> None:
    accounts = ifmatch.Accounts(store, hash_params=CHEAP_HASH)
    first = accounts.create("alice", "Alice", "correct horse battery")
    assert first.id.startswith("u") and len(first.id) == 33
    assert first.data_prefix == f"users/{first.id}/"
    assert first.revision == 1
    renamed = accounts.set_name("alice", "Alice Smith")
    assert (renamed.id, renamed.name) == (first.id, "Alice Smith")
    assert accounts.delete("alice") is True
    second = accounts.create("alice", "Another Alice", "another password")
    assert second.id != first.id
    got = accounts.get("alice")
    assert got is not None and got.id == second.id
    assert repr(second).startswith(f'ifmatch.User(id="{second.id}", username="alice"')


def test_password_changes_raise_the_revision(store: ifmatch.Store) -> None:
    accounts = ifmatch.Accounts(store, hash_params=CHEAP_HASH)
    accounts.create("bob", "Bob", "old password 1")
    assert accounts.set_password("bob", "new password 2").revision == 2
    with pytest.raises(ifmatch.InvalidCredentialsError):
        accounts.change_password("bob", "old password 1", "newer password 3")
    changed = accounts.change_password("bob", "new password 2", "newer password 3", client="192.0.2.1")
    assert changed.revision == 3
    assert accounts.login("bob", "newer password 3").revision == 3
    with pytest.raises(ifmatch.InvalidInputError, match="not an IPv4 or IPv6 address"):
        accounts.login("bob", "newer password 3", client="not an address")


def test_repeated_failed_logins_are_throttled(open_store: Callable[..., ifmatch.Store]) -> None:
    clock = ifmatch.ManualClock(start=1_700_000_000)
    accounts = ifmatch.Accounts(open_store(seed=3, clock=clock), hash_params=CHEAP_HASH)
    accounts.create("carol", "Carol", "right password")
    for _ in range(6):  # five free failures, then one that starts the back-off
        with pytest.raises(ifmatch.InvalidCredentialsError):
            accounts.login("carol", "wrong password", client="198.51.100.7")
    with pytest.raises(ifmatch.ThrottledError) as refused:
        accounts.login("carol", "right password", client="198.51.100.7")
    err = refused.value
    assert isinstance(err, ifmatch.TooManyRequestsError) and isinstance(err, ifmatch.Error)
    assert err.scope == "for this username" and err.retry_after == 1.0
    assert "too many failed logins" in str(err)
    # authenticate is the unthrottled check (trusted callers).
    assert accounts.authenticate("carol", "right password").username == "carol"
    clock.advance(1.0)
    assert accounts.login("carol", "right password", client="198.51.100.7").username == "carol"
    # throttle=False: no back-off at all.
    unthrottled = ifmatch.Accounts(open_store(seed=4, clock=clock), hash_params=CHEAP_HASH, throttle=False)
    for _ in range(8):
        with pytest.raises(ifmatch.InvalidCredentialsError):
            unthrottled.login("carol", "wrong password")
