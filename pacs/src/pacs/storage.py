"""Durable C-STORE: the received dataset bytes, unchanged, behind a Part 10
preamble and file meta, written to a temporary file, fsync'd, renamed into place
(and the folder fsync'd) -- only then Success.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
UIDs are checked before they become path parts.

One write path for every instance (``Storage._install``): the temporary file
lives in ``<root>/.incoming/``, on the same filesystem as the studies, so the
final ``rename`` into the series folder is atomic (POSIX rename within one
filesystem; the file is fdatasync'd before it, the series folder fsync'd after
it). Two ways fill that file:

- ``Storage.store(raw, ...)``: a dataset held in memory (the fast path for
  ordinary instances): one ``writev`` of header + dataset.
- ``Storage.spool(...)`` -> ``Spool``: a large dataset written fragment by
  fragment as it arrives (``write``), then ``commit()`` (parse the header
  fields from the file's beginning, the same checks, install) or ``discard()``.

Both understand the dataset the same way (``instance.understand``: only the header
fields the index and the path need, never the pixel data) and both leave nothing
behind on any failure. A Deflated dataset is inflated only as far as those
fields need, at most ``HEADER_LIMIT`` bytes (``bounded.Inflated``); beyond that it is
answered 0xC000 Cannot understand. Orphans in ``.incoming`` (a crash mid-write)
are removed by the start-up reconcile (``reconcile.py``: those older than the process).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from dicomlab.dicom import STATUS_CANNOT_UNDERSTAND, STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS
from dicomlab.files import fsync_dir, start_writeback

from .instance import IMPLEMENTATION_CLASS_UID as IMPLEMENTATION_CLASS_UID  # re-exported (tests, reconcile)
from .instance import IMPLEMENTATION_VERSION as IMPLEMENTATION_VERSION
from .instance import Pieces as Pieces  # re-exported: the data phase hands these to store()
from .instance import StoreResult as StoreResult
from .instance import index_fields as index_fields
from .instance import part10_header, understand
from .instance import valid_uid as valid_uid
from .sopmarks import SopMarks

LOG = logging.getLogger(__name__)

_IOV_MAX = 1024
WRITEBACK_EVERY = 4 << 20  # a spooled dataset's write-out is started each time this much more is written
INCOMING = ".incoming"  # temporary files, on the storage filesystem
FILE_MODE = 0o640  # patient data: the owner writes, its group reads, nobody else
DIR_MODE = 0o750


def _umask() -> int | None:
    """This process's umask, read without changing it (Linux /proc; None: unknown)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _write_all(fd: int, header: bytes, raw: Any) -> None:
    """One writev for header + dataset (``raw``: bytes, or the fragments it came in), finishing
    any short write (a full disk raises)."""
    pieces = [header, *raw] if isinstance(raw, Pieces) else [header, raw]
    if len(pieces) > _IOV_MAX:  # tiny PDUs: writev takes at most IOV_MAX buffers
        pieces = [header, b"".join(pieces[1:])]
    done = os.writev(fd, pieces)
    for piece in pieces:
        view = memoryview(piece)
        if done >= len(view):
            done -= len(view)
            continue
        view = view[done:]
        done = 0
        while view:
            view = view[_write_some(fd, view):]


def _write_some(fd: int, data: Any) -> int:
    n = os.write(fd, data)
    if n <= 0:
        raise OSError(errno.ENOSPC, "No space left on device")
    return n


