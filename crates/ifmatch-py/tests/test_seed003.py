"""Seed 003's own acceptance tests (the flashcards team's days 2-5), ported
to ifmatch. Each keeps the seed's checks and adds what ifmatch guarantees
beyond them; the seed's timing checks become request counts.

- 2.1 new user database creation, 2.2 read/write persistence across connections;
- 3.1 cache speedup, 3.2 cache hit rate over 50 requests;
- 4.1 conflict detection, 4.2 ten concurrent writers (the seed accepted
  "at least 1 write succeeds"; here all 10 land);
- 5.1 registration, 5.2 authentication, 5.3 CRUD of users.

A "connection" in the seed is one Lambda invocation; a fresh cache directory
stands for a fresh Lambda container.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import pytest

import ifmatch

FIELD_SEP = "\x1f"
CHEAP_HASH = (64, 1, 1)  # argon2id parameters for tests; production keeps OWASP's


def add_note(tx: ifmatch.Tx, note_id: int, front: str, back: str = "Back") -> None:
    tx.execute(
        "INSERT INTO notes (id, guid, mid, mod, usn, tags, flds, sfld, csum, flags, data)"
        " VALUES (?, ?, 1, 0, -1, '', ?, ?, 0, 0, '')",
        (note_id, f"g{note_id}", f"{front}{FIELD_SEP}{back}", front),
    )


def note_count(dbs: ifmatch.TenantDbs, user: str) -> int:
    return dbs.read(user, lambda tx: tx.query("SELECT count(*) FROM notes"))[0][0]


def anki(store: ifmatch.Store, cache_dir: Path) -> ifmatch.TenantDbs:
    return ifmatch.TenantDbs(store, cache_dir, schema=ifmatch.ANKI_SCHEMA)


def test_2_1_new_user_database_creation(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    dbs = anki(store, cache_dirs())
    dbs.write("test_new_user_001", lambda tx: None)  # creates the tenant with the schema
    fresh = anki(store, cache_dirs())  # another Lambda container
    tables = fresh.read(
        "test_new_user_001", lambda tx: tx.query("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
    )
    assert [t[0] for t in tables] == ["cards", "col", "notes", "revlog"]
    assert fresh.read("test_new_user_001", lambda tx: tx.query("SELECT id, ver FROM col")) == [(1, 11)]
    assert fresh.read("test_new_user_001", lambda tx: tx.query("PRAGMA integrity_check")) == [("ok",)]
    assert [e.key for page in store.list("tenants/") for e in page], "the database is in the store"


def test_2_2_read_write_persistence(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    user = "test_readwrite_002"
    anki(store, cache_dirs()).write(user, lambda tx: add_note(tx, 1, "Test Front", "Test Back"))
    second = anki(store, cache_dirs())
    flds = second.read(user, lambda tx: tx.query("SELECT flds FROM notes WHERE id = 1"))
    assert flds == [(f"Test Front{FIELD_SEP}Test Back",)]
    third = anki(store, cache_dirs())
    third.write(user, lambda tx: add_note(tx, 2, "Second"))
    assert note_count(third, user) == 2
    assert note_count(anki(store, cache_dirs()), user) == 2


def test_3_1_warm_requests_download_nothing(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    user = "cache_speedup"
    anki(store, cache_dirs()).write(user, lambda tx: [add_note(tx, i, f"note {i}") for i in range(20)])
    dbs = anki(store, cache_dirs())
    assert note_count(dbs, user) == 20  # cold: downloads the database
    cold = dbs.stats()
    assert cold["cache_misses"] == 1 and cold["bytes_down"] > 0
    for _ in range(5):  # warm: served from the cache
        assert note_count(dbs, user) == 20
    warm = dbs.stats()
    assert warm["bytes_down"] == cold["bytes_down"]
    assert warm["cache_hits"] == cold["cache_hits"] + 5
    # A warm read costs one bodiless GET and never uploads (the seed's cost a HEAD and a 24 KB PUT).
    assert warm["requests_get"] - cold["requests_get"] == 5
    assert warm["requests_put"] == 0


def test_3_2_cache_hit_rate_over_50_requests(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    user = "cache_hitrate"
    anki(store, cache_dirs()).write(user, lambda tx: [add_note(tx, i, f"note {i}") for i in range(10)])
    dbs = anki(store, cache_dirs())
    for _ in range(50):
        assert note_count(dbs, user) == 10
    stats = dbs.stats()
    assert (stats["cache_misses"], stats["cache_hits"]) == (1, 49)  # 98 % hits, the seed's target
    assert stats["requests_put"] == 0


def test_4_1_a_stale_writer_is_detected_and_nothing_is_lost(
    store: ifmatch.Store, cache_dirs: Callable[[], Path]
) -> None:
    user = "test_conflict"
    anki(store, cache_dirs()).write(user, lambda tx: [add_note(tx, i, f"initial {i}") for i in range(1, 6)])
    conn1, conn2 = anki(store, cache_dirs()), anki(store, cache_dirs())
    assert note_count(conn2, user) == 5  # connection 2 downloads version n
    runs = []

    def conn2_adds(tx: ifmatch.Tx) -> None:
        runs.append(1)
        if len(runs) == 1:  # while connection 2 works on version n, connection 1 commits n+1
            conn1.write(user, lambda tx1: add_note(tx1, 100, "from connection 1"))
        add_note(tx, 200, "from connection 2")

    # Connection 2's commit, conditioned on version n, is refused; it catches
    # up and runs again on n+1 instead of overwriting connection 1's note.
    conn2.write(user, conn2_adds)
    assert conn2.stats()["conflicts"] == 1 and len(runs) == 2
    ids = anki(store, cache_dirs()).read(user, lambda tx: tx.query("SELECT id FROM notes WHERE id >= 100"))
    assert ids == [(100,), (200,)]  # the seed lost note 200 with a ConflictError; ifmatch keeps both
    assert note_count(conn1, user) == 7
    # The primitive underneath: a write conditioned on an old version is a typed conflict.
    v = store.put("probe", b"1")
    store.put("probe", b"2", if_match=v)
    with pytest.raises(ifmatch.ConflictError):
        store.put("probe", b"3", if_match=v)


def test_4_2_ten_concurrent_writers_all_land(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    user = "test_concurrent"
    anki(store, cache_dirs()).write(user, lambda tx: [add_note(tx, i, f"initial {i}") for i in range(1, 6)])
    retry = ifmatch.RetryPolicy(max_attempts=50, base_delay=0.005, max_delay=0.2, deadline=None)
    workers = [anki(store.with_options(retry=retry), cache_dirs()) for _ in range(10)]
    barrier = threading.Barrier(10)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            workers[i].write(user, lambda tx: add_note(tx, 1000 + i, f"worker {i}"))
        except BaseException as e:  # recorded, and fails the assertion below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    ids = anki(store, cache_dirs()).read(user, lambda tx: tx.query("SELECT id FROM notes WHERE id >= 1000 ORDER BY id"))
    assert ids == [(1000 + i,) for i in range(10)]
    assert note_count(workers[0], user) == 15


@pytest.fixture
def accounts(store: ifmatch.Store) -> ifmatch.Accounts:
    return ifmatch.Accounts(store, hash_params=CHEAP_HASH)


def test_5_1_registration(store: ifmatch.Store, accounts: ifmatch.Accounts) -> None:
    user = accounts.create("alice", "Alice Smith", "correct horse battery")
    assert (user.username, user.name) == ("alice", "Alice Smith") and user.created_at > 0
    record = store.get("accounts/alice").text()
    assert "$argon2id$" in record and "correct horse battery" not in record  # hashed, never plain
    assert not hasattr(user, "password_hash")
    got = accounts.get("alice")
    assert got is not None and got.name == "Alice Smith"
    with pytest.raises(ifmatch.UserExistsError):
        accounts.create("Alice", "Someone Else", "another password")  # names fold to lowercase
    assert accounts.get("nobody") is None


def test_5_2_authentication(accounts: ifmatch.Accounts) -> None:
    accounts.create("bob", "Bob", "old password 1")
    assert accounts.authenticate("bob", "old password 1").username == "bob"
    with pytest.raises(ifmatch.InvalidCredentialsError):
        accounts.authenticate("bob", "wrong password")
    with pytest.raises(ifmatch.InvalidCredentialsError):
        accounts.authenticate("nobody", "whatever pass")
    accounts.set_password("bob", "new password 2")
    with pytest.raises(ifmatch.InvalidCredentialsError):
        accounts.authenticate("bob", "old password 1")
    assert accounts.authenticate("bob", "new password 2").username == "bob"
    assert accounts.set_name("bob", "Robert").name == "Robert"
    assert accounts.authenticate("bob", "new password 2").name == "Robert"
    with pytest.raises(ifmatch.UserNotFoundError):
        accounts.set_password("nobody", "a new password")
    with pytest.raises(ifmatch.InvalidInputError):
        accounts.create("x", "too short a name", "password ok")


def test_5_3_crud(accounts: ifmatch.Accounts) -> None:
    names = [f"user{i}" for i in range(5)]
    for n in names:
        accounts.create(n, n.title(), "password " + n)
    users, _ = accounts.list(limit=100)
    assert sorted(u.username for u in users) == names
    assert all(accounts.get(n) is not None for n in names)
    assert [accounts.delete(n) for n in names[:3]] == [True] * 3
    assert [accounts.get(n) for n in names[:3]] == [None] * 3
    assert all(accounts.get(n) is not None for n in names[3:])
    assert accounts.delete("user0") is False
    page, token = accounts.list(limit=1)
    seen = [u.username for u in page]
    while token is not None:
        page, token = accounts.list(limit=1, token=token)
        seen += [u.username for u in page]
    assert sorted(seen) == names[3:]
