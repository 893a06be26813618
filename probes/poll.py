"""Bounded polling: wait for a condition instead of sleeping a guessed amount of time."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.01) -> T:
    """Call `predicate` until it returns something truthy or `timeout` passes; return its last value
    (falsy on timeout: for a condition that may rightly never hold, such as a dropped packet arriving).

    The predicate is called at least once, and once more at (or just after) the deadline, so a
    condition that becomes true while we sleep is not missed. Exceptions from the predicate propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        remaining = deadline - time.monotonic()
        if value or remaining <= 0:
            return value
        time.sleep(min(interval, remaining))


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.01,
               message: str | None = None) -> T:
    """poll(), for a condition that must hold: on timeout raises TimeoutError naming the predicate
    (or `message`) and its last value."""
    value = poll(predicate, timeout, interval)
    if not value:
        what = message or getattr(predicate, "__qualname__", None) or repr(predicate)
        raise TimeoutError(f"{what}: not true within {timeout:g}s (last value: {value!r})")
    return value
