"""Storage against the study index: run in the background when the PACS starts,
and by hand as ``dicomlab-pacs reindex`` (the same code, every file re-indexed).

What it does, in one pass over ``<storage>/<Study>/<Series>/``:

- removes orphan temporary files: ``.<SOP>.<token>.tmp`` in a series folder and
  anything in ``<storage>/.incoming/`` last written before ``cutoff`` (the PACS's
  start). Removing a temporary file that a live listener process is still
  writing can only make that one C-STORE fail (its rename finds nothing, so it
  answers 0xA700): nothing acknowledged is ever touched;
- settles duplicates (the same SOP Instance UID in two folders, left by a crash
  between writing the new file and removing the old): the newest file by
  modification time stays (``sopmarks``: the newest wins);
- makes each SOP's mark point at its file (``sopmarks``);
- indexes every file the index does not list (in its series' instance set, its
  series in the study, its study in the list of studies), written as index ops
  (``dicomlab.indexops``, idempotent) -- and removes from the index the places
  of the duplicates it removed. A series' study and series fields are read from
  one of its files with the same function as a C-STORE (``storage.index_fields``);
  its other files are known by their path, whose folder and file names the PACS
  made from the dataset's UIDs. That keeps 10,000 files well under 10 s.

The listener serves associations meanwhile: this runs in its own thread, and
only reads the files the index lacks.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import redis
from pydicom.filereader import read_dataset

from dicomlab import indexops, keys
from dicomlab.dicom import DEFLATED_EXPLICIT_VR_LE
from dicomlab.errors import RegistryUnavailable
from dicomlab.events import STORAGE_RECONCILED, EventLog
from dicomlab.registry import Registry

from .bounded import Inflated, chunks
from .storage import Storage, index_fields, valid_uid

LOG = logging.getLogger(__name__)

INCOMING = ".incoming"
RECONCILED = STORAGE_RECONCILED  # the event type
_BATCH = 1000


@dataclass
class Report:
    files: int = 0
    added: int = 0
    orphans: int = 0
    duplicates: int = 0
    unreadable: list[str] = field(default_factory=list)
    marks: int = 0
    seconds: float = 0.0

    def sentence(self, verb: str = "reconciled") -> str:
        parts = [f"{self.added} added to the index", f"{self.orphans} orphan temporary file(s) removed"]
        if self.duplicates:
            parts.append(f"{self.duplicates} older duplicate(s) of a SOP Instance UID removed (the newest wins)")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable file(s) left as they are (first: "
                         f"{self.unreadable[0]}); check them with dcmdump")
        return f"{verb} {self.files:,} file(s) in {self.seconds:.1f} s: " + ", ".join(parts) + "."

    def detail(self) -> dict[str, Any]:
        return {"files": self.files, "added": self.added, "orphans_removed": self.orphans,
                "duplicates_removed": self.duplicates, "unreadable": self.unreadable[:20],
                "marks_fixed": self.marks, "seconds": round(self.seconds, 3)}


def read_stored(path: Path) -> dict[str, str]:
    """The index fields of a stored Part 10 file: its file meta says the transfer syntax
    and the calling AE title, ``index_fields`` reads the rest (only up to Instance Number)."""
    with open(path, "rb") as f:
        head = f.read(144)
        if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
            raise ValueError("not a Part 10 file with a File Meta group length")
        (length,) = struct.unpack("<I", head[140:144])
        meta = read_dataset(BytesIO(f.read(length)), is_implicit_VR=False, is_little_endian=True)
        ts = str(meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
        aet = str(meta.get("SourceApplicationEntityTitle", "") or "").strip()
        stream: Any = f
        if ts == DEFLATED_EXPLICIT_VR_LE:
            stream = Inflated(chunks(f))  # only as far as the header fields, bounded
        return index_fields(stream, ts, aet)


def _remove_old(folder: Path, cutoff: float) -> int:
    """Temporary files in one series folder, or anything under .incoming, older than cutoff."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                removed += _remove_old(Path(e.path), cutoff)
                continue
            if e.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(e.path)
                removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:  # e.g. a read-only volume: left for the next start
            LOG.warning("cannot remove %s: %s", e.path, exc)
    return removed


def reconcile(storage: Storage, registry: Registry, cutoff: float | None, rebuild: bool = False) -> Report:
    """One pass (see the module text). ``cutoff``: temporary files last written before it are
    orphans (None: remove none, e.g. by hand while the PACS runs). ``rebuild``: index every
    file, listed or not. Raises RegistryUnavailable (nothing lost: run it again)."""
    t0 = time.monotonic()
    root = storage.root
    report = Report()
    where = _scan(root, cutoff, report)
    ops: list[indexops.Op] = []
    _settle_duplicates(root, where, report, ops)
    report.files = len(where)
    _ensure_marks(storage, where, report)
    _index(root, registry, where, rebuild, report, ops)
    report.seconds = time.monotonic() - t0
    return report


