"""The lab as local processes (LAB_RUNTIME=local), end to end: make up / send / down."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
from pathlib import Path

import pytest
from e2e_support import LabRun, poll, run_end_to_end, runtime

from lab import need


def _need_local_runtime() -> None:
    need(shutil.which("make") is not None, "make not found: install Debian's make")
    for mod in ("honcho", "pacs", "admin_api", "ct_simulator"):
        need(importlib.util.find_spec(mod) is not None,
             f"python package {mod!r} missing from the venv: run `make venv`")


@pytest.fixture
def local_lab(tmp_path):
    _need_local_runtime()
    lab = LabRun("local", tmp_path)
    yield lab
    if lab.state():
        lab.force_cleanup()


def _pid(lab: LabRun, service: str) -> int:
    return int((Path(lab.env["LAB_STATE_DIR"]) / "pids" / f"{service}.pid").read_text())


def test_local_lab_end_to_end(local_lab):
    def stored(uid: str) -> list[Path]:
        return sorted((local_lab.storage / uid).glob("*/*.dcm"))

    run_end_to_end(local_lab, stored)
    assert local_lab.last_state
    assert runtime.lab_pids(local_lab.last_state["lab_id"]) == [], "make down left processes behind"
    for port in (local_lab.admin_port, local_lab.pacs_port, local_lab.sim_port):
        assert not runtime.port_in_use(port), f"port {port} still answers after make down"


def test_local_down_leaves_no_orphans_when_the_supervisor_is_killed(local_lab):
    local_lab.make("up", timeout=300)
    state = local_lab.state()
    services = {s: _pid(local_lab, s) for s in state["services"]}
    os.kill(state["supervisor"], signal.SIGKILL)  # the services are orphans now
    poll(lambda: not runtime.alive(state["supervisor"]), 10, what="the supervisor is gone")
    assert all(runtime.alive(p) for p in services.values()), services
    local_lab.make("down", timeout=120)
    assert runtime.lab_pids(state["lab_id"]) == []
    assert not any(runtime.alive(p) for p in services.values())


def test_local_service_crash_stops_the_lab_and_down_cleans_up(local_lab):
    local_lab.make("up", timeout=300)
    state = local_lab.state()
    os.kill(_pid(local_lab, "pacs"), signal.SIGKILL)
    # honcho stops the other services when one of them dies, then exits.
    poll(lambda: not runtime.alive(state["supervisor"]), 30, what="the supervisor stops the lab")
    ps = local_lab.make("ps", check=False)
    assert ps.returncode != 0 and "stopped" in ps.stdout
    local_lab.make("down", timeout=120)
    assert runtime.lab_pids(state["lab_id"]) == []
    assert local_lab.state() is None
