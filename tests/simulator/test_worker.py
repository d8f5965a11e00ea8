"""The worker end to end: real Redis, real storescp, the worker's own C-ECHO SCP."""

from __future__ import annotations

import io
import subprocess
import threading

import pytest

from ct_simulator import worker
from dicomlab import events as ev
from dicomlab.events import EventLog
from dicomlab.settings import EnvConfig
from lab import free_port, need_tool


@pytest.fixture
def run_worker(registry):
    """Factory: run the worker in a thread for ``jobs`` jobs; returns (thread, stop, echo port, stdout)."""
    running = []

    def start(jobs: int, env: EnvConfig | None = None):
        env = env or EnvConfig(redis_url=None, pacs_host="127.0.0.1")
        out = io.StringIO()
        log = EventLog(registry.client, source="ct-simulator", out=out)
        stop = threading.Event()
        port = free_port()
        t = threading.Thread(target=worker.run, args=(registry, log, env, stop),
                             kwargs={"max_jobs": jobs, "bind": "127.0.0.1", "echo_port": port, "poll": 0.2},
                             daemon=True)
        t.start()
        running.append((t, stop))
        return t, stop, port, out

    yield start
    for t, stop in running:
        stop.set()
        t.join(20)


def _types(registry) -> list[str]:
    return [e.type for e in registry.read_events(limit=500)]


def test_worker_sends_a_job_and_reports_progress(registry, storescp, run_worker):
    scp = storescp()
    job = registry.enqueue_job({"slices": 5, "rows": 64, "cols": 64, "host": "127.0.0.1", "port": scp.port,
                                "called_aet": "STORESCP", "seed": 3, "patient_name": "DOE^JANE",
                                "patient_id": "P123"})
    t, _, _, out = run_worker(1)
    t.join(60)
    assert not t.is_alive()
    j = registry.get_job(job)
    assert j["state"] == "done", j
    assert (j["sent"], j["failed"]) == ("5", "0")
    assert j["result"]["exit_code"] == 0
    assert len(scp.files()) == 5
    types = _types(registry)
    assert ev.SEND_STARTED in types and ev.SEND_FINISHED in types and ev.SEND_PROGRESS in types
    assert "Sent 5 CT images to STORESCP" in out.getvalue()


def test_worker_defaults_come_from_env_and_listener_settings(registry, storescp, run_worker):
    scp = storescp()
    registry.seed_listener(__import__("dicomlab.settings", fromlist=["ListenerSettings"]).ListenerSettings())
    registry.update_listener({"ae_title": "STORESCP", "port": scp.port})
    job = registry.enqueue_job({"slices": 2, "rows": 32, "cols": 32})
    t, *_ = run_worker(1, EnvConfig(redis_url=None, pacs_host="127.0.0.1", sim_ae_title="CT07"))
    t.join(60)
    j = registry.get_job(job)
    assert j["state"] == "done", j
    assert len(scp.files()) == 2
    started = [e for e in registry.read_events(limit=50) if e.type == ev.SEND_STARTED][-1]
    assert (started.calling_aet, started.called_aet) == ("CT07", "STORESCP")


def test_worker_failed_job_names_the_cause(registry, run_worker):
    job = registry.enqueue_job({"slices": 2, "rows": 32, "cols": 32, "host": "127.0.0.1", "port": free_port(),
                                "called_aet": "PACS"})
    bad = registry.enqueue_job({"slices": "many"})
    t, *_ = run_worker(2)
    t.join(60)
    j = registry.get_job(job)
    assert j["state"] == "failed"
    assert j["result"]["problem"]["kind"] == "connection-refused"
    failed = [e for e in registry.read_events(limit=50) if e.type == ev.SEND_FAILED]
    assert any("connection refused" in e.message and e.reason == "connection-refused" for e in failed)
    b = registry.get_job(bad)
    assert b["state"] == "failed" and "slices must be a whole number" in b["result"]["problem"]["message"]


def test_worker_answers_c_echo_on_its_port(registry, run_worker):
    exe = need_tool("echoscu", "dcmtk")
    t, stop, port, out = run_worker(None)
    try:
        ok = subprocess.run([exe, "-aet", "PACS", "-aec", "CT01", "127.0.0.1", str(port)], capture_output=True)
        assert ok.returncode == 0, ok.stderr
        wrong = subprocess.run([exe, "-aet", "PACS", "-aec", "CT99", "127.0.0.1", str(port)], capture_output=True,
                               text=True)
        assert wrong.returncode != 0
    finally:
        stop.set()
        t.join(20)
    echoes = [e for e in registry.read_events(limit=50) if e.type == ev.ECHO_RECEIVED]
    assert echoes and echoes[-1].calling_aet == "PACS"
