"""The Compose lab as it runs: `docker inspect` of every service shows the hardening of
docker-compose.yml, and its Redis is closed (internal network, no anonymous access, the
simulator's user cannot authorize a node)."""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

SERVICES = ("redis", "pacs", "admin-api", "ct-simulator")


def inspect(kind: str, ident: str) -> dict:
    r = subprocess.run(["docker", kind, "inspect", ident], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def _containers(lab) -> dict:
    """``docker inspect`` of each service's one container."""
    containers = {}
    for service in SERVICES:
        r = lab.compose("ps", "-q", service)
        ids = r.stdout.split()
        assert r.returncode == 0 and len(ids) == 1, (service, r.stdout)
        containers[service] = inspect("container", ids[0])

    return containers


def _check_hardened(containers: dict) -> None:
    """Read-only root, no capabilities, no new privileges, limits, bounded logs, not root."""
    for service, c in containers.items():
        host = c["HostConfig"]
        assert c["State"]["Running"], service
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd"), (service, host["CapDrop"], host.get("CapAdd"))
        assert "no-new-privileges:true" in (host.get("SecurityOpt") or []), service
        assert host["Memory"] > 0, service
        assert (host.get("PidsLimit") or 0) > 0, service
        log = host["LogConfig"]
        assert log["Type"] == "json-file" and log["Config"].get("max-size") and log["Config"].get("max-file"), log
        assert c["Config"]["User"] not in ("", "0", "root"), (service, c["Config"]["User"])
        if service != "redis":  # the Python services write only /tmp (and their volumes)
            assert "/tmp" in (host.get("Tmpfs") or {}), service


def _check_mounts_and_networks(lab, containers: dict) -> None:
    # the admin API reads the storage (DICOMweb) and cannot write it; it shares the lab CA's folder
    # with the PACS (the first of the two to start creates the CA, under a lock; node certificates)
    data_mounts = [m for m in containers["admin-api"]["Mounts"] if m["Destination"].startswith("/data")]
    assert sorted((m["Destination"], m["RW"]) for m in data_mounts) == [("/data/storage", False),
                                                                          ("/data/tls", True)]

    # Redis: on the internal network only; the PACS and the admin API also on the lab network
    nets = {s: set(c["NetworkSettings"]["Networks"]) for s, c in containers.items()}
    registry_net = f"{lab.project}_registry"
    assert nets["redis"] == {registry_net} and nets["ct-simulator"] == {registry_net}
    assert inspect("network", registry_net)["Internal"] is True
    assert nets["pacs"] == nets["admin-api"] == {registry_net, f"{lab.project}_lab"}
    assert not containers["redis"]["HostConfig"].get("PortBindings"), "redis publishes a port"


def _check_redis_is_closed_inside(lab) -> None:
    # Inside the lab: no password, nothing; the simulator's own user cannot write a node
    probe = (
        "import os, socket, redis\n"
        "s = socket.create_connection(('redis', 6379), 5)\n"
        "s.sendall(b'*1\\r\\n$4\\r\\nPING\\r\\n*3\\r\\n$4\\r\\nSADD\\r\\n$14\\r\\ndicomlab:nodes\\r\\n$4\\r\\nEVIL\\r\\n')\n"
        "f = s.makefile('rb'); print(f.readline().decode().strip()); print(f.readline().decode().strip())\n"
        "c = redis.Redis.from_url(os.environ['REDIS_URL'])\n"
        "print(c.ping())\n"
        "try:\n"
        "    c.hset('dicomlab:node:EVIL', mapping={'ae_title': 'EVIL', 'host': '0.0.0.0'})\n"
        "except redis.exceptions.NoPermissionError as e:\n"
        "    print('NOPERM', e)\n"
    )
    r = lab.compose("exec", "-T", "ct-simulator", "python", "-c", probe)
    lines = r.stdout.splitlines()
    assert r.returncode == 0, r.stdout
    assert lines[0].startswith("-NOAUTH") and lines[1].startswith("-NOAUTH"), lines
    assert lines[2] == "True" and lines[3].startswith("NOPERM"), lines
    status, nodes = lab.api("GET", "/api/nodes")
    assert status == 200 and nodes == [], nodes


def test_compose_services_run_hardened_and_redis_is_closed(compose_lab):
    lab = compose_lab
    lab.make("up", timeout=1500)
    lab.token = lab.read_token()
    containers = _containers(lab)
    _check_hardened(containers)
    _check_mounts_and_networks(lab, containers)
    _check_redis_is_closed_inside(lab)

    lab.last_state = lab.state()
    lab.make("down", timeout=300)
