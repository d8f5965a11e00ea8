"""One case against a running target, judged on its own: the regression tests' oracle.

``judge`` plays the case and returns what went wrong, in words (empty: nothing):
a traceback in the PACS's log, an association that ended without a final PDU
(A-RELEASE-RP, A-ABORT or A-ASSOCIATE-RJ) although the input was complete, a file
stored without a Success answer, or the PACS no longer answering a C-ECHO.
"""

from __future__ import annotations

import time

from . import cases as c
from .run import observe, play
from .target import Target, tracebacks


def judge(target: Target, case: c.Case) -> list[str]:
    target.new_log()
    target.file_problems(set())
    out = play(target, case)
    time.sleep(0.2)  # what the PACS prints after closing
    problems = [f"traceback in the PACS log: {sig}" for sig in tracebacks(target.new_log())]
    what = observe(case, out)
    if what and "incomplete input" not in what:
        problems.append(f"{what}: {out.summary()}")
    successes = {uid for f, s, uid in out.statuses if f == 0x8001 and s == 0}
    problems += target.file_problems(successes)
    if not target.alive():
        problems.append("the PACS process exited")
    else:
        ok, seconds, what = target.echo()
        if not ok:
            problems.append(f"no C-ECHO answer afterwards ({seconds:.2f} s: {what})")
    return problems
