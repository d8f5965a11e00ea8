"""``make fuzz``: structural fuzzing of a live PACS, in each engine, with health checks per batch.

    python -m fuzz.run [--cases 10000] [--engines socket,loops] [--seed 1] [--batch 200]
    python -m fuzz.run --case 1:8663 [--case ...] [--engines ...]    (one case again, by seed:index)

For each engine: a fresh redis-server and PACS process, an authorized node (FUZZ @
127.0.0.1), a warm-up, then batches of cases (fuzz/cases.py) played on real sockets.
After each batch the checks of fuzz/target.py run; a failing check stops that engine
and saves the batch under build/fuzz/ (``--replay FILE`` plays a saved file again).
Tracebacks in the PACS's log are findings too: the batch is replayed case by case
to name the input that caused each new one, saved under build/fuzz/findings/.
Per-case observations (a silent close, no answer to a complete conversation) are
counted per input class. The summary goes to stdout and build/fuzz/summary.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import cases as c
from . import wire as w
from .target import ECHO_SECONDS, ENGINES, Resources, Target, tracebacks

OUT = Path("build/fuzz")
ENDINGS = ("A-RELEASE-RP", "A-ABORT", "A-ASSOCIATE-RJ")
WARM_ASSOCIATIONS = 64  # the PACS keeps up to 64 idle threads per pool (threadreuse.ThreadReuse.KEEP_IDLE)


def _sent_abort(case: c.Case) -> bool:
    """An A-ABORT among the PDUs we sent: the peer closing without a word is then right (PS3.8 AA-2, AA-3)."""
    return any(kind == 0x07 for kind, _ in w.parse_pdus(b"".join(case.chunks))[0])


def observe(case: c.Case, out: w.Outcome) -> str:
    """'' for an unremarkable outcome, else what was odd about it."""
    if out.end.startswith("connect-"):
        return out.end
    if case.close != "after":
        return ""
    if out.end == "peer-closed" and not out.last.startswith(ENDINGS) and not _sent_abort(case):
        return "silent-close" + ("" if case.notes.get("complete") == "yes" else " (incomplete input)")
    if (out.end == "timeout" and case.notes.get("complete") == "yes" and case.chunks[-1] == w.RELEASE_RQ
            and out.sent_all):  # (case 1:8663: the release was never sent, the PACS rightly waited for the request)
        return "no-answer-to-release"
    if out.end == "reset":
        return "reset-by-pacs"
    return ""


@dataclass
class Report:
    engine: str
    cases: int = 0
    seconds: float = 0.0
    batches: int = 0
    failures: list[dict] = field(default_factory=list)  # failed checks (the run of this engine stopped)
    findings: list[dict] = field(default_factory=list)  # distinct tracebacks, with the case that caused each
    observations: dict[str, int] = field(default_factory=dict)  # "class: what" -> count
    examples: dict[str, str] = field(default_factory=dict)  # "class: what" -> case ident
    outcomes: dict[str, int] = field(default_factory=dict)  # "class: last PDU [end]" -> count
    start: str = ""
    end: str = ""

    @property
    def per_1000(self) -> float:
        return self.seconds / self.cases * 1000 if self.cases else 0.0


QUIET = 1.0  # seconds of silence from the PACS before a case ends as "timeout" (0.3 s gave false
             # "no answer" on a loaded machine: the same cases were answered within 0.1 s when replayed)


def play(target: Target, case: c.Case) -> w.Outcome:
    return w.exchange("127.0.0.1", target.port, case.chunks, close=case.close, accept_after=case.accept_after,
                      quiet=QUIET)


def attribute(target: Target, batch: list[c.Case], known: set[str]) -> list[tuple[str, c.Case | None]]:
    """Play the batch again one case at a time; the cases that print a traceback not seen before."""
    found = []
    target.new_log()
    for case in batch:
        play(target, case)
        time.sleep(0.05)
        for sig in tracebacks(target.new_log()):
            if sig not in known:
                known.add(sig)
                found.append((sig, case))
    return found


def save(path: Path, batch: list[c.Case], **extra: object) -> str:
    c.save_cases(path, batch, **extra)
    return str(path)


def warm_up(target: Target, known: set[str]) -> Resources:
    """Fill the thread pools and caches a PACS keeps, then take the baseline the bounds are relative to."""
    target.hold(WARM_ASSOCIATIONS)
    target.echo()
    target.file_problems(set())
    known.update(tracebacks(target.new_log()))
    time.sleep(1.0)
    return target.resources()


def tally(rep: Report, batch: list[c.Case], outcomes: list[w.Outcome]) -> set[str]:
    """Count each outcome and observation of a batch; the SOP Instance UIDs answered Success."""
    successes = set()
    for case, out in zip(batch, outcomes, strict=True):
        successes.update(uid for f, s, uid in out.statuses if f == 0x8001 and s == 0)
        key = f"{case.klass}: {out.last or '-'} [{out.end}]"
        rep.outcomes[key] = rep.outcomes.get(key, 0) + 1
        what = observe(case, out)
        if what:
            k2 = f"{case.klass}: {what}"
            rep.observations[k2] = rep.observations.get(k2, 0) + 1
            rep.examples.setdefault(k2, f"{case.ident} {case.name}")
    return successes


def check(target: Target, start: Resources, successes: set[str], echo_limit: float) -> list[str]:
    """The checks after a batch: alive, the authorized echo in time, the bounds, the files."""
    problems = []
    if not target.alive():
        problems.append("the PACS process exited")
    else:
        ok, seconds, what = target.echo_in_time(echo_limit)
        if not ok:
            problems.append(f"authorized C-ECHO not answered within {echo_limit:g} s ({seconds:.2f} s: {what})")
        now, over = target.settled(start)
        if now.pids != start.pids:
            problems.append(f"listener processes changed: {start.pids} -> {now.pids} (one died)")
        problems += over
        problems += target.file_problems(successes)
    return problems


def record_findings(rep: Report, target: Target, batch: list[c.Case], known: set[str], out_dir: Path) -> None:
    """New tracebacks in the PACS's log: replay the batch case by case to name the input behind each."""
    sigs = tracebacks(target.new_log())
    new = [s for s in sigs if s not in known]
    if new and target.alive():
        for sig, case in attribute(target, batch, known):
            digest = hashlib.sha1(sig.encode()).hexdigest()[:10]
            path = out_dir / "findings" / f"{rep.engine}-{digest}.json"
            save(path, [case] if case else batch, engine=rep.engine, traceback=sig)
            rep.findings.append({"traceback": sig, "class": case.klass if case else "?",
                                 "case": f"{case.ident} {case.name}" if case else "?", "saved": str(path)})
        known.update(new)
        target.file_problems(set())  # the replay stored again: a new snapshot


