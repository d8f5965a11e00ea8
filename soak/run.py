"""``python -m soak``: the crash soak. Real redis-server, the real PACS (supervisor + listener
workers) on a tmpfs it can fill and remount, DCMTK storescu and CT simulator modalities, faults
on a schedule; at the end every acknowledged instance must be on disk, byte-equal, and in
the study index. Summary in build/soak/ (summary.json, summary.md, the PACS log)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dicomlab.registry import Registry, connect
from dicomlab.settings import Node
from dicomlab.waiting import poll_until

from . import verify
from .faults import KINDS, FaultInjector
from .modalities import Ledger, SimulatorModality, StorescuModality, make_pool
from .parts import Pacs, Redis, Volume

ROOT = Path(__file__).resolve().parent.parent
EXIT_LOST, EXIT_SETUP, EXIT_HARNESS = 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    p.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS") or 600),
                   help="seconds of load and faults (default $SOAK_SECONDS, else 600)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "soak", help="where the summary goes")
    p.add_argument("--storescu", type=int, default=3, help="DCMTK storescu modalities (default 3)")
    p.add_argument("--simulators", type=int, default=2, help="CT simulator modalities (default 2)")
    p.add_argument("--batch", type=int, default=25, help="instances per storescu run / simulator study (25)")
    p.add_argument("--rows", type=int, default=32, help="rows and columns of the images (32: small and fast)")
    p.add_argument("--workers", type=int, default=2, help="PACS_WORKERS (default 2)")
    p.add_argument("--faults", default=",".join(KINDS), help=f"fault kinds, in turn (default: all: {','.join(KINDS)})")
    p.add_argument("--fault-interval", type=float, default=None,
                   help="seconds between faults (default: 20, shorter so that a short soak has each kind once)")
    p.add_argument("--hold", type=float, default=4.0, help="seconds a Redis outage, full or read-only disk lasts (4)")
    p.add_argument("--tmpfs-mb", type=int, default=1024,
                   help="size of the storage tmpfs in MiB (1024: each instance takes two pages, its file and its SOP mark)")
    p.add_argument("--redis-appendfsync", choices=["always", "everysec", "no-aof"], default="always",
                   help="Redis persistence: AOF with this fsync policy (default always: nothing Redis answered is "
                        "lost, as docker-compose.yml; everysec: can lose ~2 s of answered writes on a kill, which the PACS "
                        "must restore from its files), "
                        "or none (README.md)")
    p.add_argument("--drain", type=float, default=60, help="seconds modalities may resend after the load (60)")
    p.add_argument("--settle", type=float, default=60, help="seconds the PACS may take to recover the index (60)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault victims and the simulator studies")
    p.add_argument("--keep", action="store_true", help="keep the soak's temporary folder (unmounted)")
    return p


class Soak:
    def __init__(self, a: argparse.Namespace, console: Console) -> None:
        self.a = a
        self.console = console
        self.work = Path(tempfile.mkdtemp(prefix="dicomlab-soak-"))
        self.volume = Volume(self.work / "volume", a.tmpfs_mb)
        self.storage = self.volume.mount / "storage"
        self.redis = Redis(self.work / "redis", a.redis_appendfsync)
        self.pacs: Pacs | None = None
        self.ledger = Ledger()
        self.names = [f"SCU{i + 1}" for i in range(a.storescu)] + [f"SIM{i + 1}" for i in range(a.simulators)]
        self.recovery: list[str] = []
        self.not_indexed: dict[str, Any] = {}  # settle(what) -> acknowledged instances not in the index
        self.problems: list[str] = []
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def register(self) -> None:
        client = connect(self.redis.url)
        try:
            registry = Registry(client)
            have = registry.node_titles()
            for name in self.names:
                if name not in have:
                    registry.add_node(Node(ae_title=name, host="127.0.0.1", port=104,
                                           services=["C-ECHO", "C-STORE"]))
        finally:
            client.close()

    # -- phases -----------------------------------------------------------------------------
    def setup(self) -> list[Path]:
        self.volume.setup()
        self.storage.mkdir()
        self.redis.start()
        self.register()
        self.pacs = Pacs(self.redis.url, self.storage, self.work / "pacs.log", workers=self.a.workers)
        self.pacs.start()
        simulator = str(Path(sys.executable).parent / "ct-simulator")
        return make_pool(self.work / "pool", 50, self.a.rows, simulator)

    def load(self, pool: list[Path]) -> tuple[list[Any], FaultInjector]:
        assert self.pacs is not None
        a = self.a
        self.finish, self.stop = threading.Event(), threading.Event()
        common = dict(ledger=self.ledger, port=self.pacs.port, called=self.pacs.ae_title, finish=self.finish,
                      stop=self.stop)
        simulator = str(Path(sys.executable).parent / "ct-simulator")
        mods: list[Any] = []
        for i, name in enumerate(self.names):
            workdir = self.work / "modalities" / name
            if name.startswith("SCU"):
                mods.append(StorescuModality(name, workdir=workdir, pool=pool, batch=a.batch, **common))
            else:
                mods.append(SimulatorModality(name, workdir=workdir, exe=simulator, seed=a.seed * 1_000_000 + i * 10_000,
                                              slices=a.batch, rows=a.rows, **common))
        kinds = tuple(k.strip() for k in a.faults.split(",") if k.strip())
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
        interval = (a.fault_interval or min(20.0, a.seconds / (len(kinds) + 1))) if kinds else a.seconds * 2
        until = time.monotonic() + a.seconds - 2 * a.hold
        faults = FaultInjector(self.pacs, self.redis, self.volume, kinds, interval, until, self.say,
                               self.register if a.redis_appendfsync == "no-aof" else (lambda: None),
                               hold=a.hold, seed=a.seed)
        for m in mods:
            m.start()
        faults.start()
        return mods, faults

    def watch(self, faults: FaultInjector) -> None:
        seconds = self.a.seconds
        columns = [TextColumn("soak"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.description}")]
        started = time.monotonic()
        last_line = started
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task("", total=seconds)
            while (elapsed := time.monotonic() - started) < seconds:
                acked, failed = self.ledger.counts()
                text = f"acknowledged {acked}, answers not Success {failed}, faults {len(faults.log)}"
                bar.update(task, completed=elapsed, description=text)
                if not self.console.is_terminal and time.monotonic() - last_line >= 30:
                    self.say(f"[{elapsed:7.1f} s] {text}")
                    last_line = time.monotonic()
                time.sleep(0.5)
            bar.update(task, completed=seconds)

    def heal(self) -> None:
        """Whatever a fault left behind (the injector finishes each fault, this is belt and braces)."""
        assert self.pacs is not None
        self.volume.unfill()
        self.volume.remount("rw")
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.problems.append("Redis was down after the faults stopped; restarted it.")
            self.redis.start()
        if self.pacs.proc is None or self.pacs.proc.poll() is not None:
            self.problems.append("The PACS supervisor was not running after the faults stopped; restarted it.")
            self.pacs.start()

    def drain(self, mods: list[Any]) -> None:
        self.finish.set()
        t0 = time.monotonic()
        poll_until(lambda: not any(m.is_alive() for m in mods), self.a.drain, interval=0.2)
        self.stop.set()
        for m in mods:
            m.join(120)
            if m.is_alive():
                self.problems.append(f"modality {m.ae} did not stop within 120 s")
            if m.error:
                self.problems.append(f"modality {m.ae} stopped on an error: {m.error}")
        pending = sum(m.pending_at_stop for m in mods)
        self.recovery.append(f"modalities stopped {time.monotonic() - t0:.1f} s after the load ended; "
                             f"{pending} instance(s) still unacknowledged when they stopped")

    def settle(self, what: str) -> None:
        """Wait (bounded) until the index has every acknowledged instance or stops changing."""
        client = self.redis.client()
        acked = {u: r for u, r in self.ledger.records.items() if r.acked}
        t0 = time.monotonic()
        last, since = None, t0
        try:
            while True:
                try:
                    missing = len(verify.not_indexed(client, acked))
                except Exception as exc:  # Redis loading: keep waiting
                    missing = f"? ({exc})"
                if missing != last:
                    last, since = missing, time.monotonic()
                if missing == 0 or time.monotonic() - since > 10 or time.monotonic() - t0 > self.a.settle:
                    break
                time.sleep(0.5)
        finally:
            client.close()
        self.not_indexed[what] = last
        self.recovery.append(f"{what}: {last} acknowledged instance(s) not in the index after "
                             f"{time.monotonic() - t0:.1f} s")

    def restart_pacs(self) -> None:
        assert self.pacs is not None
        rc = self.pacs.stop()
        stuck = self.pacs.reap_orphans(self.pacs.shutdown_grace + 10)
        if stuck:
            self.problems.append(f"workers of a killed supervisor still running after its grace: {stuck} (SIGKILLed)")
        t0 = time.monotonic()
        self.pacs.start()
        self.recovery.append(f"PACS stopped with SIGTERM (exit {rc}) and started again in {time.monotonic() - t0:.1f} s "
                             "(start-up recovery)")

    def teardown(self) -> None:
        out = self.a.out
        out.mkdir(parents=True, exist_ok=True)
        if self.pacs is not None:
            self.pacs.stop()
            self.pacs.reap_orphans(self.pacs.shutdown_grace + 10)
        self.redis.stop()
        for src, name in ((self.work / "pacs.log", "pacs.log"), (self.redis.log, "redis.log")):
            if src.exists():
                shutil.copyfile(src, out / name)
        self.volume.teardown()
        if not self.a.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    console = Console(stderr=False)
    if os.geteuid() != 0:
        console.print("soak: needs root (it mounts a tmpfs for the storage, fills it and remounts it read-only).")
        return EXIT_SETUP
    if shutil.which("storescu") is None and a.storescu:
        console.print("soak: storescu not found: install Debian's dcmtk (make system-deps).")
        return EXIT_SETUP
    soak = Soak(a, console)
    try:
        pool = soak.setup()
        assert soak.pacs is not None
        soak.say(f"soak: {a.seconds:g} s, modalities {', '.join(soak.names)} -> PACS 127.0.0.1:{soak.pacs.port} "
                 f"({a.workers} workers), storage {soak.storage} (tmpfs {a.tmpfs_mb} MiB), Redis appendfsync "
                 f"{a.redis_appendfsync}; work folder {soak.work}")
        mods, faults = soak.load(pool)
        soak.watch(faults)
        faults.stop_event.set()
        faults.join()
        if faults.error:
            soak.problems.append(f"the fault injector stopped: {faults.error}")
        soak.problems += [f"fault {f['kind']} at {f['t_s']} s: {f['detail']}" for f in faults.log if not f["ok"]]
        soak.heal()
        soak.drain(mods)
        soak.settle("after the load")
        soak.restart_pacs()
        soak.settle("after the PACS restart")
        client = soak.redis.client()
        try:
            result = verify.check(soak.ledger, soak.storage, client)
        finally:
            client.close()
        lost = result["missing_on_disk_uids"] + result["different_on_disk_uids"]
        result["lost_on_disk_by_fault"] = verify.by_fault(lost, soak.work / "pacs.log", faults.log)
        result["lost_from_index_by_fault"] = verify.by_fault(result["lost_from_index_uids"], soak.work / "pacs.log",
                                                             faults.log)
        summary = summarize(soak, result, faults)
    except (RuntimeError, ValueError, OSError) as exc:
        console.print(f"soak: {type(exc).__name__}: {exc}", markup=False)
        soak.teardown()
        return EXIT_SETUP
    except BaseException:
        soak.teardown()
        raise
    soak.teardown()
    json_path, md_path = verify.write(summary, a.out)
    print(md_path.read_text(), flush=True)
    console.print(f"summary: {json_path} and {md_path}; PACS log: {a.out / 'pacs.log'}")
    if not summary["passed"]:
        return EXIT_LOST
    return EXIT_HARNESS if summary["problems"] else 0


def summarize(soak: Soak, result: dict[str, Any], faults: FaultInjector) -> dict[str, Any]:
    a = soak.a
    fault_counts: dict[str, int] = {}
    for f in faults.log:
        fault_counts[f["kind"]] = fault_counts.get(f["kind"], 0) + 1
    return {
        "started_at": soak.started_at,
        "passed": result["lost_on_disk"] == 0 and result["lost_from_index"] == 0,
        "config": {"seconds": a.seconds, "modalities": len(soak.names), "modality_names": soak.names,
                   "batch": a.batch, "rows": a.rows, "pacs_workers": a.workers,
                   "redis_appendfsync": a.redis_appendfsync, "hold_s": a.hold, "tmpfs_mb": a.tmpfs_mb,
                   "fault_interval_s": faults.interval, "seed": a.seed},
        "result": result,
        "fault_counts": fault_counts,
        "faults": faults.log,
        "recovery": soak.recovery,
        # before the PACS restart: what the running PACS recovered by itself (journal, reconcile on Redis's return)
        "not_indexed_before_restart": soak.not_indexed.get("after the load"),
        "pacs_starts": soak.pacs.starts if soak.pacs else 0,
        "problems": soak.problems,
    }
