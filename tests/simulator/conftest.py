"""Real peers for the CT simulator's tests: DCMTK storescp, a listening socket
that never answers, a full accept queue, and a pynetdicom storage SCP."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom import AE, evt

from ct_simulator.network import quiet_pynetdicom
from lab import free_port, need_tool, wait_port

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """The CLI reads the lab's environment; tests say everything explicitly."""
    for name in ("REDIS_URL", "PACS_HOST", "PACS_PORT", "PACS_TLS_PORT", "PACS_AE_TITLE", "SIM_AE_TITLE", "SIM_PORT",
                 "ADMIN_URL", "ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    quiet_pynetdicom()


@dataclass
class StoreSCP:
    proc: subprocess.Popen
    port: int
    out: Path
    log: Path
    ae_title: str = "STORESCP"

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.rglob("*") if p.is_file())

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def storescp(tmp_path):
    """Factory: ``storescp(*options, nodelay=True)`` starts DCMTK's storescp on a free port, with
    TCP_NODELAY=1 (``nodelay=False``: Nagle's algorithm on, as Debian builds DCMTK)."""
    exe = need_tool("storescp", "dcmtk")
    started: list[StoreSCP] = []

    def start(*options: str, nodelay: bool = True) -> StoreSCP:
        port = free_port()
        out = tmp_path / f"storescp-{port}"
        out.mkdir()
        log = tmp_path / f"storescp-{port}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([exe, "-aet", "STORESCP", "-od", str(out), "-v", *options, str(port)],
                                    stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": str(int(nodelay))})
        scp = StoreSCP(proc, port, out, log)
        started.append(scp)
        wait_port("127.0.0.1", port)
        return scp

    yield start
    for scp in started:
        scp.proc.terminate()
        scp.proc.wait(10)


@pytest.fixture
def silent_listener():
    """A port whose TCP connections are accepted by the kernel but never answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def full_backlog():
    """A port whose accept queue is full: the kernel drops further SYNs, so connect() times out."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(2):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    yield port
    for c in fillers:
        c.close()
    server.close()


@pytest.fixture
def failing_scp():
    """A pynetdicom Storage SCP that answers 0xA700 (Out of Resources) to every second instance."""
    received: list[str] = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0xA700 if len(received) % 2 == 0 else 0x0000  # Refused: Out of Resources / Success

    ae = AE(ae_title="FAILSCP")
    ae.add_supported_context(CT_IMAGE_STORAGE, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    server.received = received
    yield server
    server.shutdown()
