"""C-ECHO and C-STORE of generated studies, over one or more associations.

``send`` runs the plan's generator in a producer thread (``producer.Shared``) that
generates and encodes, in the transfer syntax the peer accepted, a few instances ahead of
the one on the wire (a bounded queue, shared by the associations); it never
holds a series in memory. Each association is negotiated, released or
aborted by pynetdicom; its C-STOREs go over the socket as pre-encoded
P-DATA-TF PDUs (``wire.StoreChannel``, which says why). Misbehaviour on
demand (an A-ABORT after N instances, a delay between instances) lives here;
misbehaviour that changes the objects lives in ``iod.StudyPlan``. What it is told and
what it reports: ``reports``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom.presentation import PresentationContext, build_context

from dicomlab.dicom import VERIFICATION, uid_name
from dicomlab.ladder import MODALITY, PACS

from . import outcome
from .iod import StudyPlan, iter_instances
from .network import Link, associate, release
from .outcome import Problem, status_words
from .producer import Progress, Shared
from .reports import EchoReport, SendOptions, SendReport
from .syntaxes import UnsupportedSyntax, can_encode
from .wire import NoAnswer, PeerAborted, ProtocolError, StoreChannel

__all__ = ["EchoReport", "Progress", "SendOptions", "SendReport", "echo", "send", "store_contexts"]


def echo(link: Link) -> EchoReport:
    """One association, one C-ECHO, release."""
    started = time.monotonic()
    assoc, problem = associate(link, [build_context(VERIFICATION)])
    if assoc is None:
        return EchoReport(False, problem=problem, notes=link.notes,
                          elapsed_ms=(time.monotonic() - started) * 1000)
    sent, rsp = time.time(), None
    try:
        rsp = assoc.send_c_echo()
    finally:
        status = int(rsp.Status) if rsp and "Status" in rsp else None
        if link.trace is not None:
            link.trace.echo(sent, status)
        if assoc.is_established:
            release(assoc)
            if link.trace is not None:
                link.trace.released()
    elapsed = (time.monotonic() - started) * 1000
    if status is None:
        return EchoReport(False, None, elapsed, outcome.aborted(link.peer, "the peer", "before answering the C-ECHO"),
                          link.notes)
    if status != 0x0000:
        return EchoReport(False, status, elapsed,
                          Problem("instance-failed", f"C-ECHO answered {status_words(status, 'echo')}."), link.notes)
    return EchoReport(True, status, elapsed, notes=link.notes, tls_session=link.tls_session)


def store_contexts(sop_class: str, syntaxes: tuple[str, ...]) -> list[PresentationContext]:
    return [build_context(sop_class, list(syntaxes))]


def _run_association(link: Link, sop_class: str, shared: Shared) -> None:
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
        if shared.syntax is None:
            shared.syntax = syntax
    if not can_encode(syntax):
        release(assoc)
        shared.fail(Problem("cannot-encode", f"{link.peer} accepted {uid_name(syntax)}, which the simulator "
                            "cannot encode.", "Propose another transfer syntax (--transfer-syntax)."))
        return
    end = release  # how pynetdicom ends the association once it has the socket back
    try:
        with StoreChannel(assoc, int(cx.context_id or 1), link.dimse_timeout) as channel:
            end = _send_all(link, sop_class, syntax, shared, channel)
    except PeerAborted as exc:  # the association ended before the first instance
        end = _abort
        shared.fail(outcome.aborted(link.peer, "the peer", f"before the first instance ({exc.words()})"))
    finally:
        end(assoc)
        if link.trace is not None:
            problem = shared.report.problem
            if end is release:
                link.trace.released()
            else:
                peer = problem is not None and problem.kind == "aborted" and "aborted by the peer" in problem.message
                link.trace.aborted(PACS if peer else MODALITY, problem.message if problem else "aborted by the "
                                   "simulator", problem.hint if problem else "")


def _abort(assoc: Any) -> None:
    if assoc.is_established:
        assoc.abort()


def _send_all(link: Link, sop_class: str, syntax: str, shared: Shared,
              channel: StoreChannel) -> Callable[[Any], None]:
    """C-STORE every instance the producer has; how to end the association (release or abort)."""
    first = True
    while True:
        if not first and shared.options.delay:
            time.sleep(shared.options.delay)  # misbehaviour on demand: a slow modality
        item = shared.next()
        if item is None:
            return release
        first = False
        inst = item.instance
        try:
            data = item.data(syntax)
        except (UnsupportedSyntax, RuntimeError, ValueError) as exc:
            shared.fail(Problem("cannot-encode", f"cannot encode instance {inst.number} in "
                                f"{uid_name(syntax)}: {exc}"))
            return release
        sent = time.time()
        try:
            answer = channel.store(sop_class, inst.sop_instance_uid, data)
            if link.trace is not None:
                link.trace.store(sent, answer.status)
        except NoAnswer:
            if link.trace is not None:
                link.trace.store(sent, None)
            shared.count(inst, None, data)
            shared.fail(outcome.response_timed_out(link.peer, link.dimse_timeout,
                                                   f"the C-STORE of instance {inst.number}"))
            return _abort
        except PeerAborted as exc:
            if link.trace is not None:
                link.trace.store(sent, None)
            shared.count(inst, None, data)
            shared.fail(outcome.aborted(link.peer, "the peer", f"while sending instance {inst.number} "
                                        f"({exc.words()})"))
            return _abort
        except ProtocolError as exc:
            if link.trace is not None:
                link.trace.store(sent, None)
            shared.count(inst, None, data)
            shared.fail(Problem("aborted", f"{link.peer} broke the protocol while answering instance "
                                f"{inst.number}: {exc}; the simulator aborted the association.",
                                "Read the PACS's log for this association.", {"peer": link.peer}))
            return _abort
        if shared.count(inst, answer.status, data):
            shared.fail(outcome.aborted(link.peer, "the simulator",
                                        f"on purpose after {shared.done} instances (--abort-after)"))
            return _abort


def send(plan: StudyPlan, link: Link, options: SendOptions | None = None,
         progress: Progress | None = None) -> SendReport:
    """Send every instance of ``plan`` to ``link``; the report names any failure."""
    options = options or SendOptions()
    report = SendReport(total=plan.total)
    started = time.monotonic()
    shared = Shared(iter_instances(plan), report, progress, options)
    n = max(1, min(options.associations, plan.total))
    links = [Link(**{**link.__dict__, "notes": []}) for _ in range(n)]
    try:
        if n == 1:
            _run_association(links[0], plan.sop_class_uid, shared)
        else:
            threads = [threading.Thread(target=_run_association, args=(lk, plan.sop_class_uid, shared),
                                        name=f"ct-send-{i}", daemon=True) for i, lk in enumerate(links)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        shared.close()
    report.elapsed = time.monotonic() - started
    report.notes = list(dict.fromkeys(note for lk in links for note in lk.notes))
    report.ladders = [lk.trace.build() for lk in links if lk.trace is not None]
    report.tls_session = next((lk.tls_session for lk in links if lk.tls_session), "")
    if report.problem is None and report.failed:
        report.problem = outcome.instance_failed(report.failed, report.sent + report.failed, report.first_failure)
    return report
