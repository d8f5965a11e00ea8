"""Prometheus /metrics of the real PACS (two listener processes, multiprocess mode) and of the
admin API under real gunicorn (two workers): traffic is sent, both endpoints are scraped and
parsed with prometheus_client's own parser, and the counts must be what was done."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from admin_helpers import AUTH, TOKEN, Gunicorn
from prometheus_client.parser import text_string_to_metric_families

from lab import PacsProcess, RedisServer, add_node, echoscu, free_port, rejection_of, wait_for

CT = "1.2.840.10008.5.1.4.1.1.2"


def scrape(url: str, **kw) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    r = requests.get(url, timeout=10, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **match) -> float:
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == m for k, m in match.items()))


@pytest.fixture
def metrics_pacs(redis_url, tmp_path):
    port = free_port()
    p = PacsProcess(redis_url, tmp_path / "storage", extra_env={
        "PACS_WORKERS": "2", "PACS_METRICS_PORT": str(port), "PACS_METRICS_DIR": str(tmp_path / "prom")}).start()
    p.metrics_url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: _answers(p.metrics_url), timeout=20, what="the PACS's /metrics")
    yield p
    p.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _send(port: int, slices: int):
    from ct_simulator.iod import StudyPlan
    from ct_simulator.network import Link
    from ct_simulator.sender import send

    return send(StudyPlan(slices=slices, rows=64, cols=64, seed=7), Link("127.0.0.1", port, calling_aet="CT01",
                                                                         called_aet="PACS"))


def _dataset_bytes(storage: Path) -> int:
    from pacs.spooling import dataset_offset

    files = [f for f in storage.rglob("*.dcm") if ".sop" not in f.parts]
    return sum(f.stat().st_size - dataset_offset(f) for f in files)


def test_the_pacs_metrics_count_what_was_done(metrics_pacs, registry):
    pacs = metrics_pacs
    add_node(registry, "CT01")
    rep = _send(pacs.port, 5)
    assert rep.ok, rep.problem
    out = echoscu(pacs.port, "NOBODY", "PACS")
    assert rejection_of(out.stdout + out.stderr) is not None, out.stdout + out.stderr
    wait_for(lambda: len(registry.read_events(types={"association-rejected"})) == 1, what="the rejection event")

    def settled():
        m = scrape(pacs.metrics_url)
        return m if total(m, "dicomlab_pacs_associations_total", outcome="released") == 1 else None

    m = wait_for(settled, timeout=20, what="the release counted")
    assert total(m, "dicomlab_pacs_associations_total", outcome="accepted") == 1
    assert value(m, "dicomlab_pacs_associations_total", outcome="rejected", reason="unknown-calling-aet") == 1
    assert total(m, "dicomlab_pacs_associations_total", outcome="rejected") == 1
    assert total(m, "dicomlab_pacs_associations_total", outcome="aborted") == 0
    assert value(m, "dicomlab_pacs_instances_stored_total") == 5
    assert value(m, "dicomlab_pacs_store_requests_total", status="0x0000") == 5
    assert value(m, "dicomlab_pacs_stored_bytes_total") == _dataset_bytes(pacs.storage_dir) > 5 * 64 * 64 * 2
    assert value(m, "dicomlab_pacs_store_seconds_count") == 5
    assert value(m, "dicomlab_pacs_store_seconds_bucket", le="+Inf") == 5
    assert 0 < value(m, "dicomlab_pacs_store_seconds_sum") < 60
    assert value(m, "dicomlab_pacs_open_associations") == 0
    assert value(m, "dicomlab_pacs_event_backlog") == 0
    assert value(m, "dicomlab_pacs_journal_entries") == 0

    # The admin API passes them through at /metrics/pacs (its token), as in both runtimes.
    from admin_api import create_app

    client = create_app({"TESTING": True, "ADMIN_TOKEN": TOKEN, "REDIS_URL": pacs.redis_url,
                         "PACS_METRICS_URL": pacs.metrics_url}).test_client()
    assert client.get("/metrics/pacs").status_code == 401
    r = client.get("/metrics/pacs", headers=AUTH)
    assert r.status_code == 200 and r.content_type.startswith("text/plain; version=")
    via = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(r.get_data(as_text=True)) for s in fam.samples}
    assert value(via, "dicomlab_pacs_instances_stored_total") == 5


def test_the_pacs_passthrough_says_what_is_wrong(redis_url):
    from admin_api import create_app

    r = create_app({"TESTING": True, "ADMIN_TOKEN": TOKEN, "REDIS_URL": redis_url}).test_client().get(
        "/metrics/pacs", headers=AUTH)
    assert r.status_code == 404 and "PACS_METRICS_URL" in r.get_json()["error"]
    url = f"http://127.0.0.1:{free_port()}/metrics"
    r = create_app({"TESTING": True, "ADMIN_TOKEN": TOKEN, "REDIS_URL": redis_url,
                    "PACS_METRICS_URL": url}).test_client().get("/metrics/pacs", headers=AUTH)
    assert r.status_code == 503 and url in r.get_json()["error"]


def test_open_associations_and_a_dead_worker(metrics_pacs, registry):
    from pynetdicom import AE

    pacs = metrics_pacs
    add_node(registry, "CT01")
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CT)
    assocs = [ae.associate("127.0.0.1", pacs.port, ae_title="PACS") for _ in range(3)]
    assert all(a.is_established for a in assocs)
    wait_for(lambda: value(scrape(pacs.metrics_url), "dicomlab_pacs_open_associations") == 3, timeout=15,
             what="3 open associations")
    assocs[0].release()
    wait_for(lambda: value(scrape(pacs.metrics_url), "dicomlab_pacs_open_associations") == 2, timeout=15,
             what="2 open associations")
    # The listener processes killed with associations open: their gauges go with them.
    metrics_port = int(pacs.metrics_url.split(":")[2].split("/")[0])
    for pid in _listener_pids(pacs.proc.pid, metrics_port):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: value(scrape(pacs.metrics_url), "dicomlab_pacs_open_associations") == 0, timeout=30,
             what="the dead workers' associations no longer open")
    for a in assocs[1:]:
        a.abort()


def test_a_listener_process_starting_does_not_fail_the_scrape(metrics_pacs, tmp_path):
    """A listener process (re)started by the supervisor creates its multiprocess file empty and
    sizes it a moment later; a scrape in between got a 500 (prometheus_client cannot read an
    empty file). The moment is made to last: an empty file of a process id that is alive."""
    before = scrape(metrics_pacs.metrics_url)
    prom = tmp_path / "prom"
    empty = [prom / f"counter_{os.getpid()}.db", prom / f"gauge_livesum_{os.getpid()}.db"]
    for f in empty:
        f.touch()
    try:
        after = scrape(metrics_pacs.metrics_url)
    finally:
        for f in empty:
            f.unlink()
    assert value(after, "dicomlab_pacs_open_associations") == value(before, "dicomlab_pacs_open_associations")
    assert {n for n, _ in after} == {n for n, _ in before}


def _listener_pids(supervisor: int, metrics_port: int) -> list[int]:
    """The supervisor's children but the metrics process (the one holding the metrics socket)."""
    inode = next(line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[1].endswith(f":{metrics_port:04X}") and line.split()[3] == "0A")
    children = [int(c) for c in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()]
    out = []
    for c in children:
        links = {os.readlink(f"/proc/{c}/fd/{fd}") for fd in os.listdir(f"/proc/{c}/fd")}
        if f"socket:[{inode}]" not in links:
            out.append(c)
    assert len(out) == 2, (children, out)
    return out


