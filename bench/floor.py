"""The durable-write floor: what a receiver that makes each instance durable before it answers
(as DESIGN.md's C-STORE rule asks of our PACS, and Orthanc with ``SyncStorageArea``) can reach on
this disk at best, with no network, no DICOM and no Python work per instance.

For each file of the bench's series, in a fresh folder on the bench's filesystem: write its bytes
to a new temporary file, ``fdatasync``, ``rename`` into a series folder, ``fsync`` that folder --
the PACS's write path (``pacs/storage.py``) and nothing else. DCMTK storescp never fsyncs, so its
rate is not bounded by this; the row says what ratio to storescp the floor alone allows, which is
the ceiling of the single-association ratio for any receiver that keeps the durability rule.

The concurrent row does the same for the concurrent workload's studies, one writer thread per
study, all at once (the threads wait in the kernel, not on the GIL): what 8 modalities' worth
of durable writes cost this disk and these 2 cores, beside storescp --fork, which writes the
same bytes without any fsync.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import threading
import time
from pathlib import Path

from .results import CONCURRENT, SINGLE, Row, find

SUBJECT = "durable-write floor (write + fdatasync + rename + folder fsync, no DICOM)"
SUBJECT_CONCURRENT = "durable-write floor, one writer per modality at once (no DICOM)"


def _write_durably(blobs: list[bytes], incoming: Path, series: Path) -> None:
    """The PACS's write path (pacs/storage.py) for each blob, one after the other."""
    for n, blob in enumerate(blobs):
        tmp = incoming / f"{series.name}-{n}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, blob)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, series / f"{n}.dcm")
        dfd = os.open(series, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _passes(work: Path, groups: list[list[bytes]], repeat: int, name: str) -> list[float]:
    """Images/s of ``repeat`` passes, each writing every group in its own thread, all at once."""
    rates = []
    for i in range(max(1, repeat)):
        folder = work / f"{name}-{i}"
        incoming = folder / ".incoming"
        incoming.mkdir(parents=True)
        folders = [folder / f"study{g}" / "series" for g in range(len(groups))]
        for f in folders:
            f.mkdir(parents=True)
        threads = [threading.Thread(target=_write_durably, args=(blobs, incoming, f))
                   for blobs, f in zip(groups, folders, strict=True)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates.append(sum(map(len, groups)) / (time.perf_counter() - started))
        shutil.rmtree(folder, ignore_errors=True)
    return rates


def measure(work: Path, files: list[Path], repeat: int) -> Row:
    """Images/s of the write path alone over ``files`` (median of ``repeat`` passes)."""
    blobs = [p.read_bytes() for p in files]
    rates = _passes(work, [blobs], repeat, "floor")
    mb = sum(map(len, blobs)) / len(blobs) / 1e6
    return Row(SINGLE, SUBJECT, statistics.median(rates), "images/s",
               f"{len(blobs)} files of {mb:.2f} MB, median of {len(rates)}", runs=[round(r, 1) for r in rates])


def measure_concurrent(work: Path, studies: list[list[Path]], repeat: int) -> Row:
    """Images/s of the write path with one writer per study, all at once (median of ``repeat``)."""
    groups = [[p.read_bytes() for p in files] for files in studies]
    rates = _passes(work, groups, repeat, "floor-concurrent")
    per = len(groups[0]) if groups else 0
    return Row(CONCURRENT, SUBJECT_CONCURRENT, statistics.median(rates), "images/s",
               f"{len(groups)} writers x {per} files, median of {len(rates)}", runs=[round(r, 1) for r in rates])


def annotate(rows: list[Row]) -> None:
    """Say, on each floor row, what ratio to storescp the floor alone allows."""
    for workload, subject, dcmtk in ((SINGLE, SUBJECT, "DCMTK storescp"),
                                     (CONCURRENT, SUBJECT_CONCURRENT, "DCMTK storescp --fork")):
        floor, scp = find(rows, workload, subject), find(rows, workload, dcmtk)
        if floor is None or scp is None or not floor.value or not scp.value:
            continue
        # a receiver that answers after the write path spends at least 1/floor s per image on it,
        # plus what it cannot overlap: receiving the instance (storescp's whole time per image).
        # Exact for one association (the modality waits for each answer); for 8 at once only an
        # estimate: part of the write path waits for the disk, and other associations can fill that.
        ceiling = 1.0 / (1.0 / floor.value + 1.0 / scp.value)
        floor.detail += (f"; a receiver that keeps the durability rule reaches at most ~{ceiling:.0f} images/s "
                         f"here = {ceiling / scp.value:.2f}× {dcmtk.removeprefix('DCMTK ')} "
                         f"({dcmtk.removeprefix('DCMTK ')}'s own time per image + the write path)")
