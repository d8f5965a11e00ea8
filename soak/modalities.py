"""The soak's modalities, each a thread that runs real senders in a loop and records, per
SOP Instance UID, what the PACS answered and a hash of exactly the dataset bytes sent.

* ``StorescuModality``: DCMTK ``storescu -d`` on a batch of files copied from a pool made by
  ``ct-simulator generate``, with fresh Study / Series / SOP Instance UIDs per batch
  (pydicom). Each C-STORE-RSP block of storescu's debug output gives the UID and status.
* ``SimulatorModality``: ``ct-simulator send --seed S --report-json``, a new seed per round.

A modality resends what was not acknowledged (the same bytes: the same files, the same
seed) until it is, as a real modality would, backing off while the PACS is away.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

SUCCESS = 0x0000
NO_ANSWER = "no answer"  # the association failed or ended before the C-STORE-RSP


def dataset_bytes(part10: bytes) -> bytes:
    """The dataset of a Part 10 file: what follows the preamble and the file meta group
    (its length from (0002,0000), which pydicom, DCMTK and the PACS all write)."""
    if part10[128:132] != b"DICM" or part10[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 file with a (0002,0000) group length")
    return part10[144 + struct.unpack("<I", part10[140:144])[0]:]


@dataclass
class Record:
    study_uid: str
    series_uid: str
    sha256: str
    modality: str
    acked: int = 0  # 0x0000 answers
    attempts: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    conflict: bool = False  # sent later with other bytes (never by design)


class Ledger:
    """Every instance sent, by SOP Instance UID; shared by the modality threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.answers: Counter[str] = Counter()
        self.runs: Counter[str] = Counter()  # sender processes by outcome

    def answer(self, uid: str, study: str, series: str, sha: str, modality: str, status: int | str) -> None:
        words = f"0x{status:04X}" if isinstance(status, int) else status
        with self.lock:
            rec = self.records.get(uid)
            if rec is None:
                rec = self.records[uid] = Record(study, series, sha, modality)
            elif rec.sha256 != sha or (rec.study_uid, rec.series_uid) != (study, series):
                rec.conflict = True
            rec.attempts += 1
            rec.answers[words] += 1
            if status == SUCCESS:
                rec.acked += 1
            self.answers[words] += 1

    def counts(self) -> tuple[int, int]:
        """(instances acknowledged, C-STORE attempts not acknowledged)."""
        with self.lock:
            acked = sum(1 for r in self.records.values() if r.acked)
            return acked, sum(n for k, n in self.answers.items() if k != "0x0000")


