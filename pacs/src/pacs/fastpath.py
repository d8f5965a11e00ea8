"""pynetdicom's two per-association loops, woken by what they wait for instead of
polling every millisecond.

pynetdicom runs two threads per association: the DUL reactor (socket <-> state
machine) and the association reactor (DIMSE messages -> handlers). Both poll:
each sleeps 1 ms whenever it finds nothing to do. On a C-STORE that is up to a
millisecond before the request is handled and another before the response
leaves, and an idle association costs ~5 % of a core (measured with pynetdicom 3.0.4 on the lab machine).

Here the queues they poll ring a bell when something is put in them: the DUL
reactor waits in ``select`` on its socket and a wake-up pipe, the association
reactor on a ``threading.Event``. The loop bodies are pynetdicom 3.0's own,
unchanged but for the wait; that is why these are subclasses, used by our
request handler (``LabRequestHandler._create_association``): the change belongs
in pynetdicom, and this is how we make it from outside.

A C-STORE is answered before the next PDU is read: from a complete C-STORE request
until its answer is queued, the DUL reads nothing (``LabDUL.reads_held``). Upstream
reads on while the request is served, so a protocol error right behind the dataset
(a second A-RELEASE-RQ, a PDU over its length cap) aborted the association while the
instance was being stored: durable, but its Success never left (fuzz, loops engine).
C-CANCEL is not held up: only C-STORE holds the reads.

Two more departures from upstream, both for "no silent end": an exception in
the DUL loop -- including in the state machine's action, where pynetdicom 3.0.4
lets a DIMSE message that fails to decode kill the thread -- sends an A-ABORT
(source 2) and fires EVT_ABORTED with the reason (``LabDUL._abort_on_error``,
mirroring ``DULServiceProvider.run_reactor``'s ``except``); and a request that
``Association._serve_request`` would only log as invalid (no MessageID, ...) is
aborted with an event (``LabAssociation._abort_invalid``).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import _PDU_TYPES, DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT

from dicomlab.events import REASON_DIMSE_INVALID, REASON_INTERNAL_ERROR

from .threadreuse import ThreadReuse

IDLE_WAIT = 0.05  # longest sleep with nothing queued: timers are checked at least this often
HOLD_GRACE = 1.0  # seconds a C-STORE's read hold ignores the peer's A-ABORT or close (see LabDUL.holding)


DUL_THREADS = ThreadReuse("dul")


def ring_on_put(q: "queue.Queue[Any]", bell: Callable[[], None]) -> "queue.Queue[Any]":
    """Make ``q.put`` ring ``bell`` after each item (on this queue object only)."""
    put = q.put

    def put_and_ring(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        bell()

    q.put = put_and_ring  # type: ignore[method-assign]
    return q


class LabDUL(DULServiceProvider):
    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # ring() may come from any thread after run_reactor closed the pipe; the lock and the
        # flag keep it from writing to the old descriptor number, which the process may have
        # given to another association's socket by then (fuzz finding: a C-ECHO answer
        # starting with 0x00)
        self._wake_lock = threading.Lock()
        self._wake_closed = False
        ring_on_put(self.to_provider_queue, self.ring)
        ring_on_put(self.event_queue, self.ring)
        self._own_ident: int | None = None
        self._running = False
        self._finished = threading.Event()
        # set by the PACS before the A-ASSOCIATE-AC goes out: once in Sta6 (established),
        # this thread runs the data phase on the socket itself (pacs.wire) and ends
        self.wire: Callable[[LabDUL], None] | None = None
        # True from a complete C-STORE request until its answer is queued (LabAssociation): no
        # PDU is read meanwhile, so a protocol error that follows cannot abort the association
        # before the Success of an instance already stored leaves (as the socket data phase does)
        self.reads_held = False
        self.held_since = 0.0

    # The DUL runs on a reused thread rather than as its own Thread: start, is_alive
    # and join keep their meaning for pynetdicom.
    def start(self) -> None:
        self._running = True
        DUL_THREADS.submit(self.run_reactor)

    def is_alive(self) -> bool:
        return self._running

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)
        self.on_exit: Callable[[], None] | None = None

    @property
    def holding(self) -> bool:
        """Reads held: only while established (Sta6). Once the association is ending (an
        A-ABORT sent, Sta13; a release) the peer's close must be seen, held or not. And a
        C-STORE still unanswered after HOLD_GRACE (fault_stall, a slow disk) lets the peer's
        A-ABORT or close through: the handler must see that the modality gave up (it then
        stores nothing); other PDUs wait for the answer."""
        if not self.reads_held or self.state_machine.current_state != "Sta6":
            return False
        if time.monotonic() - self.held_since > HOLD_GRACE and self._peer_gave_up():
            self.reads_held = False
            return False
        return True

    def _peer_gave_up(self) -> bool:
        """An A-ABORT (PDU type 0x07) or the end of the connection next in the socket: peeked,
        nothing consumed. On TLS the PDU type is inside an encrypted record: only the end of
        the connection is seen (peeked on the TCP socket below the TLS layer)."""
        sock = self.socket.socket if self.socket is not None else None
        if sock is None:
            return True
        tls = isinstance(sock, ssl.SSLSocket)
        try:
            head = socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return True
        return head == b"" or (not tls and head == b"\x07")

    def ring(self) -> None:
        if threading.get_ident() == self._own_ident:
            return  # the DUL thread queued it itself: it looks at its queues before it waits
        with self._wake_lock:
            if self._wake_closed:
                return  # finished: nobody waits, and the descriptor number may be someone else's
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # full: already rung
                pass

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        """pynetdicom 3.0.4 ``DULServiceProvider._decode_pdu``, taking the A-ASSOCIATE-RQ the gate's
        rqcheck already decoded (``FastSocket.predecoded``) when these are its bytes."""
        pre = getattr(self.socket, "predecoded", None)
        if pre is None:
            return super()._decode_pdu(bytestream)
        self.socket.predecoded = None  # type: ignore[union-attr]
        b = bytes(bytestream)
        if b != pre[0]:
            return super()._decode_pdu(bytestream)
        evt.trigger(self.assoc, evt.EVT_DATA_RECV, {"data": b})
        evt.trigger(self.assoc, evt.EVT_PDU_RECV, {"pdu": pre[1]})
        return pre[1], _PDU_TYPES[b[0:1]][1]

    def _idle_wait(self) -> None:
        # poll, not select: select fails (and this loop would spin) on a descriptor >= 1024,
        # which a PACS holding many not-yet-complete connections (gate.py) reaches
        fds = select.poll()
        fds.register(self._wake_r, select.POLLIN)
        sock = self.socket.socket if self.socket is not None else None
        try:
            if sock is not None and self.socket._is_connected and not self.holding:  # type: ignore[union-attr]
                fds.register(sock, select.POLLIN)
            fds.poll(IDLE_WAIT * 1000)
        except (OSError, ValueError):  # the socket closed under us: the loop finds out
            pass
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass

    def kill_dul(self) -> None:
        super().kill_dul()
        self.ring()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.ring()
        if threading.get_ident() != self._own_ident:
            self.join()
        return True

    def run_reactor(self) -> None:
        self._own_ident = threading.get_ident()
        try:
            self._run()
        finally:
            with self._wake_lock:
                self._wake_closed = True
                for fd in (self._wake_r, self._wake_w):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._running = False
            self._finished.set()
            if self.on_exit is not None:
                self.on_exit()

    def _run(self) -> None:
        # pynetdicom 3.0.4 DULServiceProvider.run_reactor, with time.sleep(1 ms) -> _idle_wait(),
        # and no read while reads_held
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._idle_wait()
            if self._kill_thread:
                break
            if self.wire is not None and self.state_machine.current_state == "Sta6":
                try:
                    self.wire(self)
                finally:
                    self.state_machine.current_state = "Sta1"  # the connection is closed
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            # read before the queue is looked at: the answer is queued before the hold ends
            held = self.holding
            try:
                if self._process_recv_primitive():
                    pass
                elif not held and self._is_transport_event():
                    self._idle_timer.restart()
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    sleep = True
                    continue
                # upstream lets an exception here (a DIMSE message that fails to decode, in
                # DT-2) end the thread silently; here it aborts like one in the reads above
                self.state_machine.do_action(event)
            except Exception as exc:
                self._abort_on_error(exc)
                return
            sleep = False

    def _abort_on_error(self, exc: Exception) -> None:
        """pynetdicom 3.0.4 run_reactor's ``except Exception`` (A-ABORT, source 2, bypassing
        the state machine), where upstream's error log becomes an association-aborted event."""
        logging.getLogger(__name__).debug("DUL", exc_info=exc)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        try:
            self.socket.send(abort_pdu.encode())  # type: ignore[union-attr]
        except Exception:
            pass
        assoc: Any = self.assoc  # a LabAssociation, or stock pynetdicom's (PACS_FASTPATH=0 never runs this)
        if not getattr(assoc, "lab_abort_reason", ""):
            assoc.lab_abort_reason = (f"Association aborted: the DICOM upper layer failed on what the peer sent "
                                      f"({type(exc).__name__}: {exc})")
            assoc.lab_abort_code = REASON_INTERNAL_ERROR
        was_established = assoc.is_established
        assoc.is_aborted = True
        assoc.is_established = False
        assoc._kill = True
        self._kill_thread = True
        if was_established or getattr(assoc, "lab_abort_code", ""):
            try:
                evt.trigger(assoc, evt.EVT_ABORTED, {})
            except Exception:
                pass


