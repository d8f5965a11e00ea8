"""``make bench``: the same workloads against our PACS, DCMTK storescp and Orthanc, one table.

Workloads (DCMTK storescu is the sender unless said otherwise; every receiver is started fresh,
with empty storage, for every measurement; ratios are to DCMTK measured in this same run):

1. single-association ingest: one storescu sends the whole series (``--slices`` CT images) in one
   association; images/s = images / storescu's wall time (process start to exit).
2. concurrent modalities: ``--modalities`` storescu processes at once, each its own AE title
   (each registered on our PACS) and its own study of ``--images-per-modality`` images;
   aggregate images/s = all images / wall time from the first start to the last exit.
   DCMTK's anchor is ``storescp --fork``.
3. association accept rate: ``--accept-clients`` processes, each looping for ``--accept-seconds``
   over a raw socket: pre-encoded A-ASSOCIATE-RQ (Verification), C-ECHO-RQ, A-RELEASE-RQ, each
   on a new TCP connection; completed associations/s (bench/echo_client.py).
4. simulator: generation rate (``ct-simulator generate``, files written, as it reports it) and
   send rate (``ct-simulator send`` generating on the fly -> storescp, sent / the send's elapsed
   time in its JSON report) vs DCMTK storescu -> storescp from the series' files (wall time as in
   1), the two interleaved, a fresh storescp for each.
5. ``tls``: the cost of DICOM TLS, each receiver plain and over TLS (accept rate, a full handshake
   per association; single-association ingest), storescp +tls beside the PACS's TLS port; see
   ``bench/tlsbench.py``. ``--only tls`` runs just this.
6.-8. the hostile-peer workloads (``halfopen``, ``claims``, ``bigingest``; ``--only hostile`` runs just
   these): accept rate and RSS under a half-open flood, RSS under huge PDU-length claims, a 1 GiB
   multi-frame instance; see ``bench/hostile.py``.

Then, unless ``--no-profile``, workloads 1 and 3 once more against our PACS with py-spy attached
(build/bench/pacs-profile.{svg,txt}, pacs-accept-profile.{svg,txt}; hot spots in the results).
Profiled runs are never in the table: the sampler costs the PACS some speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import hostile, tlsbench
from .procs import Children, dcmtk_env, poll
from .receivers import ROOT, NodeSpec, Orthanc, PacsReceiver, Receiver, Storescp, ensure, tool

SINGLE = "single-association ingest"
CONCURRENT = "concurrent modalities"
ACCEPT = "association accept rate"
SIM_GEN = "simulator generation"
SIM_SEND = "simulator send"

WORKLOADS = ("single", "concurrent", "accept", "sim", "profile", "tls", *hostile.WORKLOADS)
GROUPS = {"hostile": hostile.WORKLOADS, "classic": ("single", "concurrent", "accept", "sim", "profile"),
          "tls": ("tls",)}

SENDER_AE = "CT01"
ECHO_AE = "ECHO01"
ECHO_CLIENT = "bench.echo_client"  # run as a module from the repository root


# -- results -------------------------------------------------------------------------------------------
@dataclass
class Row:
    workload: str
    subject: str
    value: float | None  # None: not measured (see note)
    unit: str
    detail: str = ""
    ratio: float | None = None  # to ratio_to (DCMTK in this run unless said)
    target: str = ""
    met: bool | None = None
    note: str = ""
    runs: list[float] = field(default_factory=list)
    ratio_to: str = "DCMTK"
    extra: dict[str, object] = field(default_factory=dict)  # structured figures behind the detail


@dataclass
class Measure:
    value: float | None
    detail: str
    note: str = ""


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- the bench -----------------------------------------------------------------------------------------
class Bench:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.kids = Children()
        self.out = Path(ns.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.out / "failed", ignore_errors=True)  # from an earlier run
        self.work = Path(tempfile.mkdtemp(prefix="work-", dir=self.out))
        self.series: list[Path] = []
        self.studies: list[list[Path]] = []
        self.rows: list[Row] = []
        self.skipped: dict[str, str] = {}
        self.profiles: list[dict[str, object]] = []
        self.pacs_env = dict(kv.split("=", 1) for kv in ns.pacs_env)

    def say(self, msg: str) -> None:
        print(f"bench: {msg}", flush=True)

    # receivers ------------------------------------------------------------------------------------
    def receivers(self, workload: str) -> list[tuple[str, Callable[[], Receiver]]]:
        nodes = [NodeSpec(SENDER_AE), NodeSpec(ECHO_AE)] + [NodeSpec(m) for m in self.modality_aets()]
        fork = workload == CONCURRENT
        make: dict[str, Callable[[], Receiver]] = {
            "storescp": lambda: Storescp(self.kids, self.work, fork=fork),
            "pacs": lambda: PacsReceiver(self.kids, self.work, nodes, extra_env=self.pacs_env),
            "orthanc": lambda: Orthanc(self.kids, self.work),
        }
        return [(k, make[k]) for k in self.ns.receivers if k not in self.skipped]

    def modality_aets(self) -> list[str]:
        return [f"MOD{i:02d}" for i in range(1, self.ns.modalities + 1)]

    def label(self, key: str, workload: str) -> str:
        return {"storescp": "DCMTK storescp --fork" if workload == CONCURRENT else "DCMTK storescp",
                "pacs": "PACS (ours)", "orthanc": "Orthanc"}[key]

    # preparation ----------------------------------------------------------------------------------
    def check_tools(self) -> None:
        why = ensure("storescu", "dcmtk") or ensure("storescp", "dcmtk")
        if why:
            raise SystemExit(f"bench: DCMTK is required: {why}")
        if "orthanc" in self.ns.receivers:
            why = ensure("Orthanc", "orthanc")
            if why:
                self.skipped["orthanc"] = why
                self.say(f"Orthanc column skipped: {why}")

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
    def storescu(self, calling: str, recv: Receiver, files: list[Path], log: Path) -> subprocess.Popen[bytes]:
        argv = [tool("storescu"), "-aet", calling, "-aec", recv.ae_title, "-to", "30", "-ta", "30", "-td", "120",
                *recv.storescu_args, "127.0.0.1", str(recv.port), *map(str, files)]
        return self.kids.start(argv, log=log, env=dcmtk_env())

    def _stored(self, recv: Receiver, expected: int) -> int:
        try:
            return poll(lambda: (n := recv.stored()) >= expected and n, 10, "stored count")
        except TimeoutError:
            return recv.stored()

    def single(self, recv: Receiver) -> Measure:
        files = self.series
        log = recv.work / "storescu.txt"
        started = time.perf_counter()
        proc = self.storescu(SENDER_AE, recv, files, log)
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

    def sim_send(self, run: int = 1) -> Measure:
        with Storescp(self.kids, self.work) as recv:
            recv.start()
            m = self._sim_send(recv)
            self.keep_logs(recv, m, f"simulator-send-{run}")
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

    def keep_logs(self, recv: Receiver, m: Measure | None, name: str) -> None:
        """A failed measurement keeps the logs of its receiver and senders in build/bench/failed/."""
        if m is None or m.value is not None:  # interrupted, or measured
            return
        dest = self.out / "failed" / name.replace(" ", "-")
        dest.mkdir(parents=True, exist_ok=True)
        for log in recv.work.glob("*.txt"):
            shutil.copy(log, dest / log.name)
        self.say(f"  logs kept in {dest}")

    def simulator_send(self) -> None:
        """ct-simulator send -> storescp, interleaved with storescu -> storescp (files), fresh storescp each."""
        sim: list[Measure] = []
        dcmtk: list[Measure] = []
        for i in range(self.ns.repeat):
            run = f" (run {i + 1}/{self.ns.repeat})" if self.ns.repeat > 1 else ""
            self.say(f"{SIM_SEND}: ct-simulator send -> storescp{run}")
            sim.append(self.sim_send(i + 1))
            self.say(f"{SIM_SEND}: DCMTK storescu -> storescp{run}")
            with Storescp(self.kids, self.work) as recv:
                m: Measure | None = None
                try:
                    recv.start()
                    m = self.single(recv)
                finally:
                    self.keep_logs(recv, m, f"storescu-{i + 1}")
                dcmtk.append(m)
        for subject, ms in (("ct-simulator send -> storescp", sim), ("DCMTK storescu -> storescp", dcmtk)):
            values = [m.value for m in ms if m.value is not None]
            detail = ms[-1].detail if len(ms) == 1 else "runs " + ", ".join(f"{v:.0f}" for v in values) + \
                f"; last: {ms[-1].detail}"
            self.rows.append(Row(SIM_SEND, subject, _median(values), "images/s", detail,
                                 note="; ".join(dict.fromkeys(m.note for m in ms if m.note)), runs=values))

    def measure(self, workload: str, fn: Callable[[Receiver], Measure], unit: str) -> None:
        runs: dict[str, list[Measure]] = {}
        repeat = 1 if workload == ACCEPT else self.ns.repeat
        for i in range(repeat):
            for key, make in self.receivers(workload):
                recv = make()
                m: Measure | None = None
                self.say(f"{workload}: {self.label(key, workload)}" + (f" (run {i + 1}/{repeat})" if repeat > 1 else ""))
                try:
                    recv.start()
                    m = fn(recv)
                except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
                    m = Measure(None, "", f"{type(exc).__name__}: {exc}"[:400])
                finally:
                    self.keep_logs(recv, m, f"{workload}-{key}-{i + 1}")
                    recv.stop()
                assert m is not None
                runs.setdefault(key, []).append(m)
                if m.note:
                    self.say(f"  {m.note}")
        for key, ms in runs.items():
            values = [m.value for m in ms if m.value is not None]
            med = _median(values)
            detail = ms[-1].detail if len(ms) == 1 else "runs " + ", ".join(f"{v:.0f}" for v in values) + \
                f"; last: {ms[-1].detail}"
            self.rows.append(Row(workload, self.label(key, workload), med, unit, detail,
                                 note="; ".join(dict.fromkeys(m.note for m in ms if m.note)), runs=values))
        for key, why in self.skipped.items():
            if key in self.ns.receivers:
                self.rows.append(Row(workload, self.label(key, workload), None, unit, note=f"skipped: {why}"))

    # the run ---------------------------------------------------------------------------------------
    def run(self) -> int:
        self.check_tools()
        w = self.ns.workloads
        if set(w) & {"single", "concurrent", "sim", "profile", "tls"}:
            self.generate()
        if "single" in w:
            self.measure(SINGLE, self.single, "images/s")
        if "concurrent" in w:
            self.measure(CONCURRENT, self.concurrent, "images/s")
        if "accept" in w:
            self.measure(ACCEPT, self.accept, "assoc/s")
        if "sim" in w:
            self.simulator_send()
        tlsbench.TlsBench(self).run()
        if self.ns.profile and "pacs" in self.ns.receivers and "profile" in w:
            from .profile import profile_pacs

            self.profiles = [profile_pacs(self, SINGLE, self.single, "pacs-profile"),
                             profile_pacs(self, ACCEPT, self.accept, "pacs-accept-profile")]
        hostile.Hostile(self).run()
        order = [SINGLE, CONCURRENT, ACCEPT, SIM_GEN, SIM_SEND, *tlsbench.ORDER, *hostile.ORDER]
        self.rows.sort(key=lambda r: order.index(r.workload))  # stable: receivers keep their order
        self.judge()
        self.report()
        return 0

    def find(self, workload: str, subject: str) -> Row | None:
        return next((r for r in self.rows if r.workload == workload and r.subject == subject), None)

    def judge(self) -> None:
        def ratio(row: Row | None, base: Row | None) -> float | None:
            if row is None or base is None or row.value is None or not base.value:
                return None
            return row.value / base.value

        for r in self.rows:
            base = {SINGLE: "DCMTK storescp", CONCURRENT: "DCMTK storescp --fork", ACCEPT: "DCMTK storescp",
                    SIM_SEND: "DCMTK storescu -> storescp"}.get(r.workload)
            if base:
                r.ratio = ratio(r, self.find(r.workload, base))
        pacs = self.find(SINGLE, "PACS (ours)")
        if pacs:
            orth = ratio(pacs, self.find(SINGLE, "Orthanc"))
            pacs.target = "≥ 0.55× storescp and ≥ 1.3× Orthanc"
            checks = [pacs.ratio is not None and pacs.ratio >= 0.55]
            if orth is not None:
                checks.append(orth >= 1.3)
                pacs.detail += f"; {orth:.2f}× Orthanc"
            else:
                pacs.target += " (no Orthanc figure)"
            pacs.met = all(checks) if pacs.value is not None else False
        pacs = self.find(CONCURRENT, "PACS (ours)")
        if pacs:
            pacs.target = "≥ 0.55× storescp --fork"
            pacs.met = pacs.ratio is not None and pacs.ratio >= 0.55
        pacs = self.find(ACCEPT, "PACS (ours)")
        if pacs:
            pacs.target = "≥ 600/s (Redis check)"
            pacs.met = pacs.value is not None and pacs.value >= 600
        sim = self.find(SIM_SEND, "ct-simulator send -> storescp")
        if sim:
            sim.target = "≥ 0.5× storescu"
            sim.met = sim.ratio is not None and sim.ratio >= 0.5

    # output ----------------------------------------------------------------------------------------
    def report(self) -> None:
        from . import report

        env = report.environment(self)
        data = {"environment": env, "rows": [asdict(r) for r in self.rows], "skipped": self.skipped,
                "profiles": self.profiles}
        (self.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
        (self.out / "results.md").write_text(report.markdown(data))
        report.print_rich(data)
        self.say(f"results written to {self.out / 'results.json'} and {self.out / 'results.md'}")

    def close(self) -> None:
        self.kids.stop_all()
        shutil.rmtree(self.work, ignore_errors=True)


def _tail(path: Path, n: int = 3) -> str:
    if not path.exists():
        return ""
    return " | ".join(line.strip() for line in path.read_text(errors="replace").splitlines()[-n:])


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make bench", description="The PACS, DCMTK storescp and Orthanc side by side "
                                "(and the CT simulator beside DCMTK storescu); one table, ratios to DCMTK.")
    p.add_argument("--slices", type=int, default=_env_int("BENCH_SLICES", 300),
                   help="CT slices in the series (BENCH_SLICES, default 300)")
    p.add_argument("--rows", type=int, default=_env_int("BENCH_ROWS", 512))
    p.add_argument("--cols", type=int, default=_env_int("BENCH_COLS", 512))
    p.add_argument("--modalities", type=int, default=_env_int("BENCH_MODALITIES", 8))
    p.add_argument("--images-per-modality", type=int, default=_env_int("BENCH_MODALITY_IMAGES", 50))
    p.add_argument("--accept-seconds", type=float, default=float(os.environ.get("BENCH_ACCEPT_SECONDS") or 5))
    p.add_argument("--accept-clients", type=int, default=2)
    p.add_argument("--repeat", type=int, default=_env_int("BENCH_REPEAT", 5),
                   help="runs of the ingest workloads, median reported (BENCH_REPEAT, default 5)")
    p.add_argument("--receivers", default=os.environ.get("BENCH_RECEIVERS") or "storescp,pacs,orthanc",
                   help="comma-separated subset of storescp,pacs,orthanc")
    p.add_argument("--workloads", default=os.environ.get("BENCH_WORKLOADS") or ",".join(WORKLOADS),
                   help=f"comma-separated subset of {','.join(WORKLOADS)}, or a group: {', '.join(GROUPS)} "
                   "(BENCH_WORKLOADS)")
    p.add_argument("--only", choices=sorted(GROUPS), help="only this group of workloads (--only hostile)")
    hostile.add_arguments(p)
    p.add_argument("--no-profile", dest="profile", action="store_false", default=os.environ.get("BENCH_PROFILE") != "0",
                   help="skip the py-spy profile of the PACS")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--hotspots", type=int, default=15, help="functions listed in the profile summary")
    p.add_argument("--pacs-env", action="append", default=(os.environ.get("BENCH_PACS_ENV") or "").split(),
                   metavar="KEY=VALUE", help="extra environment for the PACS processes (BENCH_PACS_ENV)")
    p.add_argument("--out", default=str(ROOT / "build" / "bench"), help="results folder (default build/bench)")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    ns.receivers = [r.strip() for r in ns.receivers.split(",") if r.strip()]
    unknown = set(ns.receivers) - {"storescp", "pacs", "orthanc"}
    if unknown:
        parser().error(f"unknown receivers: {', '.join(sorted(unknown))}")
    if ns.only:
        ns.workloads = ",".join(GROUPS[ns.only])
    ns.workloads = [x for w in ns.workloads.split(",") if w.strip() for x in GROUPS.get(w.strip(), (w.strip(),))]
    if set(ns.workloads) - set(WORKLOADS):
        parser().error(f"unknown workloads: {', '.join(sorted(set(ns.workloads) - set(WORKLOADS)))}")
    if any("=" not in kv for kv in ns.pacs_env):
        parser().error("--pacs-env takes KEY=VALUE")

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    bench = Bench(ns)
    try:
        return bench.run()
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping what it started", file=sys.stderr, flush=True)
        return 130
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
