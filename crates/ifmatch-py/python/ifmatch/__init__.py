"""ifmatch: compare-and-swap on versioned keys, for fleets of stateless workers.

The Rust library in-process. Open a store by URL and use its conditional
writes and the primitives built on them::

    import ifmatch
    store = ifmatch.open("s3://my-bucket/app")          # or file://, memory://, dynamodb://
    v = store.put("config.json", b"{}", if_absent=True)
    store.update_json("counter", lambda n: (n or 0) + 1)

Every store call releases the GIL. See the README's "Python" section.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from ._errors import (
    AmbiguousError,
    BusyError,
    ConflictError,
    Error,
    InProgressError,
    InvalidCredentialsError,
    InvalidInputError,
    InvalidKeyError,
    LeaseHeldError,
    LeaseLostError,
    LimitExceededError,
    NotFoundError,
    NotSavedError,
    PayloadMismatchError,
    SqlError,
    StaleTokenError,
    ThrottledError,
    TooLargeError,
    TooManyRequestsError,
    UnavailableError,
    UnsupportedError,
    UserExistsError,
    UserNotFoundError,
)
from ._ifmatch import (
    ANKI_SCHEMA,
    Accounts,
    BuildContext,
    FencedValue,
    Idempotency,
    Lease,
    ListEntry,
    ManualClock,
    Object,
    ObjectMeta,
    PublishOutcome,
    RetryPolicy,
    Served,
    Snapshot,
    SnapshotReader,
    Snapshots,
    Store,
    TenantDbs,
    Tx,
    User,
    open,
)

__all__ = [
    "ANKI_SCHEMA",
    "Accounts",
    "AmbiguousError",
    "BuildContext",
    "BusyError",
    "ConflictError",
    "Error",
    "FencedValue",
    "Idempotency",
    "InProgressError",
    "InvalidCredentialsError",
    "InvalidInputError",
    "InvalidKeyError",
    "Lease",
    "LeaseHeldError",
    "LeaseLostError",
    "LimitExceededError",
    "ListEntry",
    "ManualClock",
    "NotFoundError",
    "NotSavedError",
    "Object",
    "ObjectMeta",
    "PayloadMismatchError",
    "PublishOutcome",
    "RetryPolicy",
    "Served",
    "Snapshot",
    "SnapshotReader",
    "Snapshots",
    "SqlError",
    "StaleTokenError",
    "Store",
    "TenantDbs",
    "ThrottledError",
    "TooLargeError",
    "TooManyRequestsError",
    "Tx",
    "UnavailableError",
    "UnsupportedError",
    "User",
    "UserExistsError",
    "UserNotFoundError",
    "idempotent",
    "open",
]

F = TypeVar("F", bound=Callable[..., Any])


def idempotent(
    store: Store,
    *,
    key: Callable[[Any], str],
    payload: Callable[[Any], Any] | None = None,
    expires_after: float = 3600.0,
    in_progress_timeout: float = 600.0,
    wait: float | None = None,
    poll: float = 0.2,
    prefix: str | None = None,
) -> Callable[[F], F]:
    """Runs the decorated handler once per idempotency key, like AWS Lambda
    Powertools' ``@idempotent``.

    ``key(event)`` names the request (the handler's first argument is the
    event); ``payload(event)`` is what the key stands for (JSON-serialisable;
    default: nothing is compared). A duplicate gets the stored result without
    running the handler; the same key with another payload raises
    :class:`PayloadMismatchError`; a duplicate that arrives while the first
    call still runs raises :class:`InProgressError`, or waits up to ``wait``
    seconds for its result. Results must be JSON-serialisable (``TypeError``
    otherwise) and come back as JSON values (tuples as lists). An exception
    from the handler releases the claim, so a retry runs it again. All of it
    is :class:`Idempotency`; the decorator only picks key and payload.
    """
    idem = Idempotency(
        store,
        expires_after=expires_after,
        in_progress_timeout=in_progress_timeout,
        wait=wait,
        poll=poll,
        prefix=prefix,
    )

    def decorate(handler: F) -> F:
        @functools.wraps(handler)
        def wrapper(event: Any, *args: Any, **kwargs: Any) -> Any:
            return idem.run(
                key(event),
                payload(event) if payload is not None else None,
                lambda: handler(event, *args, **kwargs),
            )

        wrapper.idempotency = idem  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
