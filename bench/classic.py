"""The classic workloads of ``make bench`` (1.-4. in ``bench/run.py``'s docstring): the series they send,
single-association ingest, concurrent modalities, the association accept rate and the simulator's send.

A mixin of ``Bench`` (``bench/run.py``): it uses the bench's ``ns``, ``kids``, ``work``, ``rows``,
``say``, ``keep_logs`` and ``modality_aets``; the hostile, TLS and profile workloads call its
``storescu``, ``single``, ``accept`` and ``_stored`` through the bench.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .procs import Children, dcmtk_env, poll
from .receivers import ROOT, Receiver, Storescp, tool
from .results import (
    ECHO_AE,
    ECHO_CLIENT,
    SENDER_AE,
    SIM_GEN,
    SIM_NAGLE,
    SIM_SEND,
    SIM_TO_NAGLE,
    STORESCU_TO_NAGLE,
    Measure,
    Row,
    _median,
    _tail,
)

if TYPE_CHECKING:
    from collections.abc import Callable


class ClassicWorkloads:
    ns: argparse.Namespace
    kids: Children
    work: Path
    rows: list[Row]
    series: list[Path]
    studies: list[list[Path]]
    say: Callable[[str], None]
    keep_logs: Callable[[Receiver, Measure | None, str], None]
    modality_aets: Callable[[], list[str]]

    def simulator(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ct_simulator", *args]

    def sim_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PACS_HOST", "PACS_PORT")}
        return {**env, "PYTHONUNBUFFERED": "1"}

    def generate(self) -> None:
        ns = self.ns
        self.say(f"generating the series: {ns.slices} CT slices of {ns.rows}x{ns.cols} (ct-simulator generate)")
        series_dir = self.work / "series"
        log = self.work / "generate.txt"
        started = time.perf_counter()
        proc = self.kids.start(self.simulator("generate", "--slices", str(ns.slices), "--rows", str(ns.rows), "--cols",
                                              str(ns.cols), "--seed", "1", "--out", str(series_dir),
                                              "--progress", "never"), log=log, env=self.sim_env())
        rc = proc.wait()
        wall = time.perf_counter() - started
        text = log.read_text(errors="replace")
        if rc != 0:
            raise SystemExit(f"bench: ct-simulator generate failed ({rc}):\n{text}")
        self.series = sorted(series_dir.rglob("*.dcm"))
        m = re.search(r"\(([\d.]+) images/s\)", text)
        rate = float(m.group(1)) if m else len(self.series) / wall
        mb = sum(p.stat().st_size for p in self.series) / 1e6
        self.rows.append(Row(SIM_GEN, "ct-simulator generate", rate, "slices/s",
                             f"{len(self.series)} files, {mb:.0f} MB written ({wall:.1f} s with start-up)",
                             note="" if m else "rate from wall time"))
        n, per = ns.modalities, ns.images_per_modality
        self.say(f"generating {n} studies of {per} slices for the concurrent workload")
        conc_dir = self.work / "concurrent"
        proc = self.kids.start(self.simulator("generate", "--studies", str(n), "--slices", str(per), "--rows",
                                              str(ns.rows), "--cols", str(ns.cols), "--seed", "2", "--out",
                                              str(conc_dir), "--progress", "never"),
                               log=self.work / "generate2.txt", env=self.sim_env())
        if proc.wait() != 0:
            raise SystemExit("bench: ct-simulator generate (concurrent set) failed: "
                             + (self.work / "generate2.txt").read_text(errors="replace"))
        self.studies = [sorted(d.rglob("*.dcm")) for d in sorted(conc_dir.iterdir()) if d.is_dir()]

    # workloads ------------------------------------------------------------------------------------
    def storescu(self, calling: str, recv: Receiver, files: list[Path], log: Path,
                 nagle: bool = False) -> subprocess.Popen[bytes]:
        """``nagle``: storescu as Debian builds it runs without TCP_NODELAY (Nagle's algorithm on);
        the other workloads set it, as a modality tuned for DICOM does."""
        argv = [tool("storescu"), "-aet", calling, "-aec", recv.ae_title, "-to", "30", "-ta", "30", "-td", "120",
                *recv.storescu_args, "127.0.0.1", str(recv.port), *map(str, files)]
        return self.kids.start(argv, log=log, env=dcmtk_env(TCP_NODELAY="0") if nagle else dcmtk_env())

    def _stored(self, recv: Receiver, expected: int) -> int:
        try:
            return poll(lambda: (n := recv.stored()) >= expected and n, 10, "stored count")
        except TimeoutError:
            return recv.stored()

    def single_nagle(self, recv: Receiver) -> Measure:
        """The single-association ingest from a storescu that keeps Nagle's algorithm on: each
        C-STORE's last segment waits for the receiver's ACK, so a receiver that delays its ACKs
        costs the modality up to 40 ms per image."""
        return self.single(recv, nagle=True)

    def single(self, recv: Receiver, nagle: bool = False) -> Measure:
        files = self.series
        log = recv.work / "storescu.txt"
        started = time.perf_counter()
        proc = self.storescu(SENDER_AE, recv, files, log, nagle=nagle)
        rc = proc.wait(timeout=600)
        elapsed = time.perf_counter() - started
        stored = self._stored(recv, len(files))
        detail = f"{stored}/{len(files)} stored in {elapsed:.2f} s"
        if rc != 0 or stored < len(files):
            return Measure(None, detail, f"storescu exit {rc}: {_tail(log)}")
        return Measure(len(files) / elapsed, detail)

    def concurrent(self, recv: Receiver) -> Measure:
        aets = self.modality_aets()
        started = time.perf_counter()
        procs = [self.storescu(ae, recv, files, recv.work / f"storescu-{ae}.txt") for ae, files in zip(aets, self.studies, strict=True)]
        rcs = [p.wait(timeout=600) for p in procs]
        elapsed = time.perf_counter() - started
        total = sum(len(s) for s in self.studies)
        stored = self._stored(recv, total)
        detail = f"{len(procs)}x{len(self.studies[0])}: {stored}/{total} stored in {elapsed:.2f} s"
        bad = [(ae, rc) for ae, rc in zip(aets, rcs, strict=True) if rc != 0]
        if bad or stored < total:
            ae = bad[0][0] if bad else aets[0]
            return Measure(None, detail, f"storescu exits {bad}: {_tail(recv.work / f'storescu-{ae}.txt')}")
        return Measure(total / elapsed, detail)

    def accept(self, recv: Receiver) -> Measure:
        argv = [sys.executable, "-m", ECHO_CLIENT, "--port", str(recv.port), "--calling", ECHO_AE, "--called",
                recv.ae_title, "--seconds", str(self.ns.accept_seconds), *recv.echo_args]
        procs = [self.kids.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
                 for _ in range(self.ns.accept_clients)]
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != b"ready":
                raise RuntimeError("an echo client did not start")
        for p in procs:  # all at once
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=self.ns.accept_seconds + 60)
            self.kids.procs.remove(p) if p in self.kids.procs else None
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        ok = sum(int(r["ok"]) for r in results)
        elapsed = max(float(r["elapsed"]) for r in results)
        failed: dict[str, int] = {}
        for r in results:
            for k, v in r["failed"].items():
                failed[k] = failed.get(k, 0) + v
        detail = f"{ok} in {elapsed:.1f} s by {len(procs)} clients"
        note = ""
        if failed:
            note = "failed: " + ", ".join(f"{k} x{v}" for k, v in sorted(failed.items()))
        if ok == 0:
            return Measure(None, detail, note or "no association completed")
        return Measure(ok / elapsed, detail, note)

    def sim_send(self, run: int = 1, nagle: bool = False) -> Measure:
        with Storescp(self.kids, self.work, nagle=nagle) as recv:
            recv.start()
            m = self._sim_send(recv)
            self.keep_logs(recv, m, f"simulator-send{'-nagle' if nagle else ''}-{run}")
            return m

    def _sim_send(self, recv: Storescp) -> Measure:
        log = recv.work / "send.txt"
        ns = self.ns
        proc = self.kids.start(self.simulator(
            "send", "--slices", str(ns.slices), "--rows", str(ns.rows), "--cols", str(ns.cols), "--seed", "1",
            "--host", "127.0.0.1", "--port", str(recv.port), "--calling-aet", SENDER_AE, "--called-aet",
            recv.ae_title, "--json", "--progress", "never"), log=log, env=self.sim_env())
        rc = proc.wait(timeout=600)
        text = log.read_text(errors="replace")
        try:
            rep = json.loads(text[text.index("{"):text.rindex("}") + 1])
        except ValueError:
            return Measure(None, "", f"ct-simulator send exit {rc}: {text[-300:]}")
        sent, elapsed = int(rep.get("sent", 0)), float(rep.get("elapsed_s", 0))
        stored = self._stored(recv, ns.slices)
        detail = f"{stored}/{ns.slices} stored, {elapsed:.2f} s in the send (generation included)"
        if rc != 0 or sent < ns.slices or not elapsed:
            return Measure(None, detail, f"ct-simulator send exit {rc}: {rep.get('problem') or text[-300:]}")
        return Measure(sent / elapsed, detail)

    def simulator_send(self) -> None:
        """ct-simulator send -> storescp, interleaved with storescu -> storescp (files), fresh storescp
        each; then the same pair to a storescp that keeps Nagle on (row SIM_NAGLE)."""
        for workload, nagle, subjects in ((SIM_SEND, False, ("ct-simulator send -> storescp",
                                                             "DCMTK storescu -> storescp")),
                                          (SIM_NAGLE, True, (SIM_TO_NAGLE, STORESCU_TO_NAGLE))):
            sim: list[Measure] = []
            dcmtk: list[Measure] = []
            for i in range(self.ns.repeat):
                run = f" (run {i + 1}/{self.ns.repeat})" if self.ns.repeat > 1 else ""
                self.say(f"{workload}: {subjects[0]}{run}")
                sim.append(self.sim_send(i + 1, nagle))
                self.say(f"{workload}: {subjects[1]}{run}")
                with Storescp(self.kids, self.work, nagle=nagle) as recv:
                    m: Measure | None = None
                    try:
                        recv.start()
                        m = self.single(recv)
                    finally:
                        self.keep_logs(recv, m, f"storescu{'-nagle' if nagle else ''}-{i + 1}")
                    dcmtk.append(m)
            for subject, ms in zip(subjects, (sim, dcmtk), strict=True):
                values = [m.value for m in ms if m.value is not None]
                detail = ms[-1].detail if len(ms) == 1 else "runs " + ", ".join(f"{v:.0f}" for v in values) + \
                    f"; last: {ms[-1].detail}"
                self.rows.append(Row(workload, subject, _median(values), "images/s", detail,
                                     note="; ".join(dict.fromkeys(m.note for m in ms if m.note)), runs=values))