def test_the_journal_depth_is_seen_while_redis_is_away(tmp_path):
    """Redis paused mid-association: the C-STOREs are journaled on disk and counted; Redis back:
    replayed, the depth is 0 again."""
    from pynetdicom import AE

    from dicomlab.registry import Registry, connect

    server = RedisServer().start()
    port = free_port()
    pacs = PacsProcess(server.url, tmp_path / "storage", extra_env={
        "PACS_WORKERS": "1", "PACS_METRICS_PORT": str(port)}).start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: _answers(url), timeout=20, what="the PACS's /metrics")
        registry = Registry(connect(server.url))
        add_node(registry, "CT01")
        from dicomdata import as_file, ct_dataset
        from pydicom.uid import generate_uid

        ae = AE(ae_title="CT01")
        ae.add_requested_context(CT)
        assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
        assert assoc.is_established
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            study, series = generate_uid(), generate_uid()
            for n in range(2):
                assert assoc.send_c_store(as_file(ct_dataset(study, series, n + 1))).Status == 0
            m = scrape(url)
            assert value(m, "dicomlab_pacs_journal_entries") >= 2
            assert value(m, "dicomlab_pacs_journal_files") >= 1
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assoc.release()
        wait_for(lambda: value(scrape(url), "dicomlab_pacs_journal_entries") == 0, timeout=30,
                 what="the journal replayed")
        assert value(scrape(url), "dicomlab_pacs_instances_stored_total") == 2
    finally:
        pacs.stop()
        server.stop()


def test_metrics_are_off_by_default_and_a_bad_port_is_refused(redis_url, tmp_path):
    p = PacsProcess(redis_url, tmp_path / "s1", extra_env={"PACS_METRICS_PORT": "http"})
    p.start(wait=False)
    assert p.proc.wait(30) == 2
    assert "PACS_METRICS_PORT is a port number" in p.log()


def test_the_admin_api_metrics_count_its_requests(redis_server, redis_url, tmp_path):
    server = Gunicorn(redis_url, extra_env={"ADMIN_METRICS_DIR": str(tmp_path / "prom")})
    try:
        for _ in range(6):
            assert requests.get(server.url + "/api/nodes", headers=AUTH, timeout=10).status_code == 200
        assert requests.get(server.url + "/api/nodes", timeout=10).status_code == 401
        assert requests.get(server.url + "/api/nodes/NOPE", headers=AUTH, timeout=10).status_code == 404
        assert requests.get(server.url + "/no/such/path", timeout=10).status_code == 404
        r = requests.get(server.url + "/metrics", timeout=10)
        assert r.status_code == 401, "the admin token applies to /metrics"
        m = scrape(server.url + "/metrics", headers=AUTH)
        assert value(m, "dicomlab_admin_requests_total", method="GET", route="/api/nodes", status="200") == 6
        assert value(m, "dicomlab_admin_requests_total", method="GET", route="/api/nodes", status="401") == 1
        assert value(m, "dicomlab_admin_requests_total", method="GET", route="/api/nodes/<path:ae_title>",
                     status="404") == 1
        assert value(m, "dicomlab_admin_requests_total", method="GET", route="unmatched", status="404") == 1
        assert value(m, "dicomlab_admin_request_seconds_count", method="GET", route="/api/nodes") == 7
        # both gunicorn workers' files are read (multiprocess mode): the folder holds one per worker that served
        assert list((tmp_path / "prom").glob("counter_*.db"))
        # a passing scrape is not in the access log, like a passing health check
        time.sleep(0.2)
        assert '"GET /metrics' not in server.log().replace('"GET /metrics HTTP/1.1" 401', "")
    finally:
        server.stop()
