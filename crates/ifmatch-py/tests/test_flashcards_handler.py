"""examples/python/flashcards_handler.py, called with API Gateway v2 events."""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import ifmatch

HANDLER = Path(__file__).resolve().parents[3] / "examples" / "python" / "flashcards_handler.py"


def load_handler(store_url: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh import of the example, as in a new Lambda container."""
    monkeypatch.setenv("IFMATCH_STORE", store_url)
    monkeypatch.setenv("IFMATCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("FLASHCARDS_HASH_PARAMS", "64,1,1")
    spec = importlib.util.spec_from_file_location(f"flashcards_{cache.name}", HANDLER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._services()  # the container's cold start, while its settings are in the environment
    return module


def event(method: str, path: str, body: Any = None, user: tuple[str, str] | None = None, request_id: str = "r") -> dict:
    headers = {"content-type": "application/json"}
    if user:
        headers["authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "requestId": request_id,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "stage": "$default",
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def test_flashcards_lambda(
    open_store: Callable[..., ifmatch.Store], cache_dirs: Callable[[], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = open_store().url
    lam = load_handler(url, cache_dirs(), monkeypatch)
    alice = ("alice", "correct horse battery")

    def call(*args: Any, **kwargs: Any) -> tuple[int, Any]:
        r = lam.handler(event(*args, **kwargs), None)
        return r["statusCode"], json.loads(r["body"])

    assert call("POST", "/register", {"username": "alice", "name": "Alice", "password": alice[1]}) == (
        201,
        {"username": "alice"},
    )
    assert call("POST", "/register", {"username": "alice", "password": "another one"})[0] == 409
    assert call("GET", "/notes", user=("alice", "wrong password"))[0] == 401
    assert call("GET", "/notes", user=alice) == (200, {"notes": []})
    status, created = call("POST", "/notes", {"front": "der Hund", "back": "the dog"}, user=alice, request_id="a1")
    assert status == 201
    # API Gateway retries the same request: the note is not added twice.
    assert call("POST", "/notes", {"front": "der Hund", "back": "the dog"}, user=alice, request_id="a1") == (
        201,
        created,
    )
    assert call("POST", "/reviews", {"note_id": created["id"], "ease": 3}, user=alice) == (200, {"reviews": 1})
    assert call("POST", "/reviews", {"note_id": 999, "ease": 3}, user=alice)[0] == 404
    assert call("POST", "/notes", "not an object", user=alice)[0] == 400

    # Ten concurrent invocations in ten containers: every note lands.
    containers = [load_handler(url, cache_dirs(), monkeypatch) for _ in range(10)]
    results: list[int] = []

    def add(i: int) -> None:
        r = containers[i].handler(
            event("POST", "/notes", {"front": f"word {i}", "back": "x"}, user=alice, request_id=f"c{i}"), None
        )
        results.append(r["statusCode"])

    threads = [threading.Thread(target=add, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results == [201] * 10
    status, listed = call("GET", "/notes", user=alice)
    assert status == 200 and len(listed["notes"]) == 11
    assert {"id": created["id"], "front": "der Hund", "back": "the dog"} in listed["notes"]

    # A re-registered username gets a new account id, so an empty collection.
    assert call("POST", "/register", {"username": "bob", "password": "bob's password"})[0] == 201
    assert call("POST", "/notes", {"front": "a", "back": "b"}, user=("bob", "bob's password"))[0] == 201
    accounts = lam._services()[1]
    assert accounts.delete("bob") is True
    assert call("POST", "/register", {"username": "bob", "password": "new bob's pass"})[0] == 201
    assert call("GET", "/notes", user=("bob", "new bob's pass")) == (200, {"notes": []})

    # Repeated wrong passwords: 401 five times and once more, then 429 with Retry-After.
    for _ in range(6):
        assert call("GET", "/notes", user=("bob", "guessing"))[0] == 401
    throttled = lam.handler(event("GET", "/notes", user=("bob", "new bob's pass")), None)
    assert throttled["statusCode"] == 429 and int(throttled["headers"]["retry-after"]) >= 1
