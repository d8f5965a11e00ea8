"""`make bench` runs: once, on a tiny series. A smoke test of a benchmark: never asserts a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import ROOT, need_tool

pytestmark = pytest.mark.timeout(240)

WORKLOADS = ["single-association ingest", "single association, Nagle on at the modality", "concurrent modalities",
             "association accept rate"]


def test_bench_runs_and_prints_one_table(tmp_path: Path) -> None:
    need_tool("storescu", "dcmtk")
    need_tool("storescp", "dcmtk")
    out = tmp_path / "bench"
    env = {**os.environ, "BENCH_RECEIVERS": "", "BENCH_SLICES": "", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--slices", "4", "--rows", "64", "--cols", "64", "--modalities", "2",
         "--images-per-modality", "2", "--accept-seconds", "0.5", "--repeat", "1", "--profile-rate", "50",
         "--receivers", "storescp,pacs,orthanc", "--only", "classic", "--out", str(out)],
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
    from bench.results import SIM_NAGLE, SIM_TO_NAGLE, STORESCU_TO_NAGLE

    sim_nagle = rows[(SIM_NAGLE, SIM_TO_NAGLE)]  # the same pair, to a storescp that keeps Nagle on
    assert sim_nagle["value"] and rows[(SIM_NAGLE, STORESCU_TO_NAGLE)]["value"]
    assert sim_nagle["ratio"] is not None and sim_nagle["met"] in (True, False) and sim_nagle["target"]
    assert "4/4 stored" in rows[("single-association ingest", "PACS (ours)")]["detail"]
    from bench.floor import SUBJECT as FLOOR

    floor = rows[("single-association ingest", FLOOR)]  # the write path alone, and the ceiling it leaves
    assert floor["value"] > 0 and "4 files" in floor["detail"] and "× storescp" in floor["detail"]
    from bench.floor import SUBJECT_CONCURRENT

    floor = rows[("concurrent modalities", SUBJECT_CONCURRENT)]  # one writer per modality at once
    assert floor["value"] > 0 and "writers x" in floor["detail"] and "× storescp --fork" in floor["detail"]
    assert (out / "results.md").read_text().count("\n| ") >= 15
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


HOSTILE = {"accept rate, half-open flood held": "assoc/s", "RSS growth, half-open flood held": "MiB",
           "RSS growth, PDU length claims": "MiB", "RSS growth, large instance ingest": "MiB",
           "large instance ingest time": "s"}


def test_bench_hostile_workloads_run_with_tiny_sizes(tmp_path: Path) -> None:
    """``--only hostile``: 50 half-open, 2 x 1 GiB claims, a 16 MiB instance; numbers, not timings."""
    need_tool("storescu", "dcmtk")
    need_tool("storescp", "dcmtk")
    out = tmp_path / "bench"
    env = {**os.environ, "BENCH_RECEIVERS": "", "BENCH_WORKLOADS": "", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--only", "hostile", "--halfopen", "50", "--claims", "2",
         "--big-instance-mib", "16", "--accept-seconds", "0.5", "--hold-seconds", "0.5",
         "--receivers", "storescp,pacs,orthanc", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=220)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "DICOM Lab bench" in run.stdout

    data = json.loads((out / "results.json").read_text())
    assert data["environment"]["workloads"] == "halfopen,claims,bigingest"
    rows = {(r["workload"], r["subject"]): r for r in data["rows"]}
    assert {w for w, _ in rows} == set(HOSTILE)  # only the hostile workloads ran
    orthanc_skipped = "orthanc" in data["skipped"]
    for workload, unit in HOSTILE.items():
        for subject in ("DCMTK storescp", "PACS (ours)", "Orthanc"):
            row = rows[(workload, subject)]
            if subject == "Orthanc" and orthanc_skipped:
                assert row["value"] is None and row["note"].startswith("skipped:")
                continue
            assert row["unit"] == unit
            assert row["value"] is not None and row["value"] >= 0, row  # a number, whatever it is
            if unit == "MiB":  # the receiver's processes were found and read
                assert row["extra"]["processes"] >= 1 and row["extra"]["baseline_mib"] > 0, row
            if "flood" in row["extra"]:  # every connection of the flood is accounted for
                c = row["extra"]["flood"]
                assert c["count"] == (50 if "half-open" in workload else 2), c
                assert c["open"] + c["answered"] + c["closed"] + c["connecting"] + c["refused"] == c["count"], c
                assert "kept open" in row["detail"] and "closed by the receiver" in row["detail"]
        pacs = rows[(workload, "PACS (ours)")]
        if workload != "large instance ingest time":
            assert pacs["target"] and pacs["met"] in (True, False), pacs
    accept = rows[("accept rate, half-open flood held", "PACS (ours)")]
    assert accept["extra"]["plain"] > 0 and accept["ratio"] is not None and accept["ratio_to"] == "plain"
    assert "50 half-open" in accept["detail"]
    big = rows[("large instance ingest time", "PACS (ours)")]
    assert big["extra"]["frames"] == 32 and big["extra"]["bytes"] > 16 * 2**20 and big["extra"]["stored"] == 2
    assert data["environment"]["halfopen"] == 50 and data["environment"]["claims"] == 2
    assert not list(out.glob("work-*"))
    assert not leftovers(str(out)), leftovers(str(out))


TLS = {"TLS association accept rate": "assoc/s", "TLS single-association ingest": "images/s"}


def test_bench_tls_rows(tmp_path: Path) -> None:
    """`--only tls`: each receiver measured plain and over TLS, storescp +tls beside the PACS's TLS port."""
    need_tool("storescu", "dcmtk")
    need_tool("storescp", "dcmtk")
    out = tmp_path / "bench"
    env = {**os.environ, "BENCH_RECEIVERS": "", "BENCH_SLICES": "", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--only", "tls", "--slices", "4", "--rows", "64", "--cols", "64",
         "--modalities", "1", "--images-per-modality", "1", "--accept-seconds", "0.5", "--repeat", "1",
         "--receivers", "storescp,pacs", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=220)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    rows = {(r["workload"], r["subject"]): r for r in data["rows"]}
    for workload, unit in TLS.items():
        for subject in ("DCMTK storescp +tls", "PACS (ours), TLS port"):
            row = rows[(workload, subject)]
            assert row["unit"] == unit
            assert row["value"] is not None and row["value"] > 0, row  # measured over TLS, not how fast
            assert row["extra"]["plain"] > 0, row  # and plain, on a fresh receiver
            assert row["ratio_to"] == "plain" and row["ratio"] is not None
        pacs = rows[(workload, "PACS (ours), TLS port")]
        assert pacs["extra"]["vs_storescp_tls"] > 0 and "× storescp +tls" in pacs["detail"]
    assert "4/4 stored" in rows[("TLS single-association ingest", "DCMTK storescp +tls")]["detail"]
    assert not list(out.glob("work-*"))
    assert not leftovers(str(out)), leftovers(str(out))


