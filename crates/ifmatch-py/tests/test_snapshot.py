"""Snapshots: publish as version n+1, and a reader that refreshes single-flight
and serves the last good copy during an outage."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

import ifmatch


def test_publish_versions_and_read(store: ifmatch.Store) -> None:
    built = []

    def build(ctx: ifmatch.BuildContext) -> bytes:
        built.append((ctx.name, ctx.version, ctx.previous, ctx.attempt))
        return json.dumps({"version": ctx.version, "quotes": []}).encode()

    first = store.snapshots.publish("quotes", build)
    assert first.published and first.version == 1
    second = store.snapshots.publish("quotes", build)
    assert second.version == 2
    assert built == [("quotes", 1, None, 1), ("quotes", 2, 1, 1)]
    assert [v["version"] for v in store.snapshots.versions("quotes")] == [2, 1]
    assert json.loads(store.snapshots.get("quotes").body)["version"] == 2
    assert store.snapshots.get("quotes", 1).version == 1
    assert store.snapshots.rollback("quotes", 1) == 3
    assert json.loads(store.snapshots.get("quotes").body)["version"] == 1


def test_build_exception_propagates(store: ifmatch.Store) -> None:
    class DatabaseDown(Exception):
        pass

    def build(ctx: ifmatch.BuildContext) -> bytes:
        raise DatabaseDown("quotes database unreachable")

    with pytest.raises(DatabaseDown):
        store.snapshots.publish("quotes", build)
    with pytest.raises(ifmatch.NotFoundError):
        store.snapshots.get("quotes")


def test_reader_single_flight_refresh(open_store) -> None:
    clock = ifmatch.ManualClock(start=1_700_000_000)
    store = open_store(clock=clock)
    snaps = ifmatch.Snapshots(store, check_interval=5)
    snaps.publish("quotes", lambda ctx: f"v{ctx.version}")
    reader = snaps.reader("quotes")
    assert reader.latest().body == b"v1"
    snaps.publish("quotes", lambda ctx: f"v{ctx.version}")
    # Within the interval the reader answers from memory.
    assert reader.latest().version == 1
    clock.advance(6)
    barrier = threading.Barrier(8)
    seen = []

    def read() -> None:
        barrier.wait()
        seen.append(reader.latest().body)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert seen == [b"v2"] * 8
    metrics = reader.metrics()
    assert metrics["downloads"] == 2  # v1, then v2 once for all eight readers


def test_reader_serves_the_last_good_copy_during_an_outage(tmp_path: Path) -> None:
    clock = ifmatch.ManualClock(start=1_700_000_000)
    root = tmp_path / "store"
    store = ifmatch.open(f"file://{root}", clock=clock)
    store.snapshots.publish("quotes", lambda ctx: b'{"eur": 1.08}')
    reader = store.snapshots.reader("quotes")
    assert reader.latest().stale is None
    # The store goes away: its directory is no longer a directory.
    shutil.move(root, tmp_path / "moved")
    root.write_text("not a directory")
    clock.advance(6)
    served = reader.latest()
    assert served.json() == {"eur": 1.08} and served.version == 1
    assert served.stale is not None
    assert reader.metrics()["stale_served"] >= 1
    # Back again: the next check clears the stale mark.
    root.unlink()
    shutil.move(tmp_path / "moved", root)
    clock.advance(6)
    assert reader.latest().stale is None
