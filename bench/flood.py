"""A hostile peer for ``make bench``: many connections that send a few bytes and then stay silent.

Run as a process (``python -m bench.flood --port P --count 1000 --payload 01``) so its file
descriptors, and its CPU, are its own. It raises its own open-file limit as far as it needs
(``resource.setrlimit``, up to the hard limit), opens ``--count`` non-blocking TCP connections to the
receiver, spread round-robin over the ``--sources`` addresses (each connection binds its source
address, port 0: 127.0.0.2, 127.0.0.3, ... all route to ``lo`` on Linux), sends ``--payload`` on each
as soon as it is connected and then never sends again nor closes.

- ``--payload 01``: one byte, the PDU type of an A-ASSOCIATE-RQ: a *half-open* association request.
- ``--payload 010040000000``: an A-ASSOCIATE-RQ header claiming a 1 GiB PDU (6 bytes), then silence.

Protocol on stdin/stdout, one JSON object a line: once every connect has resolved (or
``--connect-seconds`` passed) it prints the counts; each ``status`` line read from stdin prints them
again; ``stop`` (or end of input) closes everything, prints the last counts and exits. Connects
still pending keep completing in the meantime (the payload follows as soon as they do).

The counts, from the holder's side of each connection:

- ``open``: connected, payload sent, the receiver has neither answered nor closed it (held);
- ``answered``: the receiver sent bytes back (an A-ASSOCIATE-RJ or A-ABORT, say) and kept it open;
- ``closed``: the receiver closed it (FIN or reset), answered first or not (``answered_closed``);
- ``connecting``: the TCP handshake has not completed (the receiver's accept queue is full, so the
  kernel drops the SYN and the holder's kernel retries);
- ``refused``: the connect failed (``connect_errors`` names the errors).
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import struct
import sys
import time
from collections import Counter


class Conn:
    __slots__ = ("sock", "state", "answered", "sent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "connecting"  # connecting, open, closed, refused
        self.answered = False
        self.sent = 0


def raise_nofile(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Holder:
    def __init__(self, host: str, port: int, count: int, payload: bytes, sources: list[str]) -> None:
        self.addr = (host, port)
        self.payload = payload
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.errors: Counter[str] = Counter()
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(sock)
            self.conns.append(c)
            try:
                sock.bind((sources[i % len(sources)], 0))
                rc = sock.connect_ex(self.addr)
            except OSError as exc:
                rc = exc.errno or -1
            if rc in (0, errno.EINPROGRESS):
                self.sel.register(sock, selectors.EVENT_WRITE, c)
            else:
                self._refused(c, rc)

    def _refused(self, c: Conn, err: int) -> None:
        c.state = "refused"
        self.errors[errno.errorcode.get(err, str(err))] += 1
        c.sock.close()

    def _connected(self, c: Conn) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.sel.unregister(c.sock)
        if err:
            self._refused(c, err)
            return
        c.state = "open"
        try:
            c.sent = c.sock.send(self.payload)  # a few bytes: the send buffer takes them whole
        except OSError:
            c.state = "closed"
            c.sock.close()

    def pending(self) -> int:
        return sum(1 for c in self.conns if c.state == "connecting")

    def pump(self, timeout: float, stdin: int | None = None) -> bool:
        """Complete connects for up to ``timeout`` s; True when ``stdin`` became readable."""
        if stdin is not None:
            self.sel.register(stdin, selectors.EVENT_READ, None)
        try:
            for key, _ in self.sel.select(timeout if self.sel.get_map() else 0):
                if key.data is None:
                    return True
                self._connected(key.data)
            if stdin is None and not self.sel.get_map():
                time.sleep(timeout)
            return False
        finally:
            if stdin is not None:
                self.sel.unregister(stdin)

    def _probe(self, c: Conn) -> None:
        """Has the receiver answered or closed this connection? Reads what it sent, never waits."""
        while c.state == "open":
            try:
                data = c.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:  # reset
                data = b""
            if not data:
                c.state = "closed"
                c.sock.close()
                return
            c.answered = True

    def counts(self) -> dict[str, object]:
        for c in self.conns:
            self._probe(c)
        states = Counter(c.state for c in self.conns)
        return {"count": len(self.conns), "open": sum(1 for c in self.conns if c.state == "open" and not c.answered),
                "answered": sum(1 for c in self.conns if c.state == "open" and c.answered),
                "closed": states["closed"], "answered_closed": sum(1 for c in self.conns if c.state == "closed"
                                                                   and c.answered),
                "connecting": states["connecting"], "refused": states["refused"],
                "connect_errors": dict(self.errors)}

    def close(self) -> None:
        """Close with a reset (SO_LINGER 0): no TIME_WAIT left on a thousand ports after the bench."""
        linger = struct.pack("ii", 1, 0)
        for c in self.conns:
            if c.state in ("open", "connecting"):
                try:
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                except OSError:
                    pass
                c.sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--payload", default="01", help="hex bytes sent once on each connection (default 01)")
    p.add_argument("--sources", default="127.0.0.2", help="comma-separated source addresses, round-robin")
    p.add_argument("--connect-seconds", type=float, default=5.0,
                   help="how long to wait for the connects before the first report")
    ns = p.parse_args(argv)
    soft, _ = raise_nofile(ns.count + 64)
    if soft != resource.RLIM_INFINITY and soft < ns.count + 16:
        print(json.dumps({"error": f"open-file limit {soft} is below {ns.count + 16}"}), flush=True)
        return 1
    started = time.monotonic()
    holder = Holder(ns.host, ns.port, ns.count, bytes.fromhex(ns.payload),
                    [s.strip() for s in ns.sources.split(",") if s.strip()])
    deadline = started + ns.connect_seconds
    while holder.pending() and time.monotonic() < deadline:
        holder.pump(min(0.1, max(0.0, deadline - time.monotonic())))
    print(json.dumps({**holder.counts(), "connect_s": round(time.monotonic() - started, 3)}), flush=True)
    try:
        while True:
            if not holder.pump(0.2, stdin=0):
                continue
            line = sys.stdin.readline()
            if line.strip() == "status":
                print(json.dumps(holder.counts()), flush=True)
                continue
            break  # "stop" or end of input
        print(json.dumps(holder.counts()), flush=True)
    finally:
        holder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
