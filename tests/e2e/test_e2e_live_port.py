"""The listener port changed through the API survives `make down` / `make up`, in both runtimes:
`make up` prints the port in force (the stored one), says in one line that an explicit PACS_PORT
is overridden, publishes the stored port (Compose), and `make send` and a modality on the host
reach the PACS there. `make reset` returns the lab to its first start."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from e2e_support import PACS_AE, SIM_AE, LabRun, poll, runtime

from lab import free_port, need


def _scp(lab: LabRun) -> dict:
    status, body = lab.api("GET", "/api/scp")
    assert status == 200, body
    return body


def _echoscu(calling: str, port: int) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["echoscu", "-v", "-to", "10", "-ta", "10", "-td", "10", "-aet", calling, "-aec", PACS_AE,
                        "127.0.0.1", str(port)], text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    print(f"$ echoscu -aet {calling} 127.0.0.1 {port} -> exit {r.returncode}\n{r.stdout[-2000:]}")
    return r


def _outside_port(lab: LabRun, live_port: int) -> int:
    """Where a modality on the host sends: the published port (Compose) or the listener's own."""
    return lab.pacs_published if lab.kind == "docker" else live_port


def _up_with_the_simulator_as_node(lab: LabRun, new_port: int) -> int:
    """make up and register the simulator; the port the PACS first listens on."""
    lab.make("up", timeout=1500)
    lab.token = lab.read_token()
    first_port = _scp(lab)["port"]
    assert first_port != new_port
    node = {"ae_title": SIM_AE, "host": lab.sim_host, "port": lab.sim_node_port, "services": ["C-ECHO", "C-STORE"]}
    status, body = lab.api("POST", "/api/nodes", node)
    assert status == 201, body
    return first_port


def _move_the_listener(lab: LabRun, new_port: int, first_port: int) -> None:
    """The lesson's "choose the port" step: the PACS moves its listener at once."""
    status, body = lab.api("PATCH", "/api/scp", {"port": new_port})
    assert status == 200, body
    poll(lambda: ((_scp(lab)["listener"].get("heartbeat") or {}).get("port") == new_port), 30,
         what=f"the PACS listening on {new_port}")
    public = _scp(lab)["listener"]["public"]
    ps = lab.make("ps", check=False)
    assert f"AE title {PACS_AE}, port {new_port} (listening" in ps.stdout
    assert public["text"] in ps.stdout
    if lab.kind == "docker":
        # The mapping was fixed when the container was created: the page says so and how to fix it.
        assert public["current"] is False and public["target"] == first_port, public
        assert "make up" in public["text"]
        # The fix the page gives: `make up` again, lab running, publishes the new port.
        again = lab.make("up", timeout=1500)
        assert f"published to port {new_port} of the pacs container" in again.stdout, again.stdout
        public = _scp(lab)["listener"]["public"]
        assert public["current"] is True and public["target"] == new_port, public
        r = _echoscu("HOSTSCU", lab.pacs_published)
        assert "Association Rejected" in r.stdout and "Peer aborted" not in r.stdout, r.stdout
    else:
        assert public["current"] is True and public["port"] == new_port, public


def _down_then_up_asking_for_another_port(lab: LabRun, new_port: int) -> int:
    """make down, then make up with an environment that asks for yet another port; the port outside."""
    lab.make("down", timeout=300)
    other = free_port()
    lab.env["PACS_PORT"] = str(other)
    up = lab.make("up", timeout=1500)
    assert (f"PACS_PORT={other} in the environment, but Redis stores port {new_port}: the stored value is in "
            "force") in up.stdout, up.stdout
    assert sum("in the environment, but Redis stores" in line for line in up.stdout.splitlines()) == 1
    outside = _outside_port(lab, new_port)
    assert f"PACS         127.0.0.1:{outside}  AE title {PACS_AE}" in up.stdout, up.stdout
    if lab.kind == "docker":
        assert f"published to port {new_port} of the pacs container" in up.stdout
    public = _scp(lab)["listener"]["public"]
    assert public["current"] is True and public["port"] == outside, public
    ps = lab.make("ps", check=False)
    assert f"port {new_port} (listening" in ps.stdout and public["text"] in ps.stdout, ps.stdout
    return outside


