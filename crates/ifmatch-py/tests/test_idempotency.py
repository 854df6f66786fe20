"""The @ifmatch.idempotent decorator (AWS Lambda Powertools style), and seed
004's "50 deliveries, 1 execution" through it with threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import ifmatch


def test_duplicates_get_the_stored_result(store: ifmatch.Store) -> None:
    calls = []

    @ifmatch.idempotent(store, key=lambda e: e["requestId"], payload=lambda e: e)
    def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
        calls.append(event)
        return {"shot": f"s3://shots/{event['requestId']}.png", "n": len(calls)}

    first = handler({"requestId": "r-1", "url": "https://example.com"})
    again = handler({"requestId": "r-1", "url": "https://example.com"})
    assert first == again == {"shot": "s3://shots/r-1.png", "n": 1}
    assert len(calls) == 1
    assert handler({"requestId": "r-2", "url": "https://example.com"})["n"] == 2
    record = handler.idempotency.inspect("r-1")
    assert record["state"] == "completed" and record["result"] == first


def test_payload_mismatch(store: ifmatch.Store) -> None:
    @ifmatch.idempotent(store, key=lambda e: e["id"], payload=lambda e: e["body"])
    def handler(event: dict[str, Any]) -> str:
        return "ok"

    handler({"id": "k", "body": {"a": 1}})
    with pytest.raises(ifmatch.PayloadMismatchError) as info:
        handler({"id": "k", "body": {"a": 2}})
    assert isinstance(info.value, ifmatch.ConflictError)
    assert info.value.key == "k"


def test_handler_exception_propagates_and_releases_the_claim(store: ifmatch.Store) -> None:
    attempts = []

    @ifmatch.idempotent(store, key=lambda e: e["id"])
    def flaky(event: dict[str, Any]) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("downstream timed out")
        return len(attempts)

    with pytest.raises(ConnectionError, match="downstream timed out"):
        flaky({"id": "job-1"})
    assert flaky({"id": "job-1"}) == 2
    assert flaky({"id": "job-1"}) == 2


def test_results_must_be_json(store: ifmatch.Store) -> None:
    @ifmatch.idempotent(store, key=lambda e: e["id"])
    def bad(event: dict[str, Any]) -> object:
        return {1, 2, 3}

    with pytest.raises(TypeError, match="JSON-serialisable"):
        bad({"id": "x"})
    # The claim was released: the key is free for a handler that works.
    assert bad.idempotency.inspect("x") is None
    assert ifmatch.Idempotency(store).run("x", None, lambda: [1, 2]) == [1, 2]


def test_in_progress_raises_or_waits(store: ifmatch.Store) -> None:
    started, finish = threading.Event(), threading.Event()

    def slow(event: dict[str, Any]) -> str:
        started.set()
        finish.wait(60)
        return "done"

    no_wait = ifmatch.idempotent(store, key=lambda e: e["id"])(slow)
    waits = ifmatch.idempotent(store, key=lambda e: e["id"], wait=60, poll=0.01)(slow)
    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(no_wait({"id": "k"})))
    first.start()
    assert started.wait(60)
    with pytest.raises(ifmatch.InProgressError) as info:
        no_wait({"id": "k"})
    assert info.value.key == "k" and info.value.age >= 0
    waiter = threading.Thread(target=lambda: results.append(waits({"id": "k"})))
    waiter.start()
    finish.set()
    first.join(60)
    waiter.join(60)
    assert results == ["done", "done"]


def test_fifty_deliveries_one_execution(store: ifmatch.Store) -> None:
    """Seed 004: 50 deliveries of one message, by 50 threads at once: one
    execution, and every delivery gets its result."""
    executions = []
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    @ifmatch.idempotent(store, key=lambda e: e["requestId"], payload=lambda e: e, wait=120, poll=0.05)
    def take_screenshot(event: dict[str, Any]) -> dict[str, str]:
        with lock:
            executions.append(event["requestId"])
        return {"screenshot": f"shots/{event['requestId']}.png"}

    message = {"requestId": "req-50", "url": "https://example.com/page"}
    results: list[Any] = []

    def deliver() -> None:
        barrier.wait()
        try:
            results.append(take_screenshot(dict(message)))
        except Exception as e:  # recorded, and fails the assertions below
            results.append(e)

    threads = [threading.Thread(target=deliver) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert executions == ["req-50"]
    assert results == [{"screenshot": "shots/req-50.png"}] * 50
