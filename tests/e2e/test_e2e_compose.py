"""The lab as Docker Compose, end to end: make up / send / down, through ports on 127.0.0.1 only."""

from __future__ import annotations

import shutil

import pytest
from e2e_support import LabRun, run_end_to_end, runtime

from lab import need

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]


@pytest.fixture
def compose_lab(tmp_path):
    need(shutil.which("make") is not None, "make not found: install Debian's make")
    need(runtime.docker_answers(), "no Docker engine answers: run `bash scripts/docker-engine.sh` as root")
    need(runtime.compose_command() is not None, "no docker compose / docker-compose: run scripts/docker-engine.sh")
    lab = LabRun("docker", tmp_path)
    yield lab
    lab.force_cleanup()


def test_compose_lab_end_to_end(compose_lab):
    lab = compose_lab

    def stored(uid: str) -> list[str]:
        r = lab.compose("exec", "-T", "pacs", "find", f"/data/storage/{uid}", "-name", "*.dcm")
        assert r.returncode == 0, r.stdout
        return sorted(r.stdout.split())

    run_end_to_end(lab, stored)
    left = lab.docker_leftovers()
    assert not any(left.values()), f"make down left Docker objects behind: {left}"
