"""Bounded polling: wait for a condition instead of sleeping a guessed amount of time."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.01,
               message: str | None = None) -> T:
    """Call `predicate` until it returns something truthy; return that value.

    The predicate is called at least once, and once more at (or just after) the deadline, so a
    condition that becomes true while we sleep is not missed. Exceptions from the predicate
    propagate. On timeout raises TimeoutError naming the predicate (or `message`) and its last
    value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = message or getattr(predicate, "__qualname__", None) or repr(predicate)
            raise TimeoutError(f"{what}: not true within {timeout:g}s (last value: {value!r})")
        time.sleep(min(interval, remaining))
