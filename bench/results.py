"""The bench's results: workload names, one table row, one measurement, and the targets they are judged by."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

SINGLE = "single-association ingest"
NAGLE = "single association, Nagle on at the modality"
CONCURRENT = "concurrent modalities"
ACCEPT = "association accept rate"
SIM_GEN = "simulator generation"
SIM_SEND = "simulator send"
SIM_NAGLE = "simulator send, Nagle on at the receiver"
SIM_TO_NAGLE = "ct-simulator send -> storescp (Nagle on)"
STORESCU_TO_NAGLE = "DCMTK storescu -> storescp (Nagle on)"

SENDER_AE = "CT01"
ECHO_AE = "ECHO01"
ECHO_CLIENT = "bench.echo_client"  # run as a module from the repository root


@dataclass
class Row:
    workload: str
    subject: str
    value: float | None  # None: not measured (see note)
    unit: str
    detail: str = ""
    ratio: float | None = None  # to ratio_to (DCMTK in this run unless said)
    target: str = ""
    met: bool | None = None
    note: str = ""
    runs: list[float] = field(default_factory=list)
    ratio_to: str = "DCMTK"
    extra: dict[str, object] = field(default_factory=dict)  # structured figures behind the detail


@dataclass
class Measure:
    value: float | None
    detail: str
    note: str = ""


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None



def _tail(path: Path, n: int = 3) -> str:
    if not path.exists():
        return ""
    return " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines()[-n:])


def find(rows: list[Row], workload: str, subject: str) -> Row | None:
    return next((r for r in rows if r.workload == workload and r.subject == subject), None)


def judge(rows: list[Row]) -> None:
    """Ratios to DCMTK (or the anchor named per workload) and the issue-7 targets, written into the rows."""
    def ratio(row: Row | None, base: Row | None) -> float | None:
        if row is None or base is None or row.value is None or not base.value:
            return None
        return row.value / base.value

    for r in rows:
        base = {SINGLE: "DCMTK storescp", NAGLE: "DCMTK storescp", CONCURRENT: "DCMTK storescp --fork",
                ACCEPT: "DCMTK storescp",
                SIM_SEND: "DCMTK storescu -> storescp", SIM_NAGLE: STORESCU_TO_NAGLE}.get(r.workload)
        if base:
            r.ratio = ratio(r, find(rows, r.workload, base))
    pacs = find(rows, SINGLE, "PACS (ours)")
    if pacs:
        orth = ratio(pacs, find(rows, SINGLE, "Orthanc"))
        pacs.target = "≥ 0.55× storescp and ≥ 1.3× Orthanc"
        checks = [pacs.ratio is not None and pacs.ratio >= 0.55]
        if orth is not None:
            checks.append(orth >= 1.3)
            pacs.detail += f"; {orth:.2f}× Orthanc"
        else:
            pacs.target += " (no Orthanc figure)"
        pacs.met = all(checks) if pacs.value is not None else False
    pacs = find(rows, NAGLE, "PACS (ours)")
    if pacs:  # ours, not issue 10's: a modality that keeps Nagle on is served as well as storescp serves it
        pacs.target = "≥ 0.55× storescp (the lab's own target)"
        pacs.met = pacs.ratio is not None and pacs.ratio >= 0.55
    pacs = find(rows, CONCURRENT, "PACS (ours)")
    if pacs:
        pacs.target = "≥ 0.55× storescp --fork"
        pacs.met = pacs.ratio is not None and pacs.ratio >= 0.55
    pacs = find(rows, ACCEPT, "PACS (ours)")
    if pacs:
        pacs.target = "≥ 600/s (Redis check)"
        pacs.met = pacs.value is not None and pacs.value >= 600
    sim = find(rows, SIM_SEND, "ct-simulator send -> storescp")
    if sim:
        sim.target = "≥ 0.5× storescu"
        sim.met = sim.ratio is not None and sim.ratio >= 0.5
    sim = find(rows, SIM_NAGLE, SIM_TO_NAGLE)
    if sim:  # ours: a receiver that keeps Nagle on does not hold the simulator's C-STOREs
        sim.target = "≥ 0.5× storescu (the lab's own target)"
        sim.met = sim.ratio is not None and sim.ratio >= 0.5

