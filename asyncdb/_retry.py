"""Classification of failures for retries, and the jittered exponential backoff."""

from __future__ import annotations

import random

from sqlalchemy import exc as sa_exc

from ._errors import RETRYABLE_SQLSTATES, RetryableError, sqlstate_of

__all__ = ["backoff_delay", "is_connect_retryable", "is_transaction_retryable"]

# asyncpg exception class names that mean "try again later", by SQLSTATE class:
# 08 connection exception, 57P03 cannot connect now (the server is starting up),
# 53300 too many connections.
_RETRY_STATES = {"57P03", "53300", "57P01", "57P02"}
# Never retried: bad credentials or an unknown database will not fix themselves.
_NEVER_STATES_PREFIX = ("28",)
_NEVER_STATES = {"3D000"}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return seen


def is_connect_retryable(exc: BaseException) -> bool:
    """True for connection-level failures: refused, reset, DNS, timeout, server starting."""
    state = sqlstate_of(exc)
    if state is not None:
        if state.startswith(_NEVER_STATES_PREFIX) or state in _NEVER_STATES:
            return False
        if state.startswith("08") or state in _RETRY_STATES:
            return True
    for err in _chain(exc):
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        if isinstance(err, OSError) and err.errno is not None:
            return True
        if type(err).__name__ in {"gaierror", "CannotConnectNowError"}:
            return True
    return False


def is_auth_failure(exc: BaseException) -> bool:
    """True when the server rejected the credentials or the database name."""
    state = sqlstate_of(exc)
    return state is not None and (state.startswith(_NEVER_STATES_PREFIX) or state in _NEVER_STATES)


def is_transaction_retryable(exc: BaseException) -> bool:
    """True for serialization failures, deadlocks and dropped connections.

    Classified by SQLSTATE (40001, 40P01), since asyncpg's errors arrive as a plain
    DBAPIError; never true for integrity or validation errors.
    """
    if isinstance(exc, RetryableError) or sqlstate_of(exc) in RETRYABLE_SQLSTATES:
        return True
    for err in _chain(exc):
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return True
        if isinstance(err, sa_exc.DisconnectionError):
            return True
        if type(err).__name__ == "ConnectionDoesNotExistError":
            return True
        if isinstance(err, ConnectionError):
            return True
    return False


def backoff_delay(attempt: int, base: float, cap: float = 10.0) -> float:
    """Equal-jitter exponential backoff: half of ``min(cap, base * 2**attempt)`` is fixed,
    the other half random, so concurrent clients spread out but never retry instantly."""
    ceiling = min(cap, base * (2.0**attempt))
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)
