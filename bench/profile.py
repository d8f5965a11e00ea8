"""py-spy on the PACS while it ingests: a flame graph (SVG) and a hot-spot table from raw stacks.

Two samplers attach to the PACS process and its worker processes (``--subprocesses``: the PACS
may fork several listeners) with ``--nonblocking`` (they read its memory without stopping it): one writes ``pacs-profile.svg``, one writes collapsed stacks (``--format raw``)
that ``hotspots`` sums per function: *self* (the function is the leaf: it was running) and
*total* (it is anywhere on the stack). py-spy leaves out idle threads (blocked in a system call),
so the shares are of the time the process spent on a CPU or waiting for the GIL.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .procs import Children, poll

if TYPE_CHECKING:
    from collections.abc import Callable

    from .receivers import Receiver
    from .results import Measure
    from .run import Bench

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    import sys

    venv = Path(sys.executable).parent / "py-spy"
    return str(venv) if venv.exists() else shutil.which("py-spy")


class Recorder:
    def __init__(self, kids: Children, pid: int, out: Path, rate: int = 200, name: str = "pacs-profile") -> None:
        self.kids, self.pid, self.out, self.rate = kids, pid, out, rate
        self.svg = out / f"{name}.svg"
        self.raw = out / f"{name}.txt"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> "Recorder":
        exe = py_spy()
        if exe is None:
            raise FileNotFoundError("py-spy (pip install py-spy)")
        self.out.mkdir(parents=True, exist_ok=True)
        for fmt, path in (("flamegraph", self.svg), ("raw", self.raw)):
            log = self.out / f"{self.raw.stem}-py-spy-{fmt}.log"
            log.unlink(missing_ok=True)
            proc = self.kids.start([exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--nonblocking",
                                    "--subprocesses",
                                    "--format", fmt, "-o", str(path)], log=log)
            self.procs.append(proc)
            poll(lambda log=log: "Sampling process" in _read(log), 20, f"py-spy ({fmt}) to attach",
                 alive=lambda proc=proc, log=log: None if proc.poll() is None else _read(log)[-500:])
        return self

    def stop(self) -> None:
        for proc in self.procs:
            self.kids.stop(proc, sig=signal.SIGINT, timeout=30)  # SIGINT: py-spy writes its file
        self.procs = []


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Hotspot:
    function: str
    self_pct: float
    total_pct: float


_PLUMBING = {"Thread._bootstrap (threading.py)", "Thread._bootstrap_inner (threading.py)", "Thread.run (threading.py)",
             "<module> (pacs/__main__.py)", "_run_module_as_main (python3.11/runpy.py)",
             "_run_code (python3.11/runpy.py)"}  # on every stack: no information


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    short = "/".join(Path(file).parts[-2:]) if file else ""
    return f"{m.group('func')} ({short})"


def _line_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m or not m.group("line"):
        return frame.strip()
    return f"{m.group('func')} ({'/'.join(Path(m.group('file')).parts[-2:])}:{m.group('line')})"


def hotspots(raw: Path, top: int = 15) -> tuple[int, list[Hotspot], list[Hotspot], list[Hotspot]]:
    """(samples, top functions by self share, by total share, top source lines by self share)."""
    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    line_c: Counter[str] = Counter()
    samples = 0
    for line in _read(raw).splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith(("process ", "thread ")) and f not in _PLUMBING]
        if not frames:
            continue
        samples += n
        self_c[frames[-1]] += n
        line_c[_line_name(stack.split(";")[-1])] += n
        for f in set(frames):
            total_c[f] += n
    if not samples:
        return 0, [], [], []

    def table(c: Counter[str]) -> list[Hotspot]:
        return [Hotspot(f, 100 * self_c[f] / samples, 100 * total_c[f] / samples) for f, _ in c.most_common(top)]

    lines = [Hotspot(f, 100 * n / samples, 100 * n / samples) for f, n in line_c.most_common(top)]
    return samples, table(self_c), table(total_c), lines


def profile_pacs(bench: "Bench", workload: str, fn: "Callable[[Receiver], Measure]", name: str) -> dict[str, object]:
    """One more run of ``workload`` against a fresh PACS with py-spy attached; the hot spots."""
    from .receivers import NodeSpec, PacsReceiver
    from .results import ECHO_AE, SENDER_AE

    if py_spy() is None:
        return {"workload": workload, "skipped": "py-spy not installed (pip install py-spy)"}
    bench.say(f"profiling the PACS under the {workload} workload (py-spy)")
    nodes = [NodeSpec(SENDER_AE), NodeSpec(ECHO_AE)]
    recv = PacsReceiver(bench.kids, bench.work, nodes, extra_env=bench.pacs_env)
    rec: Recorder | None = None
    try:
        recv.start()
        rec = Recorder(bench.kids, recv.pid, bench.out, rate=bench.ns.profile_rate, name=name).start()
        m = fn(recv)
        rec.stop()
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        return {"workload": workload, "skipped": f"{type(exc).__name__}: {exc}"[:400]}
    finally:
        if rec is not None:
            rec.stop()
        recv.stop()
    samples, by_self, by_total, lines = hotspots(rec.raw, top=bench.ns.hotspots)
    return {"workload": workload, "svg": str(rec.svg), "raw": str(rec.raw), "samples": samples,
            "rate_hz": bench.ns.profile_rate, "result_under_profiler": m.value,
            "detail": "; ".join(x for x in (m.detail, m.note) if x),
            "self": [asdict(h) for h in by_self], "total": [asdict(h) for h in by_total],
            "lines": [asdict(h) for h in lines]}
