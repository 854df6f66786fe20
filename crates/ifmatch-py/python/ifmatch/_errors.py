"""The exceptions ifmatch raises: all subclasses of :class:`Error`.

The Rust core decides what went wrong; these classes only carry its message
and the details it names (the key, the versions) as attributes.
"""

from __future__ import annotations

from typing import Any


class Error(Exception):
    """Any failure reported by ifmatch."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        for name, value in details.items():
            setattr(self, name, value)


class ConflictError(Error):
    """A conditional write lost: the key was not in the expected state.

    ``key`` is the key (or lease, tenant, snapshot name); ``expected`` the
    version the write was conditioned on (``None`` for "absent"); ``actual``
    the version found (``None`` if absent or not reported).
    """

    key: str | None
    expected: str | None
    actual: str | None


class NotFoundError(Error):
    """The key (user, tenant, snapshot) does not exist. ``key`` names it."""

    key: str | None


class AmbiguousError(Error):
    """A write's outcome is unknown: it may or may not have landed."""

    key: str | None


class UnavailableError(Error):
    """The store could not be reached, or refused for a transient reason; retryable."""


class InvalidKeyError(Error, ValueError):
    """The key is not valid. ``key`` and ``reason`` say which and why."""

    key: str
    reason: str


class InvalidInputError(Error, ValueError):
    """An argument other than a key is not valid."""


class TooLargeError(Error):
    """A value (or a batch, a database) is larger than a bound allows."""

    key: str | None
    size: int | None
    limit: int | None


class LimitExceededError(TooLargeError):
    """A tenant database commit, or a sandboxed batch, ran into a limit;
    nothing was committed. ``which`` names the limit: ``"commit_bytes"``
    (``TenantDbs(max_commit_bytes=)``), ``"tenant_bytes"``
    (``TenantDbs(max_tenant_bytes=)``), ``"time"``, ``"rows"``, ``"size"`` or
    ``"statements"``."""

    which: str | None


class UnsupportedError(Error):
    """The backend cannot perform this operation."""


class LeaseHeldError(ConflictError):
    """Another worker held the lease for the whole wait. ``holder``, ``token``
    and ``expires_in`` (seconds) describe it."""

    name: str
    holder: str
    token: int
    expires_in: float


class LeaseLostError(Error):
    """The lease was lost (taken over, or could not be renewed in time)."""

    name: str | None
    holder: str | None


class StaleTokenError(LeaseLostError):
    """A fenced write was refused: the value was written with a newer token."""

    key: str
    token: int
    stored: int


class InProgressError(ConflictError):
    """Another worker is running the handler for this idempotency key.
    ``age`` is the claim's age in seconds."""

    age: float


class PayloadMismatchError(ConflictError):
    """The idempotency key was used before with a different payload."""


class NotSavedError(Error):
    """The handler ran but its result could not be stored. ``result`` holds it."""

    key: str
    result: Any


class SqlError(Error, ValueError):
    """SQLite refused a statement; the message is SQLite's."""


class UserExistsError(ConflictError):
    """The username is taken."""


class UserNotFoundError(NotFoundError):
    """There is no user by that name."""


class InvalidCredentialsError(Error):
    """Wrong username or password (deliberately the same error for both)."""


class TooManyRequestsError(UnavailableError):
    """Refused for now, before any work was done: retry after ``retry_after``
    seconds (an HTTP front end answers 429 with ``Retry-After``)."""

    retry_after: float


class ThrottledError(TooManyRequestsError):
    """Too many failed logins lately; ``scope`` says whether
    ``"for this username"`` or ``"from this address"``."""

    scope: str


class BusyError(TooManyRequestsError):
    """Every password-hashing thread is busy and the queue in front of them
    is full (``Accounts(hash_capacity=)``)."""