def _send_and_a_modality_reach_it(lab: LabRun, outside: int) -> None:
    # make send reaches the PACS on the stored port, and stores a study.
    before = {s["study_uid"] for s in lab.studies()}
    lab.make("send", "SLICES=1", timeout=300)
    poll(lambda: {s["study_uid"] for s in lab.studies()} - before, 30, what="a new study after make send")

    # A modality on the host, configured from what `make up` printed, reaches the PACS.
    if lab.kind == "docker":
        # From the host the PACS sees the bridge's gateway, not a node: a real A-ASSOCIATE-RJ proves
        # the published port reaches the listener (a stale mapping aborts: "Peer aborted Association").
        r = _echoscu("HOSTSCU", outside)
        assert "Association Rejected" in r.stdout and "Peer aborted" not in r.stdout, r.stdout
    else:
        r = _echoscu(SIM_AE, outside)  # CT01 is a node on 127.0.0.1
        assert r.returncode == 0 and "Received Echo Response (Success)" in r.stdout, r.stdout


def change_port_then_down_and_up(lab: LabRun, new_port: int) -> None:
    first_port = _up_with_the_simulator_as_node(lab, new_port)
    _move_the_listener(lab, new_port, first_port)
    outside = _down_then_up_asking_for_another_port(lab, new_port)
    _send_and_a_modality_reach_it(lab, outside)


def test_local_port_change_survives_down_up_and_reset_starts_over(tmp_path):
    need(shutil.which("make") is not None and shutil.which("echoscu") is not None, "make and dcmtk's echoscu needed")
    lab = LabRun("local", tmp_path)
    try:
        change_port_then_down_and_up(lab, free_port())
        # make reset: stopped, registry and storage removed; the next make up seeds from PACS_PORT again.
        storage = lab.storage
        lab.make("reset", timeout=300)
        assert lab.state() is None and not storage.exists()
        up = lab.make("up", timeout=300)
        lab.token = lab.read_token()
        assert "in the environment, but Redis stores" not in up.stdout
        assert _scp(lab)["port"] == int(lab.env["PACS_PORT"])
        assert f"PACS         127.0.0.1:{lab.env['PACS_PORT']}  AE title {PACS_AE}" in up.stdout
        status, nodes = lab.api("GET", "/api/nodes")
        assert status == 200 and nodes == [], nodes
        lab.make("down", timeout=300)
    finally:
        if lab.state():
            lab.force_cleanup()


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_compose_port_change_is_published_after_down_up_and_reset_removes_volumes(tmp_path):
    need(shutil.which("make") is not None and shutil.which("echoscu") is not None, "make and dcmtk's echoscu needed")
    need(runtime.docker_answers(), "no Docker engine answers: run `bash scripts/docker-engine.sh` as root")
    need(runtime.compose_command() is not None, "no docker compose / docker-compose: run scripts/docker-engine.sh")
    lab = LabRun("docker", tmp_path)
    lab.env.pop("LAB_DOWN_VOLUMES")  # the port must survive make down, as in a person's lab
    try:
        change_port_then_down_and_up(lab, 11104)
        lab.last_state = lab.state()
        lab.make("reset", timeout=300)
        assert lab.state() is None
        r = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={lab.project}"],
                           capture_output=True, text=True, timeout=60)
        assert r.stdout.split() == [], f"make reset left volumes: {r.stdout}"
        left = lab.docker_leftovers()
        assert not any(left.values()), f"make reset left Docker objects behind: {left}"
    finally:
        lab.force_cleanup()
