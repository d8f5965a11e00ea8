"""`make soak`, two minutes of it: every fault kind at least once, and nothing acknowledged
lost, on disk or from the study index -- also before the PACS is restarted at the end: the
running PACS must have restored the index by itself (the journal of a Redis outage, the
reconcile when Redis comes back). Needs root (the soak mounts a tmpfs, fills it and remounts
it read-only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import ROOT, need, need_tool

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

sys.path.insert(0, str(ROOT))
from soak.faults import KINDS  # noqa: E402
from soak.modalities import dataset_bytes, parse_storescu  # noqa: E402


def test_two_minute_soak_loses_nothing_acknowledged(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "the soak needs root: it mounts a tmpfs for the storage, fills it, remounts it read-only")
    need_tool("storescu", "dcmtk")
    need_tool("redis-server", "redis-server")
    out = tmp_path / "soak"
    run = subprocess.run([sys.executable, "-m", "soak", "--seconds", "120", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=840, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert run.returncode in (0, 1), run.stdout[-4000:] + run.stderr[-4000:]  # 1: something lost, said below
    summary = json.loads((out / "summary.json").read_text())
    r = summary["result"]
    print(f"acknowledged {r['acknowledged']}, refused {r['refused']}, lost on disk {r['lost_on_disk']}, "
          f"lost from the index {r['lost_from_index']}; faults {summary['fault_counts']}")
    assert r["acknowledged"] > 0
    assert r["missing_on_disk"] == 0, r["missing_on_disk_uids"]
    assert r["different_on_disk"] == 0, r["different_on_disk_uids"]
    assert r["sent_with_other_bytes"] == 0
    assert r["lost_from_index"] == 0, (r["lost_from_index_uids"], r["lost_from_index_by_fault"])
    assert summary["not_indexed_before_restart"] == 0, summary["recovery"]
    assert set(summary["fault_counts"]) == set(KINDS), summary["faults"]
    assert all(f["ok"] for f in summary["faults"]), summary["faults"]
    assert summary["problems"] == [] and summary["pacs_starts"] >= 3  # start, after supervisor-kill, at the end
    assert (run.returncode == 0) == summary["passed"]
    assert (out / "summary.md").read_text().startswith("# DICOM Lab crash soak")
    assert "listener-started" in (out / "pacs.log").read_text()


def test_storescu_debug_output_gives_each_uid_its_status() -> None:
    out = """I: Sending Store Request (MsgID 1, CT)
D: ===================== INCOMING DIMSE MESSAGE ====================
D: Message Type                  : C-STORE RSP
D: Affected SOP Instance UID     : 1.2.3.1
D: DIMSE Status                  : 0x0000: Success
D: ======================= END DIMSE MESSAGE =======================
D: ===================== INCOMING DIMSE MESSAGE ====================
D: Message Type                  : C-STORE RSP
D: Affected SOP Instance UID     : 1.2.3.2
D: DIMSE Status                  : 0xA700: Out of Resources
D: ======================= END DIMSE MESSAGE =======================
D: ===================== INCOMING DIMSE MESSAGE ====================
D: Message Type                  : C-ECHO RSP
D: DIMSE Status                  : 0x0000: Success
D: ======================= END DIMSE MESSAGE ======================="""
    assert parse_storescu(out) == {"1.2.3.1": 0x0000, "1.2.3.2": 0xA700}


def test_dataset_bytes_are_what_follows_the_file_meta(tmp_path: Path) -> None:
    from dicomdata import encoded
    from pydicom import dcmread

    from ct_simulator.iod import StudyPlan, iter_instances, write_part10

    inst = next(iter_instances(StudyPlan(slices=1, rows=16, cols=16, seed=3)))
    path = tmp_path / "x.dcm"
    write_part10(inst.dataset, path)
    assert dataset_bytes(path.read_bytes()) == encoded(dcmread(path))
    with pytest.raises(ValueError):
        dataset_bytes(b"\0" * 200)


def test_the_end_check_finds_each_kind_of_loss(tmp_path: Path, redis_url: str) -> None:
    """The check can fail: a file missing, a file with other bytes, an instance not in the index."""
    import hashlib

    import redis

    from ct_simulator.iod import StudyPlan, iter_instances, write_part10
    from dicomlab import keys
    from soak.modalities import Ledger
    from soak.verify import check

    storage, ledger = tmp_path / "storage", Ledger()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    uids = []
    for inst in iter_instances(StudyPlan(slices=4, rows=16, cols=16, seed=9)):
        ds = inst.dataset
        path = storage / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{inst.sop_instance_uid}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_part10(ds, path)
        sha = hashlib.sha256(dataset_bytes(path.read_bytes())).hexdigest()
        ledger.answer(inst.sop_instance_uid, ds.StudyInstanceUID, ds.SeriesInstanceUID, sha, "SCU1", 0x0000)
        client.sadd(keys.study_instances(ds.StudyInstanceUID), inst.sop_instance_uid)
        uids.append((inst.sop_instance_uid, path))
    ledger.answer("1.2.3.4", "1.2", "1.2.3", "0" * 64, "SCU1", 0xA700)  # refused: never acknowledged
    assert check(ledger, storage, client)["lost_on_disk"] == 0

    uids[0][1].unlink()  # missing
    raw = bytearray(uids[1][1].read_bytes())
    raw[-1] ^= 1
    uids[1][1].write_bytes(bytes(raw))  # different
    client.srem(keys.study_instances(str(pydicom_study(uids[2][1]))), uids[2][0])  # not indexed
    r = check(ledger, storage, client)
    assert (r["acknowledged"], r["refused"]) == (4, 1)
    assert r["missing_on_disk_uids"] == [uids[0][0]] and r["different_on_disk_uids"] == [uids[1][0]]
    assert r["lost_on_disk"] == 2
    assert set(r["lost_from_index_uids"]) == {uids[2][0]}


def pydicom_study(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_losses_are_put_under_the_fault_before_the_pacs_last_logged_them(tmp_path: Path) -> None:
    from soak.verify import by_fault

    log = tmp_path / "pacs.log"
    log.write_text(
        "2026-01-01T10:00:01.000Z pacs INFO    store-received [a1] X -> PACS: Stored instance 1.1 of study 1.\n"
        "2026-01-01T10:00:05.000Z pacs INFO    store-received [a1] X -> PACS: Stored instance 1.2 of study 1.\n"
        "2026-01-01T10:00:05.100Z pacs WARNING store-failed [a1] X -> PACS: Instance 1.2 is stored on disk; "
        "Redis is unreachable\n")
    faults = [{"at": "2026-01-01T10:00:00.500+00:00", "kind": "worker-kill", "t_s": 1.0},
              {"at": "2026-01-01T10:00:05.050+00:00", "kind": "redis-kill", "t_s": 5.5}]
    assert by_fault(["1.1", "1.2", "9.9"], log, faults) == {
        "worker-kill at 1.0 s": 1, "redis-kill at 5.5 s": 1, "never in the PACS log": 1}
