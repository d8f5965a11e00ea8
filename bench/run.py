"""``make bench``: the same workloads against our PACS, DCMTK storescp and Orthanc, one table.

Workloads (DCMTK storescu is the sender unless said otherwise; every receiver is started fresh,
with empty storage, for every measurement; ratios are to DCMTK measured in this same run):

1. single-association ingest: one storescu sends the whole series (``--slices`` CT images) in one
   association; images/s = images / storescu's wall time (process start to exit). Then the
   durable-write floor: the series written the PACS's way, no DICOM (bench/floor.py).
   ``nagle``: the same from a storescu without TCP_NODELAY (Nagle's algorithm on, as Debian
   builds DCMTK), the row "single association, Nagle on at the modality".
2. concurrent modalities: ``--modalities`` storescu processes at once, each its own AE title
   (each registered on our PACS) and its own study of ``--images-per-modality`` images;
   aggregate images/s = all images / wall time from the first start to the last exit.
   DCMTK's anchor is ``storescp --fork``. Then its durable-write floor, one writer per study.
3. association accept rate: ``--accept-clients`` processes, each looping for ``--accept-seconds``
   over a raw socket: pre-encoded A-ASSOCIATE-RQ (Verification), C-ECHO-RQ, A-RELEASE-RQ, each
   on a new TCP connection; completed associations/s (bench/echo_client.py).
4. simulator: generation rate (``ct-simulator generate``, files written, as it reports it) and
   send rate (``ct-simulator send`` generating on the fly -> storescp, sent / the send's elapsed
   time in its JSON report) vs DCMTK storescu -> storescp from the series' files (wall time as in
   1), the two interleaved, a fresh storescp for each. Then the same pair to a storescp that keeps
   Nagle's algorithm on (TCP_NODELAY=0, as Debian builds DCMTK): the row "simulator send, Nagle on
   at the receiver" (storescu itself with TCP_NODELAY=1: the receiver's answers are what wait).
5. ``tls``: the cost of DICOM TLS, each receiver plain and over TLS (accept rate, a full handshake
   per association; single-association ingest), storescp +tls beside the PACS's TLS port; see
   ``bench/tlsbench.py``. ``--only tls`` runs just this.
6.-8. the hostile-peer workloads (``halfopen``, ``claims``, ``bigingest``; ``--only hostile`` runs just
   these): accept rate and RSS under a half-open flood, RSS under huge PDU-length claims, a 1 GiB
   multi-frame instance; see ``bench/hostile.py``.

Then, unless ``--no-profile``, workloads 1 and 3 once more against our PACS with py-spy attached
(build/bench/pacs-profile.{svg,txt}, pacs-accept-profile.{svg,txt}; hot spots in the results).
Profiled runs are never in the table: the sampler costs the PACS some speed.

Where things live: ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from . import hostile, tlsbench
from .classic import ClassicWorkloads
from .procs import Children
from .receivers import ROOT, NodeSpec, Orthanc, PacsReceiver, Receiver, Storescp, ensure
from .results import (
    ACCEPT,
    CONCURRENT,
    ECHO_AE,
    NAGLE,
    SENDER_AE,
    SIM_GEN,
    SIM_NAGLE,
    SIM_SEND,
    SINGLE,
    Measure,
    Row,
    _median,
    judge,
)

WORKLOADS = ("single", "nagle", "concurrent", "accept", "sim", "profile", "tls", *hostile.WORKLOADS)
GROUPS = {"hostile": hostile.WORKLOADS, "classic": ("single", "nagle", "concurrent", "accept", "sim", "profile"),
          "tls": ("tls",)}


# -- the bench -----------------------------------------------------------------------------------------
class Bench(ClassicWorkloads):
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

    def keep_logs(self, recv: Receiver, m: Measure | None, name: str) -> None:
        """A failed measurement keeps the logs of its receiver and senders in build/bench/failed/."""
        if m is None or m.value is not None:  # interrupted, or measured
            return
        dest = self.out / "failed" / name.replace(" ", "-")
        dest.mkdir(parents=True, exist_ok=True)
        for log in recv.work.glob("*.txt"):
            shutil.copy(log, dest / log.name)
        self.say(f"  logs kept in {dest}")

    def measure_once(self, recv: Receiver, fn: Callable[[Receiver], Measure], name: str) -> Measure:
        """Start ``recv`` fresh, measure ``fn`` on it, keep its logs as ``name``, stop it; a failure
        to start or to measure is a Measure without a value that says why."""
        m: Measure | None = None
        try:
            recv.start()
            m = fn(recv)
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            m = Measure(None, "", f"{type(exc).__name__}: {exc}"[:400])
        finally:
            self.keep_logs(recv, m, name)
            recv.stop()
        if m.note:
            self.say(f"  {m.note}")
        return m

    def measure(self, workload: str, fn: Callable[[Receiver], Measure], unit: str) -> None:
        runs: dict[str, list[Measure]] = {}
        repeat = 1 if workload == ACCEPT else self.ns.repeat
        for i in range(repeat):
            for key, make in self.receivers(workload):
                self.say(f"{workload}: {self.label(key, workload)}" + (f" (run {i + 1}/{repeat})" if repeat > 1 else ""))
                runs.setdefault(key, []).append(self.measure_once(make(), fn, f"{workload}-{key}-{i + 1}"))
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
        if set(w) & {"single", "nagle", "concurrent", "sim", "profile", "tls"}:
            self.generate()
        if "single" in w:
            self.measure(SINGLE, self.single, "images/s")
            from . import floor

            self.say("the durable-write floor (the PACS's write path alone, on this disk)")
            self.rows.append(floor.measure(self.work, self.series, self.ns.repeat))
        if "nagle" in w:
            self.measure(NAGLE, self.single_nagle, "images/s")
        if "concurrent" in w:
            self.measure(CONCURRENT, self.concurrent, "images/s")
            from . import floor

            self.say("the durable-write floor with one writer per modality at once")
            self.rows.append(floor.measure_concurrent(self.work, self.studies, self.ns.repeat))
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
        order = [SINGLE, NAGLE, CONCURRENT, ACCEPT, SIM_GEN, SIM_SEND, SIM_NAGLE, *tlsbench.ORDER, *hostile.ORDER]
        self.rows.sort(key=lambda r: order.index(r.workload))  # stable: receivers keep their order
        judge(self.rows)
        from . import floor

        floor.annotate(self.rows)
        self.report()
        return 0

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
