"""Tenant databases: transactions as Python functions, on the thread that runs SQLite."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Callable

import pytest

import ifmatch

SCHEMA = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, data BLOB)"


def test_write_read_and_values(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    dbs = ifmatch.TenantDbs(store, cache_dirs(), schema=SCHEMA)

    def add(tx: ifmatch.Tx) -> int:
        tx.execute("INSERT INTO notes (body, data) VALUES (?, ?)", ("hello", b"\x00\x01"))
        tx.execute("INSERT INTO notes (body, data) VALUES (:body, NULL)", {"body": "world"})
        return tx.lastrowid

    assert dbs.write("alice", add) == 2
    rows = dbs.read("alice", lambda tx: tx.query("SELECT id, body, data FROM notes ORDER BY id"))
    assert rows == [(1, "hello", b"\x00\x01"), (2, "world", None)]
    assert dbs.read("alice", lambda tx: tx.query("SELECT count(*), 1.5 FROM notes")) == [(2, 1.5)]
    with pytest.raises(ifmatch.NotFoundError):
        dbs.read("bob", lambda tx: tx.query("SELECT 1"))


def test_callbacks_run_on_the_sqlite_thread_with_the_gil(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    dbs = ifmatch.TenantDbs(store, cache_dirs(), schema=SCHEMA)
    threads = []
    dbs.write("alice", lambda tx: threads.append(threading.get_ident()))
    assert threads and threads[0] != threading.get_ident()


def test_exception_rolls_back_and_propagates(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    dbs = ifmatch.TenantDbs(store, cache_dirs(), schema=SCHEMA)
    dbs.write("alice", lambda tx: tx.execute("INSERT INTO notes (body) VALUES ('kept')"))

    class Invalid(Exception):
        pass

    def fail(tx: ifmatch.Tx) -> None:
        tx.execute("INSERT INTO notes (body) VALUES ('dropped')")
        raise Invalid("no")

    before = dbs.stats()["commits"]
    with pytest.raises(Invalid):
        dbs.write("alice", fail)
    assert dbs.stats()["commits"] == before
    assert dbs.read("alice", lambda tx: tx.query("SELECT body FROM notes")) == [("kept",)]


def test_sql_errors_and_misuse(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    dbs = ifmatch.TenantDbs(store, cache_dirs(), schema=SCHEMA)
    with pytest.raises(ifmatch.SqlError, match="no such table"):
        dbs.write("alice", lambda tx: tx.execute("INSERT INTO nope VALUES (1)"))
    with pytest.raises(ifmatch.InvalidInputError, match="read-only"):
        dbs.write("alice", lambda tx: tx.query("DELETE FROM notes"))
    kept = []
    dbs.write("alice", lambda tx: kept.append(tx))
    with pytest.raises(RuntimeError, match="transaction is over"):
        kept[0].query("SELECT 1")
    with pytest.raises(TypeError):
        dbs.write("alice", lambda tx: tx.execute("SELECT ?", ([1],)))


def test_schema_function_export_import_and_stats(
    store: ifmatch.Store, cache_dirs: Callable[[], Path], tmp_path: Path
) -> None:
    def schema(tx: ifmatch.Tx) -> None:
        tx.executescript(SCHEMA)
        tx.execute("INSERT INTO notes (body) VALUES ('welcome')")

    dbs = ifmatch.TenantDbs(store, cache_dirs(), schema=schema)
    dbs.write("alice", lambda tx: tx.execute("INSERT INTO notes (body) VALUES ('mine')"))
    dbs.export("alice", tmp_path / "alice.db")
    with sqlite3.connect(tmp_path / "alice.db") as c:
        assert [r[0] for r in c.execute("SELECT body FROM notes ORDER BY id")] == ["welcome", "mine"]
    dbs.import_("bob", tmp_path / "alice.db")
    with pytest.raises(ifmatch.ConflictError):
        dbs.import_("bob", tmp_path / "alice.db")
    assert dbs.read("bob", lambda tx: tx.query("SELECT count(*) FROM notes")) == [(2,)]
    assert dbs.info("bob")["seq"] >= 0 and dbs.is_cached("bob")
    assert dbs.stats()["requests_put"] > 0


def test_write_may_run_again_after_losing_a_race(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    """Two workers (two caches): the first commits inside the second's
    transaction, so the second's commit loses, catches up and runs again."""
    first = ifmatch.TenantDbs(store, cache_dirs(), schema=SCHEMA)
    second = ifmatch.TenantDbs(store, cache_dirs(), schema=SCHEMA)
    first.write("alice", lambda tx: tx.execute("INSERT INTO notes (id, body) VALUES (1, 'base')"))
    second.read("alice", lambda tx: None)  # second's cache is now at that state
    runs = []

    def add(tx: ifmatch.Tx) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            first.write("alice", lambda t: t.execute("INSERT INTO notes (id, body) VALUES (100, 'first')"))
        tx.execute("INSERT INTO notes (id, body) VALUES (200, 'second')")

    second.write("alice", add)
    assert runs == [0, 1]
    assert second.stats()["conflicts"] == 1
    ids = first.read("alice", lambda tx: tx.query("SELECT id FROM notes ORDER BY id"))
    assert ids == [(1,), (100,), (200,)]