def test_flood_holder_accounts_for_what_the_receiver_did() -> None:
    """bench/flood.py against a listener that closes 4 connections, answers 3 and keeps 3 silent."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0), backlog=32)
    port = listener.getsockname()[1]
    first_bytes: list[bytes] = []
    kept: list[socket.socket] = []

    def serve() -> None:
        for i in range(10):
            conn, _ = listener.accept()
            first_bytes.append(conn.recv(16))
            if i < 4:
                conn.close()
            else:
                if i < 7:
                    conn.sendall(b"\x07\x00")
                kept.append(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    proc = subprocess.Popen([sys.executable, "-m", "bench.flood", "--port", str(port), "--count", "10",
                             "--payload", "0100", "--sources", "127.0.0.2,127.0.0.3"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["count"] == 10 and first["refused"] == 0
        t.join(30)
        assert not t.is_alive()
        status = first
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the closes and answers reach the holder
            proc.stdin.write("status\n")
            proc.stdin.flush()
            status = json.loads(proc.stdout.readline())
            if status["closed"] == 4 and status["answered"] == 3:
                break
            time.sleep(0.05)
        assert (status["open"], status["answered"], status["closed"], status["connecting"]) == (3, 3, 4, 0), status
        assert first_bytes == [b"\x01\x00"] * 10  # the payload, once, on every connection
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["count"] == 10
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in kept:
            c.close()
        listener.close()


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
