"""Counts per key (a source address, a calling AE title) that every listener process sees.

With several listener processes (``PACS_WORKERS``) a cap such as "16 pending
connections per source address" or "2 associations per node" must hold for the
PACS as a whole, not per process. Like ``policy.AssociationSlots``, the counts
live in shared memory made before the fork (``multiprocessing.RawArray``) with
one row per process, guarded by one lock:

- a key is hashed (BLAKE2b) into one of ``BUCKETS`` buckets; its count is the
  sum of that bucket over every process's row. Two keys that share a bucket
  (a chance of 1 in 65,536 per pair) share a count: a cap can only become
  stricter for them, never looser.
- each process only ever changes its own row, and clears it when it starts: a
  process restarted after a crash does not inherit the counts of the connections
  that died with its predecessor.

A single-process PACS uses the same table, made in its own process.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from typing import Any

BUCKETS = 65_536


class SharedCounts:
    """The table: made once, before the fork, for ``workers`` processes."""

    def __init__(self, workers: int = 1, buckets: int = BUCKETS) -> None:
        ctx = multiprocessing.get_context("fork")
        self.workers = workers
        self.buckets = buckets
        self.counts: Any = ctx.RawArray("i", workers * buckets)
        self.totals: Any = ctx.RawArray("i", workers)
        self.lock: Any = ctx.Lock()

    def row(self, index: int) -> "Counts":
        return Counts(self, index)


class Counts:
    """One listener process's handle on a ``SharedCounts`` table (it clears its own row)."""

    def __init__(self, table: SharedCounts, index: int = 0) -> None:
        self.t = table
        self.index = index
        self._base = index * table.buckets
        with table.lock:
            table.counts[self._base:self._base + table.buckets] = [0] * table.buckets
            table.totals[index] = 0

    def _bucket(self, key: str) -> int:
        h = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=4).digest()
        return int.from_bytes(h, "big") % self.t.buckets

    def _count(self, bucket: int) -> int:
        t = self.t
        return sum(t.counts[w * t.buckets + bucket] for w in range(t.workers))

    def count(self, key: str) -> int:
        with self.t.lock:
            return self._count(self._bucket(key))

    @property
    def total(self) -> int:
        return sum(self.t.totals)

    def try_take(self, key: str, per_key: int = 0, total: int = 0) -> str:
        """Count one more for ``key`` unless that would exceed a cap (0: no cap).
        Returns "" when counted, else which cap was full: "total" or "key"."""
        t = self.t
        b = self._bucket(key)
        with t.lock:
            if total and sum(t.totals) >= total:
                return "total"
            if per_key and self._count(b) >= per_key:
                return "key"
            t.counts[self._base + b] += 1
            t.totals[self.index] += 1
            return ""

    def give_back(self, key: str) -> None:
        t = self.t
        b = self._bucket(key)
        with t.lock:
            t.counts[self._base + b] -= 1
            t.totals[self.index] -= 1
