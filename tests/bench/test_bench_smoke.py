"""`make bench` runs: once, on a tiny series. A smoke test of a benchmark: never asserts a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import ROOT, need_tool

pytestmark = pytest.mark.timeout(240)

WORKLOADS = ["single-association ingest", "concurrent modalities", "association accept rate"]


def test_bench_runs_and_prints_one_table(tmp_path: Path) -> None:
    need_tool("storescu", "dcmtk")
    need_tool("storescp", "dcmtk")
    out = tmp_path / "bench"
    env = {**os.environ, "BENCH_RECEIVERS": "", "BENCH_SLICES": "", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--slices", "4", "--rows", "64", "--cols", "64", "--modalities", "2",
         "--images-per-modality", "2", "--accept-seconds", "0.5", "--repeat", "1", "--profile-rate", "50",
         "--receivers", "storescp,pacs,orthanc", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=220)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "DICOM Lab bench" in run.stdout  # the table was printed

    data = json.loads((out / "results.json").read_text())
    rows = {(r["workload"], r["subject"]): r for r in data["rows"]}
    orthanc_skipped = "orthanc" in data["skipped"]
    for workload in WORKLOADS:
        dcmtk = "DCMTK storescp --fork" if workload == "concurrent modalities" else "DCMTK storescp"
        for subject in (dcmtk, "PACS (ours)", "Orthanc"):
            row = rows[(workload, subject)]
            if subject == "Orthanc" and orthanc_skipped:
                assert row["value"] is None and row["note"].startswith("skipped:")
                continue
            assert row["value"] is not None and row["value"] > 0, row  # measured, not how fast
            assert row["ratio"] is not None
        assert rows[(workload, "PACS (ours)")]["target"]
        assert rows[(workload, "PACS (ours)")]["met"] in (True, False)
    assert rows[("simulator generation", "ct-simulator generate")]["value"]
    assert rows[("simulator send", "ct-simulator send -> storescp")]["value"]
    assert rows[("simulator send", "DCMTK storescu -> storescp")]["value"]
    assert "4/4 stored" in rows[("single-association ingest", "PACS (ours)")]["detail"]
    assert (out / "results.md").read_text().count("\n| ") >= 12
    # the profiles ran (py-spy installed by `make bench`); their hot spots are listed
    assert [p["workload"] for p in data["profiles"]] == ["single-association ingest", "association accept rate"]
    for prof in data["profiles"]:
        if "skipped" not in prof:
            # 4 tiny slices may take less time than one py-spy sample: the profile ran and
            # wrote its files; hot spots are listed when there were samples
            assert Path(prof["svg"]).exists()
            assert isinstance(prof["samples"], int)
            assert bool(prof["self"]) == bool(prof["lines"]) == (prof["samples"] > 0)
    # nothing left behind: the work folder is gone, no process refers to it
    assert not list(out.glob("work-*"))
    assert not leftovers(str(out)), leftovers(str(out))


def leftovers(marker: str) -> list[str]:
    """Processes whose command line or environment names ``marker`` (the bench's output folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in text:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:200]
            found.append(f"{proc.name}: {cmdline!r}")
    return found