def test_write_with_a_commit_id_is_applied_once(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    """A redelivered request (here: in another container) with the same
    commit id gets the first result and changes nothing."""
    calls = []

    def add(tx: ifmatch.Tx) -> dict[str, int]:
        calls.append(1)
        tx.execute("INSERT INTO notes (body) VALUES ('once')")
        return {"id": tx.lastrowid}

    first = ifmatch.TenantDbs(store, cache_dirs(), schema=SCHEMA)
    assert first.write("alice", add, commit_id="req-1") == {"id": 1}
    again = ifmatch.TenantDbs(store, cache_dirs(), schema=SCHEMA)
    assert again.write("alice", add, commit_id="req-1") == {"id": 1}
    assert len(calls) == 1
    assert again.read("alice", lambda tx: tx.query("SELECT count(*) FROM notes")) == [(1,)]
    with pytest.raises(TypeError, match="JSON-serialisable"):
        again.write("alice", lambda tx: {1}, commit_id="req-2")
    with pytest.raises(ifmatch.InvalidInputError):
        again.write("alice", add, commit_id="")


def test_commits_past_a_cap_raise_limit_exceeded(store: ifmatch.Store, cache_dirs: Callable[[], Path]) -> None:
    """Both caps refuse the commit before anything is uploaded, and name the limit."""
    dbs = ifmatch.TenantDbs(
        store, cache_dirs(), schema=SCHEMA, max_commit_bytes=64 * 1024, max_tenant_bytes=128 * 1024
    )
    dbs.write("alice", lambda tx: tx.execute("INSERT INTO notes (body) VALUES ('small')"))
    seq = dbs.info("alice")["seq"]

    def add_blob(size: int) -> Callable[[ifmatch.Tx], None]:
        return lambda tx: tx.execute("INSERT INTO notes (body, data) VALUES ('big', zeroblob(?))", (size,))

    with pytest.raises(ifmatch.LimitExceededError, match="commit size limit") as big_commit:
        dbs.write("alice", add_blob(100 * 1024))
    assert big_commit.value.which == "commit_bytes" and isinstance(big_commit.value, ifmatch.TooLargeError)
    for _ in range(2):  # each 48 KiB blob fits the commit cap; two fit the 128 KiB quota
        dbs.write("alice", add_blob(48 * 1024))
    with pytest.raises(ifmatch.LimitExceededError, match="tenant database size limit") as full:
        dbs.write("alice", add_blob(48 * 1024))
    assert full.value.which == "tenant_bytes"
    assert dbs.info("alice")["seq"] == seq + 2
    assert dbs.read("alice", lambda tx: tx.query("SELECT count(*) FROM notes")) == [(3,)]
    # Shrinking an oversized database stays allowed; the refused commits left nothing behind.
    dbs.write("alice", lambda tx: tx.execute("DELETE FROM notes WHERE body = 'big'"))
    dbs.flush()