def _scan(root: Path, cutoff: float | None, report: Report) -> dict[str, list[tuple[str, str]]]:
    """The files: SOP Instance UID -> [(study, series)] where a file of it is; orphan
    temporary files (last written before ``cutoff``) removed on the way."""
    where: dict[str, list[tuple[str, str]]] = {}  # sop -> [(study, series)]
    for study_entry in os.scandir(root):
        name = study_entry.name
        if name == INCOMING and cutoff is not None:
            report.orphans += _remove_old(Path(study_entry.path), cutoff)
            continue
        if name.startswith(".") or not study_entry.is_dir(follow_symlinks=False) or not valid_uid(name):
            continue
        for series_entry in os.scandir(study_entry.path):
            series = series_entry.name
            if not series_entry.is_dir(follow_symlinks=False) or not valid_uid(series):
                continue
            for f in os.scandir(series_entry.path):
                fname = f.name
                if fname.startswith("."):
                    if fname.endswith(".tmp") and cutoff is not None:
                        report.orphans += _remove_if_older(f, cutoff)
                    continue
                if fname.endswith(".dcm") and valid_uid(fname[:-4]):
                    where.setdefault(fname[:-4], []).append((name, series))
    return where


def _remove_if_older(f: os.DirEntry[str], cutoff: float) -> int:
    """Remove a temporary file last written before ``cutoff``; 1 if it was removed."""
    try:
        if f.stat(follow_symlinks=False).st_mtime < cutoff:
            os.unlink(f.path)
            return 1
    except FileNotFoundError:
        pass
    except OSError as exc:
        LOG.warning("cannot remove %s: %s", f.path, exc)
    return 0


def _settle_duplicates(root: Path, where: dict[str, list[tuple[str, str]]], report: Report,
                       ops: list[indexops.Op]) -> None:
    """Duplicates: the newest wins (``_settle``); ``where`` keeps one place per SOP."""
    for sop, places in where.items():
        if len(places) > 1:
            keep = _settle(root, sop, places, ops)
            report.duplicates += len(places) - 1
            where[sop] = [keep]


def _ensure_marks(storage: Storage, where: dict[str, list[tuple[str, str]]], report: Report) -> None:
    """The SOP marks (sopmarks.py) of every file."""
    marks = storage.sop_marks
    for sop, [(study, series)] in where.items():
        try:
            if marks.ensure(sop, f"{study}/{series}/{sop}.dcm"):
                report.marks += 1
        except OSError as exc:  # e.g. a read-only volume: the marks are a cache, the next start makes them
            LOG.warning("cannot make the SOP marks (%s: %s); left for the next start", sop, exc)
            break


def _index(root: Path, registry: Registry, where: dict[str, list[tuple[str, str]]], rebuild: bool,
           report: Report, ops: list[indexops.Op]) -> None:
    """The index: every file not in it (every file: ``rebuild``), written with ``ops`` in batches."""
    by_series: dict[tuple[str, str], list[str]] = {}
    for sop, [(study, series)] in where.items():
        by_series.setdefault((study, series), []).append(sop)
    missing = by_series if rebuild else _not_indexed(registry, by_series)
    for (study, series), sops in missing.items():
        fields: dict[str, str] | None = None  # the series' study and series fields, read from one file
        for sop in sops:
            path = root / study / series / f"{sop}.dcm"
            try:
                at = path.stat().st_mtime
                if fields is None:
                    meta = read_stored(path)
                    if (meta["study_uid"], meta["series_uid"], meta["sop_instance_uid"]) != (study, series, sop):
                        raise ValueError("its UIDs differ from its place in the storage folder")
                    fields = meta
                    ops.append(indexops.record_instance(meta, full=True, at=at))
                else:  # its folder names are its UIDs (the PACS made them from the dataset); its own
                    # instance fields (SOP class, number) are read when a C-FIND asks (pacs/query.py)
                    shared = {k: v for k, v in fields.items() if k not in indexops.INSTANCE_FIELDS}
                    ops.append(indexops.record_instance({**shared, "sop_instance_uid": sop}, full=False, at=at))
            except (OSError, ValueError, EOFError, KeyError, struct.error) as exc:
                report.unreadable.append(f"{study}/{series}/{sop}.dcm ({exc})")
                continue
            report.added += 1
            if len(ops) >= _BATCH:
                registry.apply_ops(ops)
                ops.clear()
    if ops:
        registry.apply_ops(ops)


def _settle(root: Path, sop: str, places: list[tuple[str, str]], ops: list[indexops.Op]) -> tuple[str, str]:
    def newest(place: tuple[str, str]) -> tuple[int, str, str]:
        try:
            return (root / place[0] / place[1] / f"{sop}.dcm").stat().st_mtime_ns, *place
        except OSError:
            return -1, *place

    ordered = sorted(places, key=newest)
    keep = ordered[-1]
    for study, series in ordered[:-1]:
        old = root / study / series / f"{sop}.dcm"
        try:
            old.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            LOG.warning("cannot remove the older copy %s: %s", old, exc)
            continue
        ops.append(indexops.remove_instance(study, series, sop))
        LOG.warning("SOP %s was stored twice: kept %s/%s (the newest), removed %s/%s", sop, *keep, study, series)
    return keep


