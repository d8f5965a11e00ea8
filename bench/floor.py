"""The durable-write floor: what a receiver that makes each instance durable before it answers
(as DESIGN.md's C-STORE rule asks of our PACS, and Orthanc with ``SyncStorageArea``) can reach on
this disk at best, with no network, no DICOM and no Python work per instance.

For each file of the bench's series, in a fresh folder on the bench's filesystem: write its bytes
to a new temporary file, ``fdatasync``, ``rename`` into a series folder, ``fsync`` that folder --
the PACS's write path (``pacs/storage.py``) and nothing else. DCMTK storescp never fsyncs, so its
rate is not bounded by this; the row says what ratio to storescp the floor alone allows, which is
the ceiling of the single-association ratio for any receiver that keeps the durability rule.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import time
from pathlib import Path

from .results import SINGLE, Row, find

SUBJECT = "durable-write floor (write + fdatasync + rename + folder fsync, no DICOM)"


def measure(work: Path, files: list[Path], repeat: int) -> Row:
    """Images/s of the write path alone over ``files`` (median of ``repeat`` passes)."""
    blobs = [p.read_bytes() for p in files]
    rates = []
    for i in range(max(1, repeat)):
        folder = work / f"floor-{i}"
        incoming, series = folder / ".incoming", folder / "study" / "series"
        incoming.mkdir(parents=True)
        series.mkdir(parents=True)
        started = time.perf_counter()
        for n, blob in enumerate(blobs):
            tmp = incoming / f"{n}.{secrets.token_hex(6)}.tmp"
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
        rates.append(len(blobs) / (time.perf_counter() - started))
        shutil.rmtree(folder, ignore_errors=True)
    med = statistics.median(rates)
    mb = sum(map(len, blobs)) / len(blobs) / 1e6
    return Row(SINGLE, SUBJECT, med, "images/s", f"{len(blobs)} files of {mb:.2f} MB, median of {len(rates)}",
               runs=[round(r, 1) for r in rates])


def annotate(rows: list[Row]) -> None:
    """Say, on the floor row, what single-association ratio to storescp the floor alone allows."""
    floor, scp = find(rows, SINGLE, SUBJECT), find(rows, SINGLE, "DCMTK storescp")
    if floor is None or scp is None or not floor.value or not scp.value:
        return
    # a receiver that answers after the write path spends at least 1/floor s per image on it,
    # plus what it cannot overlap: receiving the instance (storescp's whole time per image)
    ceiling = 1.0 / (1.0 / floor.value + 1.0 / scp.value)
    floor.detail += (f"; a receiver that keeps the durability rule reaches at most ~{ceiling:.0f} images/s here "
                     f"= {ceiling / scp.value:.2f}× storescp (storescp's own time per image + the write path)")