class Modality(threading.Thread):
    """``finish`` set: no new work, keep resending what is pending until ``stop`` is set."""

    def __init__(self, name: str, ledger: Ledger, port: int, called: str, workdir: Path,
                 finish: threading.Event, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.ae = name
        self.ledger = ledger
        self.port = port
        self.called = called
        self.workdir = workdir
        self.finish = finish
        self.stop_event = stop
        self.error: str | None = None
        self.pending_at_stop = 0
        workdir.mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        try:
            while not self.finish.is_set() and not self.stop_event.is_set():
                self.round()
        except Exception as exc:  # said in the report, never a silent short run
            self.error = f"{type(exc).__name__}: {exc}"

    def round(self) -> None:
        raise NotImplementedError

    def backoff(self, tries: int) -> None:
        self.stop_event.wait(min(0.25 * tries, 2.0))


class StorescuModality(Modality):
    def __init__(self, *args, pool: list[Path], batch: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.pool = pool
        self.batch = batch
        self.rounds = 0

    def _make_batch(self) -> dict[str, tuple[Path, str, str, str]]:
        """Copies of ``batch`` pool files, all under one new study and series, each with a new
        SOP Instance UID: uid -> (file, study, series, sha256 of the dataset bytes)."""
        self.rounds += 1
        folder = self.workdir / f"batch{self.rounds:05d}"
        folder.mkdir()
        study, series = generate_uid(), generate_uid()
        out: dict[str, tuple[Path, str, str, str]] = {}
        for i in range(self.batch):
            ds = pydicom.dcmread(self.pool[(self.rounds * self.batch + i) % len(self.pool)])
            uid = generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
            path = folder / f"{i:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out[uid] = (path, study, series, hashlib.sha256(dataset_bytes(path.read_bytes())).hexdigest())
        return out

    def round(self) -> None:
        batch = self._make_batch()
        pending = dict(batch)
        tries = 0
        while pending and not self.stop_event.is_set():
            tries += 1
            answers = self._storescu([v[0] for v in pending.values()])
            for uid, (_, study, series, sha) in list(pending.items()):
                status = answers.get(uid, NO_ANSWER)
                self.ledger.answer(uid, study, series, sha, self.ae, status)
                if status == SUCCESS:
                    del pending[uid]
            if pending:
                self.backoff(tries)
        self.pending_at_stop += len(pending)
        shutil.rmtree(next(iter(batch.values()))[0].parent, ignore_errors=True)

    def _storescu(self, files: list[Path]) -> dict[str, int]:
        cmd = ["storescu", "-d", "-R", "-aet", self.ae, "-aec", self.called, "-to", "10", "-ta", "10", "-td", "30",
               "127.0.0.1", str(self.port), *map(str, files)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300,
                                  env={**os.environ, "TCP_NODELAY": "1"})
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
            with self.ledger.lock:
                self.ledger.runs["storescu timed out"] += 1
            return parse_storescu(out)
        with self.ledger.lock:
            self.ledger.runs[f"storescu exit {proc.returncode}"] += 1
        return parse_storescu(proc.stdout + proc.stderr)


_RSP = re.compile(r"Message Type\s*:\s*C-STORE RSP.*?Affected SOP Instance UID\s*:\s*(\S+).*?"
                  r"DIMSE Status\s*:\s*0x([0-9A-Fa-f]{4})", re.S)


def parse_storescu(output: str) -> dict[str, int]:
    """SOP Instance UID -> status of each C-STORE-RSP in ``storescu -d`` output (the last
    answer when a UID appears twice)."""
    out: dict[str, int] = {}
    for block in output.split("INCOMING DIMSE MESSAGE")[1:]:
        m = _RSP.search(block.split("END DIMSE MESSAGE", 1)[0])
        if m:
            out[m.group(1)] = int(m.group(2), 16)
    return out


class SimulatorModality(Modality):
    def __init__(self, *args, exe: str, seed: int, slices: int, rows: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.exe = exe
        self.seed = seed
        self.slices = slices
        self.rows = rows

    def round(self) -> None:
        self.seed += 1
        acked: set[str] = set()
        tries = 0
        report = self.workdir / f"seed{self.seed}.json"
        while len(acked) < self.slices and not self.stop_event.is_set():
            tries += 1
            rows = self._send(report)
            for r in rows:
                status = NO_ANSWER if r["status"] is None else int(r["status"])
                self.ledger.answer(r["sop_instance_uid"], r["study_uid"], r["series_uid"], r["sha256"], self.ae,
                                   status)
                if status == SUCCESS:
                    acked.add(r["sop_instance_uid"])
            if len(acked) < self.slices:
                self.backoff(tries)
        self.pending_at_stop += self.slices - len(acked)

    def _send(self, report: Path) -> list[dict]:
        report.unlink(missing_ok=True)
        cmd = [self.exe, "send", "--seed", str(self.seed), "--slices", str(self.slices), "--rows",
               str(self.rows), "--cols", str(self.rows), "--host", "127.0.0.1", "--port", str(self.port),
               "--calling-aet", self.ae, "--called-aet", self.called, "--timeout", "10", "--dimse-timeout", "30",
               "--progress", "never", "--report-json", str(report)]
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
            code = f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            code = "timed out"
        with self.ledger.lock:
            self.ledger.runs[f"ct-simulator {code}"] += 1
        try:
            return json.loads(report.read_text())["instances"]
        except (OSError, ValueError, KeyError):
            return []


def make_pool(folder: Path, count: int, rows: int, simulator: str) -> list[Path]:
    """``count`` CT images of ``rows`` x ``rows`` from ``ct-simulator generate``."""
    subprocess.run([simulator, "generate", "--slices", str(count), "--rows", str(rows), "--cols", str(rows),
                    "--seed", "7", "--out", str(folder), "--progress", "never"], check=True, capture_output=True)
    return sorted(folder.rglob("*.dcm"))
