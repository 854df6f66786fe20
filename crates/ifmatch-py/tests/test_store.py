"""Conditional reads and writes, and the update loop, on every backend."""

from __future__ import annotations

import json
import threading

import pytest

import ifmatch


def test_put_if_absent_then_if_match(store: ifmatch.Store) -> None:
    v1 = store.put("config.json", b'{"n": 1}', if_absent=True)
    with pytest.raises(ifmatch.ConflictError) as info:
        store.put("config.json", b"{}", if_absent=True)
    assert info.value.key.endswith("config.json")
    assert info.value.expected is None

    v2 = store.put("config.json", '{"n": 2}', if_match=v1)
    assert v2 != v1
    with pytest.raises(ifmatch.ConflictError) as stale:
        store.put("config.json", b"{}", if_match=v1)
    assert stale.value.expected == v1
    assert stale.value.actual in (v2, None)  # S3 does not report the current version

    obj = store.get("config.json")
    assert obj.body == b'{"n": 2}' and obj.version == v2 and obj.json() == {"n": 2}
    assert store.head("config.json").version == v2
    assert store.get_if_changed("config.json", v2) is None
    changed = store.get_if_changed("config.json", v1)
    assert changed is not None and changed.text() == '{"n": 2}'


def test_delete_if_match_and_not_found(store: ifmatch.Store) -> None:
    v = store.put("k", b"x", metadata={"owner": "alice"})
    assert store.head("k").metadata.get("owner") == "alice"
    with pytest.raises(ifmatch.ConflictError):
        store.delete("k", if_match=store.put("other", b"y"))
    store.delete("k", if_match=v)
    with pytest.raises(ifmatch.NotFoundError) as info:
        store.get("k")
    assert info.value.key.endswith("k")


def test_list_pages(store: ifmatch.Store) -> None:
    for i in range(5):
        store.put(f"items/{i}", str(i))
    store.put("other/x", b"x")
    pages = [[e.key for e in page] for page in store.list("items/", page_size=2)]
    # Key order within a listing is the backend's (DynamoDB lists in scan order).
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(k for p in pages for k in p) == [f"items/{i}" for i in range(5)]
    assert all(e.size == 1 for page in store.list("items/") for e in page)


def test_errors_are_typed(store: ifmatch.Store) -> None:
    with pytest.raises(ifmatch.InvalidKeyError) as info:
        store.put("../escape", b"x")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ifmatch.Error)
    with pytest.raises(ifmatch.InvalidInputError):
        store.put("k", b"x", if_match="v", if_absent=True)
    with pytest.raises(TypeError):
        store.put("k", 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["dynamodb"])
def test_too_large(backend: str, store: ifmatch.Store) -> None:
    with pytest.raises(ifmatch.TooLargeError) as info:
        store.put("big", b"x" * 500_000)
    assert info.value.limit is not None and info.value.size > info.value.limit


def test_open_rejects_unknown_scheme() -> None:
    with pytest.raises(ifmatch.InvalidInputError, match="unknown store scheme"):
        ifmatch.open("ftp://nowhere")


def test_update_json_increments_exactly_under_contention(store: ifmatch.Store) -> None:
    retry = ifmatch.RetryPolicy(max_attempts=100, base_delay=0.001, max_delay=0.05, deadline=None)
    handle = store.with_options(retry=retry)
    threads = [
        threading.Thread(target=lambda: [handle.update_json("counter", lambda n: (n or 0) + 1) for _ in range(5)])
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counter").json() == 40


def test_update_json_passes_value_and_deletes_on_none(store: ifmatch.Store) -> None:
    seen = []

    def add(doc):
        seen.append(json.dumps(doc))
        doc = doc or {"items": []}
        doc["items"].append(len(doc["items"]))
        return doc

    assert store.update_json("doc", add) == {"items": [0]}
    assert store.update_json("doc", add) == {"items": [0, 1]}
    assert seen == ["null", '{"items": [0]}']
    assert store.update_json("doc", lambda doc: None) is None
    with pytest.raises(ifmatch.NotFoundError):
        store.head("doc")


def test_update_json_exception_propagates_unchanged(store: ifmatch.Store) -> None:
    class Refused(Exception):
        pass

    boom = Refused("no")

    def refuse(_):
        raise boom

    with pytest.raises(Refused) as info:
        store.update_json("k", refuse)
    assert info.value is boom
    with pytest.raises(ifmatch.NotFoundError):
        store.head("k")


def test_update_json_rejects_values_that_are_not_json(store: ifmatch.Store) -> None:
    with pytest.raises(TypeError, match="JSON-serialisable"):
        store.update_json("k", lambda _: {1, 2})


def test_callbacks_may_call_the_store_again(store: ifmatch.Store) -> None:
    def fn(n):
        store.put("audit", str(n))  # a nested store call from inside the loop
        return (n or 0) + 1

    assert store.update_json("n", fn) == 1
    assert store.get("audit").body == b"None"


def test_prefixed_handles_are_isolated(store: ifmatch.Store) -> None:
    a, b = store.prefixed("app-a"), store.prefixed("app-b")
    a.put("k", b"a")
    b.put("k", b"b")
    assert a.get("k").body == b"a" and b.get("k").body == b"b"
    assert store.get("app-a/k").body == b"a"
