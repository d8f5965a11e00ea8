"""DICOM upper layer (PS3.8) and DIMSE command sets, as bytes a fuzzer can bend.

Builders take every length and type as a parameter (``None``: the correct one), so
a case can say exactly which field it got wrong; the formats, constants and decoders
are dicomlab.pdu's (the lab's one PDU codec), bent here only where a field is given. ``exchange`` plays a list of
chunks to a peer on a real socket and reports what came back and how it ended.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

from dicomlab import pdu as codec
from dicomlab.pdu import APPLICATION_CONTEXT as APP_CONTEXT
from dicomlab.pdu import IMPLICIT_VR_LE as IMPLICIT_LE
from dicomlab.pdu import PDU_NAMES, VERIFICATION

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
IMPL_UID = "1.2.826.0.1.3680043.10.1482.9"  # DICOM Lab fuzzer


def text(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def ae16(title: str | bytes) -> bytes:
    raw = text(title)[:16]
    return raw + b" " * (16 - len(raw))


def uid_bytes(uid: str | bytes, pad: bytes = b"\0") -> bytes:
    raw = text(uid)
    return raw + pad if len(raw) % 2 else raw


# -- PDUs and items -------------------------------------------------------------------------------
def pdu(kind: int, body: bytes, length: int | None = None, reserved: int = 0) -> bytes:
    return codec.header(kind, len(body) if length is None else length, reserved) + body


def item(kind: int, body: bytes, length: int | None = None) -> bytes:
    """A variable item of an A-ASSOCIATE PDU: type, reserved, 2-byte length."""
    return codec.ITEM_HEADER.pack(kind, 0, (len(body) if length is None else length) & 0xFFFF) + body


def presentation_context(context_id: int, abstract: str | bytes | None, syntaxes: list[str | bytes],
                         kind: int = codec.PRESENTATION_CONTEXT_RQ_ITEM) -> bytes:
    sub = b"" if abstract is None else item(codec.ABSTRACT_SYNTAX_ITEM, text(abstract))
    sub += b"".join(item(codec.TRANSFER_SYNTAX_ITEM, text(ts)) for ts in syntaxes)
    return item(kind, bytes([context_id & 0xFF, 0, 0, 0]) + sub)


def user_information(max_pdu: int | None = 16384, impl_uid: str | bytes | None = IMPL_UID,
                     version: str | bytes | None = b"LABFUZZ", extra: bytes = b"") -> bytes:
    sub = b""
    if max_pdu is not None:
        sub += item(codec.MAXIMUM_LENGTH_ITEM, (max_pdu & 0xFFFFFFFF).to_bytes(4, "big"))
    if impl_uid is not None:
        sub += item(codec.IMPLEMENTATION_CLASS_UID_ITEM, text(impl_uid))
    if version is not None:
        sub += item(codec.IMPLEMENTATION_VERSION_NAME_ITEM, text(version))
    return item(codec.USER_INFORMATION_ITEM, sub + extra)


def associate_rq(called: str | bytes = "PACS", calling: str | bytes = "FUZZ",
                 contexts: list[bytes] | None = None, user_info: bytes | None = None,
                 app_context: bytes | None = None, protocol: int = 1, extra: bytes = b"",
                 length: int | None = None, kind: int = 0x01) -> bytes:
    if contexts is None:
        contexts = [presentation_context(1, VERIFICATION, [IMPLICIT_LE]),
                    presentation_context(3, CT, [EXPLICIT_LE, IMPLICIT_LE])]
    body = struct.pack(">HH", protocol & 0xFFFF, 0) + ae16(called) + ae16(calling) + b"\0" * 32
    body += item(codec.APPLICATION_CONTEXT_ITEM, text(APP_CONTEXT)) if app_context is None else app_context
    body += b"".join(contexts)
    body += user_information() if user_info is None else user_info
    return pdu(kind, body + extra, length)


def pdv(context_id: int, control: int, data: bytes, length: int | None = None) -> bytes:
    """A presentation data value item: length (4), context id, control header (bit 0 command, bit 1 last)."""
    return codec.PDV_HEADER.pack(len(data) + 2 if length is None else length, context_id & 0xFF, control & 0xFF) + data


def p_data(*pdvs: bytes, length: int | None = None) -> bytes:
    return pdu(codec.P_DATA_TF, b"".join(pdvs), length)


RELEASE_RQ = codec.RELEASE_RQ
RELEASE_RP = codec.RELEASE_RP


def abort(source: int = 0, reason: int = 0) -> bytes:
    return codec.abort(source & 0xFF, reason & 0xFF)


# -- DIMSE command sets (implicit VR little endian, group 0000) -----------------------------------
def element(elem: int, value: bytes, group: int = 0x0000, length: int | None = None) -> bytes:
    return codec.ELEMENT_HEADER.pack(group, elem, len(value) if length is None else length) + value


def us(v: int) -> bytes:
    return codec.us(v & 0xFFFF)


def command_set(elements: list[bytes], group_length: int | None = None) -> bytes:
    body = b"".join(elements)
    return element(codec.GROUP_LENGTH, (len(body) if group_length is None else group_length).to_bytes(4, "little")) + body


def echo_rq_elements(message_id: int = 1) -> list[bytes]:
    return [element(0x0002, uid_bytes(VERIFICATION)), element(0x0100, us(0x0030)),
            element(0x0110, us(message_id)), element(0x0800, us(0x0101))]


def store_rq_elements(sop_instance: str, message_id: int = 1, sop_class: str = CT) -> list[bytes]:
    return [element(0x0002, uid_bytes(sop_class)), element(0x0100, us(0x0001)), element(0x0110, us(message_id)),
            element(0x0700, us(0)), element(0x0800, us(0x0000)), element(0x1000, uid_bytes(sop_instance))]


def fragments(data: bytes, size: int) -> list[bytes]:
    size = max(1, size)
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def message_pdus(context_id: int, command: bytes, dataset: bytes | None, max_fragment: int = 16372) -> list[bytes]:
    """A DIMSE message as P-DATA-TF PDUs: the command, then the dataset, each in fragments."""
    out = []
    parts = fragments(command, max_fragment)
    out += [p_data(pdv(context_id, 0x01 | (0x02 if i == len(parts) - 1 else 0), f)) for i, f in enumerate(parts)]
    if dataset is not None:
        parts = fragments(dataset, max_fragment)
        out += [p_data(pdv(context_id, 0x02 if i == len(parts) - 1 else 0, f)) for i, f in enumerate(parts)]
    return out


# -- what came back ----------------------------------------------------------------------------
def parse_pdus(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete PDUs (type, body) in ``data`` and the incomplete rest."""
    return codec.split(data)


