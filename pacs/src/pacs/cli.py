"""``dicomlab-pacs`` / ``python -m pacs``: run the PACS receiver, or rebuild the study index."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time

from dicomlab import outbound
from dicomlab.errors import LabError, RegistryUnavailable
from dicomlab.events import WORKER_EXITED, EventLog
from dicomlab.journal import Journal
from dicomlab.registry import Registry, connect
from dicomlab.settings import EnvConfig, ListenerSettings
from dicomlab.tlsca import ensure_lab

from . import malloc, metrics, wire
from .counters import Counts, SharedCounts
from .listener import Pacs
from .policy import AssociationSlots
from .reconcile import Reconciler, reconcile
from .storage import Storage
from .supervisor import STOP, Supervisor

JOURNAL_DIR = ".journal"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dicomlab-pacs",
        description="DICOM Lab PACS receiver (Storage + Verification SCP). Authorized nodes and listener "
        "settings are read from Redis on every association; the environment only seeds them.",
    )
    p.add_argument("command", nargs="?", default="serve", choices=["serve", "reindex"],
                   help="serve (default): run the listener; reindex: rebuild the study index from storage")
    p.add_argument("--bind", default=os.environ.get("PACS_BIND", "0.0.0.0"), help="address to listen on")
    p.add_argument("--redis-url", default=None, help="registry URL (default: $REDIS_URL)")
    p.add_argument("--storage", default=None, help="storage folder (default: $PACS_STORAGE_DIR)")
    p.add_argument("--workers", type=int, default=None,
                   help="listener processes sharing the port (default: $PACS_WORKERS, else the number of CPUs, "
                   "at most 4); 1 runs everything in this process")
    p.add_argument("--shutdown-grace", type=float, default=float(os.environ.get("PACS_SHUTDOWN_GRACE", "30")),
                   help="seconds open associations may take to finish after SIGTERM (default 30)")
    return p


def main(args: list[str] | None = None) -> int:
    ns = build_parser().parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s pacs %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # our events say it, once, in plain words
    try:
        env = EnvConfig.from_env()
    except LabError as exc:
        print(f"pacs: configuration error: {exc}", file=sys.stderr)
        return 2
    url = ns.redis_url or env.redis_url
    if not url:
        print("pacs: REDIS_URL is not set: the PACS needs the registry to authorize nodes "
              "(`make up` starts one for you).", file=sys.stderr)
        return 2
    storage = Storage(ns.storage or env.storage_dir)
    if ns.command == "reindex":
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP)  # blocked by __main__: Ctrl-C stops a reindex
        return reindex(Registry(connect(url)), storage)
    return serve(url, storage, env, ns)


def serve(url: str, storage: Storage, env: EnvConfig, ns: argparse.Namespace) -> int:
    """``serve``: the listener, in this process or in several (``--workers``)."""
    fastpath = os.environ.get("PACS_FASTPATH", "1").strip() or "1"
    if fastpath not in ("0", "1"):
        print(f"pacs: configuration error: PACS_FASTPATH is 0 or 1, not {fastpath!r}", file=sys.stderr)
        return 2
    ns.fastpath = fastpath == "1"
    direct = os.environ.get("PACS_DIRECT_ACCEPT", "1").strip() or "1"
    if direct not in ("0", "1"):
        print(f"pacs: configuration error: PACS_DIRECT_ACCEPT is 0 or 1, not {direct!r}", file=sys.stderr)
        return 2
    ns.direct = direct == "1"
    quickack = os.environ.get("PACS_QUICKACK", "1").strip() or "1"
    if quickack not in ("0", "1"):
        print(f"pacs: configuration error: PACS_QUICKACK is 0 or 1, not {quickack!r}", file=sys.stderr)
        return 2
    wire.QUICKACK = outbound.QUICKACK = quickack == "1"  # before the fork: every worker's
    malloc.limit_arenas()  # before any thread: pooled threads each keeping an arena's freed memory (malloc.py)

    try:
        seed = ListenerSettings(ae_title=env.pacs_ae_title, port=env.pacs_port, tls_port=env.pacs_tls_port).validate()
    except LabError as exc:
        print(f"pacs: configuration error: {exc}", file=sys.stderr)
        return 2
    ns.tls_folder = _tls_folder(env)
    workers = ns.workers if ns.workers is not None else int(
        os.environ.get("PACS_WORKERS") or min(os.cpu_count() or 1, 4))
    # SIGTERM / SIGINT are blocked in every thread (threads inherit the mask) and taken
    # synchronously with sigwait: a handler-based wait can miss a signal that the kernel
    # delivers to another thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP)
    try:  # /metrics on PACS_METRICS_PORT, from a process of its own forked now (metrics.py)
        metrics.start(storage.root / JOURNAL_DIR)
    except ValueError as exc:
        print(f"pacs: configuration error: {exc}", file=sys.stderr)
        return 2
    if workers <= 1:
        return _serve(url, storage, seed, ns, worker=None, shared=None, ports=None, ready_fd=None)
    return _supervise(url, storage, seed, ns, workers)


def _supervise(url: str, storage: Storage, seed: ListenerSettings, ns: argparse.Namespace, workers: int) -> int:
    """Several listener processes on one listening socket, each restarted if it dies (supervisor.py)."""
    # per source address (pending connections) and per calling AE title (open associations),
    # counted over every worker: shared memory made before the fork (counters.py)
    pending, nodes = SharedCounts(workers), SharedCounts(workers)

    def run_worker(index: int, shared: object, ports: object, ready_fd: int, sock: object, load: object) -> int:
        return _serve(url, storage, seed, ns, worker=index, shared=shared, ports=ports, ready_fd=ready_fd,
                      listen_socket=sock, load=load, pending=pending.row(index), nodes=nodes.row(index))

    def say(text: str) -> None:
        EventLog(connect(url), source="pacs").emit(WORKER_EXITED, text, level="error", reason="worker")

    try:
        listen_socket = _shared_listening_socket(url, seed, ns.bind)
    except OSError as exc:
        print(f"pacs: cannot listen on {ns.bind}:{seed.port}: {exc.strerror or exc}. "
              "Fix: free the port or choose another (PACS_PORT, or the listener settings).", file=sys.stderr)
        return 1
    return Supervisor(workers, run_worker, say, listen_socket=listen_socket).run()


def _tls_folder(env: EnvConfig) -> str:
    """The lab CA and the PACS's certificate, created on first start and reused (before any
    fork: one CA). When it cannot be made the PACS still runs; its TLS port says why."""
    folder = env.tls_folder
    try:
        ensure_lab(folder, env.pacs_ae_title)
    except (OSError, ValueError) as exc:
        print(f"pacs: DICOM TLS: cannot create the lab CA in {folder} ({exc}); TLS connections will be closed. "
              "Fix: make the folder writable (PACS_TLS_DIR).", file=sys.stderr)
    return folder


def _shared_listening_socket(url: str, seed: ListenerSettings, bind: str) -> socket.socket:
    """The listening socket all listener processes accept from, on the stored port
    (the seed's while Redis is away). No thread and no Redis connection survives
    into the fork."""
    client = connect(url)
    try:
        port = Registry(client).seed_listener(ListenerSettings(**seed.to_dict())).port
    except RegistryUnavailable:
        port = seed.port
    finally:
        client.close()
        client.connection_pool.disconnect()
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # a restarted worker can join it
    try:
        sock.bind((bind, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)  # a process that loses the race to accept goes back to waiting
    return sock


def _serve(url: str, storage: Storage, seed: ListenerSettings, ns: argparse.Namespace, worker: int | None,
           shared: object, ports: object, ready_fd: int | None, listen_socket: object = None,
           load: object = None, pending: Counts | None = None, nodes: Counts | None = None) -> int:
    started = time.time()  # temporary files last written before this are orphans
    client = connect(url)
    registry = Registry(client)
    # index and event writes that cannot reach Redis: one journal file per process (journal.py)
    journal = Journal(storage.root / JOURNAL_DIR, name="pacs" if worker is None else f"pacs-w{worker}",
                      fsync=storage.fsync)
    events = EventLog(client, source="pacs", background=True, journal=journal)
    metrics.watch(events)  # associations by outcome, the event backlog (metrics.py)
    slots = AssociationSlots(shared, worker or 0, nodes=nodes) if shared is not None else None
    pacs = Pacs(registry, events, storage, seed, bind=ns.bind, shutdown_grace=ns.shutdown_grace,
                tls_folder=ns.tls_folder, slots=slots, worker=worker, shared_ports=ports,
                inherited_socket=listen_socket, shared_load=load, fastpath=ns.fastpath,  # type: ignore[arg-type]
                direct=ns.direct, pending=pending)
    reconciler = Reconciler(storage, registry, events, pacs._stop) if pacs.primary else None
    pacs.on_registry_back = reconciler and reconciler.request  # Redis back (or back empty): reconcile again
    try:
        pacs.start()
    except OSError as exc:
        print(f"pacs: cannot listen on {ns.bind}:{pacs.seed.port}: {exc.strerror or exc}. "
              "Fix: free the port or choose another (PACS_PORT, or the listener settings).", file=sys.stderr)
        return 1
    if ready_fd is not None:
        os.write(ready_fd, f"{pacs.port}\n".encode())
        os.close(ready_fd)
    if reconciler:  # one reconcile per start of the primary process, while associations are served
        reconciler.request("start", started)
    signal.sigwait(STOP)
    pacs.shutdown()
    events.close()
    return 0


def reindex(registry: Registry, storage: Storage) -> int:
    """Index every file in storage (the start-up reconcile's code, every file re-read;
    temporary files are left alone: the PACS may be running)."""
    try:
        report = reconcile(storage, registry, cutoff=None, rebuild=True)
    except RegistryUnavailable as exc:
        print(f"pacs reindex: {exc}", file=sys.stderr)
        return 1
    print(f"pacs reindex: {storage.root}: " + report.sentence("indexed"))
    return 0
