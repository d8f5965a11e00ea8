"""The hostile-peer workloads of ``make bench`` (issue 10, "Figures"): the same receivers, the same table.

Every measurement starts its receiver fresh, serves one warm-up exchange (so lazy imports and first
buffers are in the baseline), and reads RSS as the sum of ``VmRSS`` over the receiver's process group
(the PACS's supervisor and all its ``PACS_WORKERS`` listeners; storescp; Orthanc; never the PACS's
redis-server, which runs in a group of its own), sampled every 50 ms. *Growth* is the peak during the
load minus the baseline just before it.

5. ``halfopen`` — accept rate while half-open connections are held. ``--halfopen`` (1,000)
   connections are opened by ``bench/flood.py`` (a process of its own, its open-file limit raised),
   each sends one byte (0x01, the first byte of an A-ASSOCIATE-RQ) and then stays silent. They come
   from ``--halfopen-sources`` loopback addresses (default one, 127.0.0.2); the echo clients of the
   accept rate (workload 3) come from 127.0.0.1, the authorized node's registered address. Why: the
   issue asks whether a receiver keeps *accepting authorized associations* while a misbehaving peer
   floods it. The PACS caps pending connections per source address (16) and in total (64) and closes
   the rest at once; from one address the flood fills only its own address's share and what is
   measured is whether the rest of the port still serves. A flood spread over 4 or more addresses
   (``--halfopen-sources 4``) fills the total cap (4 × 16 = 64) by design, and the PACS then refuses
   every new connection until ``assoc_request_timeout`` (30 s) frees a place: a different question
   (a distributed flood), which this option lets one look at. The flood is opened once and not
   re-opened: a receiver that closes connections has fewer to carry, and the row says how many of
   them it kept open, answered or closed, and how many never completed the TCP handshake (accept
   queue full). On the same receiver: the plain accept rate first (the ratio's base), then the
   flood, ``--hold-seconds`` to settle, the accept rate again while it is held. Rows: the accept rate
   under the flood (ratio to the plain rate; target for the PACS ≥ 0.8×), and the RSS growth over
   the whole hold (target for the PACS ≤ 64 MiB).
6. ``claims`` — ``--claims`` (4) connections each send a 6-byte A-ASSOCIATE-RQ header claiming a
   ``--claim-mib`` (1 GiB) PDU, then stay silent for ``--hold-seconds``; RSS growth (PACS ≤ 64 MiB).
7. ``bigingest`` — one multi-frame Enhanced CT instance of ``--big-instance-mib`` (1 GiB) of native
   pixel data, written to disk once, streaming (``write_multiframe``: the header by pydicom, the
   Pixel Data element by hand, 4 MiB at a time), sent by DCMTK storescu (which reads it from the
   file as it sends). Rows: RSS growth of the receiver (PACS ≤ 64 MiB: needs spooling to disk as
   fragments arrive) and the time storescu took (process start to exit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .echo_client import associate_rq, echo_rq, one_association
from .receivers import ROOT, Receiver

if TYPE_CHECKING:
    import argparse

    from .run import Bench

HALFOPEN_ACCEPT = "accept rate, half-open flood held"
HALFOPEN_RSS = "RSS growth, half-open flood held"
CLAIMS_RSS = "RSS growth, PDU length claims"
BIG_RSS = "RSS growth, large instance ingest"
BIG_TIME = "large instance ingest time"
ORDER = [HALFOPEN_ACCEPT, HALFOPEN_RSS, CLAIMS_RSS, BIG_RSS, BIG_TIME]
WORKLOADS = ("halfopen", "claims", "bigingest")
RSS_TARGET_MIB = 64
ACCEPT_RATIO_TARGET = 0.8
MiB = 1 << 20
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


# -- RSS of a process group -----------------------------------------------------------------------------
def group_rss(pgid: int) -> tuple[int, int]:
    """(bytes of VmRSS summed over the processes of group ``pgid``, how many processes)."""
    total = n = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rindex(b")") + 2:].split()[2]) != pgid:
                continue
            with open(f"/proc/{entry.name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        n += 1
                        break
        except (OSError, ValueError, IndexError):
            continue  # gone, or a kernel thread
    return total, n


class RssPeak:
    """Samples ``group_rss`` every ``interval`` s in a thread from ``start`` to ``stop``; the peak."""

    def __init__(self, pgid: int, interval: float = 0.05) -> None:
        self.pgid, self.interval = pgid, interval
        self.peak = self.procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss, n = group_rss(self.pgid)
            if rss > self.peak:
                self.peak, self.procs = rss, n
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- the large instance ----------------------------------------------------------------------------------
def write_multiframe(path: Path, mib: int, rows: int = 512, cols: int = 512, seed: int = 1) -> int:
    """A Part 10 file, Enhanced CT, ``mib`` MiB (rounded up to whole frames) of native 16-bit pixels.

    Written streaming: never more than 4 MiB of pixels in memory. Returns the number of frames."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frame_bytes = rows * cols * 2
    frames = max(1, -(-mib * MiB // frame_bytes))
    if frames * frame_bytes >= 0xFFFFFFFE:
        raise ValueError(f"{mib} MiB does not fit a 32-bit value length; at most 4095 MiB")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "BENCH^LARGE", f"BENCH-LARGE-{seed}", "CT"
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20260101", 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.save_as(path, enforce_file_format=True)
    ramp = (np.arange(rows * cols, dtype="<u2") % 4096).tobytes()
    per_write = max(1, (4 * MiB) // frame_bytes)
    with open(path, "ab") as f:
        # (7FE0,0010) OW, explicit VR little endian: tag, VR, 2 reserved bytes, 32-bit length
        f.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (frames * frame_bytes).to_bytes(4, "little"))
        done = 0
        while done < frames:
            k = min(per_write, frames - done)
            f.write(ramp * k)
            done += k
    return frames


# -- the workloads -----------------------------------------------------------------------------------------
class Hostile:
    def __init__(self, bench: "Bench") -> None:
        self.b = bench
        self.ns = bench.ns
        self.big: Path | None = None
        self.warm: Path | None = None
        self.frames = 0

    def run(self) -> None:
        w = self.ns.workloads
        if "halfopen" in w:
            self.each("halfopen", self.halfopen)
        if "claims" in w:
            self.each("claims", self.claims)
        if "bigingest" in w:
            self.generate()
            self.each("bigingest", self.bigingest)

    def each(self, name: str, fn) -> None:  # type: ignore[no-untyped-def]
        from .results import Row

        for key, make in self.b.receivers(name):
            label = self.b.label(key, name)
            self.b.say(f"{name}: {label}")
            recv = make()
            rows: list[Row] = []
            try:
                recv.start()
                self.warm_up(recv)
                rows = fn(recv, label, key == "pacs")
            except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.SubprocessError) as exc:
                why = " ".join(f"{type(exc).__name__}: {exc}".split())
                why = why if len(why) <= 400 else f"{why[:150]} … {why[-250:]}"
                self.b.say(f"  {why}")
                rows = [Row(wl, label, None, unit, note=why) for wl, unit in self.rows_of(name)]
                self.b.keep_logs(recv, _failed(), f"{name}-{key}")
            finally:
                recv.stop()
            for r in rows:
                if r.value is None and r.note:
                    self.b.say(f"  {r.workload}: {r.note}")
            self.b.rows += rows
        for key, why in self.b.skipped.items():
            if key in self.ns.receivers:
                self.b.rows += [Row(wl, self.b.label(key, name), None, unit, note=f"skipped: {why}")
                                for wl, unit in self.rows_of(name)]

    @staticmethod
    def rows_of(name: str) -> list[tuple[str, str]]:
        return {"halfopen": [(HALFOPEN_ACCEPT, "assoc/s"), (HALFOPEN_RSS, "MiB")],
                "claims": [(CLAIMS_RSS, "MiB")], "bigingest": [(BIG_RSS, "MiB"), (BIG_TIME, "s")]}[name]

    def warm_up(self, recv: Receiver) -> None:
        """One C-ECHO (and, before the large instance, one small C-STORE) before the baseline."""
        from .results import ECHO_AE, SENDER_AE

        outcome = one_association(("127.0.0.1", recv.port), associate_rq(ECHO_AE, recv.ae_title), echo_rq())
        if outcome != "ok":
            raise RuntimeError(f"warm-up C-ECHO: {outcome}")
        if self.warm is not None:
            log = recv.work / "storescu-warm-up.txt"
            if self.b.storescu(SENDER_AE, recv, [self.warm], log).wait(timeout=120) != 0:
                raise RuntimeError(f"warm-up C-STORE failed: {_tail(log)}")
            self.b._stored(recv, 1)

    def flood(self, recv: Receiver, count: int, payload: bytes) -> tuple[subprocess.Popen[bytes], dict]:
        sources = ",".join(f"127.0.0.{2 + i}" for i in range(self.ns.halfopen_sources))
        proc = self.b.kids.start([sys.executable, "-m", "bench.flood", "--port", str(recv.port), "--count",
                                  str(count), "--payload", payload.hex(), "--sources", sources],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        return proc, self._read(proc)

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], command: str | None = None) -> dict:
        assert proc.stdin is not None and proc.stdout is not None
        if command:
            proc.stdin.write(command.encode() + b"\n")
            proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read().decode(errors="replace")[-400:] if proc.stderr else ""
            raise RuntimeError(f"the flood holder exited ({proc.wait()}): {err}")
        data = json.loads(line)
        if "error" in data:
            raise RuntimeError(f"the flood holder: {data['error']}")
        return data

    def end_flood(self, proc: subprocess.Popen[bytes]) -> dict:
        try:
            return self._read(proc, "stop")
        finally:
            self.b.kids.stop(proc)

    def halfopen(self, recv: Receiver, label: str, ours: bool) -> list:
        from .results import Row

        plain = self.b.accept(recv)
        base, _ = group_rss(recv.pid)
        n = self.ns.halfopen
        with RssPeak(recv.pid) as peak:
            proc, first = self.flood(recv, n, b"\x01")
            try:
                time.sleep(self.ns.hold_seconds)
                loaded = self.b.accept(recv)
                last = self._read(proc, "status")
            finally:
                self.end_flood(proc)
        where = f"{self.ns.halfopen_sources} address{'es' if self.ns.halfopen_sources > 1 else ''}"
        flood = f"{n} half-open from {where}: {_fate(last)}"
        if _fate(first) != _fate(last):
            flood += f" (after the connects: {_fate(first)})"
        rate = loaded.value or 0.0
        ratio = rate / plain.value if plain.value else None
        accept = Row(HALFOPEN_ACCEPT, label, rate, "assoc/s", f"plain {plain.value or 0:.0f}/s; loaded: "
                     f"{loaded.detail}; {flood}", ratio=ratio, note="; ".join(x for x in (plain.note, loaded.note) if x))
        accept.ratio_to = "plain"
        accept.extra = {"plain": plain.value, "flood": last, "flood_after_connects": first}
        rss = self.rss_row(HALFOPEN_RSS, label, base, peak, flood)
        rss.extra["flood"] = last
        if ours:
            accept.target = f"≥ {ACCEPT_RATIO_TARGET}× its plain rate"
            accept.met = ratio is not None and ratio >= ACCEPT_RATIO_TARGET
        return [accept, rss]

    def claims(self, recv: Receiver, label: str, ours: bool) -> list:
        n, mib = self.ns.claims, self.ns.claim_mib
        header = b"\x01\x00" + (mib * MiB).to_bytes(4, "big")
        base, _ = group_rss(recv.pid)
        with RssPeak(recv.pid) as peak:
            proc, first = self.flood(recv, n, header)
            try:
                time.sleep(self.ns.hold_seconds)
                last = self._read(proc, "status")
            finally:
                self.end_flood(proc)
        what = f"{n} × A-ASSOCIATE-RQ header claiming {mib} MiB, held {self.ns.hold_seconds:g} s: {_fate(last)}"
        row = self.rss_row(CLAIMS_RSS, label, base, peak, what)
        row.extra["flood"] = last
        return [row]

    def rss_row(self, workload: str, label: str, base: int, peak: RssPeak, what: str):  # type: ignore[no-untyped-def]
        from .results import Row

        growth = max(0, peak.peak - base) / MiB
        row = Row(workload, label, growth, "MiB", f"baseline {base / MiB:.0f} MiB, peak {peak.peak / MiB:.0f} MiB "
                  f"over {peak.procs} process{'es' if peak.procs != 1 else ''}; {what}",
                  extra={"baseline_mib": base / MiB, "peak_mib": peak.peak / MiB, "processes": peak.procs})
        if label == "PACS (ours)":
            row.target = f"≤ {RSS_TARGET_MIB} MiB"
            row.met = growth <= RSS_TARGET_MIB
        return row

    def generate(self) -> None:
        if self.big is not None:
            return
        mib = self.ns.big_instance_mib
        self.b.say(f"writing a {mib} MiB multi-frame Enhanced CT instance (streaming, to disk)")
        started = time.perf_counter()
        self.big = self.b.work / "large-instance.dcm"
        self.frames = write_multiframe(self.big, mib)
        self.warm = self.b.work / "warm-up-instance.dcm"
        write_multiframe(self.warm, 1, seed=2)
        self.b.say(f"  {self.frames} frames of 512x512, {self.big.stat().st_size / MiB:.0f} MiB in "
                   f"{time.perf_counter() - started:.1f} s")

    def bigingest(self, recv: Receiver, label: str, ours: bool) -> list:
        from .results import SENDER_AE, Row

        assert self.big is not None
        size = self.big.stat().st_size
        base, _ = group_rss(recv.pid)
        log = recv.work / "storescu.txt"
        with RssPeak(recv.pid) as peak:
            started = time.perf_counter()
            rc = self.b.storescu(SENDER_AE, recv, [self.big], log).wait(timeout=1800)
            elapsed = time.perf_counter() - started
            stored = self.b._stored(recv, 2)  # with the warm-up instance
        what = f"{self.frames} frames, {size / MiB:.0f} MiB"
        rss = self.rss_row(BIG_RSS, label, base, peak, what)
        ok = rc == 0 and stored >= 2
        t = Row(BIG_TIME, label, elapsed if ok else None, "s", f"{what} in {elapsed:.1f} s "
                f"({size / MiB / elapsed:.0f} MiB/s, storescu wall time)",
                extra={"frames": self.frames, "bytes": size, "stored": stored})
        if not ok:
            t.note = rss.note = f"storescu exit {rc}, {max(0, stored - 1)}/1 stored: {_tail(log)}"
            self.b.keep_logs(recv, _failed(), f"bigingest-{recv.key}")
        if ours:
            rss.target += " (spooled to disk)"
            rss.met = bool(rss.met and ok)
        return [rss, t]


