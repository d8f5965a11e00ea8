"""Where each SOP Instance UID is stored, so a duplicate is found without Redis.

The rule (DESIGN.md "C-STORE"; README "Durability"): **one file per SOP Instance
UID, the newest wins.** The same SOP Instance UID received again under another
study or series is written into its own study/series folder like any instance
(temporary file, fdatasync, rename, folder fsync); only then is the older file
removed (and its folder fsync'd), the index moves the instance from the old
series and study to the new ones, and a ``store-replaced`` event names both
places. Under the same study and series the rename itself replaces the file.

The mark: ``<storage>/.sop/<xx>/<SOPInstanceUID>``, a symbolic link to
``../../<Study>/<Series>/<SOP>.dcm`` (``xx``: two hex digits of the UID's CRC-32,
256 folders). Creating it is one ``symlink`` call for a new SOP. Marks are not
fsync'd: they are a cache of what the folders say, rebuilt by the reconcile at
start, which also settles any duplicate a crash left (the newest file by
modification time wins there too). After a crash at any point there are one or
two files for the instance, never none: the old file goes only after the new
one is durable.

On a C-STORE the mark is written after the answer rather than before
(``point_later``): a symbolic link with a target this long is not stored in the
inode, so ext4 gives it a block, and the call took 0.2-0.8 ms of a C-STORE's
~5 ms (`make bench` profile). A background thread writes it; until then the
process's own ``where`` sees it in memory, so a second copy of the SOP in the
same process is settled as before. Another listener process sees it once it is
written (a millisecond or so later; two processes storing the same SOP under two
studies in that moment leave two files, which the next start's reconcile settles,
newest wins). A mark not written when the process dies is made by the next start's
reconcile, like any missing mark.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import secrets
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from dicomlab import indexops
from dicomlab.files import fsync_dir

LOG = logging.getLogger(__name__)

MARKS = ".sop"
_UP = "../../"


def bucket(sop: str) -> str:
    return f"{zlib.crc32(sop.encode()) & 0xFF:02x}"


class SopMarks:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = root
        self.folder = root / MARKS
        self._folder = str(self.folder)  # str joins: pathlib cost ~5 % of a C-STORE's GIL time (profile)
        self.fsync = fsync
        try:
            self.folder.mkdir(mode=0o750, exist_ok=True)
            for i in range(256):  # once, here: not on a C-STORE's path
                (self.folder / f"{i:02x}").mkdir(mode=0o750, exist_ok=True)
        except OSError as exc:  # e.g. a read-only volume: the PACS still starts (and answers 0xA700)
            LOG.warning("cannot make the SOP marks folder %s (%s)", self.folder, exc)
        self._later: dict[str, str] = {}  # sop -> where its mark must point: not yet written
        self._later_lock = threading.Lock()
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def path(self, sop: str) -> Path:
        return Path(self._mark(sop))

    def _mark(self, sop: str) -> str:
        return f"{self._folder}/{bucket(sop)}/{sop}"

    def where(self, sop: str) -> str | None:
        """The stored file's path relative to the root, as the mark says (None: no mark)."""
        with self._later_lock:
            later = self._later.get(sop)
        if later is not None:
            return later
        return self._on_disk(sop)

    def _on_disk(self, sop: str) -> str | None:
        try:
            target = os.readlink(self._mark(sop))
        except OSError:
            return None
        return target.removeprefix(_UP)

    def point(self, sop: str, rel: str) -> tuple[bool, str | None]:
        """Make the mark of ``sop`` point to ``rel`` (``study/series/sop.dcm``): (changed, where it
        pointed before). A new SOP costs one ``symlink`` call."""
        mark = self._mark(sop)
        target = _UP + rel
        try:
            os.symlink(target, mark)
            return True, None
        except FileNotFoundError:
            os.makedirs(os.path.dirname(mark), mode=0o750, exist_ok=True)
            try:
                os.symlink(target, mark)
                return True, None
            except FileExistsError:
                pass
        except FileExistsError:
            pass
        before = self._on_disk(sop)  # (not where(): the writer writes what where() already answers)
        if before == rel:
            return False, before
        tmp = os.path.join(os.path.dirname(mark), f".{sop}.{secrets.token_hex(4)}.tmp")
        os.symlink(target, tmp)
        os.replace(tmp, mark)
        return True, before

    def point_later(self, sop: str, rel: str) -> tuple[bool, str | None]:
        """``point``, with the link written by the background writer: (changed, where it pointed
        before), ``where`` answering the new place at once."""
        before = self.where(sop)
        if before == rel:
            return False, before
        with self._later_lock:
            self._later[sop] = rel
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_later, name="sop-marks", daemon=True)
                self._writer.start()
                atexit.register(self.flush)
        self._queue.put(sop)
        return True, before

    def _write_later(self) -> None:
        while True:
            sop = self._queue.get()
            with self._later_lock:
                rel = self._later.get(sop)
            if rel is None:
                continue  # written already (the SOP came twice)
            try:
                self.point(sop, rel)
            except OSError as exc:
                LOG.warning("SOP %s: could not write its mark (%s); the reconcile at the next start does it",
                            sop, exc)
            with self._later_lock:
                if self._later.get(sop) == rel:
                    del self._later[sop]

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every mark is written (at exit; tests). False if some are still waiting."""
        deadline = time.monotonic() + timeout
        while True:
            with self._later_lock:
                if not self._later:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def ensure(self, sop: str, rel: str) -> bool:
        return self.point(sop, rel)[0]

    def supersede(self, meta: dict[str, str], final: Path) -> tuple[str, str] | None:
        """Called once ``final`` is durable: point the mark at it and remove the same SOP's
        file under another study or series. Returns that (study, series), or None. Never
        raises: a failure here leaves a duplicate that the next reconcile settles."""
        sop = meta["sop_instance_uid"]
        rel = f"{meta['study_uid']}/{meta['series_uid']}/{sop}.dcm"
        try:
            changed, before = self.point_later(sop, rel)
            if not changed or before is None:
                return None
            parts = before.split("/")
            if len(parts) != 3 or parts[2] != f"{sop}.dcm" or ".." in parts:
                return None  # not a mark of ours
            old = self.root / before
            try:
                old.unlink()
            except FileNotFoundError:
                return None  # a stale mark: nothing stored there any more
            if self.fsync:
                fsync_dir(old.parent)
            return parts[0], parts[1]
        except OSError as exc:
            LOG.warning("SOP %s: could not settle the mark or an older copy (%s); the reconcile at the next "
                        "start does it", sop, exc)
            return None


def stored_ops(result: Any, indexed_series: set[str]) -> tuple[list[indexops.Op], str, dict[str, str]]:
    """The index ops of a stored instance (``StoreResult``), and the words and event detail
    for a move: out of its former study and series first, then into its own.
    ``indexed_series``: the series whose study and series fields this association already wrote."""
    m = result.meta
    ops: list[indexops.Op] = []
    moved, detail = "", {}
    if result.previous is not None:
        old_study, old_series = result.previous
        detail = {"previous_study_uid": old_study, "previous_series_uid": old_series}
        ops.append(indexops.remove_instance(old_study, old_series, m["sop_instance_uid"]))
        indexed_series.discard(old_series)  # the emptied series may have lost its fields
        moved = (f", formerly under study {old_study} series {old_series}: the newest wins, that file was "
                 "removed")
    # study and series fields: once per series here (and after a move, which may have emptied a study)
    full = moved != "" or m["series_uid"] not in indexed_series
    indexed_series.add(m["series_uid"])
    ops.append(indexops.record_instance(m, full=full))
    return ops, moved, detail