def record_failure(rep: Report, batch_no: int, batch: list[c.Case], problems: list[str], out_dir: Path) -> None:
    path = out_dir / f"{rep.engine}-batch-{batch_no:03d}.json"
    rep.failures.append({"batch": batch_no, "problems": problems,
                         "classes": dict(Counter(k.klass for k in batch)),
                         "saved": save(path, batch, engine=rep.engine, problems=problems)})


def restart(target: Target) -> Resources:
    """A new PACS process after a crash (its crash is on record); a new baseline."""
    target.restart()
    target.hold(WARM_ASSOCIATIONS)
    target.new_log()
    target.file_problems(set())
    return target.resources()


def run_engine(engine: str, total: int, seed: int, batch_size: int = 200, concurrency: int = 4,
               out_dir: Path = OUT, workers: int = 1, classes: list[str] | None = None,
               progress: bool | None = True, cases: list[c.Case] | None = None, keep_going: bool = False,
               echo_limit: float = ECHO_SECONDS) -> Report:
    """Fuzz one engine; ``cases`` (a saved batch) instead of generated ones when given.
    (Tests pass a generous ``echo_limit``: they check that the echo is answered, not how fast.)"""
    rep = Report(engine)
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{engine}-"))
    target = Target(engine, work, workers=workers).start()
    known: set[str] = set()
    bar = None
    try:
        start = warm_up(target, known)
        rep.start = start.text()
        todo = len(cases) if cases is not None else total
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=todo, desc=f"fuzz {engine}", unit="case", dynamic_ncols=True)
        t0 = time.monotonic()
        index = 0
        batch_no = 0
        while index < todo:
            n = min(batch_size, todo - index)
            batch = cases[index:index + n] if cases is not None else [
                c.generate(seed, i, classes) for i in range(index, index + n)]
            with ThreadPoolExecutor(concurrency) as pool:
                outcomes = list(pool.map(lambda k: play(target, k), batch))
            index += n
            batch_no += 1
            rep.cases += n
            successes = tally(rep, batch, outcomes)
            if bar:
                bar.update(n)
            elif progress is None:
                print(f"fuzz {engine}: {index} cases, {time.monotonic() - t0:.0f} s, PACS {target.resources().text()}",
                      flush=True)
            problems = check(target, start, successes, echo_limit)
            record_findings(rep, target, batch, known, out_dir)
            if problems:
                record_failure(rep, batch_no, batch, problems, out_dir)
                if not keep_going:
                    break
                if not target.alive():  # go on with a new PACS process (its crash is on record)
                    start = restart(target)
                # otherwise the bounds stay relative to the start of the run: growth that stays is counted
                # in every later batch, as it should be
        rep.batches = batch_no
        rep.seconds = time.monotonic() - t0
        if target.alive():
            rep.end = target.resources().text()
    finally:
        if bar:
            bar.close()
        target.stop()
        shutil.rmtree(work, ignore_errors=True)
    return rep


