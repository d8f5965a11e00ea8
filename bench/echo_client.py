"""Association accept rate: A-ASSOCIATE-RQ + C-ECHO + A-RELEASE-RQ over a raw socket, in a loop.

The three PDUs are encoded once, by hand (PS3.8 §9.3), so the client costs a few system calls per
association and the receiver is what is measured. Each association is a new TCP connection with
TCP_NODELAY; it counts as completed when the A-ASSOCIATE-AC accepted the Verification context, the
C-ECHO-RSP said Success (0x0000) and the A-RELEASE-RP arrived.

Run as a process (``python -m bench.echo_client ...``): it prints ``ready``, waits for a line on
stdin (the parent starts every client at once that way), loops for ``--seconds`` and prints one
JSON line with the counts.

With ``--tls-ca`` (and ``--tls-cert``/``--tls-key``) each association is a new DICOM TLS
connection: a full TLS 1.2+ handshake (no session resumption), what a modality that opens one
association per study pays.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import struct
import sys
import time
from collections import Counter

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
APP_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's implementation class UID root
MAX_PDU = 16384


def _uid(uid: str) -> bytes:
    b = uid.encode("ascii")
    return b + b"\0" if len(b) % 2 else b


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii")[:16].ljust(16, b" ")


def associate_rq(calling: str, called: str) -> bytes:
    pres = _item(0x20, struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x30, _uid(VERIFICATION)) + _item(0x40, _uid(IMPLICIT_LE)))
    user = _item(0x50, _item(0x51, struct.pack(">I", MAX_PDU)) + _item(0x52, _uid(IMPLEMENTATION_UID))
                 + _item(0x55, b"DICOMLAB_BENCH"))
    body = (struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32
            + _item(0x10, _uid(APP_CONTEXT)) + pres + user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, elem, len(value)) + value


def echo_rq(message_id: int = 1) -> bytes:
    """P-DATA-TF with one PDV: the C-ECHO-RQ command set, implicit VR little endian."""
    elements = (_element(0, 0x0002, _uid(VERIFICATION)) + _element(0, 0x0100, struct.pack("<H", 0x0030))
                + _element(0, 0x0110, struct.pack("<H", message_id)) + _element(0, 0x0800, struct.pack("<H", 0x0101)))
    command = _element(0, 0x0000, struct.pack("<I", len(elements))) + elements
    pdv = struct.pack(">IBB", len(command) + 2, 1, 0x03) + command  # context 1, command, last fragment
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


RELEASE_RQ = struct.pack(">BBII", 0x05, 0, 4, 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the peer")
        buf += chunk
    return bytes(buf)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = _recv_exact(sock, 6)
    pdu_type, _, length = struct.unpack(">BBI", head)
    return pdu_type, _recv_exact(sock, length)


def context_accepted(ac_body: bytes) -> bool:
    """Is presentation context 1 accepted (result 0) in this A-ASSOCIATE-AC body?"""
    pos = 68
    while pos + 4 <= len(ac_body):
        item_type, _, length = struct.unpack(">BBH", ac_body[pos:pos + 4])
        if item_type == 0x21 and ac_body[pos + 4] == 1:
            return ac_body[pos + 6] == 0
        pos += 4 + length
    return False


def echo_status(pdata_body: bytes) -> int | None:
    """The Status (0000,0900) of the command in this P-DATA-TF body, if there is one."""
    pos = 0
    while pos + 6 <= len(pdata_body):
        length, = struct.unpack(">I", pdata_body[pos:pos + 4])
        header = pdata_body[pos + 5]
        data = pdata_body[pos + 6:pos + 4 + length]
        pos += 4 + length
        if not header & 0x01:
            continue
        i = 0
        while i + 8 <= len(data):
            group, elem, vlen = struct.unpack("<HHI", data[i:i + 8])
            if (group, elem) == (0, 0x0900) and vlen == 2:
                return struct.unpack("<H", data[i + 8:i + 10])[0]
            i += 8 + vlen
    return None


def tls_context(ca: str, cert: str | None, key: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def one_association(addr: tuple[str, int], rq: bytes, echo: bytes, timeout: float = 10.0,
                    tls: ssl.SSLContext | None = None) -> str:
    """One association; 'ok' or a word saying what went wrong."""
    raw = socket.create_connection(addr, timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with (tls.wrap_socket(raw, server_hostname=addr[0]) if tls is not None else raw) as sock:
        sock.sendall(rq)
        pdu_type, body = read_pdu(sock)
        if pdu_type == 0x03:
            return f"rejected {body[1]}/{body[2]}/{body[3]}"
        if pdu_type != 0x02:
            return f"answer-pdu-{pdu_type:#04x}"
        if not context_accepted(body):
            return "context-rejected"
        sock.sendall(echo)
        pdu_type, body = read_pdu(sock)
        if pdu_type != 0x04:
            return f"echo-answer-pdu-{pdu_type:#04x}"
        status = echo_status(body)
        if status != 0:
            return f"echo-status-{status}"
        sock.sendall(RELEASE_RQ)
        pdu_type, _ = read_pdu(sock)
        if pdu_type != 0x06:
            return f"release-answer-pdu-{pdu_type:#04x}"
    return "ok"


def loop(host: str, port: int, calling: str, called: str, seconds: float,
         tls: ssl.SSLContext | None = None) -> dict[str, object]:
    addr = (host, port)
    rq, echo = associate_rq(calling, called), echo_rq()
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        try:
            outcomes[one_association(addr, rq, echo, tls=tls)] += 1
        except (OSError, ConnectionError) as exc:
            outcomes[f"error {type(exc).__name__}"] += 1
    elapsed = time.monotonic() - started
    return {"ok": outcomes.pop("ok", 0), "failed": dict(outcomes), "elapsed": elapsed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--calling", default="ECHO01")
    p.add_argument("--called", required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--no-wait", action="store_true", help="start at once instead of waiting for a stdin line")
    p.add_argument("--tls-ca", help="DICOM TLS: the CA that signed the receiver's certificate")
    p.add_argument("--tls-cert", help="DICOM TLS: the client certificate (PEM)")
    p.add_argument("--tls-key", help="DICOM TLS: its key (PEM)")
    ns = p.parse_args(argv)
    tls = tls_context(ns.tls_ca, ns.tls_cert, ns.tls_key) if ns.tls_ca else None
    if not ns.no_wait:
        print("ready", flush=True)
        if not sys.stdin.readline():
            return 1
    print(json.dumps(loop(ns.host, ns.port, ns.calling, ns.called, ns.seconds, tls)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
