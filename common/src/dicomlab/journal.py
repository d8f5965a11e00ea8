"""The on-disk journal of index and event writes that could not reach Redis.

While Redis is away, ``EventLog`` (background mode) appends each event and its
index ops (``dicomlab.indexops``) here, fsync'd before ``emit(..., wait=True)``
returns -- so before the PACS answers Success for the instance they describe.
When Redis answers again, and at start, the journal is replayed in order and
emptied.

Layout: ``<storage>/.journal/<name>.jsonl``, one file per process (the PACS
names it after its worker index, pid and a random token), held with an
exclusive ``flock`` for the process's life. One JSON line per entry:
``{"seq": n, "event": {stream fields}, "ops": [index ops]}``; ``seq`` grows
for the file's life. A file whose lock can be taken belongs to a process that
died: whoever takes the lock replays it and deletes it (several listener
processes share the storage volume; the lock decides who does it).

Replay is idempotent: each chunk of entries goes to Redis in one MULTI/EXEC
transaction together with ``dicomlab:journal:<file>`` = the last ``seq``
applied, and entries at or below that mark are skipped. A crash at any point
of the replay therefore applies every entry exactly once (the mark expires
after a week; a replayed file is emptied or deleted long before).

A line cut short by a crash is the end of the file (its append never returned,
so nothing was acknowledged for it); a failed append is cut back off.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import keys
from .files import fsync_dir

LOG = logging.getLogger(__name__)

SUFFIX = ".jsonl"
MARK_TTL = 7 * 24 * 3600
CHUNK = 500

Entry = dict[str, Any]  # {"seq": int, "event": {...}, "ops": [...]}


def marker_key(file_name: str) -> str:
    return f"{keys.PREFIX}:journal:{file_name}"


class Journal:
    def __init__(self, folder: str | os.PathLike[str], name: str | None = None, fsync: bool = True) -> None:
        self.folder = Path(folder)
        self.name = f"{name or 'journal'}-{os.getpid()}-{secrets.token_hex(3)}{SUFFIX}"
        self.fsync = fsync
        self._fd: int | None = None
        self._seq = 0

    @property
    def path(self) -> Path:
        return self.folder / self.name

    # -- writing ------------------------------------------------------------------
    def _own(self) -> int:
        if self._fd is None:
            self.folder.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.fsync:
                fsync_dir(self.folder)
            self._fd = fd
        return self._fd

    def append(self, items: list[tuple[dict[str, str], list[dict[str, Any]]]]) -> None:
        """Append (event stream fields, index ops) pairs, in order, and fsync. Raises OSError
        (nothing of this call stays in the file then)."""
        fd = self._own()
        size = os.fstat(fd).st_size
        seq = self._seq
        lines = []
        for event, ops in items:
            seq += 1
            lines.append(json.dumps({"seq": seq, "event": event, "ops": ops}, separators=(",", ":")))
        data = memoryview(("\n".join(lines) + "\n").encode())
        try:
            while data:
                n = os.write(fd, data)
                if n <= 0:
                    raise OSError(28, "No space left on device")
                data = data[n:]
            if self.fsync:
                os.fdatasync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)  # no torn line in the middle of the journal
            except OSError:
                pass
            raise
        self._seq = seq

    def has_pending(self) -> bool:
        """Anything to replay: this process's entries, or a file a dead process left."""
        if self._fd is not None and os.fstat(self._fd).st_size:
            return True
        for path in self._orphans():
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True  # nobody holds it: its process is gone (closing the fd unlocks it)
            except BlockingIOError:
                continue
            finally:
                os.close(fd)
        return False

    # -- replay -----------------------------------------------------------------------
    def replay(self, client: Any, commands: Callable[[Any, Entry], None]) -> int:
        """Store every entry of the files left by dead processes, then this process's own,
        in order; ``commands(pipe, entry)`` queues an entry's writes. Returns the number of
        entries applied. Raises the client's errors (Redis away: try again later)."""
        done = 0
        for path in self._orphans():
            done += self._replay_orphan(path, client, commands)
        if self._fd is not None and os.fstat(self._fd).st_size:
            done += self._replay_fd(self._fd, self.name, client, commands)
            os.ftruncate(self._fd, 0)  # O_APPEND: the next entry goes to the start again
            if self.fsync:
                os.fdatasync(self._fd)
        return done

    def _orphans(self) -> list[Path]:
        try:
            paths = [p for p in self.folder.glob(f"*{SUFFIX}") if p.name != self.name]
        except OSError:
            return []
        stamped = []
        for p in paths:
            try:
                stamped.append((p.stat().st_mtime_ns, p.name, p))
            except FileNotFoundError:
                continue
        return [p for _, _, p in sorted(stamped)]

    def _replay_orphan(self, path: Path, client: Any, commands: Callable[[Any, Entry], None]) -> int:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live process's own journal
            if os.fstat(fd).st_nlink == 0:
                return 0  # replayed and deleted by another process meanwhile
            n = self._replay_fd(fd, path.name, client, commands)
            path.unlink()
            if self.fsync:
                fsync_dir(self.folder)
            LOG.info("journal %s replayed (%d entries) and removed", path.name, n)
            return n
        finally:
            os.close(fd)

    @staticmethod
    def _replay_fd(fd: int, name: str, client: Any, commands: Callable[[Any, Entry], None]) -> int:
        entries = read_entries(fd, name)
        if not entries:
            return 0
        mark_key = marker_key(name)
        mark = client.get(mark_key)
        applied = int(mark) if mark else 0
        todo = [e for e in entries if e["seq"] > applied]
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            pipe = client.pipeline(transaction=True)
            for entry in chunk:
                commands(pipe, entry)
            pipe.set(mark_key, chunk[-1]["seq"], ex=MARK_TTL)
            results = pipe.execute(raise_on_error=False)
            bad = [r for r in results if isinstance(r, Exception)]
            if bad:  # a command Redis refused (e.g. a key of another type): skipped, said once
                LOG.warning("journal %s: %d command(s) refused by Redis while replaying: %s", name, len(bad), bad[0])
        return len(todo)

    def close(self) -> None:
        """At a clean stop: an empty own file goes; one with entries stays for the next start."""
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_size == 0:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None


def read_entries(fd: int, name: str = "") -> list[Entry]:
    """The entries of a journal file, in order; a torn last line (a crash mid-append) is dropped."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while block := os.read(fd, 1 << 20):
        chunks.append(block)
    lines = b"".join(chunks).split(b"\n")
    out: list[Entry] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if isinstance(entry, dict) and isinstance(entry.get("seq"), int):
                out.append(entry)
                continue
        except ValueError:
            pass
        if i < len(lines) - 1 and any(x.strip() for x in lines[i + 1:]):
            LOG.warning("journal %s: unreadable entry on line %d skipped", name, i + 1)
    return out