def print_report(reports: list[Report]) -> None:
    for r in reports:
        print(f"\n== engine {r.engine}: {r.cases} cases in {r.batches} batches, {r.seconds:.0f} s "
              f"({r.per_1000:.1f} s per 1,000 cases); PACS at start {r.start}, at end {r.end or '?'}")
        for f in r.failures:
            print(f"  CHECK FAILED after batch {f['batch']}: {'; '.join(f['problems'])} (saved {f['saved']})")
        for f in r.findings:
            print(f"  traceback in the PACS log: {f['traceback']}  <- {f['class']} case {f['case']} ({f['saved']})")
        for k, v in sorted(r.observations.items()):
            print(f"  {v:6d} x {k}   e.g. case {r.examples[k]}")
        if not (r.failures or r.findings or r.observations):
            print("  nothing found")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=int(os.environ.get("FUZZ_CASES") or 10_000), help="cases per engine")
    p.add_argument("--engines", default=os.environ.get("FUZZ_ENGINES") or "socket,loops",
                   help=f"comma-separated, of {', '.join(ENGINES)} (stock needs PACS_FASTPATH support)")
    p.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED") or 1))
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4, help="cases played at the same time")
    p.add_argument("--workers", type=int, default=1, help="PACS listener processes (PACS_WORKERS)")
    p.add_argument("--classes", default="", help=f"only these input classes ({', '.join(c.CLASSES)})")
    p.add_argument("--keep-going", action="store_true",
                   help="after a failed check, note it and go on (new baseline; a new PACS if it died)")
    p.add_argument("--replay", type=Path, help="play a saved batch (build/fuzz/*.json) instead")
    p.add_argument("--case", action="append", default=[], metavar="SEED:INDEX",
                   help="play only the generated case SEED:INDEX (e.g. 1:8663, as the report names it); repeatable")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--no-progress", action="store_true", help="a line per batch instead of a progress bar")
    a = p.parse_args(argv)
    saved = c.load_cases(a.replay) if a.replay else None
    if a.case:
        try:
            saved = (saved or []) + [c.generate(int(k.split(":")[0]), int(k.split(":")[1])) for k in a.case]
        except (ValueError, IndexError):
            p.error("--case takes SEED:INDEX, e.g. 1:8663")
    reports = []
    for engine in [e.strip() for e in a.engines.split(",") if e.strip()]:
        if engine not in ENGINES:
            p.error(f"unknown engine {engine!r}")
        reports.append(run_engine(engine, a.cases, a.seed, a.batch, a.concurrency, a.out, a.workers,
                                  [k for k in a.classes.split(",") if k] or None, None if a.no_progress else True, saved,
                                  a.keep_going))
    print_report(reports)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.json").write_text(json.dumps([asdict(r) | {"per_1000_s": r.per_1000} for r in reports],
                                                   indent=1))
    return 1 if any(r.failures for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