class LabAssociation(Association):
    dul: LabDUL  # set in __init__
    lab_abort_reason = ""  # why the lab aborted it, in words (the association-aborted event)
    lab_abort_code = ""  # that event's reason (pdu-invalid, internal-error, ...)

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._bell = threading.Event()
        self.dul = LabDUL(self)
        ring_on_put(self.dul.to_user_queue, self._bell.set)  # A-RELEASE, A-ABORT, ... for the reactor
        self.dul.on_exit = self._bell.set
        put = self.dimse.msg_queue.put  # decoded DIMSE messages (put by the DUL thread, DT-2)

        def put_message(item: Any, block: bool = True, timeout: float | None = None) -> None:
            # A C-STORE *request* (Status None): not the C-STORE-RSP of a C-GET sub-operation the PACS
            # sent, which its C-GET handler waits for while the next responses must still be read.
            if isinstance(item[1], C_STORE) and item[1].Status is None:
                self.dul.held_since = time.monotonic()
                self.dul.reads_held = True  # until _run_reactor has queued the answer
            put(item, block, timeout)
            self._bell.set()

        self.dimse.msg_queue.put = put_message  # type: ignore[method-assign]

    def kill(self) -> None:
        self._bell.set()
        self.dul.reads_held = False  # no answer is coming any more (an invalid request, an abort)
        # pynetdicom's kill, with the DUL's stop woken instead of polled
        self._reactor_checkpoint.set()
        self._kill = True
        self.is_established = False
        self._is_paused = True
        while self.dul.is_alive() and not self.dul.stop_dul():
            self.dul.ring()
            time.sleep(0.001)  # waiting for the peer to close (Sta13) or the ARTIM timer

    def _abort_invalid(self, msg: Any) -> None:
        """A request pynetdicom cannot serve (e.g. no MessageID): A-ABORT (source 2) and an
        association-aborted event, where upstream's ``_serve_request`` only logs a warning."""
        self.lab_abort_reason = (f"Association aborted: the peer sent a {msg.msg_type} request without "
                                 f"{_missing(msg)}")
        self.lab_abort_code = REASON_DIMSE_INVALID
        self.acse.send_abort(0x02)
        self.is_aborted = True
        self.is_established = False
        evt.trigger(self, evt.EVT_ABORTED, {})
        self.kill()

    def _run_reactor(self) -> None:
        if self.dul.wire is not None:  # the DUL thread serves the data phase: wait for its end
            while self.dul.is_alive():
                self._bell.wait(IDLE_WAIT)
                self._bell.clear()
            self.kill()
            return
        # pynetdicom 3.0.4 Association._run_reactor, with time.sleep(1 ms) -> the bell
        self._is_paused = False
        busy = True
        while not self._kill:
            if not busy:
                self._bell.wait(IDLE_WAIT)
            self._bell.clear()
            busy = False

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                busy = True
                if not msg.is_valid_request:  # upstream logs a warning and never answers
                    self._abort_invalid(msg)
                    return
                try:
                    self._serve_request(msg, context_id)  # type: ignore[arg-type]
                finally:  # the answer is queued: the DUL sends it before it reads again. (Only a
                    # C-STORE ends the hold: one read while a C-ECHO was served may have set it.)
                    if isinstance(msg, C_STORE) and msg.Status is None and self.dul.reads_held:
                        self.dul.reads_held = False
                        self.dul.ring()

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                primitive = self.dul.receive_pdu(wait=False)
                if not getattr(self, "lab_abort_reason", ""):
                    self.lab_abort_reason = _abort_words(primitive)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def _missing(msg: Any) -> str:
    names = [k for k in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID") if hasattr(msg, k)
             and getattr(msg, k, None) in (None, "")]
    return ", ".join(names) or "a required element"


def _abort_words(primitive: Any) -> str:
    """Who aborted, from the A-ABORT / A-P-ABORT primitive pynetdicom hands the association."""
    if isinstance(primitive, A_P_ABORT):
        return ("Association aborted by the DICOM upper layer (A-P-ABORT): the peer sent an invalid or "
                "unexpected PDU or DIMSE message, or the connection closed")
    if isinstance(primitive, A_ABORT):
        return f"Association aborted by the peer (A-ABORT, source {primitive.abort_source})"
    return "Association aborted"
