"""The producer side of ``sender.send``: a thread that generates and encodes the next
instances while the current one is on the wire, and what the association threads
share (its bounded queue, the report's counters, the stop flag)."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator

from .iod import Instance
from .outcome import Problem, status_words
from .reports import SendOptions, SendReport
from .syntaxes import UNCOMPRESSED, UnsupportedSyntax, encode_bytes

LOG = logging.getLogger("ct_simulator.sender")  # the logger these lines had before the split

Progress = Callable[[int, int], None]  # (instances done, of which failed)


class Item:
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


class Shared:
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
        self.queue: queue.Queue[Item | None] = queue.Queue(maxsize=AHEAD)
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
                item = Item(inst)
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

    def next(self) -> Item | None:
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
