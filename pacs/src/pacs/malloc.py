"""glibc malloc settings for a long-running, many-threaded PACS process.

glibc gives threads their own malloc arenas (up to 8 per core by default) and
keeps freed memory in each of them. The PACS runs every association on pooled
threads (threadreuse.ThreadReuse keeps 64 idle per pool), so after a burst of
concurrent associations each arena holds its own high-water mark of freed
memory: `make fuzz` saw the RSS grow by 60-75 MiB over 10,000 cases before it
levelled off, with nothing leaked. Two remedies, both standard glibc:

- ``limit_arenas()``: at most ``ARENA_MAX`` arenas (``mallopt(M_ARENA_MAX)``,
  what ``MALLOC_ARENA_MAX=2`` in the environment does); called at start, before
  any listener thread exists. An explicit ``MALLOC_ARENA_MAX`` in the
  environment wins (glibc reads it itself).
- ``trim()``: ``malloc_trim(0)`` (freed memory at the top of each heap and
  whole free pages inside it go back to the kernel), at most once per
  ``TRIM_EVERY`` seconds, when an association has ended and no other is open.

On a C library other than glibc (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time

ARENA_MAX = 2
M_ARENA_MAX = -8  # glibc malloc.h
TRIM_EVERY = 5.0  # seconds between two malloc_trim calls at most

_libc: ctypes.CDLL | None = None
_last_trim = 0.0
_trim_lock = threading.Lock()


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.mallopt  # noqa: B018 (glibc has both; others may not)
            lib.malloc_trim  # noqa: B018
        except (OSError, AttributeError):
            return None
        lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.malloc_trim.argtypes = [ctypes.c_size_t]
        _libc = lib
    return _libc


def limit_arenas(count: int = ARENA_MAX) -> bool:
    """At most ``count`` malloc arenas in this process; False if not applied (another
    libc, or MALLOC_ARENA_MAX set in the environment, which glibc has applied)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    lib = _glibc()
    return bool(lib and lib.mallopt(M_ARENA_MAX, count) == 1)


def trim(now: float | None = None) -> bool:
    """malloc_trim(0), unless one ran less than TRIM_EVERY s ago (or another thread is at it)."""
    global _last_trim
    lib = _glibc()
    now = time.monotonic() if now is None else now
    if lib is None or now - _last_trim < TRIM_EVERY or not _trim_lock.acquire(blocking=False):
        return False
    try:
        _last_trim = now
        lib.malloc_trim(0)
        return True
    finally:
        _trim_lock.release()
