"""C-ECHO and C-STORE of generated studies, over one or more associations.

``send`` runs the plan's generator in a producer thread that generates and
encodes, in the transfer syntax the peer accepted, a few instances ahead of
the one on the wire (a bounded queue, shared by the associations); it never
holds a series in memory. Each association is negotiated, released or
aborted by pynetdicom; its C-STOREs go over the socket as pre-encoded
P-DATA-TF PDUs (``wire.StoreChannel``, which says why). Misbehaviour on
demand (an A-ABORT after N instances, a delay between instances) lives here;
misbehaviour that changes the objects lives in ``iod.StudyPlan``.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pynetdicom.presentation import PresentationContext, build_context

from dicomlab.dicom import VERIFICATION, uid_name
from dicomlab.ladder import MODALITY, PACS

from . import outcome
from .iod import Instance, StudyPlan, iter_instances
from .network import Link, associate, release
from .outcome import Problem, status_words
from .syntaxes import DEFAULT_PROPOSAL, UNCOMPRESSED, UnsupportedSyntax, can_encode, encode_bytes
from .wire import NoAnswer, PeerAborted, ProtocolError, StoreChannel

LOG = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (instances done, of which failed)


@dataclass
class SendOptions:
    """How to send: proposal, parallelism and misbehaviour on demand."""

    transfer_syntaxes: tuple[str, ...] = DEFAULT_PROPOSAL  # proposed, in order of preference
    associations: int = 1
    abort_after: int | None = None  # send an A-ABORT after this many instances
    delay: float = 0.0  # seconds between instances (a slow modality)
    record: bool = False  # keep one SendReport.instances row per C-STORE tried (--report-json)


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
    tls_session: str = ""  # the TLS version and cipher, when sent over DICOM TLS
    # with SendOptions.record: per C-STORE tried, in order: SOP Instance UID, study and series UIDs,
    # the status answered (None: no answer) and the SHA-256 of the dataset bytes sent
    instances: list[dict[str, Any]] = field(default_factory=list)
    ladders: list[dict[str, Any]] = field(default_factory=list)  # with Link.ladder: one per association

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
            "tls": self.tls_session or None,
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
    tls_session: str = ""

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


class _Item:
    """One generated instance and its encodings, made by the producer thread ahead of the sender."""

    __slots__ = ("instance", "encoded", "error")

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.encoded: dict[str, bytes] = {}
        self.error: Exception | None = None

    def data(self, syntax: str) -> bytes:
        if self.error is not None:
            raise self.error
        data = self.encoded.get(syntax)
        if data is None:  # not known to the producer yet, or another association took another syntax
            data = self.encoded[syntax] = encode_bytes(self.instance.dataset, syntax)
        return data


AHEAD = 4  # instances generated and encoded ahead of the one on the wire


class _Shared:
    """What the association threads share: the producer's queue, counters, the stop flag.

    A producer thread generates and encodes the next instances while the
    current one is on the wire: the sender thread spends its time in
    ``sendall``/``recv`` (the GIL released), the producer in the phantom and
    the encoder. The queue is bounded, so no more than ``AHEAD`` instances
    are alive beyond the ones being sent.
    """

    def __init__(self, instances: Iterator[Instance], report: SendReport, progress: Progress | None,
                 options: SendOptions) -> None:
        self.instances = instances
        self.report = report
        self.progress = progress
        self.options = options
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.done = 0
        self.syntax: str | None = None  # set by the first association: what the producer encodes for
        self.queue: queue.Queue[_Item | None] = queue.Queue(maxsize=AHEAD)
        self.producer = threading.Thread(target=self._produce, name="ct-generate", daemon=True)
        self.producer.start()

    def _produce(self) -> None:
        # Compressing changes the dataset (encode_for): with several associations, which might have
        # accepted different syntaxes, only the association that takes an instance compresses it.
        ahead_ok = self.options.associations == 1
        try:
            for inst in self.instances:
                if self.stop.is_set():
                    return
                item = _Item(inst)
                syntax = self.syntax
                if syntax is not None and (ahead_ok or syntax in UNCOMPRESSED):
                    try:
                        item.encoded[syntax] = encode_bytes(inst.dataset, syntax)
                    except (UnsupportedSyntax, RuntimeError, ValueError) as exc:
                        item.error = exc
                self.queue.put(item)
        except Exception as exc:  # a bug in generation: said, not a silently short send
            LOG.exception("generating the instances failed")
            self.fail(Problem("error", f"generating the instances failed: {type(exc).__name__}: {exc}"))
        finally:
            self.queue.put(None)  # the end, for whichever association asks first

    def next(self) -> _Item | None:
        if self.stop.is_set():
            return None
        item = self.queue.get()
        if item is None:
            self.queue.put(None)  # the other associations see the end too
        return item

    def close(self) -> None:
        """Stop the producer and wait for it: drain once so that a blocked ``put`` completes."""
        self.stop.set()
        while self.producer.is_alive():
            try:
                while True:
                    self.queue.get_nowait()
            except queue.Empty:
                pass
            self.producer.join(0.05)

    def fail(self, problem: Problem) -> None:
        with self.lock:
            if self.report.problem is None:
                self.report.problem = problem
        self.stop.set()

    def count(self, inst: Instance, status: int | None, data: bytes = b"") -> bool:
        """Record one answer (``data``: the dataset bytes sent); True when the simulator should abort
        now (on purpose)."""
        row = None
        if self.options.record:
            ds = inst.dataset
            row = {"sop_instance_uid": inst.sop_instance_uid, "study_uid": str(ds.StudyInstanceUID),
                   "series_uid": str(ds.SeriesInstanceUID), "status": status,
                   "sha256": hashlib.sha256(data).hexdigest()}
        with self.lock:
            r = self.report
            if row is not None:
                r.instances.append(row)
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


def _send_all(link: Link, sop_class: str, syntax: str, shared: _Shared,
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
    shared = _Shared(iter_instances(plan), report, progress, options)
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
