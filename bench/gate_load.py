"""The PACS under hostile load at the port (gate.py): numbers, not assertions.

``python -m bench.gate_load [--half-open 1000] [--seconds 5] [--clients 2] [--workers N]`` starts a
Redis and a PACS of this checkout (tests/lab.py), then measures, summed over the PACS's processes:

- RSS growth after 4 connections each sent an A-ASSOCIATE-RQ header claiming 1 GiB;
- RSS growth and thread count with ``--half-open`` connections that sent one byte and wait;
- the association accept rate (A-ASSOCIATE-RQ + C-ECHO + A-RELEASE over raw sockets,
  bench/echo_client.py) without, then with, those half-open connections held.

It prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lab import PacsProcess, RedisServer, add_node  # noqa: E402


def pids(pacs: PacsProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pacs.proc.pid)], capture_output=True, text=True).stdout.split()
    return [pacs.proc.pid, *map(int, out)]


def rss_mib(pacs: PacsProcess) -> float:
    kib = 0
    for pid in pids(pacs):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                kib += int(line.split()[1])
    return kib / 1024


def thread_count(pacs: PacsProcess) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/task")) for pid in pids(pacs))


def accept_rate(port: int, seconds: float, clients: int) -> dict[str, object]:
    argv = [sys.executable, "-m", "bench.echo_client", "--port", str(port), "--calling", "ECHO01",
            "--called", "PACS", "--seconds", str(seconds)]
    procs = [subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(clients)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    results = [json.loads(p.communicate(timeout=seconds + 60)[0].decode().splitlines()[-1]) for p in procs]
    ok = sum(int(r["ok"]) for r in results)
    elapsed = max(float(r["elapsed"]) for r in results)
    failed = {k: v for r in results for k, v in r["failed"].items()}
    return {"per_s": round(ok / elapsed, 1), "ok": ok, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--half-open", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--workers", default=os.environ.get("PACS_WORKERS", ""))
    p.add_argument("--no-claims", action="store_true", help="skip the 1 GiB length claims (for a PACS without "
                   "the gate, which would allocate them)")
    ns = p.parse_args(argv)
    redis = RedisServer().start()
    env = {"PACS_WORKERS": ns.workers} if ns.workers else {}
    pacs = PacsProcess(redis.url, Path(tempfile.mkdtemp(prefix="gate-load-")), extra_env=env)
    from dicomlab.registry import Registry, connect

    registry = Registry(connect(redis.url))
    n = ns.half_open
    registry.update_listener({"port": pacs.port, "max_pending_connections": n + 64,
                              "max_pending_per_address": n + 64, "assoc_request_timeout": 600})
    add_node(registry, "ECHO01")
    pacs.start()
    out: dict[str, object] = {"workers": ns.workers or "default", "half_open": n}
    held: list[socket.socket] = []
    try:
        accept_rate(pacs.port, 1.0, 1)  # warm up (thread pools)
        base_rss, base_threads = rss_mib(pacs), thread_count(pacs)
        out["baseline"] = {"rss_mib": round(base_rss, 1), "threads": base_threads}
        claims = []
        for _ in range(0 if ns.no_claims else 4):
            s = socket.create_connection(("127.0.0.1", pacs.port))
            s.sendall(struct.pack(">BBI", 1, 0, 1 << 30))
            claims.append(s)
        for s in claims:
            s.settimeout(10)
            s.recv(64)
            s.close()
        if claims:
            out["rss_growth_4x1GiB_claims_mib"] = round(rss_mib(pacs) - base_rss, 1)
        out["accept_plain"] = accept_rate(pacs.port, ns.seconds, ns.clients)
        base_rss = rss_mib(pacs)
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", pacs.port))
            s.send(b"\x01")
            held.append(s)
        time.sleep(1.0)
        out["with_half_open"] = {"rss_growth_mib": round(rss_mib(pacs) - base_rss, 1), "threads": thread_count(pacs)}
        out["accept_with_half_open"] = accept_rate(pacs.port, ns.seconds, ns.clients)
        plain = out["accept_plain"]["per_s"]  # type: ignore[index]
        loaded = out["accept_with_half_open"]["per_s"]  # type: ignore[index]
        out["ratio"] = round(loaded / plain, 2) if plain else None
        closed: dict[str, int] = {}
        for e in registry.read_events(limit=10_000):
            if e.type == "connection-closed":
                closed[e.reason] = closed.get(e.reason, 0) + int(e.detail.get("count", 1))
        out["connections_closed_by_reason"] = closed
        out["pacs_log_odd"] = [ln for ln in pacs.log().splitlines() if not any(w in ln for w in ("echo-received", "association-accepted", "association-released"))][-40:]
    finally:
        for s in held:
            s.close()
        pacs.stop()
        redis.stop()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
