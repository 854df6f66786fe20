"""Fixtures: a store on each backend, the way the Rust tests get theirs.

``memory://`` and ``file://`` always run. ``s3://`` (moto) and
``dynamodb://`` (dynalite) need the servers that ``scripts/test-servers
start`` runs and announces through ``IFMATCH_TEST_S3_ENDPOINT`` and
``IFMATCH_TEST_DYNAMODB_ENDPOINT``. Without them the tests skip with the
reason on a developer machine; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import itertools
import os
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

import ifmatch

BACKENDS = ["memory", "file", "s3", "dynamodb"]
_counter = itertools.count()
_RUN = uuid.uuid4().hex[:8]


def _endpoint(var: str, what: str) -> str:
    value = os.environ.get(var)
    if value:
        return value
    message = f"{what} tests need {var}; run `eval \"$(scripts/test-servers start)\"` first"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing test server is a failure)")
    pytest.skip(message)


def unique(tag: str) -> str:
    """A name no other test (or run) uses."""
    return f"{tag}-{_RUN}-{next(_counter)}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped test fails the run: every test must run there."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") == "true" and reporter is not None and reporter.stats.get("skipped"):
        reporter.write_line(f"CI=true: {len(reporter.stats['skipped'])} tests skipped; failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def s3_bucket_url() -> str:
    endpoint = _endpoint("IFMATCH_TEST_S3_ENDPOINT", "S3 (moto)")
    bucket = f"py-{_RUN}"
    # moto takes an unsigned CreateBucket; ifmatch never creates buckets itself.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=30)
    return f"s3://{bucket}/{{prefix}}?endpoint={endpoint}"


@pytest.fixture(scope="session")
def dynamodb_store() -> ifmatch.Store:
    endpoint = _endpoint("IFMATCH_TEST_DYNAMODB_ENDPOINT", "DynamoDB (dynalite)")
    return ifmatch.open(f"dynamodb://py-{_RUN}?create=true&endpoint={endpoint}")


@pytest.fixture
def open_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., ifmatch.Store]:
    """Opens a fresh, empty store on ``backend``; keyword arguments go to ``ifmatch.open``.
    Calling it again gives another handle on the same store."""
    if backend == "memory":
        shared = ifmatch.open("memory://")
        return lambda **opts: shared.with_options(**opts)
    if backend == "file":
        url = f"file://{tmp_path / 'store'}"
        return lambda **opts: ifmatch.open(url, **opts)
    if backend == "s3":
        url = request.getfixturevalue("s3_bucket_url").format(prefix=unique("t"))
        return lambda **opts: ifmatch.open(url, **opts)
    root = request.getfixturevalue("dynamodb_store")
    prefix = unique("t")
    return lambda **opts: root.prefixed(prefix).with_options(**opts)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(open_store: Callable[..., ifmatch.Store]) -> ifmatch.Store:
    return open_store(seed=7)


@pytest.fixture
def cache_dirs(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """Fresh cache directories (one per simulated Lambda container)."""
    n = itertools.count()

    def make() -> Path:
        d = tmp_path / f"cache-{next(n)}"
        d.mkdir()
        return d

    yield make
