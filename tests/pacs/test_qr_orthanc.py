"""Query/Retrieve with Debian's Orthanc 1.10 (a peer no one here wrote): Orthanc as a C-MOVE
destination, and Orthanc as the Q/R SCU that queries the PACS (REST /modalities/{id}/query)
and retrieves what it found (/queries/{id}/retrieve: a C-MOVE to itself).

Orthanc runs from a temporary configuration: free ports, its own storage folder, HTTP on
loopback only, started and stopped by the test."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_qr import QR, make_study, move, store

from lab import add_node, dcmtk_env, events_of, need, wait_for


def _free_port() -> int:
    """Free on every address: Orthanc's servers bind all of them."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, work: Path, pacs_port: int) -> None:
        exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
        need(exe is not None, "Orthanc not found: install Debian's orthanc (scripts/system-deps.sh does it)")
        self.exe, self.work = str(exe), work
        work.mkdir(parents=True, exist_ok=True)
        self.port, self.http_port = _free_port(), _free_port()
        config = {
            "Name": "dicomlab-qr", "StorageDirectory": str(work / "storage"), "IndexDirectory": str(work / "index"),
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

    def call(self, method: str, path: str, body: dict | str | None = None) -> object:
        data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if body else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        try:
            with opener.open(req, timeout=60) as rsp:
                return json.loads(rsp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Orthanc {method} {path}: {exc.code} {exc.read()[:2000]!r}") from None

    def instances(self) -> set[str]:
        return {self.call("GET", f"/instances/{i}/simplified-tags")["SOPInstanceUID"]  # type: ignore[index]
                for i in self.call("GET", "/instances")}  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def orthanc(pacs, tmp_path):
    o = Orthanc(tmp_path / "orthanc", pacs.port).start()
    yield o
    o.stop()


@pytest.fixture
def study(pacs, registry):
    add_node(registry, "CT01")
    add_node(registry, "WS01", services=QR)
    datasets = make_study(3, "DOE^JANE", "20240115")
    store(pacs.port, datasets)
    store(pacs.port, make_study(2, "ROE^RICHARD", "20240201"))
    return datasets


def test_orthanc_as_move_destination(pacs, registry, orthanc, study):
    add_node(registry, "ORTHANC", port=orthanc.port, services=("C-ECHO",))
    final = move(pacs.port, "ORTHANC", StudyInstanceUID=study[0].StudyInstanceUID)[-1]
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 3, orthanc.log.read_text()[-2000:]
    assert orthanc.instances() == {d.SOPInstanceUID for d in study}
    ev = wait_for(lambda: events_of(registry, "move-finished"), what="move-finished")
    assert f"to 'ORTHANC' at 127.0.0.1:{orthanc.port}" in ev[0].message


def test_orthanc_queries_and_retrieves_from_the_pacs(pacs, registry, orthanc, study):
    add_node(registry, "ORTHANC", port=orthanc.port, services=("C-ECHO", "C-FIND", "C-MOVE"))
    q = orthanc.call("POST", "/modalities/pacs/query", {"Level": "Study", "Query": {"PatientName": "DOE*",
                                                                                       "StudyInstanceUID": ""}})
    qid = q["ID"]  # type: ignore[index]
    answers = orthanc.call("GET", f"/queries/{qid}/answers?expand")
    assert len(answers) == 1, (answers, pacs.log()[-3000:])  # type: ignore[arg-type]
    tags = json.dumps(answers)
    assert study[0].StudyInstanceUID in tags and "DOE^JANE" in tags
    orthanc.call("POST", f"/queries/{qid}/retrieve", "ORTHANC")  # a C-MOVE to itself, synchronous
    got = wait_for(lambda: orthanc.instances() == {d.SOPInstanceUID for d in study}, 60,
                   what="Orthanc to receive the study")
    assert got
    assert wait_for(lambda: events_of(registry, "find-answered", calling_aet="ORTHANC"), what="find event")
    done = wait_for(lambda: events_of(registry, "move-finished", calling_aet="ORTHANC"), what="move event")
    assert "3 completed, 0 failed" in done[0].message
