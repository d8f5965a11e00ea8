"""What the command line prints for a PACS administrator: one line per fact, with what
came from the PACS escaped (``say``), the send and commitment summaries, ladders, the
progress bar, and the ``--report-json`` file (written whole or not at all)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from dicomlab.text import safe_text

from .iod import StudyPlan
from .network import Link
from .outcome import Problem
from .reports import EchoReport, SendReport


def say(line: str, file: Any = None) -> None:
    """One line for the terminal: what came from the PACS (statuses, AE titles, comments)
    is shown with its control characters escaped (``dicomlab.text.safe_text``)."""
    print(safe_text(line), file=file if file is not None else sys.stdout)


def print_problem(problem: Problem, out: Any) -> None:
    say(f"FAILED: {problem.message}", file=out)
    if problem.hint:
        say(f"  fix: {problem.hint}", file=out)


def print_echo(link: Link, rep: EchoReport) -> None:
    for note in rep.notes:
        say(f"note: {note}")
    if rep.problem is None:
        over = f" over {link.tls_session}" if link.tls_session else ""
        say(f"C-ECHO {link.calling_aet} -> {link.called_aet}@{link.peer}{over}: Success ({rep.elapsed_ms:.0f} ms).")
    else:
        print_problem(rep.problem, sys.stdout)


def print_ladders(ladders: list[dict[str, Any]]) -> None:
    """``--ladder``: each association as the simulator saw it (``dicomlab.ladder.to_text``)."""
    from dicomlab.ladder import to_text

    for ladder in ladders:
        print()
        print(to_text(ladder))


def progress_bar(total: int, mode: str, desc: str) -> Any:
    show = mode == "always" or (mode == "auto" and sys.stderr.isatty() and total > 1)
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


def send_summary(plan: StudyPlan, link: Link, rep: SendReport) -> None:
    for note in rep.notes:
        say(f"note: {note}")
    accepted = ", ".join(f"{k} as {v}" for k, v in rep.accepted.items()) or "nothing"
    rate = f" in {rep.elapsed:.1f} s ({rep.rate:.0f} images/s)" if rep.sent + rep.failed else ""
    over = f" over {rep.tls_session}" if rep.tls_session else ""
    say(f"{link.calling_aet} -> {link.called_aet}@{link.peer}{over}: {rep.sent} of {rep.total} CT images sent, "
         f"{rep.failed} failed{rate}; accepted: {accepted}; seed {plan.seed}.")
    if rep.warnings:
        say(f"  {rep.warnings} stored with a warning status.")
    for words, count in sorted(rep.statuses.items()):
        if not words.startswith("0x0000"):
            say(f"  {count} x {words}")
    if rep.problem is not None:
        print_problem(rep.problem, sys.stdout)


def commit_summary(c: Any) -> None:
    for note in c.notes:
        say(f"note: {note}")
    if c.report is not None:
        r = c.report
        say(f"storage commitment {c.transaction_uid}: {len(r.committed)} committed, {len(r.failed)} failed "
             f"(report from {r.calling_aet} at {r.peer}, answered 0x{r.answered:04X}).")
        for _cls, uid, reason in r.failed[:10]:
            say(f"  not committed: {uid} (failure reason 0x{reason:04X})")
    if c.problem is not None:
        print_problem(c.problem, sys.stdout)


def write_report(path: Path, data: dict[str, Any]) -> None:
    """Write the JSON report whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
