"""The lab as a person runs it, driven from a test: `make up`, the admin API, `make send`, `make down`.

A LabRun has its own state folder, env file, ports and (in Compose) project name, so a test
never touches a lab that a person has running from the same checkout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from dicomlab.waiting import wait_until
from lab import ROOT, free_port

SIM_AE = "CT01"
PACS_AE = "PACS"


def load_runtime_module():
    """scripts/lab.py, imported under another name (tests/lab.py is ``lab``)."""
    spec = importlib.util.spec_from_file_location("lab_runtime", ROOT / "scripts" / "lab.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


runtime = load_runtime_module()


def poll(check, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    return wait_until(check, timeout, interval=interval, what=what, error=AssertionError)


class LabRun:
    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.admin_port = free_port()
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ADMIN_TOKEN", "REDIS_URL", "PACS_PORT", "PACS_TLS_PORT",
                            "SIM_PORT", "PACS_STORAGE_DIR", "COMPOSE_PROJECT_NAME", "LAB_RUNTIME")}
        env.update({
            "LAB_RUNTIME": kind,
            "LAB_STATE_DIR": str(workdir / "state"),
            "LAB_ENV_FILE": str(workdir / "lab.env"),
            "ADMIN_PORT": str(self.admin_port),
            "PYTHONUNBUFFERED": "1",
        })
        if kind == "local":
            self.pacs_port = free_port()
            self.pacs_tls_port = free_port()
            self.sim_port = free_port()
            self.storage = workdir / "storage"
            env.update({"PACS_PORT": str(self.pacs_port), "SIM_PORT": str(self.sim_port),
                        "PACS_TLS_PORT": str(self.pacs_tls_port),
                        "PACS_STORAGE_DIR": str(self.storage)})
            self.sim_host, self.sim_node_port = "127.0.0.1", self.sim_port
        else:
            self.project = f"dicomlab-e2e-{uuid.uuid4().hex[:8]}"
            self.pacs_published = free_port()
            self.pacs_tls_published = free_port()
            env.update({"COMPOSE_PROJECT_NAME": self.project, "PACS_PUBLISHED_PORT": str(self.pacs_published),
                        "PACS_TLS_PUBLISHED_PORT": str(self.pacs_tls_published),
                        "LAB_DOWN_VOLUMES": "1"})
            self.sim_host, self.sim_node_port = "ct-simulator", 104
        self.env = env
        self.token = ""
        self.last_state: dict[str, Any] | None = None

    # -- make and the launcher --------------------------------------------------------------
    def make(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=self.env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        print(f"$ make {' '.join(args)}  -> exit {r.returncode}\n{r.stdout[-6000:]}")
        if check:
            assert r.returncode == 0, f"make {' '.join(args)} failed (exit {r.returncode}):\n{r.stdout[-4000:]}"
        return r

    def launcher(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "lab.py"), *args],
                              cwd=ROOT, env=self.env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)

    def state(self) -> dict[str, Any] | None:
        p = Path(self.env["LAB_STATE_DIR"]) / "state.json"
        return json.loads(p.read_text()) if p.exists() else None

    def read_token(self) -> str:
        for line in Path(self.env["LAB_ENV_FILE"]).read_text().splitlines():
            if line.startswith("ADMIN_TOKEN="):
                return line.split("=", 1)[1].strip()
        raise AssertionError("make up wrote no ADMIN_TOKEN into the env file")

    # -- compose --------------------------------------------------------------------------------
    def compose(self, *args: str, timeout: float = 300, profiles: bool = False) -> subprocess.CompletedProcess[str]:
        cmd = runtime.compose_command()
        assert cmd, "no compose command"
        base = [*cmd, "-f", str(ROOT / "docker-compose.yml"), "--project-directory", str(ROOT), "-p", self.project,
                "--env-file", self.env["LAB_ENV_FILE"]]
        if profiles:
            base += ["--profile", "tools"]
        images = (self.state() or self.last_state or {}).get("images") or {}
        env = dict(self.env, ADMIN_TOKEN=self.token or "x", **images)
        return subprocess.run([*base, *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)

    def docker_leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        out = {}
        for kind, cmd in (("containers", ["docker", "ps", "-aq", "--filter", label]),
                          ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
                          ("networks by name", ["docker", "network", "ls", "-q", "--filter",
                                                f"name=^{self.project}_"])):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            out[kind] = r.stdout.split()
        return out

    def force_cleanup(self) -> None:
        """Last resort after a failed test: nothing of this project stays on the machine."""
        if self.kind == "docker" and shutil.which("docker"):
            self.compose("down", "--volumes", "--remove-orphans", profiles=True)
        else:
            self.launcher("down")

    # -- the admin API --------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def api(self, method: str, path: str, body: Any = None, token: bool = True) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url(path), data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def get_page(self, path: str = "/") -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=30) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def rejected_events(self, calling_aet: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"type": "association-rejected", "limit": 200})
        status, body = self.api("GET", f"/api/events?{q}")
        assert status == 200, body
        events = body if isinstance(body, list) else (body or {}).get("events", [])
        return [e for e in events if (e.get("calling_aet") or "").strip() == calling_aet]

    def send_unregistered(self, calling_aet: str) -> subprocess.CompletedProcess[str]:
        """One instance from a calling AE title that is no node, from its own container / process."""
        args = ["send", "--called-aet", PACS_AE, "--calling-aet", calling_aet, "--slices", "1"]
        if self.kind == "docker":
            r = self.compose("run", "--rm", "--no-deps", "ct", *args, "--host", "pacs", "--port", "104", profiles=True)
        else:
            state = self.state()
            assert state
            exe = str(ROOT / ".venv" / "bin" / "ct-simulator")
            r = subprocess.run([exe, *args, "--host", "127.0.0.1", "--port", str(self.pacs_port)],
                               env=dict(self.env, REDIS_URL=state["redis_url"]), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        print(f"$ ct-simulator {' '.join(args)} -> exit {r.returncode}\n{r.stdout[-3000:]}")
        return r

    def studies(self) -> list[dict[str, Any]]:
        status, body = self.api("GET", "/api/studies")
        assert status == 200, body
        return body if isinstance(body, list) else (body or {}).get("studies", [])


def check_dicomweb(lab: LabRun, study_uid: str, slices: int) -> None:
    """The admin API of this runtime finds the study through DICOMweb and renders a slice from
    the PACS's storage (in Compose: the storage volume, mounted read only)."""
    status, series = lab.api("GET", f"/api/dicomweb/studies/{study_uid}/series")
    assert status == 200 and len(series) == 1, series
    series_uid = series[0]["0020000E"]["Value"][0]
    status, instances = lab.api("GET", f"/api/dicomweb/studies/{study_uid}/series/{series_uid}/instances")
    assert status == 200 and len(instances) == slices, instances
    sop = instances[0]["00080018"]["Value"][0]
    req = urllib.request.Request(lab.url(f"/api/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop}"
                                         "/rendered?window=-600,1500"),
                                 headers={"Authorization": f"Bearer {lab.token}", "Accept": "image/png"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/png"
        assert r.read(8) == b"\x89PNG\r\n\x1a\n"


def scenario_rows(table: str) -> dict[str, str]:
    """{scenario name: result cell} of the table `make scenarios` prints (rich box drawing)."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")]
        # '│ name │ expected │ observed │ PASS 0.1s │ hint │' -> ['', name, expected, observed, result, hint, '']
        if len(cells) == 7 and cells[1] and cells[4]:
            rows[cells[1]] = cells[4]
    return rows


def run_make_scenarios(lab: LabRun, names: list[str], all_names: list[str]) -> float:
    """`make scenarios [SCENARIOS=...]` against the lab: exit 0, a table row PASS for every scenario
    asked for, no SKIP, the JUnit file clean. Returns the seconds it took."""
    junit = lab.workdir / "scenarios.xml"
    args = ["scenarios", f"SCENARIOS_JUNIT={junit}"]
    if sorted(names) != sorted(all_names):
        args.append("SCENARIOS=" + " ".join(names))
    t0 = time.monotonic()
    r = lab.make(*args, timeout=900, check=False)
    took = time.monotonic() - t0
    assert r.returncode == 0, f"make scenarios exit {r.returncode}:\n{r.stdout[-8000:]}"
    rows = scenario_rows(r.stdout)
    assert set(rows) == set(names), f"missing from the table: {set(names) - set(rows)}; extra: {set(rows) - set(names)}"
    not_green = {n: res for n, res in rows.items() if not res.startswith("PASS")}
    assert not not_green, f"not PASS: {not_green}\n{r.stdout[-8000:]}"
    assert "SKIP" not in r.stdout and "skip in CI" not in r.stdout
    n = len(names)
    assert f"{n} scenarios: {n} passed, 0 failed, 0 errors, 0 skipped -- all as expected" in r.stdout
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == \
        (str(n), "0", "0", "0"), suite.attrib
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == set(names)
    for name, case in cases.items():
        assert all(case.find(tag) is None for tag in ("failure", "error", "skipped")), \
            f"{name}: {ET.tostring(case, encoding='unicode')[:2000]}"
    return took


def check_tls(lab: LabRun, up_output: str) -> None:
    """DICOM TLS after the first `make up`: the lab CA was created, `make up` prints the TLS port,
    which reaches the PACS's TLS listener through 127.0.0.1 (published, in Compose), and the
    PACS's certificate chains to the CA the admin API hands out (one CA, shared)."""
    import socket
    import ssl

    port = lab.pacs_tls_port if lab.kind == "local" else lab.pacs_tls_published
    assert f"PACS TLS     127.0.0.1:{port}  DICOM TLS" in up_output, up_output
    status, ca_pem = lab.api("GET", "/api/tls/ca.pem")
    assert status == 200 and isinstance(ca_pem, str) and "BEGIN CERTIFICATE" in ca_pem, ca_pem
    status, tls = lab.api("GET", "/api/tls")
    assert status == 200 and tls["server"]["common_name"] == "PACS" and tls["live_tls_port"], tls
    ctx = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3")
    if lab.kind == "local":
        assert (lab.storage.parent / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600


def _make_up(lab: LabRun) -> None:
    """make up: returns once every service is healthy, prints the page and a generated token."""
    up = lab.make("up", timeout=1500)
    lab.token = lab.read_token()
    assert lab.url("/") in up.stdout, "make up does not print the web page URL"
    # make up's output goes to a pipe here, not a terminal: it says where the token is, never the token
    assert lab.token not in up.stdout, "make up printed the admin token into a log"
    assert "ADMIN_TOKEN" in up.stdout and lab.env["LAB_ENV_FILE"] in up.stdout, "make up does not say where the token is"
    assert (Path(lab.env["LAB_ENV_FILE"]).stat().st_mode & 0o777) == 0o600
    status, _ = lab.api("GET", "/api/health", token=False)
    assert status == 200
    status, _ = lab.api("GET", "/api/nodes", token=False)
    assert status == 401, "the API answers without the bearer token"
    assert lab.make("ps", check=False).returncode == 0
    check_tls(lab, up.stdout)


def _send_refused_then_stored(lab: LabRun, stored_files) -> None:
    # make send before the CT is a node: the PACS refuses it and the output says so.
    refused = lab.make("send", "SLICES=2", check=False, timeout=300)
    assert refused.returncode != 0, "an unregistered CT was not refused"
    assert "1/1/3" in refused.stdout or "calling-AE-title-not-recognized" in refused.stdout.replace("_", "-") \
        or "not recognized" in refused.stdout.lower() or "not an authorized node" in refused.stdout, refused.stdout

    # Register the simulator through the API, then make send stores a study.
    node = {"ae_title": SIM_AE, "host": lab.sim_host, "port": lab.sim_node_port,
            "description": "CT simulator (e2e)", "services": ["C-ECHO", "C-STORE"], "enabled": True}
    status, body = lab.api("POST", "/api/nodes", node)
    assert status == 201, body
    slices = 3
    lab.make("send", f"SLICES={slices}", timeout=300)

    study = poll(lambda: next((s for s in lab.studies() if s.get("instances") == slices), None), 30,
                 what=f"a study of {slices} instances listed by /api/studies")
    uid = study["study_uid"]
    status, detail = lab.api("GET", f"/api/studies/{uid}")
    assert status == 200, detail
    files = stored_files(uid)
    assert len(files) == slices, f"storage holds {files}"
    check_dicomweb(lab, uid, slices)


def _unregistered_rejected(lab: LabRun) -> None:
    """An AE title that is not a node, sent from its own container/process: rejected 1/1/3."""
    assert not lab.rejected_events("NOTREG")
    r = lab.send_unregistered("NOTREG")
    assert r.returncode != 0, f"an unregistered AE title was not refused:\n{r.stdout}"
    events = poll(lambda: lab.rejected_events("NOTREG"), 20, what="an association-rejected event for NOTREG")
    e = events[-1]
    assert e.get("reason") == "unknown-calling-aet", e
    assert "1/1/3" in json.dumps(e), f"the rejection is not (1, 1, 3): {e}"


def _page_and_logs(lab: LabRun) -> None:
    # The web page answers.
    status, page = lab.get_page("/")
    assert status == 200 and "DICOM Lab" in page

    # The logs are aggregated, one prefix per service.
    logs = lab.launcher("logs", "--no-follow", "--tail", "2000")
    assert logs.returncode == 0, logs.stdout
    for service in ("pacs", "admin-api", "ct-simulator"):
        assert service in logs.stdout, f"no {service} lines in the logs"
    assert "association-rejected" in logs.stdout


def run_end_to_end(lab: LabRun, stored_files, before_down=None) -> None:
    """The lesson of the lab, start to finish, the way a person does it."""
    _make_up(lab)
    _send_refused_then_stored(lab, stored_files)
    _unregistered_rejected(lab)
    _page_and_logs(lab)
    if before_down is not None:
        before_down()

    # make down leaves nothing behind.
    lab.last_state = lab.state()
    lab.make("down", timeout=300)
    assert lab.state() is None
