"""Debian's Orthanc 1.10 as a peer of the PACS, started by a test: its own folder, free ports, the
PACS as its modality "pacs", its REST API on loopback. Skipped with the reason when Orthanc is
missing (never in CI). (tests/interop/conftest.py has the DICOM TLS variant.)"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lab import dcmtk_env, need, wait_for


def any_free_port() -> int:
    """Free on every address: Orthanc's servers bind all of them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, work: Path, pacs_port: int, name: str = "dicomlab") -> None:
        exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
        need(exe is not None, "Orthanc not found: install Debian's orthanc (scripts/system-deps.sh does it)")
        self.exe, self.work = str(exe), work
        work.mkdir(parents=True, exist_ok=True)
        self.port, self.http_port = any_free_port(), any_free_port()
        config = {
            "Name": name, "StorageDirectory": str(work / "storage"), "IndexDirectory": str(work / "index"),
            "HttpServerEnabled": True, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": "ORTHANC",
            "DicomPort": self.port, "DicomCheckCalledAet": True,
            "DicomModalities": {"pacs": {"AET": "PACS", "Host": "127.0.0.1", "Port": pacs_port}},
            "OrthancPeers": {}, "Plugins": [], "LuaScripts": [], "SaveJobs": False, "HttpDescribeErrors": True,
            "DicomScuTimeout": 10,
        }
        (work / "orthanc.json").write_text(json.dumps(config, indent=1))
        self.log = work / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sent = ""  # what a test had Orthanc send last (the SOP Instance UID)

    def start(self) -> Orthanc:
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([self.exe, str(self.work / "orthanc.json")], stdout=fh,
                                         stderr=subprocess.STDOUT, cwd=self.work, env=dcmtk_env())
        wait_for(self._up, 60, 0.1, "Orthanc to answer")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {self.log.read_text(errors='replace')}")
        try:
            return bool(self.call("GET", "/system"))
        except OSError:
            return False

    def call(self, method: str, path: str, body: bytes | str | dict | None = None) -> Any:
        data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) \
            else body
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        try:
            with opener.open(req, timeout=60) as rsp:
                return json.loads(rsp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Orthanc {method} {path}: {exc.code} {exc.read()[:2000]!r}") from None

    def instances(self) -> set[str]:
        """The SOP Instance UIDs Orthanc holds."""
        return {self.call("GET", f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
                for i in self.call("GET", "/instances")}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
