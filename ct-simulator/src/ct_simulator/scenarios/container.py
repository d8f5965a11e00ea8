"""The Compose runtime's "modality elsewhere": a second simulator container on the lab network.

What a network namespace is to the local runtime, a one-off container of the ``ct`` service
(profile ``tools``) is to the Compose lab: the same simulator image, on the project's own
network, at an address Docker gives it -- not the registered ``ct-simulator`` host, and not the
address the runner's own modality comes from (the published port's gateway). The runner starts
it detached (``compose run -d --no-deps``, kept alive by a process that waits for a signal),
reads its address, runs the modality in it (``docker exec ... python -m
ct_simulator.scenarios.probe``), and removes it.

Dropped packets / host unreachable: a real filter in the container's own network namespace,
put there from the host (``nsenter -t <pid> -n iptables ...``, root only); the container's
network namespace disappears with it, so nothing is left on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

SERVICE = "ct"  # docker-compose.yml: the one-off simulator, profile "tools"
PACS_SERVICE = "pacs"


class ContainerError(RuntimeError):
    pass


def _run(argv: list[str], timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise ContainerError(f"{' '.join(argv[:6])} ...: exit {r.returncode}: "
                             f"{(r.stderr or r.stdout).strip()[-800:]}")
    return r


def drop_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to put a packet filter into the modality container's network namespace (nsenter)"
    for tool, package in (("nsenter", "util-linux"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian package {package})"
    return None


class ComposeModality:
    """One second simulator container, used like a ``netns.Netns``."""

    _count = 0
    inside_lab = True  # reaches the PACS by service name and listener port, not through the published port

    def __init__(self, compose: list[str]) -> None:
        ComposeModality._count += 1
        self.compose = compose  # the full compose command of the lab (-f, --project-directory, -p, ...)
        project = compose[compose.index("-p") + 1] if "-p" in compose else "dicomlab"
        self.name = f"{project}_scenario_{os.getpid()}_{ComposeModality._count}"
        self.ns_ip = ""  # the address the PACS sees the modality come from
        self.host_ip = PACS_SERVICE  # where the modality calls the PACS
        self.created = False

    def describe(self) -> str:
        return f"container {self.name} ({self.ns_ip or 'not started'})"

    def create(self) -> "ComposeModality":
        try:
            self.created = True
            _run([*self.compose, "run", "-d", "--no-deps", "--name", self.name, "--entrypoint", "python",
                  SERVICE, "-c", "import signal; signal.pause()"], timeout=180)
            r = _run(["docker", "inspect", "--format", "{{json .}}", self.name])
            info = json.loads(r.stdout)
            if not info["State"]["Running"]:
                raise ContainerError(f"the modality container {self.name} is not running: {info['State']}")
            self.pid = int(info["State"]["Pid"])
            addrs = [n.get("IPAddress") for n in (info["NetworkSettings"].get("Networks") or {}).values()]
            addrs = [a for a in addrs if a]
            if len(addrs) != 1:
                raise ContainerError(f"the modality container has addresses {addrs}, expected one")
            self.ns_ip = addrs[0]
        except Exception:
            self.delete()
            raise
        return self

    def exec(self, argv: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "exec", self.name, *argv], capture_output=True, text=True, timeout=timeout)

    def probe(self, spec: dict[str, Any], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.exec(["python", "-m", "ct_simulator.scenarios.probe", json.dumps(spec)], timeout=timeout)

    def can_reach(self, host: str, port: int, timeout: float = 2.0) -> str | None:
        code = ("import socket\n"
                f"s=socket.create_connection(({host!r},{port}),timeout={timeout})\n"
                "s.close()")
        r = self.exec(["python", "-c", code], timeout=timeout + 30)
        if r.returncode == 0:
            return None
        return (r.stderr.strip().splitlines() or ["?"])[-1]

    def drop(self, mode: str, port: int) -> None:
        why = drop_unavailable_reason()
        if why:
            raise ContainerError(why)
        target = ["-A", "OUTPUT", "-p", "tcp", "--dport", str(port)]
        rule = ["-j", "DROP"] if mode == "timeout" else ["-j", "REJECT", "--reject-with", "icmp-host-unreachable"]
        _run(["nsenter", "-t", str(self.pid), "-n", shutil.which("iptables") or "iptables", *target, *rule],
             timeout=30)

    def delete(self) -> None:
        if self.created:
            _run(["docker", "rm", "-f", self.name], check=False, timeout=60)
            self.created = False


def cleanup_stale(compose: list[str]) -> None:
    """Containers that an earlier runner (now dead) left behind."""
    project = compose[compose.index("-p") + 1] if "-p" in compose else "dicomlab"
    r = _run(["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", f"name={project}_scenario_"], check=False)
    for name in r.stdout.split():
        try:
            pid = int(name.rsplit("_", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not os.path.exists(f"/proc/{pid}"):
            _run(["docker", "rm", "-f", name], check=False)
