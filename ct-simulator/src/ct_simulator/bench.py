"""Benchmark: slices/s generated, written, and sent (optionally beside DCMTK storescu).

Not a test. ``ct-simulator bench`` prints the rates; with ``--host/--port``
it also sends to that peer (e.g. ``storescp`` started with TCP_NODELAY=1),
and with ``--storescu`` times DCMTK's storescu on the same files.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .iod import StudyPlan, iter_instances, write_part10
from .network import Link
from .phantom import Phantom
from .sender import SendOptions, send


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:7.0f} slices/s ({n} in {seconds:.2f} s)"


def run(slices: int = 300, rows: int = 512, cols: int = 512, link: Link | None = None, storescu: bool = False) -> int:
    plan = StudyPlan(slices=slices, rows=rows, cols=cols, seed=1)
    print(f"CT simulator bench: {slices} slices of {rows}x{cols}, 16-bit")
    phantom = Phantom(rows, cols, seed=1)
    t = time.perf_counter()
    for _ in phantom.series([i * plan.spacing for i in range(slices)]):
        pass
    print(f"  phantom only          {_rate(slices, time.perf_counter() - t)}")
    t = time.perf_counter()
    for _ in iter_instances(plan):
        pass
    print(f"  generated (datasets)  {_rate(slices, time.perf_counter() - t)}")
    folder = Path(tempfile.mkdtemp(prefix="ct-bench-"))
    try:
        t = time.perf_counter()
        for inst in iter_instances(plan):
            write_part10(inst.dataset, folder / f"{inst.number:05d}.dcm")
        print(f"  generated + written   {_rate(slices, time.perf_counter() - t)}")
        if link is not None:
            rep = send(plan, link, SendOptions())
            state = "ok" if rep.problem is None else rep.problem.message
            print(f"  generated + sent      {_rate(rep.sent, rep.elapsed)} to {link.called_aet}@{link.peer}: {state}")
            for n in (2,):
                rep = send(plan, link, SendOptions(associations=n))
                print(f"  ... {n} associations   {_rate(rep.sent, rep.elapsed)}")
            exe = shutil.which("storescu")
            if storescu and exe:
                files = sorted(str(p) for p in folder.glob("*.dcm"))
                t = time.perf_counter()
                proc = subprocess.run([exe, "-aet", link.calling_aet, "-aec", link.called_aet, link.host,
                                       str(link.port), *files], capture_output=True, text=True,
                                      env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})
                dt = time.perf_counter() - t
                state = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
                print(f"  DCMTK storescu (files) {_rate(len(files), dt)}: {state}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0
