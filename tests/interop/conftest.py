"""Real DICOM TLS peers for the interop tests: the lab CA, Debian's Orthanc 1.10 with
DICOM TLS on (its own configuration, free loopback ports), DCMTK with +tls."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ct_simulator.network import quiet_pynetdicom
from dicomlab.tlsca import LabCA
from lab import dcmtk_env, free_port, need

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    for name in ("REDIS_URL", "PACS_HOST", "PACS_PORT", "PACS_TLS_PORT", "PACS_AE_TITLE", "SIM_AE_TITLE",
                 "ADMIN_URL", "ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    quiet_pynetdicom()


@dataclass
class Pem:
    """A certificate and its key as separate files (what Orthanc and DCMTK read), and a bundle."""

    cert: Path
    key: Path
    bundle: Path


def write_pem(ca: LabCA, folder: Path, cn: str, hosts: list[str] | None = None, *, server: bool = False,
              **kw: Any) -> Pem:
    issued = ca.issue(cn, hosts, server=server, client=True, **kw)
    folder.mkdir(parents=True, exist_ok=True)
    cert, key, bundle = folder / f"{cn}.crt", folder / f"{cn}.key", folder / f"{cn}.pem"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    bundle.write_bytes(issued.bundle(ca.cert_pem))
    return Pem(cert, key, bundle)


@pytest.fixture
def lab_ca(tmp_path) -> LabCA:
    return LabCA.ensure(tmp_path / "lab-ca")


class Orthanc:
    """Debian's Orthanc with DICOM TLS, on free loopback ports, with the lab CA trusted."""

    ae_title = "ORTHANC"

    def __init__(self, work: Path, ca: LabCA, *, require_client_cert: bool = True,
                 modalities: dict[str, Any] | None = None) -> None:
        self.work = work
        self.port, self.http_port = free_port(), free_port()
        pem = write_pem(ca, work / "certs", self.ae_title, ["localhost", "127.0.0.1"], server=True)
        config = {
            "Name": "dicomlab-interop", "StorageDirectory": str(work / "storage"),
            "IndexDirectory": str(work / "index"), "HttpServerEnabled": True, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomServerEnabled": True,
            "DicomAet": self.ae_title, "DicomPort": self.port, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True, "Plugins": [], "LuaScripts": [],
            "SaveJobs": False, "HttpDescribeErrors": True, "DicomScuTimeout": 15,
            "DicomTlsEnabled": True, "DicomTlsCertificate": str(pem.cert), "DicomTlsPrivateKey": str(pem.key),
            "DicomTlsTrustedCertificates": str(ca.cert_path),
            "DicomTlsRemoteCertificateRequired": require_client_cert,
            "DicomModalities": modalities or {}, "OrthancPeers": {},
        }
        cfg = work / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=1))
        self.log = work / "orthanc.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([ORTHANC, str(cfg)], stdout=fh, stderr=subprocess.STDOUT, cwd=work,
                                         env=dcmtk_env())
        deadline = time.monotonic() + 60
        while not self._up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Orthanc did not answer in 60 s:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _up(self) -> bool:
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def _open(self, req: urllib.request.Request, timeout: float) -> Any:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        with opener.open(req, timeout=timeout) as rsp:
            body = rsp.read()
        return json.loads(body) if body else None

    def get(self, path: str) -> Any:
        return self._open(urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}"), 5)

    def post(self, path: str, body: Any, timeout: float = 60) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._open(urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                                 method="POST"), timeout)

    def instances(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def orthanc(tmp_path, lab_ca):
    """Factory: ``orthanc(require_client_cert=..., modalities=...)`` starts Orthanc with DICOM TLS."""
    need(ORTHANC is not None, "Orthanc not found: install Debian's orthanc (scripts/system-deps.sh does)")
    started: list[Orthanc] = []

    def start(**kw: Any) -> Orthanc:
        o = Orthanc(tmp_path / f"orthanc-{len(started)}", lab_ca, **kw)
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop()
