"""Waiting for a condition until a deadline: the one place the lab's poll loops live.

- ``wait_until(predicate, timeout)`` calls ``predicate`` until it returns something truthy and
  returns that value; past ``timeout`` seconds it raises (``TimeoutError`` unless ``error`` says
  otherwise). ``alive`` (optional) is asked every round and names why waiting is futile (the
  process exited, say): then it raises ``RuntimeError`` at once instead of waiting out the clock.
- ``poll_until`` is the same without raising: the value, or None when the time is up.
- ``deadline_loop`` is the iterator form, for loops that do more per round than ask one
  predicate (keep state across rounds, choose among several outcomes).

The predicate is always asked at least once, and once more at the deadline, so a condition that
holds when the time is up counts. Dependency-free: ``scripts/lab.py`` imports it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _wait(predicate: Callable[[], T], timeout: float, interval: float, what: str,
          alive: Callable[[], object] | None) -> tuple[bool, T]:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return True, value
        if alive is not None and (why := alive()):
            raise RuntimeError(f"{what}: {why}")
        left = deadline - time.monotonic()
        if left <= 0:
            return False, value
        time.sleep(min(interval, left))


def wait_until(predicate: Callable[[], T], timeout: float, *, interval: float = 0.05,
               what: str = "condition", alive: Callable[[], object] | None = None,
               error: Callable[[str], BaseException] = TimeoutError) -> T:
    """``predicate``'s first truthy value; ``error`` ("timed out after N s waiting for <what>")
    when ``timeout`` seconds pass first."""
    met, value = _wait(predicate, timeout, interval, what, alive)
    if not met:
        raise error(f"timed out after {timeout:g} s waiting for {what}")
    return value


def poll_until(predicate: Callable[[], T], timeout: float, *, interval: float = 0.05) -> T | None:
    """``predicate``'s first truthy value, or None when ``timeout`` seconds pass first."""
    met, value = _wait(predicate, timeout, interval, "condition", None)
    return value if met else None


def deadline_loop(timeout: float, interval: float = 0.25) -> Iterator[float]:
    """Yield (the seconds left) until ``timeout`` seconds have passed, pausing ``interval``
    between rounds."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        yield left
        time.sleep(min(interval, max(end - time.monotonic(), 0)))
