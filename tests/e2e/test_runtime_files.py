"""What the Compose file, the Dockerfiles and the launcher promise, checked without running them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml
from e2e_support import runtime

from lab import ROOT, need

SERVICES = ("pacs", "ct-simulator", "admin-api")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_has_no_version_key_so_v1_and_v2_read_it_alike(compose):
    assert "version" not in compose


def test_redis_is_not_published_and_published_ports_are_loopback_only(compose):
    assert "ports" not in compose["services"]["redis"]
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_every_long_running_service_has_a_healthcheck_and_waits_on_health(compose):
    for name, svc in compose["services"].items():
        if "tools" in svc.get("profiles", []):
            continue
        assert "healthcheck" in svc, name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)


def test_storage_is_a_named_volume_and_the_cli_sits_behind_a_profile(compose):
    assert "storage" in compose["volumes"]
    assert "storage:/data/storage" in compose["services"]["pacs"]["volumes"]
    assert compose["services"]["ct"]["profiles"] == ["tools"]


def test_service_images_build_from_the_repository_root_with_the_base_image_as_argument(compose):
    for name in SERVICES:
        build = compose["services"][name]["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == f"{name}/Dockerfile"
        assert "PYTHON_IMAGE" in build["args"]


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_rules(service):
    text = (ROOT / service / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert lines[0].startswith("ARG PYTHON_IMAGE=python:3.11-slim") and lines[1] == "FROM ${PYTHON_IMAGE}"
    assert "PYTHONUNBUFFERED=1" in text
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    cmd = [ln for ln in lines if ln.startswith("CMD ")][-1]
    assert cmd.startswith("CMD [")  # exec form
    assert any(ln.startswith("HEALTHCHECK") for ln in lines)
    # dependencies are installed before the code is copied
    first_code_copy = next(i for i, ln in enumerate(lines) if re.match(rf"COPY {service} {service}$", ln))
    deps_install = max(i for i, ln in enumerate(lines) if "pip install -r" in ln)
    assert deps_install < first_code_copy


def test_pyproject_deps_leaves_out_the_labs_own_packages():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "pyproject-deps.py"), "common", "pacs"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert out and not any(r.lower().startswith("dicomlab") for r in out)
    assert any(r.startswith("pynetdicom") for r in out)


def test_env_file_token_is_generated_once(tmp_path, monkeypatch):
    envf = tmp_path / "lab.env"
    envf.write_text("PACS_AE_TITLE=PACS\n")
    monkeypatch.setenv("LAB_ENV_FILE", str(envf))
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    runtime.load_env(generate_token=True)
    first = runtime.read_env_file(envf)["ADMIN_TOKEN"]
    assert len(first) >= 24 and (envf.stat().st_mode & 0o777) == 0o600
    monkeypatch.delenv("ADMIN_TOKEN")
    runtime.load_env(generate_token=True)
    assert runtime.read_env_file(envf)["ADMIN_TOKEN"] == first
    assert runtime.read_env_file(envf)["PACS_AE_TITLE"] == "PACS"


@pytest.mark.docker
def test_compose_accepts_the_file(tmp_path):
    cmd = runtime.compose_command()
    need(cmd is not None, "no docker compose / docker-compose: run scripts/docker-engine.sh")
    r = subprocess.run([*cmd, "-f", str(ROOT / "docker-compose.yml"), "--profile", "tools", "config", "--services"],
                       cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin:/usr/local/bin",
                                                                           "ADMIN_TOKEN": "x"})
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"redis", "pacs", "admin-api", "ct-simulator", "ct"}


def test_base_image_script_is_valid_bash():
    need(shutil.which("bash") is not None, "bash missing")
    for script in ("base-images.sh", "docker-engine.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True)


@pytest.mark.parametrize(("wanted", "engine", "expected"), [
    ("local", True, "local"),
    ("docker", False, "docker"),
    ("", True, "docker"),
    ("", False, "local"),
])
def test_runtime_choice(tmp_path, monkeypatch, wanted, engine, expected):
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LAB_RUNTIME", wanted)
    monkeypatch.setattr(runtime, "docker_answers", lambda: engine)
    monkeypatch.setattr(runtime, "compose_command", lambda: ["docker-compose"])
    assert runtime.choose_runtime(for_up=True) == expected


def test_a_recorded_runtime_wins_for_down(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("LAB_RUNTIME", raising=False)
    monkeypatch.setattr(runtime, "docker_answers", lambda: True)
    runtime.write_state({"runtime": "local", "lab_id": "x"})
    assert runtime.choose_runtime(for_up=False) == "local"