def _not_indexed(registry: Registry, by_series: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], list[str]]:
    """The files of each series that the index does not list (or all of them, when the series or
    its study -- in the list of studies, or its fields -- is missing from the index)."""
    out: dict[tuple[str, str], list[str]] = {}
    items = list(by_series.items())
    client = registry.client
    try:
        for start in range(0, len(items), _BATCH):
            chunk = items[start:start + _BATCH]
            pipe = client.pipeline(transaction=False)
            for (study, series), _ in chunk:
                pipe.smembers(keys.series_instances(study, series))
                pipe.hexists(keys.study_series(study), series)
                pipe.zscore(keys.STUDIES, study)
                pipe.hexists(keys.study(study), "study_uid")  # the last write of an instance's first index ops
            res = pipe.execute()
            for i, ((study, series), sops) in enumerate(chunk):
                listed, has_series, score, has_study = res[4 * i:4 * i + 4]
                whole = not has_series or score is None or not has_study
                todo = sops if whole else [s for s in sops if s not in listed]
                if todo:
                    out[(study, series)] = todo
    except (redis.RedisError, OSError) as exc:
        raise RegistryUnavailable(f"the registry (Redis) is unreachable: {exc}") from exc
    return out


class Reconciler:
    """The primary listener process's reconcile, one thread at a time: at start, and again each
    time the registry (Redis) comes back -- after an outage the PACS saw, or empty (the PACS had
    to seed the listener settings again) -- because Redis may have lost index writes it had
    already answered (``appendfsync everysec`` and a crash, or a Redis restarted without its
    data); the journal cannot restore those, the files can. Each run waits until the journal
    is stored (so what the journal had is not read from the files again); while Redis is away
    it tries again every ``retry`` seconds. A request while a run is under way makes one more
    run after it. Cheap when nothing is missing: one pipelined read of the index per 1,000
    series, no file read."""

    def __init__(self, storage: Storage, registry: Registry, events: EventLog, stop: Any,
                 retry: float = 2.0) -> None:
        self.storage, self.registry, self.events, self.stop, self.retry = storage, registry, events, stop, retry
        self._lock = threading.Lock()
        self._wanted: list[str] = []  # why, for each request not yet served
        self._cutoff: float | None = None
        self._thread: threading.Thread | None = None
        self.runs = 0  # finished runs (tests)

    def request(self, why: str, cutoff: float | None = None) -> None:
        """Reconcile once more (``why``: "start", "registry-back", "registry-empty"). ``cutoff``:
        remove temporary files last written before it (only at start: see ``reconcile``)."""
        with self._lock:
            if why not in self._wanted:
                self._wanted.append(why)
            if cutoff is not None:
                self._cutoff = cutoff
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                if not self._wanted:
                    self._thread = None
                    return
                why, cutoff = self._wanted, self._cutoff
                self._wanted, self._cutoff = [], None
            self._run(why, cutoff)
        with self._lock:
            self._thread = None

    def _run(self, why: list[str], cutoff: float | None) -> None:
        emit, events = self.events.emit, self.events
        while events.catching_up:
            if self.stop.wait(0.1):
                return
        after = "" if why == ["start"] else " after the registry (Redis) " + " and ".join(
            _WHY.get(w, w) for w in why if w != "start")  # e.g. " after the registry (Redis) came back empty"
        while True:
            try:
                report = reconcile(self.storage, self.registry, cutoff)
            except RegistryUnavailable as exc:
                cutoff = None  # the temporary files went on the first try
                LOG.warning("reconcile waits for the registry: %s", exc)
                if self.stop.wait(self.retry):
                    return
                continue
            except Exception as exc:  # never take the listener down
                LOG.exception("reconcile")
                emit(RECONCILED, f"Reconciling storage with the index{after} failed ({type(exc).__name__}: {exc}); "
                     "run `dicomlab-pacs reindex` once the cause is fixed.", level="error", reason="failed")
                return
            lost = bool(after and report.added)  # Redis had lost index entries it had answered
            message = "Storage " + report.sentence()
            if after:
                message = (f"Reconcile{after}: " + message[0].lower() + message[1:]
                           + (" The entries added had been lost by Redis (a Redis crash with appendfsync "
                              "everysec, or a restart without its data); they are restored from the files."
                              if lost else ""))
            emit(RECONCILED, message, level="warning" if lost or report.unreadable or report.duplicates else "info",
                 detail={**report.detail(), "why": why})
            self.runs += 1
            return


_WHY = {"registry-back": "answered again", "registry-empty": "came back empty"}


def run_in_background(storage: Storage, registry: Registry, cutoff: float, events: EventLog,
                      stop: Any, retry: float = 2.0) -> Reconciler:
    """The start-up reconcile (see ``Reconciler``); the PACS asks the same object again when
    the registry comes back."""
    reconciler = Reconciler(storage, registry, events, stop, retry)
    reconciler.request("start", cutoff)
    return reconciler
