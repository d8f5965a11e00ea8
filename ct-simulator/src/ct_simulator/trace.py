"""``send --ladder``: the association ladder (``dicomlab.ladder``) as the simulator saw it.

The modality's own view, not the PACS's events: it needs no Redis or admin API,
works against any PACS (DCMTK, Orthanc, a hospital's), and says what went over
this end of the wire -- when the TCP connection opened, the contexts proposed,
the AC or RJ as received, each C-STORE's round trip (RQ sent to RSP received),
the release or abort. The PACS's view of the same association is
``GET /api/associations/<id>`` on the admin API (its events name it by id).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dicomlab.ladder import MODALITY, PACS, LadderBuilder

from .outcome import Problem, status_words


class Trace:
    """Filled by ``network.associate`` and ``sender``; thread-safe enough for one association each."""

    def __init__(self, calling: str = "", called: str = "", peer: str = "") -> None:
        self.b = LadderBuilder(MODALITY)
        self.b.calling, self.b.called, self.b.pacs_address = calling, called, peer
        self.b.measured("round trip, RQ sent to RSP received")
        self.lock = threading.Lock()
        self.connected: float | None = None
        self.answered: float | None = None
        self.ended = False

    # -- from pynetdicom's notifications (network.associate) ------------------------------
    def on_open(self, calling: str, called: str, peer: str) -> None:
        self.connected = time.time()
        self.b.connect(self.connected, calling, called, "this host", peer)

    def on_request(self, primitive: Any) -> None:
        try:
            contexts = [(int(cx.context_id or 0), str(cx.abstract_syntax), [str(t) for t in cx.transfer_syntax])
                        for cx in primitive.presentation_context_definition_list]
            impl = str(primitive.implementation_class_uid or "")
            self.b.request(time.time(), contexts, int(primitive.maximum_length_received or 0), impl)
        except Exception:  # a trace never breaks a send
            self.b.request(time.time(), [])

    def on_answer(self) -> None:
        self.answered = time.time()

    # -- the outcome of the request ----------------------------------------------------------
    def accepted(self, assoc: Any) -> None:
        results = [(int(cx.context_id or 0), 0, str(cx.transfer_syntax[0]) if cx.transfer_syntax else "")
                   for cx in assoc.accepted_contexts]
        results += [(int(cx.context_id or 0), int(cx.result if cx.result is not None else 2), "")
                    for cx in assoc.rejected_contexts]
        self.b.accept(self.answered or time.time(), sorted(results))

    def failed(self, problem: Problem, rejection: Any = None) -> None:
        """The association was not established: rejected, refused, timed out, aborted."""
        t = self.answered or time.time()
        if rejection is not None:
            self.b.reject(t, rejection.result, rejection.source, rejection.reason, problem.message, problem.hint)
        elif self.connected is None:
            self.b.no_connection(t, problem.message, problem.hint)
        else:
            self.b.closed(t, PACS, problem.message, problem.hint)
        self.ended = True

    # -- the data phase (sender) -------------------------------------------------------------
    def store(self, started: float, status: int | None) -> None:
        now = time.time()
        ok = status is not None and (status == 0 or (status >> 12) == 0xB)
        words = "no response" if status is None else "Success" if status == 0 else status_words(status)
        with self.lock:
            self.b.dimse(now, "C-STORE", words, ok, round((now - started) * 1000, 2))

    def echo(self, started: float, status: int | None) -> None:
        now = time.time()
        words = "no response" if status is None else "Success" if status == 0 else status_words(status, "echo")
        self.b.dimse(now, "C-ECHO", words, status == 0, round((now - started) * 1000, 2))

    def released(self) -> None:
        if not self.ended:
            self.b.release(time.time())
            self.ended = True

    def aborted(self, by: str, why: str, fix: str = "") -> None:
        if not self.ended:
            self.b.abort(time.time(), by, why, fix)
            self.ended = True

    def build(self) -> dict[str, Any]:
        return self.b.build()