def _fate(c: dict) -> str:
    parts = [f"{c['open']} kept open"]
    if c["answered"]:
        parts.append(f"{c['answered']} answered and kept open")
    parts.append(f"{c['closed']} closed by the receiver" + (f" ({c['answered_closed']} after an answer)"
                                                             if c["answered_closed"] else ""))
    if c["connecting"]:
        parts.append(f"{c['connecting']} never connected (accept queue full)")
    if c["refused"]:
        parts.append(f"{c['refused']} refused {c['connect_errors']}")
    return ", ".join(parts)


def _failed():  # type: ignore[no-untyped-def]
    from .results import Measure

    return Measure(None, "")


def _tail(path: Path, n: int = 3) -> str:
    if not path.exists():
        return ""
    return " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines()[-n:])


def add_arguments(p: "argparse.ArgumentParser") -> None:
    env = os.environ.get
    p.add_argument("--halfopen", type=int, default=int(env("BENCH_HALFOPEN") or 1000),
                   help="half-open connections held in the halfopen workload (BENCH_HALFOPEN, default 1000)")
    p.add_argument("--halfopen-sources", type=int, default=1, choices=range(1, 200), metavar="N",
                   help="loopback source addresses of the flood, 127.0.0.2 onwards (default 1; see bench/hostile.py)")
    p.add_argument("--claims", type=int, default=int(env("BENCH_CLAIMS") or 4),
                   help="connections claiming a huge PDU (BENCH_CLAIMS, default 4)")
    p.add_argument("--claim-mib", type=int, default=1024, help="the PDU length claimed, MiB (default 1024)")
    p.add_argument("--big-instance-mib", type=int, default=int(env("BENCH_BIG_MIB") or 1024),
                   help="size of the multi-frame instance of the bigingest workload (BENCH_BIG_MIB, default 1024)")
    p.add_argument("--hold-seconds", type=float, default=3.0,
                   help="how long a flood is held before (and, for claims, instead of) measuring")


def environment(ns: "argparse.Namespace") -> dict[str, object]:
    return {"halfopen": ns.halfopen, "halfopen_sources": ns.halfopen_sources, "claims": ns.claims,
            "claim_mib": ns.claim_mib, "big_instance_mib": ns.big_instance_mib, "hold_seconds": ns.hold_seconds}
