"""The lab as Docker Compose, end to end: make up / send / scenarios / down, through ports on
127.0.0.1 only (and, for the scenarios that need the modality elsewhere, a second simulator
container on the project's own network)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from e2e_support import run_end_to_end, run_make_scenarios

from ct_simulator.scenarios import catalogue

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

# Dropped packets / host unreachable put a packet filter into the second container's network
# namespace from the host (nsenter + iptables): root only.
NEEDS_ROOT = ("dropped-packets", "host-unreachable")


def test_compose_lab_end_to_end(compose_lab):
    lab = compose_lab

    def stored(uid: str) -> list[str]:
        r = lab.compose("exec", "-T", "pacs", "find", f"/data/storage/{uid}", "-name", "*.dcm")
        assert r.returncode == 0, r.stdout
        return sorted(r.stdout.split())

    all_names = [s.name for s in catalogue.load()]
    root = os.geteuid() == 0 and shutil.which("nsenter") and shutil.which("iptables")
    names = [n for n in all_names if root or n not in NEEDS_ROOT]
    timings = {}

    def scenarios() -> None:
        # the misconfiguration catalogue against the Compose lab, as a person runs it: `make scenarios`
        timings["scenarios"] = run_make_scenarios(lab, names, all_names)
        status, nodes = lab.api("GET", "/api/nodes")
        assert status == 200 and [n["ae_title"] for n in nodes] == ["CT01"], nodes  # the runner put the lab back
        r = subprocess.run(["docker", "ps", "-aq", "--filter", f"name={lab.project}_scenario_"],
                           capture_output=True, text=True, timeout=60)
        assert r.stdout.split() == [], "make scenarios left a second simulator container behind"

    t0 = time.monotonic()
    run_end_to_end(lab, stored, before_down=scenarios)
    left = lab.docker_leftovers()
    assert not any(left.values()), f"make down left Docker objects behind: {left}"
    print(f"timings: whole test {time.monotonic() - t0:.1f} s, make scenarios ({len(names)} of "
          f"{len(all_names)} scenarios) {timings['scenarios']:.1f} s")
