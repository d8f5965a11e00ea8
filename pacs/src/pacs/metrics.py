"""Prometheus metrics of the PACS: ``/metrics`` on ``PACS_METRICS_PORT`` (off when unset or 0).

Served by a small process of its own (``serve``), forked by ``cli.main`` before the
supervisor forks the listener processes and before any thread or socket exists, so
the supervisor stays thread-free. It answers ``GET /metrics`` in the Prometheus text
format, no token: it is bound to ``PACS_METRICS_BIND`` (local ``127.0.0.1``; Compose:
the container's interfaces, i.e. the lab networks, published on the host's loopback
only), and says only counts -- no AE title, no UID, no patient data.

The listener processes write their metrics to ``prometheus_client``'s multiprocess
files in ``PACS_METRICS_DIR`` (set as ``PROMETHEUS_MULTIPROC_DIR`` in the PACS's
processes; default: a fresh folder under the system's temporary folder -- a tmpfs in
Compose -- removed at exit; a folder given is emptied at start); the metrics process reads them all at each scrape, and removes the files
of live gauges whose process is gone (a listener process that died).

What is measured, and where (as few hooks as possible):

- ``watch(events)`` (cli): every event the process emits passes through
  ``observe_event``: associations by outcome and reason (accepted, rejected, aborted,
  released, and connections closed before they became one, with the aggregated count).
  A sampler thread keeps the process's event backlog (events waiting in memory for
  Redis) in a gauge.
- ``timed_store`` (decorates ``EchoStore.store``): C-STOREs by status, instances and bytes
  stored, store latency (durable on disk and indexed or journaled: what the modality
  waits for before its Success).
- ``open_associations`` (``Pacs._publish_load``): associations open in the process.
- ``direct_accept`` (``direct.serve``): associations accepted without pynetdicom's Association.
- The journal depth is read at scrape time by the metrics process itself: the entries
  waiting in ``<storage>/.journal/*.jsonl`` (one line each).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PORT_ENV = "PACS_METRICS_PORT"
BIND_ENV = "PACS_METRICS_BIND"
DIR_ENV = "PACS_METRICS_DIR"  # the PACS's own, so a PROMETHEUS_MULTIPROC_DIR meant for another service is not emptied
PROM_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 1.0

# Seconds buckets for a C-STORE: a small instance takes ~2 ms (two fsyncs), a large one seconds.
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# event type -> association outcome label
OUTCOMES = {
    "association-accepted": "accepted",
    "association-rejected": "rejected",
    "association-aborted": "aborted",
    "association-released": "released",
    "connection-closed": "closed",
}


class _Metrics:
    """The metric objects, made once PROMETHEUS_MULTIPROC_DIR is set (``setup``)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.associations = Counter(
            "dicomlab_pacs_associations", "Associations decided or ended, by outcome (accepted, rejected, "
            "aborted, released; closed: a connection closed before it became an association) and event reason",
            ["outcome", "reason"])
        self.stores = Counter("dicomlab_pacs_store_requests", "C-STORE requests answered, by status", ["status"])
        self.instances = Counter("dicomlab_pacs_instances_stored", "Instances stored (answered Success; an "
                                 "instance received again counts again)")
        self.bytes = Counter("dicomlab_pacs_stored_bytes", "Dataset bytes of the instances stored")
        self.latency = Histogram("dicomlab_pacs_store_seconds", "C-STORE time from the whole dataset received to "
                                 "the status (durable on disk, indexed or journaled)", buckets=STORE_BUCKETS)
        self.direct = Counter("dicomlab_pacs_direct_accepts", "Associations accepted by the direct accept "
                              "(pacs/direct.py, without pynetdicom's Association): part of the accepted ones")
        self.open = Gauge("dicomlab_pacs_open_associations", "Associations open (negotiating or in their data "
                          "phase), all listener processes", multiprocess_mode="livesum")
        self.backlog = Gauge("dicomlab_pacs_event_backlog", "Events waiting in memory to be written to Redis, all "
                             "listener processes", multiprocess_mode="livesum")


_metrics: _Metrics | None = None


def enabled() -> bool:
    return _metrics is not None


def port_from_env() -> int:
    raw = (os.environ.get(PORT_ENV) or "0").strip()
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{PORT_ENV} is a port number (0: no metrics), not {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_ENV} is from 1 to 65535 (0: no metrics), not {port}")
    return port


