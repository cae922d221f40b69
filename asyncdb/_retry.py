"""Retry decisions, made by the class :func:`~asyncdb._errors.classify` returns, and
the jittered exponential backoff."""

from __future__ import annotations

import random

from ._errors import (
    ConfigurationError,
    ConnectionLostError,
    DatabaseUnavailableError,
    PoolTimeoutError,
    RetryableError,
)
from ._translate import classify

__all__ = [
    "backoff_delay",
    "is_auth_failure",
    "is_connect_retryable",
    "is_transaction_retryable",
]


def is_connect_retryable(exc: BaseException) -> bool:
    """True when the server could not be reached (yet): refused, reset, DNS, timeout,
    starting up, too many clients. Never for bad credentials or an unknown database."""
    found = classify(exc)
    return issubclass(found, DatabaseUnavailableError) and not issubclass(found, PoolTimeoutError)


def is_auth_failure(exc: BaseException) -> bool:
    """True when the server rejected the credentials or the database name."""
    return issubclass(classify(exc), ConfigurationError)


def is_transaction_retryable(exc: BaseException) -> bool:
    """True for serialization failures, deadlocks and lost connections.

    Never true for integrity or validation errors, nor for a pool timeout (waiting
    longer for a busy pool only adds load).
    """
    return issubclass(classify(exc), (RetryableError, ConnectionLostError))


def backoff_delay(attempt: int, base: float, cap: float = 10.0) -> float:
    """Equal-jitter exponential backoff: half of ``min(cap, base * 2**attempt)`` is fixed,
    the other half random, so concurrent clients spread out but never retry instantly."""
    ceiling = min(cap, base * (2.0**attempt))
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)
