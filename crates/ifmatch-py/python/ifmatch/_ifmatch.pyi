"""Type stubs of the Rust extension (crates/ifmatch-py/src)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from types import TracebackType
from typing import Any, Callable, TypeVar, final

_T = TypeVar("_T")
_Json = Any
_Params = Sequence[Any] | Mapping[str, Any] | None
_Body = bytes | bytearray | str

ANKI_SCHEMA: str

def open(
    url: str,
    *,
    clock: ManualClock | None = None,
    seed: int | None = None,
    retry: RetryPolicy | None = None,
) -> Store: ...

@final
class RetryPolicy:
    max_attempts: int
    def __init__(
        self,
        max_attempts: int = 10,
        base_delay: float = 0.01,
        max_delay: float = 2.0,
        deadline: float | None = 30.0,
    ) -> None: ...

@final
class ManualClock:
    def __init__(self, start: float | None = None) -> None: ...
    def now(self) -> float: ...
    def advance(self, seconds: float) -> None: ...

@final
class Store:
    @property
    def url(self) -> str: ...
    @property
    def snapshots(self) -> Snapshots: ...
    def with_options(
        self,
        *,
        clock: ManualClock | None = None,
        seed: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> Store: ...
    def prefixed(self, prefix: str) -> Store: ...
    def get(self, key: str) -> Object: ...
    def get_if_changed(self, key: str, version: str) -> Object | None: ...
    def head(self, key: str) -> ObjectMeta: ...
    def put(
        self,
        key: str,
        body: _Body,
        *,
        if_match: str | None = None,
        if_absent: bool = False,
        metadata: Mapping[str, str] | None = None,
        expires_at: int | None = None,
    ) -> str: ...
    def delete(self, key: str, *, if_match: str | None = None) -> None: ...
    def list(self, prefix: str = "", *, page_size: int = 1000) -> ListPages: ...
    def update_json(self, key: str, func: Callable[[_Json | None], _Json | None]) -> _Json | None: ...
    def lease(self, name: str, ttl: float = 30.0, *, wait: float = 0.0) -> Lease: ...
    def fenced_get(self, key: str) -> FencedValue: ...

@final
class Object:
    @property
    def body(self) -> bytes: ...
    @property
    def key(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def metadata(self) -> dict[str, str]: ...
    @property
    def expires_at(self) -> int | None: ...
    def text(self) -> str: ...
    def json(self) -> _Json: ...

@final
class ObjectMeta:
    key: str
    version: str
    size: int
    metadata: dict[str, str]
    expires_at: int | None

@final
class ListEntry:
    key: str
    version: str
    size: int

@final
class ListPages(Iterator[list[ListEntry]]):
    def __iter__(self) -> ListPages: ...
    def __next__(self) -> list[ListEntry]: ...

@final
class Lease:
    @property
    def name(self) -> str: ...
    @property
    def token(self) -> int: ...
    @property
    def owner(self) -> str: ...
    @property
    def held(self) -> bool: ...
    @property
    def expires_at(self) -> float | None: ...
    def __enter__(self) -> Lease: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        _exc: BaseException | None = None,
        _tb: TracebackType | None = None,
    ) -> bool: ...
    def check(self) -> None: ...
    def wait_lost(self, timeout: float | None = None) -> bool: ...
    def fenced_put(self, key: str, body: _Body, *, metadata: Mapping[str, str] | None = None) -> str: ...

@final
class FencedValue:
    @property
    def body(self) -> bytes: ...
    token: int | None
    version: str

@final
class Idempotency:
    def __init__(
        self,
        store: Store,
        *,
        expires_after: float = 3600.0,
        in_progress_timeout: float = 600.0,
        wait: float | None = None,
        poll: float = 0.2,
        prefix: str | None = None,
        cache: int = 0,
    ) -> None: ...
    def run(self, key: str, payload: _Json, func: Callable[[], _T]) -> _Json: ...
    def inspect(self, key: str) -> dict[str, Any] | None: ...

@final
class Snapshots:
    def __init__(
        self,
        store: Store,
        *,
        prefix: str | None = None,
        keep: int = 5,
        check_interval: float = 5.0,
    ) -> None: ...
    def publish(self, name: str, build_fn: Callable[[BuildContext], _Body]) -> PublishOutcome: ...
    def reader(self, name: str) -> SnapshotReader: ...
    def get(self, name: str, version: int | None = None) -> Snapshot: ...
    def versions(self, name: str) -> list[dict[str, Any]]: ...
    def rollback(self, name: str, version: int) -> int: ...

@final
class BuildContext:
    name: str
    version: int
    previous: int | None
    attempt: int

@final
class PublishOutcome:
    published: bool
    version: int
    attempts: int
    conflicts: int

@final
class Snapshot:
    name: str
    version: int
    @property
    def body(self) -> bytes: ...

@final
class SnapshotReader:
    def latest(self) -> Served: ...
    def refresh(self) -> Served: ...
    def metrics(self) -> dict[str, int]: ...

@final
class Served:
    version: int
    age: float
    stale: str | None
    @property
    def body(self) -> bytes: ...
    def json(self) -> _Json: ...

@final
class TenantDbs:
    def __init__(
        self,
        store: Store,
        cache_dir: str | PathLike[str],
        *,
        schema: str | Callable[[Tx], object] | None = None,
        max_staleness: float = 0.0,
        cache_budget: int | None = None,
        checkpoint_every: int | None = None,
        gc_grace: float | None = None,
        prefix: str | None = None,
        max_commit_bytes: int | None = None,
        max_tenant_bytes: int | None = None,
    ) -> None: ...
    def write(self, tenant: str, func: Callable[[Tx], _T], *, commit_id: str | None = None) -> _T: ...
    def read(self, tenant: str, func: Callable[[Tx], _T]) -> _T: ...
    def export(self, tenant: str, path: str | PathLike[str]) -> None: ...
    def import_(self, tenant: str, path: str | PathLike[str], *, force: bool = False) -> None: ...
    def info(self, tenant: str) -> dict[str, int]: ...
    def stats(self) -> dict[str, int]: ...
    def flush(self) -> None: ...
    def is_cached(self, tenant: str) -> bool: ...

@final
class Tx:
    @property
    def lastrowid(self) -> int: ...
    @property
    def rowcount(self) -> int: ...
    @property
    def read_only(self) -> bool: ...
    def execute(self, sql: str, params: _Params = None) -> list[tuple[Any, ...]]: ...
    def query(self, sql: str, params: _Params = None) -> list[tuple[Any, ...]]: ...
    def executescript(self, sql: str) -> None: ...

@final
class Accounts:
    def __init__(
        self,
        store: Store,
        *,
        hash_params: tuple[int, int, int] | None = None,
        hash_capacity: tuple[int, int] | None = None,
        throttle: bool = True,
    ) -> None: ...
    def create(self, username: str, name: str, password: str) -> User: ...
    def get(self, username: str) -> User | None: ...
    def login(self, username: str, password: str, *, client: str | None = None) -> User: ...
    def change_password(self, username: str, old: str, new: str, *, client: str | None = None) -> User: ...
    def authenticate(self, username: str, password: str) -> User: ...
    def set_password(self, username: str, password: str) -> User: ...
    def set_name(self, username: str, name: str) -> User: ...
    def delete(self, username: str) -> bool: ...
    def list(self, *, limit: int = 100, token: str | None = None) -> tuple[list[User], str | None]: ...

@final
class User:
    id: str
    username: str
    name: str
    revision: int
    data_prefix: str
    created_at: float
    updated_at: float
