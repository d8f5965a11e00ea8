"""C-ECHO and C-STORE of generated studies, over one or more associations.

``send`` pulls instances from the plan's generator (one at a time, shared by
the associations under a lock), encodes each in the transfer syntax the peer
accepted and sends it; it never holds a series in memory. Misbehaviour on
demand (an A-ABORT after N instances, a delay between instances) lives here;
misbehaviour that changes the objects lives in ``iod.StudyPlan``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pynetdicom.presentation import PresentationContext, build_context

from dicomlab.dicom import VERIFICATION, uid_name

from . import outcome
from .iod import Instance, StudyPlan, iter_instances
from .network import Link, associate, release
from .outcome import Problem, status_words
from .syntaxes import DEFAULT_PROPOSAL, UnsupportedSyntax, can_encode, encode_for

LOG = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (instances done, of which failed)


@dataclass
class SendOptions:
    """How to send: proposal, parallelism and misbehaviour on demand."""

    transfer_syntaxes: tuple[str, ...] = DEFAULT_PROPOSAL  # proposed, in order of preference
    associations: int = 1
    abort_after: int | None = None  # send an A-ABORT after this many instances
    delay: float = 0.0  # seconds between instances (a slow modality)


@dataclass
class SendReport:
    total: int
    sent: int = 0
    failed: int = 0
    warnings: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # SOP class -> transfer syntax
    elapsed: float = 0.0
    first_failure: str = ""

    @property
    def rate(self) -> float:
        return (self.sent + self.failed) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.problem is None and self.failed == 0 and self.sent == self.total

    @property
    def exit_code(self) -> int:
        if self.problem is not None:
            return self.problem.exit_code
        if self.failed:
            return outcome.EXIT_INSTANCE_FAILED
        return outcome.EXIT_OK

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total, "sent": self.sent, "failed": self.failed, "warnings": self.warnings,
            "statuses": dict(self.statuses), "elapsed_s": round(self.elapsed, 3),
            "rate_per_s": round(self.rate, 1), "accepted": self.accepted, "notes": self.notes,
            "problem": None if self.problem is None else {
                "kind": self.problem.kind, "message": self.problem.message, "hint": self.problem.hint,
                **self.problem.detail},
            "exit_code": self.exit_code,
        }


@dataclass
class EchoReport:
    ok: bool
    status: int | None = None
    elapsed_ms: float = 0.0
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.problem is not None:
            return self.problem.exit_code
        return outcome.EXIT_OK if self.ok else outcome.EXIT_INSTANCE_FAILED


def echo(link: Link) -> EchoReport:
    """One association, one C-ECHO, release."""
    started = time.monotonic()
    assoc, problem = associate(link, [build_context(VERIFICATION)])
    if assoc is None:
        return EchoReport(False, problem=problem, notes=link.notes,
                          elapsed_ms=(time.monotonic() - started) * 1000)
    try:
        rsp = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            release(assoc)
    elapsed = (time.monotonic() - started) * 1000
    status = int(rsp.Status) if rsp and "Status" in rsp else None
    if status is None:
        return EchoReport(False, None, elapsed, outcome.aborted(link.peer, "the peer", "before answering the C-ECHO"),
                          link.notes)
    if status != 0x0000:
        return EchoReport(False, status, elapsed,
                          Problem("instance-failed", f"C-ECHO answered {status_words(status, 'echo')}."), link.notes)
    return EchoReport(True, status, elapsed, notes=link.notes)


def store_contexts(sop_class: str, syntaxes: tuple[str, ...]) -> list[PresentationContext]:
    return [build_context(sop_class, list(syntaxes))]


class _Shared:
    """What the association threads share: the generator, counters, the stop flag."""

    def __init__(self, instances: Iterator[Instance], report: SendReport, progress: Progress | None,
                 options: SendOptions) -> None:
        self.instances = instances
        self.report = report
        self.progress = progress
        self.options = options
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.done = 0

    def next(self) -> Instance | None:
        with self.lock:
            if self.stop.is_set():
                return None
            return next(self.instances, None)

    def fail(self, problem: Problem) -> None:
        with self.lock:
            if self.report.problem is None:
                self.report.problem = problem
        self.stop.set()

    def count(self, inst: Instance, status: int | None) -> bool:
        """Record one answer; True when the simulator should abort now (on purpose)."""
        with self.lock:
            r = self.report
            if status is None:
                r.failed += 1
                r.statuses["no response"] += 1
                what = "no response"
            elif status == 0x0000:
                r.sent += 1
                r.statuses["0x0000 Success"] += 1
                what = ""
            elif (status >> 12) == 0xB or status in (0x0107, 0x0116):
                r.sent += 1
                r.warnings += 1
                r.statuses[status_words(status)] += 1
                what = ""
            else:
                r.failed += 1
                what = status_words(status)
                r.statuses[what] += 1
            if what and not r.first_failure:
                r.first_failure = (f"instance {inst.number} of study {inst.study} series {inst.series} "
                                   f"({inst.sop_instance_uid}): {what}")
            self.done += 1
            done, failed = self.done, r.failed
            limit = self.options.abort_after
            abort = limit is not None and done >= limit
        if self.progress:
            self.progress(done, failed)
        return abort


def _no_answer(assoc: Any, link: Link, number: int, waited: float) -> Problem:
    """Why a C-STORE got no response: the peer aborted, or our DIMSE timeout fired.

    pynetdicom marks a peer's abort on its reactor thread, so ``is_established``
    may still be True here; the ACSE provider knows at once.
    """
    peer_aborted = assoc.acse.is_aborted("a-abort") or assoc.acse.is_aborted("a-p-abort")
    if not peer_aborted and waited >= link.dimse_timeout * 0.9:
        return outcome.response_timed_out(link.peer, link.dimse_timeout, f"the C-STORE of instance {number}")
    return outcome.aborted(link.peer, "the peer", f"while sending instance {number}")


def _run_association(link: Link, sop_class: str, shared: _Shared) -> None:
    assoc, problem = associate(link, store_contexts(sop_class, shared.options.transfer_syntaxes))
    if assoc is None:
        shared.fail(problem or Problem("error", "the association failed"))
        return
    cx = next((c for c in assoc.accepted_contexts if c.abstract_syntax == sop_class), None)
    if cx is None:  # pragma: no cover - associate() reports no context first
        release(assoc)
        shared.fail(outcome.no_context(link.peer, [(sop_class, list(shared.options.transfer_syntaxes), 3)]))
        return
    syntax = str(cx.transfer_syntax[0])
    with shared.lock:
        shared.report.accepted[uid_name(sop_class)] = uid_name(syntax)
    if not can_encode(syntax):
        release(assoc)
        shared.fail(Problem("cannot-encode", f"{link.peer} accepted {uid_name(syntax)}, which the simulator "
                            "cannot encode.", "Propose another transfer syntax (--transfer-syntax)."))
        return
    first = True
    try:
        while True:
            if not first and shared.options.delay:
                time.sleep(shared.options.delay)  # misbehaviour on demand: a slow modality
            inst = shared.next()
            if inst is None:
                break
            first = False
            try:
                ds = encode_for(inst.dataset, syntax)
            except (UnsupportedSyntax, RuntimeError, ValueError) as exc:
                shared.fail(Problem("cannot-encode", f"cannot encode instance {inst.number} in "
                                    f"{uid_name(syntax)}: {exc}"))
                break
            sent_at = time.monotonic()
            try:
                rsp = assoc.send_c_store(ds) if assoc.is_established else None
            except RuntimeError:  # pynetdicom: the association ended under us (a peer's A-ABORT)
                rsp = None
            status = int(rsp.Status) if rsp is not None and "Status" in rsp else None
            if status is None:  # no answer: pynetdicom has aborted or seen an abort; say which
                shared.count(inst, None)
                shared.fail(_no_answer(assoc, link, inst.number, time.monotonic() - sent_at))
                return
            if shared.count(inst, status):
                assoc.abort()
                shared.fail(outcome.aborted(link.peer, "the simulator",
                                            f"on purpose after {shared.done} instances (--abort-after)"))
                return
    finally:
        if assoc.is_established:
            release(assoc)


def send(plan: StudyPlan, link: Link, options: SendOptions | None = None,
         progress: Progress | None = None) -> SendReport:
    """Send every instance of ``plan`` to ``link``; the report names any failure."""
    options = options or SendOptions()
    report = SendReport(total=plan.total)
    shared = _Shared(iter_instances(plan), report, progress, options)
    started = time.monotonic()
    n = max(1, min(options.associations, plan.total))
    links = [Link(**{**link.__dict__, "notes": []}) for _ in range(n)]
    if n == 1:
        _run_association(links[0], plan.sop_class_uid, shared)
    else:
        threads = [threading.Thread(target=_run_association, args=(lk, plan.sop_class_uid, shared),
                                    name=f"ct-send-{i}", daemon=True) for i, lk in enumerate(links)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    report.elapsed = time.monotonic() - started
    report.notes = list(dict.fromkeys(note for lk in links for note in lk.notes))
    if report.problem is None and report.failed:
        report.problem = outcome.instance_failed(report.failed, report.sent + report.failed, report.first_failure)
    return report
