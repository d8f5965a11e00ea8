"""The Compose lab fixture shared by the Compose end-to-end tests."""

from __future__ import annotations

import shutil

import pytest
from e2e_support import LabRun, runtime

from lab import need


@pytest.fixture
def compose_lab(tmp_path):
    need(shutil.which("make") is not None, "make not found: install Debian's make")
    need(runtime.docker_answers(), "no Docker engine answers: run `bash scripts/docker-engine.sh` as root")
    need(runtime.compose_command() is not None, "no docker compose / docker-compose: run scripts/docker-engine.sh")
    lab = LabRun("docker", tmp_path)
    yield lab
    lab.force_cleanup()