def command_fields(body: bytes, pending: bytearray | None = None) -> list[dict[int, bytes]]:
    """The command-set elements of each command completed in a P-DATA-TF body. ``pending``: the
    command fragments of earlier PDUs, kept across calls (a peer that asked for a tiny maximum
    PDU length gets each response in many PDUs: fuzz case 1:7063, where 13-byte PDUs made the
    Success unreadable here and the file looked unanswered)."""
    out, off = [], 0
    pending = bytearray() if pending is None else pending
    while off + 6 <= len(body):
        (n,) = struct.unpack_from(">I", body, off)
        ctrl = body[off + 5]
        frag = body[off + 6: off + 4 + n]
        off += 4 + n
        if not ctrl & 0x01:
            continue  # a dataset fragment
        pending += frag
        if not ctrl & 0x02:
            continue
        frag = bytes(pending)
        pending.clear()
        fields_, p = {}, 0
        while p + 8 <= len(frag):
            _, el, ln = struct.unpack_from("<HHI", frag, p)
            fields_[el] = frag[p + 8: p + 8 + ln]
            p += 8 + ln
        out.append(fields_)
    return out


@dataclass
class Outcome:
    """What the peer sent back, and how the connection ended."""

    pdus: list[str] = field(default_factory=list)  # PDU names in order; "A-ABORT(2,6)"; "RSP(0x8001,0xC000)"
    statuses: list[tuple[int, int, str]] = field(default_factory=list)  # (command field, status, affected UID)
    end: str = ""  # peer-closed | we-closed | reset | timeout | refused
    sent_all: bool = True  # False: we stopped before the last chunk (it failed, or no A-ASSOCIATE-AC came)
    seconds: float = 0.0
    raw_in: bytes = b""
    command_so_far: bytearray = field(default_factory=bytearray)  # a response's fragments until its last

    @property
    def last(self) -> str:
        return self.pdus[-1] if self.pdus else ""

    def summary(self) -> str:
        return " ".join(self.pdus) + f" [{self.end}]"


def describe(kind: int, body: bytes, out: Outcome) -> None:
    name = PDU_NAMES.get(kind, f"PDU-0x{kind:02X}")
    if kind == 0x07 and len(body) >= 4:
        name = f"A-ABORT({body[2]},{body[3]})"
    elif kind == 0x03 and len(body) >= 4:
        name = f"A-ASSOCIATE-RJ({body[1]},{body[2]},{body[3]})"
    elif kind == 0x04:
        for cmd in command_fields(body, out.command_so_far):
            field_ = codec.us_value(cmd.get(codec.COMMAND_FIELD))
            status = codec.us_value(cmd.get(codec.STATUS))
            field_, status = (-1 if field_ is None else field_), (-1 if status is None else status)
            uid = cmd.get(0x1000, b"").rstrip(b"\0 ").decode("latin-1")
            out.statuses.append((field_, status, uid))
            name = f"RSP(0x{field_ & 0xFFFF:04X},0x{status & 0xFFFF:04X})"
    out.pdus.append(name)


