"""Is a complete A-ASSOCIATE-RQ one pynetdicom can decode and negotiate? Checked in the gate.

pynetdicom 3.0.4 raises, rather than answering, on some malformed requests: while
decoding (``A_ASSOCIATE_RQ.decode``: an item whose length disagrees with the PDU's;
``to_primitive``: an even presentation context ID, an unknown user identity type) and
while negotiating (``presentation.negotiate_as_acceptor``: a context without an abstract
syntax, ``TypeError``, or without a transfer syntax, ``IndexError``). The association
thread then ends without a word to the peer: a silent close, and a traceback in the log.

The gate (gate.py) holds the whole request before it hands the connection over, so it
decodes it here first, with pynetdicom's own decoder, and checks what negotiation
would trip on. A request that fails gets an A-ABORT, source 2 (service provider),
reason 6 (invalid PDU parameter value), and a ``pdu-invalid`` event naming the peer.

Why A-ABORT rather than A-ASSOCIATE-RJ: PS3.8 9.3.2 requires odd presentation context
IDs, one abstract syntax and at least one transfer syntax per context; a request that
breaks that is a PDU with an invalid parameter value (PS3.8 table 9-10, Sta2 + Evt19,
"received unrecognized or invalid PDU": AA-1, an A-ABORT), which is also what DCMTK
sends. A-ASSOCIATE-RJ (PS3.8 9.3.4) is for a well-formed request that is refused
(AE title, protocol version, no reason given), and this gate answers the other PDU
format errors (over 64 KiB, too short) the same way. Works for every engine: the check
runs before pynetdicom, fast path or stock, sees the request.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from threading import Lock
from typing import NamedTuple

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from dicomlab.text import safe_text

# A modality sends the same A-ASSOCIATE-RQ, byte for byte, every time (its AE titles, contexts
# and UIDs do not change), and the verdict depends on the bytes alone: it is kept for the last
# CACHE_SIZE distinct requests, by digest (a hostile peer's 64 KiB requests cost 32 bytes each).
CACHE_SIZE = 512
_verdicts: "OrderedDict[bytes, str | None]" = OrderedDict()
_verdicts_lock = Lock()
# The decoded requests of associations the direct accept accepted (direct.py, ``remember``),
# kept for the next request with the same bytes: only accepted ones (an unauthorized peer
# cannot fill it), at most KNOWN_SIZE (a request's primitive may take a few hundred KiB).
KNOWN_SIZE = 64
_known: "OrderedDict[bytes, A_ASSOCIATE]" = OrderedDict()


class Checked(NamedTuple):
    problem: str | None  # what is wrong with the request, in words; None: fine
    decoded: A_ASSOCIATE_RQ | None  # decoded by this call (bytes not seen before), for the DUL
    primitive: A_ASSOCIATE | None  # a primitive of the request to be read only: direct.py
    key: bytes  # the request's digest


def rq_problem(pdu: bytes) -> str | None:
    """What is wrong with this A-ASSOCIATE-RQ (the whole PDU, header included), in words; None: fine."""
    return rq_check(pdu).problem


def rq_check(pdu: bytes) -> Checked:
    """``rq_problem``; the decoded request when this call decoded it (a request not seen
    before): the DUL takes it instead of decoding the same bytes again (``fastpath.LabDUL``;
    with a modality's ~100 storage contexts a decode and its UID checks are ~15 % of an
    8-modality ingest's time), its ``to_primitive`` answering the primitive made here; and
    the request's primitive for the direct accept. When this call decoded the request, that
    is the same primitive (made once: ~6 ms for storescu's 128 contexts), used by one of the
    two, the direct accept or pynetdicom; otherwise it is the one ``remember`` kept, which
    the direct accept only reads and pynetdicom never sees (``decoded`` is None: it decodes
    its own)."""
    key = hashlib.blake2b(pdu, digest_size=32).digest()
    with _verdicts_lock:
        if key in _verdicts:
            _verdicts.move_to_end(key)
            known = _known.get(key)
            if known is not None:
                _known.move_to_end(key)
            return Checked(_verdicts[key], None, known, key)
    verdict, rq = _decode_problem(pdu)
    with _verdicts_lock:
        _verdicts[key] = verdict
        if len(_verdicts) > CACHE_SIZE:
            _verdicts.popitem(last=False)
    return Checked(verdict, rq, rq.to_primitive() if rq is not None else None, key)


def decode_again(pdu: bytes) -> Checked | None:
    """A request ``rq_check`` knows as sound but whose primitive is not kept (no direct accept
    remembered it, or it was pushed out of the KNOWN_SIZE kept): decoded again on the association
    thread, not in the gate's one thread, so that the direct accept can take it (and keep it) and
    pynetdicom, if it takes it, does not decode it a second time. None: it does not decode now
    (cannot happen for the same bytes; then pynetdicom decodes and answers as it would)."""
    verdict, rq = _decode_problem(pdu)
    if verdict is not None or rq is None:
        return None
    return Checked(None, rq, rq.to_primitive(), hashlib.blake2b(pdu, digest_size=32).digest())


def remember(key: bytes, primitive: A_ASSOCIATE) -> None:
    """The request with digest ``key`` was accepted (direct.py): keep its primitive for the next."""
    with _verdicts_lock:
        if key in _verdicts:  # still known as sound
            _known[key] = primitive
            _known.move_to_end(key)
            if len(_known) > KNOWN_SIZE:
                _known.popitem(last=False)


def _decode_problem(pdu: bytes) -> tuple[str | None, A_ASSOCIATE_RQ | None]:
    """``rq_check`` without the cache: pynetdicom's decoder and what negotiation trips on."""
    try:
        with warnings.catch_warnings():  # pydicom warns about odd UIDs; the policy judges those later
            warnings.simplefilter("ignore")
            rq = A_ASSOCIATE_RQ()
            rq.decode(pdu)
            primitive = rq.to_primitive()
    except Exception as exc:  # pynetdicom's decoder raises anything from AssertionError to ValueError
        return f"it cannot be decoded ({type(exc).__name__}: {safe_text(str(exc))[:160]})", None
    for cx in primitive.presentation_context_definition_list:
        if not cx.abstract_syntax:
            return f"presentation context {cx.context_id} has no abstract syntax", None
        if not cx.transfer_syntax:
            return f"presentation context {cx.context_id} has no transfer syntax", None
    rq.to_primitive = lambda: primitive  # type: ignore[method-assign]  # made once, used once (FSM AE-6)
    return None, rq