class Storage:
    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming = self.root / INCOMING
        self.incoming.mkdir(DIR_MODE, exist_ok=True)
        self.sop_marks = SopMarks(self.root, fsync)
        self._root = str(self.root)
        # series folders this process made or saw, so a C-STORE does not stat them again;
        # one removed meanwhile (a study deleted through the admin API) is made again (_install)
        self._folders: set[str] = set()
        # FILE_MODE whatever the umask: an fchmod per file only if the umask would take bits away
        umask = _umask()
        self._chmod_files = umask is None or FILE_MODE & ~umask != FILE_MODE
        self._storing = 0  # C-STOREs of this process being stored now (store)
        self._storing_lock = threading.Lock()

    def store(
        self,
        raw: bytes | Pieces,
        transfer_syntax: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        calling_aet: str = "",
    ) -> StoreResult:
        """``_store``, knowing whether another C-STORE of this process is being stored meanwhile."""
        with self._storing_lock:
            self._storing += 1
            alone = self._storing == 1
        try:
            return self._store(raw, transfer_syntax, sop_class_uid, sop_instance_uid, calling_aet, alone)
        finally:
            with self._storing_lock:
                self._storing -= 1

    def _store(self, raw: bytes | Pieces, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str,
               calling_aet: str, alone: bool) -> StoreResult:
        """Store one received dataset (``raw``: its bytes as received, or the fragments they came in).

        The file is written first and its header fields read while the disk writes it
        (``start_writeback``), then checked, then made durable: on the lab's disk the header
        read (~0.4 ms) then costs nothing of the ``fdatasync`` (``bench/README.md``, tenth
        session). A dataset that fails the checks leaves no file, as before. A request whose
        SOP Instance UID is not a valid UID is refused before anything is written."""
        sop = sop_instance_uid.strip("\0 ")
        uid_ok = valid_uid(sop)
        try:
            header = part10_header(sop_class_uid.strip("\0 "), sop, transfer_syntax, calling_aet) if uid_ok else b""
        except UnicodeEncodeError:
            header = b""
        if not header:  # understand names what is wrong (the UID checks are its own); non-ASCII text raises below
            meta = understand(raw, transfer_syntax, sop_class_uid, sop_instance_uid, calling_aet)
            if isinstance(meta, StoreResult):
                return meta
            header = part10_header(sop_class_uid.strip("\0 "), meta["sop_instance_uid"], transfer_syntax,
                                   calling_aet)
        tmp = fd = None
        try:
            tmp, fd = self._temporary(sop if uid_ok else "store")
            _write_all(fd, header, raw)
        except OSError as exc:
            self._drop(tmp, fd)
            return self._no_room({"sop_instance_uid": sop}, exc)
        if self.fsync and alone:  # with others storing, their work already fills the disk's time
            start_writeback(fd)
        meta = understand(raw, transfer_syntax, sop_class_uid, sop_instance_uid, calling_aet)
        if isinstance(meta, StoreResult):
            self._drop(tmp, fd)
            return meta
        return self._install(tmp, fd, meta)

    def spool(self, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str,
              calling_aet: str = "") -> "Spool":
        """A dataset to be written as its fragments arrive (see ``Spool``)."""
        return Spool(self, transfer_syntax, sop_class_uid, sop_instance_uid, calling_aet)

    # -- the one write path ----------------------------------------------------------
    def _temporary(self, label: str) -> tuple[Path, int]:
        """A new temporary file in ``.incoming`` (made again if someone removed it)."""
        tmp = self.incoming / f"{label[:64]}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileNotFoundError:
            self.incoming.mkdir(exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        if self._chmod_files:
            try:
                os.fchmod(fd, FILE_MODE)  # whatever the umask
            except OSError:
                self._drop(tmp, fd)
                raise
        return tmp, fd

    @staticmethod
    def _drop(tmp: Path | None, fd: int | None) -> None:
        """No partial file on any failure."""
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass

    def _no_room(self, meta: dict[str, str], exc: OSError) -> StoreResult:
        return StoreResult(
            STATUS_OUT_OF_RESOURCES,
            f"Could not write {meta.get('sop_instance_uid') or 'the instance'} to {self.root} "
            f"({exc.strerror or exc}); answered Out of Resources and kept nothing. Fix: free disk space or "
            "check the storage volume; the modality can resend.",
            meta=meta,
        )

    def _install(self, tmp: Path, fd: int, meta: dict[str, str]) -> StoreResult:
        """A filled temporary file (open as ``fd``) made durable under its final name."""
        study, series, sop = meta["study_uid"], meta["series_uid"], meta["sop_instance_uid"]
        if any(not part or "/" in part or part in (".", "..") for part in (study, series, sop)):
            self._drop(tmp, fd)  # belt and braces after the UID check
            return StoreResult(STATUS_CANNOT_UNDERSTAND, "Refused a path outside the storage root.", meta=meta)
        folder = f"{self._root}/{study}/{series}"
        final = f"{folder}/{sop}.dcm"
        try:
            if self.fsync:
                os.fdatasync(fd)  # the data and the size; the rename is made durable below
            os.close(fd)
            fd = None  # type: ignore[assignment]
            if folder not in self._folders:
                self._make_dirs(Path(folder))
            replaced = os.path.exists(final)
            try:
                os.replace(tmp, final)  # atomic: .incoming and the series folder share the filesystem
            except FileNotFoundError:  # the folder was removed since (a study deleted): again
                self._folders.discard(folder)
                self._make_dirs(Path(folder))
                os.replace(tmp, final)
            if self.fsync:
                fsync_dir(folder)
        except OSError as exc:
            self._drop(tmp, fd)
            return self._no_room(meta, exc)
        path = Path(final)
        previous = self.sop_marks.supersede(meta, path)  # the same SOP elsewhere: newest wins
        meta["path"] = final
        return StoreResult(STATUS_SUCCESS, "stored", path=path, replaced=replaced or previous is not None,
                           meta=meta, previous=previous)

    def _make_dirs(self, folder: Path) -> None:
        if len(self._folders) > 10_000:
            self._folders.clear()  # bounded: a long-running PACS sees many series
        if folder.is_dir():
            self._folders.add(str(folder))
            return
        created = []
        p = folder
        while not p.exists():
            created.append(p)
            p = p.parent
        for d in reversed(created):
            try:
                d.mkdir(DIR_MODE)
                os.chmod(d, DIR_MODE)  # whatever the umask
            except FileExistsError:
                continue
            if self.fsync:
                fsync_dir(d.parent)
        self._folders.add(str(folder))


class Spool:
    """One dataset written to ``<root>/.incoming`` as its fragments arrive, never held
    whole in memory: ``write(fragment)`` ..., then ``commit() -> StoreResult`` or
    ``discard()``. A write error (a full disk) is remembered: later writes are
    dropped, and ``commit`` answers Out of Resources and keeps nothing."""

    def __init__(self, storage: Storage, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str,
                 calling_aet: str) -> None:
        self.storage = storage
        self.transfer_syntax, self.sop_class_uid = transfer_syntax, sop_class_uid
        self.sop_instance_uid, self.calling_aet = sop_instance_uid, calling_aet
        self.size = 0  # dataset bytes received
        self._unstarted = 0  # bytes written since the last start_writeback
        self._error: OSError | None = None
        self._tmp: Path | None = None
        self._fd: int | None = None
        try:
            # the request's UIDs; understand checks the dataset's against them before install
            self._header = part10_header(sop_class_uid.strip("\0 "), sop_instance_uid.strip("\0 "),
                                         transfer_syntax, calling_aet)
        except UnicodeEncodeError:
            self._header = b""  # not ASCII: understand refuses it; only count until then
            return
        try:
            self._tmp, self._fd = storage._temporary("spool")
            self._write(self._header)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self._error = exc
        Storage._drop(self._tmp, self._fd)
        self._tmp = self._fd = None

    def _write(self, data: Any) -> None:
        view = memoryview(data)
        while view:
            view = view[_write_some(self._fd, view):]  # type: ignore[arg-type]
        self._unstarted += len(data)
        if self._unstarted >= WRITEBACK_EVERY and self.storage.fsync:  # the disk keeps up as it arrives
            self._unstarted = 0
            start_writeback(self._fd)  # type: ignore[arg-type]

    def write(self, fragment: Any) -> None:
        self.size += len(fragment)
        if self._fd is None:
            return
        try:
            self._write(fragment)
        except OSError as exc:
            self._fail(exc)

    def discard(self) -> None:
        Storage._drop(self._tmp, self._fd)
        self._tmp = self._fd = None

    def commit(self) -> StoreResult:
        """Check the dataset as ``Storage.store`` does and install it; nothing is left
        behind unless the result is Success."""
        try:
            if self._error is not None:
                return self.storage._no_room({"sop_instance_uid": self.sop_instance_uid.strip("\0 ")}, self._error)
            if self._tmp is None or self._fd is None:
                return StoreResult(STATUS_CANNOT_UNDERSTAND, "The C-STORE request's UIDs are not ASCII (or the "
                                   "dataset was discarded); not stored.")
            if self.storage.fsync:
                start_writeback(self._fd)  # the rest, while the header is read back
            with open(self._tmp, "rb") as f:
                f.seek(len(self._header))
                meta = understand(f, self.transfer_syntax, self.sop_class_uid, self.sop_instance_uid,
                                   self.calling_aet)
            if isinstance(meta, StoreResult):
                return meta
            tmp, fd = self._tmp, self._fd
            self._tmp = self._fd = None  # _install owns them now (and drops them on failure)
            return self.storage._install(tmp, fd, meta)
        finally:
            self.discard()