class _Reader:
    """The socket of one exchange and what came back on it, parsed into ``out`` as it arrives."""

    def __init__(self, sock: socket.socket, out: Outcome) -> None:
        self.sock, self.out, self.buf = sock, out, b""

    def pull(self, wait: float) -> bool:
        """Read what is there within ``wait``; False once the peer closed."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except OSError:
            self.out.end = "reset"
            return False
        if not data:
            self.out.end = "peer-closed"
            return False
        self.buf += data
        self.out.raw_in += data
        done, self.buf = parse_pdus(self.buf)
        for kind, body in done:
            describe(kind, body, self.out)
        return True


def _connect(host: str, port: int, connect_timeout: float, out: Outcome, started: float) -> socket.socket | None:
    """The TCP connection, or None with ``out.end`` saying why not."""
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except TimeoutError:
        out.end = "connect-timeout"
        out.seconds = time.monotonic() - started
        return None
    except OSError as exc:
        out.end = f"connect-failed ({exc.strerror or exc})"
        return None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _send(r: _Reader, chunks: list[bytes], close: str, accept_after: int | None, quiet: float) -> None:
    """Each chunk one ``sendall``, reading in between; like an SCU, the rest only once accepted."""
    out = r.out
    for index, chunk in enumerate(chunks):
        try:
            r.sock.sendall(chunk)
        except OSError:
            out.sent_all = False
            break
        if close == "after" and not r.pull(0.0005):
            break
        if index == accept_after and close == "after" and index < len(chunks) - 1:
            # like an SCU: the rest only once the association is accepted
            waited = time.monotonic()
            while not out.pdus and not out.end and time.monotonic() - waited < quiet:
                r.pull(0.02)
            if out.end or not out.pdus or out.pdus[0] != "A-ASSOCIATE-AC":
                # no A-ASSOCIATE-AC: an SCU sends no more (the rest, an A-RELEASE-RQ say, never left;
                # e.g. a request whose length field claims more bytes than it has: the PACS waits
                # for them, up to assoc_request_timeout)
                out.sent_all = index == len(chunks) - 1
                break


def _await_end(r: _Reader, quiet: float, limit: float, started: float) -> None:
    """Read until the peer closes, ``quiet`` seconds pass with nothing from it, or ``limit`` in all."""
    out = r.out
    last_data = time.monotonic()
    seen = len(out.raw_in)
    while True:
        if not r.pull(0.05):
            break
        now = time.monotonic()
        if len(out.raw_in) != seen:
            seen, last_data = len(out.raw_in), now
        if out.last in ("A-RELEASE-RP",) or out.last.startswith(("A-ABORT", "A-ASSOCIATE-RJ")):
            quiet_left = 0.05  # the peer should close now; don't wait long for it
            if not r.pull(quiet_left):
                break
            out.end = out.end or "we-closed"
            break
        if now - last_data > quiet or now - started > limit:
            out.end = "timeout"
            break


def exchange(host: str, port: int, chunks: list[bytes], quiet: float = 0.3, limit: float = 5.0,
             close: str = "after", connect_timeout: float = 5.0, accept_after: int | None = 0) -> Outcome:
    """Send ``chunks`` one ``sendall`` each, reading what comes back in between; then wait until
    the peer closes, ``quiet`` seconds pass with nothing from it, or ``limit`` in all.

    ``close``: "after" (wait for the answer, then close), "now" (close right after the last
    chunk: an early close), "reset" (close with RST right after the last chunk).
    ``accept_after``: the chunk that completes the A-ASSOCIATE-RQ; the rest is sent only
    once an A-ASSOCIATE-AC came back (None: send everything at once).
    """
    out = Outcome()
    started = time.monotonic()
    sock = _connect(host, port, connect_timeout, out, started)
    if sock is None:
        return out
    r = _Reader(sock, out)
    try:
        _send(r, chunks, close, accept_after, quiet)
        if close == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            out.end = "we-closed"
        elif close == "now":
            out.end = "we-closed"
        elif not out.end:
            _await_end(r, quiet, limit, started)
    finally:
        sock.close()
        out.seconds = time.monotonic() - started
    return out
