"""Network namespaces of the runner's own making, so that a modality really
sends from another address, or really loses its packets.

Each ``Netns`` is one namespace with one veth pair: the host end gets
10.213.N.1/30 (the address the modality calls the PACS on), the namespace end
10.213.N.2/30 (the address the PACS sees). Only traffic to that host address
goes through it. ``drop`` adds a real filter inside the namespace: packets to
the PACS silently dropped (the modality times out) or answered with ICMP host
unreachable. Deleting the namespace removes the veth pair and the filters:
nothing is left on the host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PREFIX = "dlab"
BASE = ipaddress.ip_network("10.213.0.0/16")


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run as root, or in CI)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


def _used_subnets() -> set[int]:
    used = set()
    r = _ip("-j", "-4", "addr", check=False)
    try:
        for link in json.loads(r.stdout or "[]"):
            for a in link.get("addr_info", []):
                ip = ipaddress.ip_address(a.get("local", "0.0.0.0"))
                if ip in BASE:
                    used.add(int(ip) >> 8 & 0xFF)
    except ValueError:
        pass
    return used


def cleanup_stale() -> None:
    """Namespaces that an earlier runner (now dead) left behind."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX):].split("x")[0])
        except ValueError:
            continue
        if not Path(f"/proc/{pid}").exists():
            _ip("netns", "del", name, check=False)


class Netns:
    _count = 0

    def __init__(self) -> None:
        Netns._count += 1
        self.name = f"{PREFIX}{os.getpid()}x{Netns._count}"
        used = _used_subnets()
        n = next((i for i in range(1, 255) if i not in used), None)
        if n is None:
            raise NetnsError("no free 10.213.N.0/30 subnet")
        self.host_ip = f"10.213.{n}.1"
        self.ns_ip = f"10.213.{n}.2"
        tag = f"{os.getpid() % 100000}{Netns._count % 100}"
        self.host_if = f"dlh{tag}"[:15]
        self.ns_if = f"dln{tag}"[:15]
        self.created = False

    def create(self) -> "Netns":
        try:
            _ip("netns", "add", self.name)
            self.created = True
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            self.exec_ip("addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            self.exec_ip("link", "set", self.ns_if, "up")
            self.exec_ip("link", "set", "lo", "up")
        except Exception:
            self.delete()
            raise
        return self

    def exec_ip(self, *args: str) -> None:
        _ip("-n", self.name, *args)

    def run(self, argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def drop(self, mode: str, port: int) -> None:
        """A real filter inside the namespace on the way to host_ip:port."""
        target = ["-A", "OUTPUT", "-d", self.host_ip, "-p", "tcp", "--dport", str(port)]
        rule = ["-j", "DROP"] if mode == "timeout" else ["-j", "REJECT", "--reject-with", "icmp-host-unreachable"]
        iptables = shutil.which("iptables") or "iptables"
        r = self.run([iptables, *target, *rule], timeout=20)
        if r.returncode != 0:
            raise NetnsError(f"iptables in the namespace: {r.stderr.strip() or r.returncode}")

    def describe(self) -> str:
        return f"network namespace {self.name} ({self.ns_ip})"

    def target(self, port: int) -> tuple[str, int]:
        """(host, port) of the PACS as the namespace reaches it: the host end of the veth pair."""
        return self.host_ip, port

    def probe(self, spec: dict[str, Any], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """The modality (``python -m ct_simulator.scenarios.probe``) inside the namespace."""
        return self.run([sys.executable, "-m", "ct_simulator.scenarios.probe", json.dumps(spec)], timeout=timeout)

    def can_reach(self, host: str, port: int, timeout: float = 2.0) -> str | None:
        """None when a TCP connection from the namespace reaches host:port, else why not."""
        code = ("import socket,sys\n"
                f"s=socket.create_connection(({host!r},{port}),timeout={timeout})\n"
                "s.close()")
        r = self.run([sys.executable, "-c", code], timeout=timeout + 10)
        if r.returncode == 0:
            return None
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return last

    def delete(self) -> None:
        _ip("link", "del", self.host_if, check=False)
        if self.created:
            _ip("netns", "del", self.name, check=False)
            self.created = False

    def __enter__(self) -> "Netns":
        return self.create()

    def __exit__(self, *exc: Any) -> None:
        self.delete()

