"""Association accept rate: A-ASSOCIATE-RQ + C-ECHO + A-RELEASE-RQ over a raw socket, in a loop.

The three PDUs are encoded once (dicomlab.pdu, PS3.8 §9.3), so the client costs a few system calls per
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
import sys
import time
from collections import Counter

from dicomlab import pdu

VERIFICATION = pdu.VERIFICATION
IMPLICIT_LE = pdu.IMPLICIT_VR_LE
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's implementation class UID root
MAX_PDU = 16384


def associate_rq(calling: str, called: str) -> bytes:
    return pdu.associate_rq(called, calling, [(1, VERIFICATION, [IMPLICIT_LE])], MAX_PDU, IMPLEMENTATION_UID,
                            "DICOMLAB_BENCH", pad=True)


def echo_rq(message_id: int = 1) -> bytes:
    """P-DATA-TF with one PDV: the C-ECHO-RQ command set, implicit VR little endian."""
    return pdu.p_data(1, pdu.COMMAND | pdu.LAST, pdu.c_echo_rq(message_id))  # context 1, command, last fragment


RELEASE_RQ = pdu.RELEASE_RQ


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    try:
        pdu_type, body = pdu.read_pdu(sock)
    except pdu.Closed:
        raise ConnectionError("closed by the peer") from None  # counted as "error ConnectionError"
    return pdu_type, bytes(body)


def context_accepted(ac_body: bytes) -> bool:
    """Is presentation context 1 accepted (result 0) in this A-ASSOCIATE-AC body?"""
    return pdu.context_results(ac_body).get(1) == 0


def echo_status(pdata_body: bytes) -> int | None:
    """The Status (0000,0900) of the command in this P-DATA-TF body, if there is one."""
    for _, _, header, data in pdu.pdvs(pdata_body):
        if not header & 0x01:
            continue
        for group, elem, vlen, value in pdu.elements(data):
            if (group, elem) == (0, pdu.STATUS) and vlen == 2:
                return pdu.us_value(value)
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
