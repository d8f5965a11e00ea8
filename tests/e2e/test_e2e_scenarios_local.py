"""`make up` (local processes) → `make scenarios` → `make down`, exactly as a person runs them.

The whole misconfiguration catalogue against the lab that `make up` started, including the
network-namespace scenarios (source IP, dropped packets, unreachable host, host name resolving
elsewhere): the PACS of the local runtime listens on all interfaces (PACS_BIND), so the
runner's namespaces reach it over their veth pairs. Namespaces need root: outside CI a non-root
run is skipped with the reason, in CI (root) it runs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time

import pytest
from e2e_support import LabRun, run_make_scenarios, runtime

from ct_simulator.scenarios import catalogue
from lab import need

pytestmark = [pytest.mark.netns, pytest.mark.timeout(900)]


def namespaces_of_the_runner() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    return ([ln for ln in out.splitlines() if ln.startswith("dlab")]
            + [ln for ln in links.splitlines() if ": dlh" in ln]
            + [ln for ln in addrs.splitlines() if " 10.213." in ln])


@pytest.fixture
def local_lab(tmp_path):
    need(shutil.which("make") is not None, "make not found: install Debian's make")
    need(os.geteuid() == 0, "the network-namespace scenarios need root (ip netns, veth): run as root, as CI does")
    need(shutil.which("ip") is not None and shutil.which("iptables") is not None,
         "ip / iptables missing: install Debian's iproute2 and iptables (make test does it as root)")
    for mod in ("honcho", "pacs", "admin_api", "ct_simulator"):
        need(importlib.util.find_spec(mod) is not None, f"python package {mod!r} missing: run `make venv`")
    lab = LabRun("local", tmp_path)
    lab.env.pop("PACS_BIND", None)  # the default, as a person gets it
    yield lab
    if lab.state():
        lab.force_cleanup()


def test_make_scenarios_against_make_up_local_prints_the_whole_catalogue_green(local_lab):
    lab = local_lab
    names = [s.name for s in catalogue.load()]
    netns_names = [s.name for s in catalogue.load() if s.needs_netns]
    assert len(netns_names) >= 4, netns_names
    before = set(namespaces_of_the_runner())

    t0 = time.monotonic()
    lab.make("up", timeout=300)
    t_up = time.monotonic() - t0

    t_scenarios = run_make_scenarios(lab, names, names)

    # the runner put the lab back: no node of its own left
    lab.token = lab.read_token()
    status, nodes = lab.api("GET", "/api/nodes")
    assert status == 200 and nodes == [], nodes
    left = set(namespaces_of_the_runner()) - before
    assert not left, f"make scenarios left network namespaces / veth links / addresses behind: {left}"

    # make down leaves nothing: no process of the lab, no port, no state
    state = lab.state()
    lab.make("down", timeout=120)
    assert lab.state() is None
    assert runtime.lab_pids(state["lab_id"]) == [], "make down left processes behind"
    for port in (lab.admin_port, lab.pacs_port, lab.sim_port):
        assert not runtime.port_in_use(port), f"port {port} still answers after make down"
    print(f"timings: make up {t_up:.1f} s, make scenarios ({len(names)} scenarios) {t_scenarios:.1f} s")
