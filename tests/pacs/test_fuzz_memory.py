"""The PACS's malloc settings (pacs/malloc.py), behind the fuzz RSS bound (fuzz/README.md, "RSS").

Pooled association threads each got a glibc malloc arena (up to 8 per core) that kept its freed
memory: `make fuzz` grew by 60-75 MiB before levelling off. The PACS now keeps at most two
arenas and trims the heap (rate-limited) when a pooled thread has finished its work.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fuzz import cases as c
from fuzz import wire as w
from fuzz.target import Target

pytestmark = pytest.mark.timeout(300)

HEAP = 64 * 1024 * 1024  # a glibc arena's heap: a 64 MiB-aligned reservation of 64 MiB (HEAP_MAX_SIZE, 64-bit)


def arena_heaps(pid: int) -> int:
    """Non-main malloc arenas of a process, counted from /proc/PID/maps and /proc/PID/mem.

    Each heap of a non-main arena is a 64 MiB-aligned anonymous reservation of 64 MiB (its used
    part rw-p, the rest ---p) that starts with glibc's ``heap_info``, whose first word is the
    arena it belongs to (``ar_ptr``). An arena that outgrows its first heap gets a second one with
    the same ``ar_ptr``: heaps are counted once per arena."""
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) > 5:  # a named mapping (a file, [stack], [heap]): not an arena
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        regions.append((lo, hi, parts[1]))
    arenas = set()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, _hi, perms in regions:
            if lo % HEAP or not perms.startswith("rw"):
                continue
            end = lo
            for a, b, _p in regions:  # the reservation may be split in rw-p + ---p
                if a == end and b - lo <= HEAP:
                    end = b
            if end - lo == HEAP:
                mem.seek(lo)
                arenas.add(int.from_bytes(mem.read(8), sys.byteorder))
    return len(arenas)


@pytest.fixture(scope="module")
def target():
    t = Target("socket", Path(tempfile.mkdtemp(prefix="fuzz-memory-"))).start()
    yield t
    t.stop()


def test_the_pacs_keeps_at_most_two_malloc_arenas(target):
    """16 associations at once, each storing: their threads share two arenas (the main one and one
    more), where glibc's default would give them up to 16 (2 cores x 8)."""
    assert target.pacs is not None and target.pacs.proc is not None

    def one(n: int) -> w.Outcome:
        return w.exchange("127.0.0.1", target.port, c.conversation(8_000_000 + n), quiet=5, limit=60)

    for _ in range(3):
        with ThreadPoolExecutor(16) as pool:
            outs = list(pool.map(one, range(16)))
        assert all(o.last == "A-RELEASE-RP" for o in outs), [o.summary() for o in outs]
    assert arena_heaps(target.pacs.proc.pid) <= 1


def test_the_arena_count_is_the_one_the_environment_asks_for():
    """MALLOC_ARENA_MAX in the environment wins (glibc applies it; limit_arenas leaves it), and
    the counting above sees more arenas when more are allowed: it can fail."""
    code = r"""
import threading, sys
sys.path.insert(0, sys.argv[1])
from pacs import malloc
print(malloc.limit_arenas())
go = threading.Barrier(12)
def work():
    go.wait()
    keep = [bytearray(200_000) for _ in range(20)]
    go2.wait()
go2 = threading.Barrier(13)
ts = [threading.Thread(target=work) for _ in range(12)]
[t.start() for t in ts]
go2.wait()
import os
print(os.getpid(), flush=True)
sys.stdin.readline()
"""
    src = str(Path(__file__).resolve().parents[2] / "pacs" / "src")
    for env_max, applied, most in (("", "True", 1), ("8", "False", 7)):
        env = {"PATH": "/usr/bin:/bin", **({"MALLOC_ARENA_MAX": env_max} if env_max else {})}
        p = subprocess.Popen([sys.executable, "-c", code, src], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)
        try:
            assert p.stdout is not None and p.stdin is not None
            assert p.stdout.readline().strip() == applied
            pid = int(p.stdout.readline())
            heaps = arena_heaps(pid)
            assert heaps <= most
            if env_max:
                assert heaps > 1, "with 8 arenas allowed, 12 allocating threads use more than two"
        finally:
            p.communicate("\n", timeout=30)


def test_an_arena_grown_past_one_heap_counts_once():
    """One thread keeping 100 MB in pieces malloc serves from its arena (under the mmap
    threshold): the arena takes a second 64 MiB heap, and is still one arena (a slow CI run grew
    one this way and the count by heaps said two)."""
    code = r"""
import threading, sys, os
sys.path.insert(0, sys.argv[1])
from pacs import malloc
malloc.limit_arenas()
keep = []
t = threading.Thread(target=lambda: keep.extend(bytearray(100_000) for _ in range(1000)))
t.start(); t.join()
print(os.getpid(), flush=True)
sys.stdin.readline()
"""
    src = str(Path(__file__).resolve().parents[2] / "pacs" / "src")
    p = subprocess.Popen([sys.executable, "-c", code, src], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={"PATH": "/usr/bin:/bin"})
    try:
        assert p.stdout is not None
        pid = int(p.stdout.readline())
        aligned = [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                   if len(line.split()) <= 5 and int(line.split("-")[0], 16) % HEAP == 0]
        assert len(aligned) >= 2, aligned  # two heaps...
        assert arena_heaps(pid) == 1  # ...of one arena
    finally:
        p.communicate("\n", timeout=30)


def test_trim_runs_at_most_once_per_interval():
    from pacs import malloc

    if malloc._glibc() is None:
        pytest.skip("not glibc: malloc.trim does nothing here")
    now = 1e9
    assert malloc.trim(now) is True
    assert malloc.trim(now + malloc.TRIM_EVERY / 2) is False
    assert malloc.trim(now + malloc.TRIM_EVERY + 0.01) is True