def setup() -> int:
    """In the first process, before any fork and before prometheus_client is imported: the
    multiprocess folder, emptied, in the environment; the metric objects. Returns the metrics
    port (0: off, nothing done)."""
    global _metrics
    port = port_from_env()
    if not port:
        return 0
    folder = os.environ.get(DIR_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for f in Path(folder).glob("*.db"):  # counts of an earlier run
            f.unlink(missing_ok=True)
    else:
        folder = tempfile.mkdtemp(prefix="dicomlab-pacs-metrics-")
        atexit.register(shutil.rmtree, folder, True)
    os.environ[PROM_DIR_ENV] = folder  # read by prometheus_client when it is imported, next line
    _metrics = _Metrics()
    return port


# -- hooks in the listener processes -------------------------------------------------------------
def observe_event(event: Any) -> None:
    if _metrics is None:
        return
    outcome = OUTCOMES.get(event.type)
    if outcome is None:
        return
    detail = event.detail if isinstance(event.detail, dict) else {}
    count = detail.get("count") if outcome == "closed" else 1  # closes are aggregated per source and reason
    n = count if isinstance(count, int) and count > 0 else 1
    _metrics.associations.labels(outcome, event.reason or "").inc(n)


def watch(events: Any) -> None:
    """Every event ``events`` (an EventLog) emits is observed; its backlog is sampled."""
    if _metrics is None:
        return
    emit = events.emit

    @functools.wraps(emit)
    def observed(*args: Any, **kw: Any) -> Any:
        ev = emit(*args, **kw)
        observe_event(ev)
        return ev

    events.emit = observed
    gauge = _metrics.backlog

    def sample() -> None:
        while True:
            gauge.set(getattr(events, "backlog", 0))
            time.sleep(SAMPLE_SECONDS)

    threading.Thread(target=sample, name="metrics-backlog", daemon=True).start()


def timed_store(store: Callable[..., int]) -> Callable[..., int]:
    """Decorates ``EchoStore.store(self, session, raw, transfer_syntax, sop_class, sop_instance)``
    (echostore.py)."""

    @functools.wraps(store)
    def timed(self: Any, s: Any, raw: Any, *args: Any) -> int:
        if _metrics is None:
            return store(self, s, raw, *args)
        size = getattr(raw, "size", None)
        size = len(raw) if size is None else size
        started = time.perf_counter()
        stored_before = s.stored
        status = store(self, s, raw, *args)
        m = _metrics
        m.latency.observe(time.perf_counter() - started)
        m.stores.labels(f"0x{status:04X}").inc()
        if status == 0 and s.stored > stored_before:
            m.instances.inc()
            m.bytes.inc(size)
        return status

    return timed


def direct_accept() -> None:
    if _metrics is not None:
        _metrics.direct.inc()


def open_associations(n: int) -> None:
    if _metrics is not None:
        _metrics.open.set(n)


# -- the metrics process -------------------------------------------------------------------------
def journal_depth(folder: Path) -> tuple[int, int]:
    """(entries, files) waiting in the journal folder: one JSON line per entry."""
    entries = files = 0
    try:
        paths = list(folder.glob("*.jsonl"))
    except OSError:
        return 0, 0
    for p in paths:
        try:
            with open(p, "rb") as f:
                n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except OSError:
            continue
        files += 1 if n else 0
        entries += n
    return entries, files


class _JournalCollector:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        entries, files = journal_depth(self.folder)
        yield GaugeMetricFamily("dicomlab_pacs_journal_entries", "Index and event writes waiting in the on-disk "
                                "journal for Redis (replayed in order when it answers)", value=entries)
        yield GaugeMetricFamily("dicomlab_pacs_journal_files", "Journal files holding entries", value=files)


def _forget_dead(folder: str) -> None:
    """Live gauges of a process that is gone are not live any more (a listener process died)."""
    from prometheus_client import multiprocess

    for f in Path(folder).glob("gauge_live*_*.db"):
        try:
            pid = int(f.stem.rsplit("_", 1)[1])
            os.kill(pid, 0)
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


def _written(folder: str) -> list[str]:
    """The multiprocess files a scrape can read. A listener process starting (one restarted by
    the supervisor) creates its file empty and only then sizes it; prometheus_client's reader
    fails on an empty file (struct.error, a 500 for the scrape). An empty file holds no value
    yet, so it is left out until it is sized."""
    out = []
    for f in Path(folder).glob("*.db"):
        try:
            if f.stat().st_size >= 8:  # the used-size word and its padding
                out.append(str(f))
        except FileNotFoundError:  # a dead process's live gauge, removed meanwhile
            continue
    return out


def _collector(folder: str) -> Any:
    from prometheus_client import multiprocess

    class Collector(multiprocess.MultiProcessCollector):
        def collect(self) -> Any:
            return self.merge(_written(folder), accumulate=True)  # type: ignore[no-untyped-call]

    return Collector(None, folder)  # type: ignore[no-untyped-call]


def _app(journal: Path) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import make_wsgi_app

    folder = os.environ[PROM_DIR_ENV]
    registry = CollectorRegistry()
    registry.register(_collector(folder))
    registry.register(_JournalCollector(journal))
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found: the metrics are at /metrics.\n"]
        _forget_dead(folder)
        return metrics_app(environ, start_response)

    return app


def start(journal: Path) -> int | None:
    """``setup`` and ``serve`` from the environment (cli.main, before any fork or thread); the
    metrics process's pid, or None when PACS_METRICS_PORT is unset or 0. ValueError: a bad port."""
    port = setup()
    return serve(port, os.environ.get(BIND_ENV) or "127.0.0.1", journal) if port else None


def serve(port: int, bind: str, journal: Path) -> int | None:
    """Fork the metrics process (before any thread); its pid, or None when metrics are off."""
    if _metrics is None or not port:
        return None
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        from .supervisor import STOP, _die_with_parent

        _die_with_parent()
        for sig in STOP:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP)
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes are not events
                pass

        class Server(WSGIServer):
            address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET

        try:
            httpd = make_server(bind, port, _app(journal), server_class=Server, handler_class=Quiet)
        except OSError as exc:
            print(f"pacs: cannot serve metrics on {bind}:{port}: {exc.strerror or exc}. Fix: free the port or "
                  f"choose another ({PORT_ENV}); the PACS runs on without /metrics.", file=sys.stderr, flush=True)
            code = 1
        else:
            print(f"pacs: metrics at http://{bind}:{port}/metrics (Prometheus text format).", file=sys.stderr,
                  flush=True)
            httpd.serve_forever()
    finally:
        os._exit(code)
