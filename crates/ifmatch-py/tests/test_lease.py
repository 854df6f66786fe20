"""Leases as context managers, fencing, loss, and the GIL during waits."""

from __future__ import annotations

import threading
from typing import Callable

import pytest

import ifmatch


def test_lease_is_exclusive_and_released_on_exit(open_store: Callable[..., ifmatch.Store]) -> None:
    a, b = open_store(seed=1), open_store(seed=2)
    with a.lease("nightly", ttl=30) as lease:
        assert lease.held and lease.token > 0
        with pytest.raises(ifmatch.LeaseHeldError) as info:
            with b.lease("nightly", ttl=30):
                pass
        assert info.value.holder == lease.owner
        first = lease.token
    assert not lease.held
    with b.lease("nightly", ttl=30) as again:
        assert again.token > first


def test_fenced_put_refuses_an_older_token(open_store: Callable[..., ifmatch.Store]) -> None:
    clock_a = ifmatch.ManualClock(start=1_700_000_000)
    a = open_store(seed=1, clock=clock_a)
    # B's clock is a minute ahead: to B, A's 30 s lease has expired (a paused A).
    b = open_store(seed=2, clock=ifmatch.ManualClock(start=1_700_000_060))
    with pytest.raises(ifmatch.LeaseLostError), a.lease("job", ttl=30) as old:
        old.fenced_put("report", b"from A")
        with b.lease("job", ttl=30) as new:
            assert new.token > old.token
            new.fenced_put("report", b"from B")
            with pytest.raises(ifmatch.StaleTokenError) as info:
                old.fenced_put("report", b"late write from A")
            assert isinstance(info.value, ifmatch.LeaseLostError)
            assert (info.value.token, info.value.stored) == (old.token, new.token)
            value = a.fenced_get("report")
            assert (value.body, value.token) == (b"from B", new.token)
            # A's renewal (a third of the TTL later on its clock) finds B's record.
            clock_a.advance(10)
            assert old.wait_lost(timeout=30)
            with pytest.raises(ifmatch.LeaseLostError):
                old.check()
    # Leaving A's block reported the loss; B's block released B's lease.
    assert a.fenced_get("report").body == b"from B"


def test_leaving_the_block_after_a_loss_raises(open_store: Callable[..., ifmatch.Store]) -> None:
    clock_a = ifmatch.ManualClock(start=1_700_000_000)
    a = open_store(seed=1, clock=clock_a)
    b = open_store(seed=2, clock=ifmatch.ManualClock(start=1_700_000_060))
    with pytest.raises(ifmatch.LeaseLostError):
        with a.lease("job", ttl=30) as lease:
            with b.lease("job", ttl=30):
                clock_a.advance(10)
                assert lease.wait_lost(timeout=30)
    # B's block ended normally, so B released and the lease is free again.
    with a.lease("job", ttl=30):
        pass


def test_renewal_keeps_the_lease(open_store: Callable[..., ifmatch.Store]) -> None:
    clock = ifmatch.ManualClock(start=1_700_000_000)
    a = open_store(seed=1, clock=clock)
    with a.lease("job", ttl=30) as lease:
        start = clock.now()
        renewals = []
        # Move the clock a second at a time; the background renewal (due every
        # 10 s of clock time) moves the expiry forward each time it lands.
        while len(renewals) < 3 and clock.now() - start < 60:
            before = lease.expires_at
            clock.advance(1)
            for _ in range(5):
                if lease.expires_at != before:
                    renewals.append(clock.now() - start)
                    break
                lease.wait_lost(timeout=0.01)
        assert len(renewals) == 3 and lease.held, renewals
        # 30 s and more have passed on the clock: without the renewals the lease would be free.
        assert clock.now() - start >= 30
        with pytest.raises(ifmatch.LeaseHeldError):
            with open_store(seed=2, clock=clock).lease("job", ttl=30):
                pass


@pytest.mark.parametrize("backend", ["memory"])
def test_a_waiting_acquire_releases_the_gil(backend: str, open_store: Callable[..., ifmatch.Store]) -> None:
    clock = ifmatch.ManualClock(start=1_700_000_000)
    holder, waiter = open_store(seed=1, clock=clock), open_store(seed=2, clock=clock)
    got = []
    lease = holder.lease("job", ttl=5)
    lease.__enter__()

    def wait_for_it() -> None:
        with waiter.lease("job", ttl=5, wait=60) as mine:
            got.append(mine.token)

    t = threading.Thread(target=wait_for_it)
    t.start()
    # The waiter sleeps on the manual clock inside Rust: were the GIL held,
    # this thread could not run, and nothing would move the clock.
    lease.__exit__(None, None, None)
    for _ in range(600):
        if not t.is_alive():
            break
        clock.advance(1)
        t.join(timeout=0.05)
    assert not t.is_alive() and got
