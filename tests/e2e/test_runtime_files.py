"""What the Compose file, the Dockerfiles and the launcher promise, checked without running them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

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
        assert build["dockerfile"] == "Dockerfile"  # one Dockerfile, one target per service
        assert build["target"] == name
        assert "PYTHON_IMAGE" in build["args"]


def _stages() -> dict[str, list[str]]:
    """The Dockerfile's stages: name -> its instruction lines (continuations joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[str]] = {"": []}
    current = ""
    for ln in (ln.strip() for ln in text.splitlines()):
        if not ln or ln.startswith("#"):
            continue
        m = re.match(r"FROM \S+ AS (\S+)$", ln)
        if m:
            current = m.group(1)
            stages[current] = []
        stages[current].append(ln)
    return stages


def test_one_dockerfile_with_a_shared_base_and_a_target_per_service():
    stages = _stages()
    assert stages[""][0].startswith("ARG PYTHON_IMAGE=python:3.11-slim")
    assert stages["base"][0] == "FROM ${PYTHON_IMAGE} AS base"
    assert "COPY pyproject.toml uv.lock ./" in stages["base"]
    for service in SERVICES:
        assert stages[service][0] == f"FROM base AS {service}"


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_rules(service):
    text = (ROOT / "Dockerfile").read_text()
    lines = _stages()[service]
    assert "PYTHONUNBUFFERED=1" in text
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    cmd = [ln for ln in lines if ln.startswith("CMD ")][-1]
    assert cmd.startswith("CMD [")  # exec form
    assert any(ln.startswith("HEALTHCHECK") for ln in lines)
    # the locked third-party packages are installed before the code is copied, then the code without them
    package = f"dicomlab-{service}"
    first_code_copy = next(i for i, ln in enumerate(lines) if re.match(rf"COPY {service} {service}$", ln))
    deps = [i for i, ln in enumerate(lines) if f"uv sync --frozen --no-dev --package {package} --no-install-workspace" in ln]
    assert deps and deps[0] < first_code_copy
    assert any("--frozen" in ln and "--no-editable" in ln for ln in lines[first_code_copy:])


def test_the_lock_is_current_and_covers_every_package():
    """uv.lock matches the pyproject.toml files (what `make venv` and the images install with --locked/--frozen)."""
    uv = shutil.which("uv", path=str(ROOT / ".venv" / "bin")) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv not found: `make venv` installs it (the dev group of pyproject.toml)")
    subprocess.run([uv, "lock", "--check"], cwd=ROOT, check=True, capture_output=True, text=True,
                   env={**os.environ, "UV_SYSTEM_CERTS": "1", "UV_PYTHON_DOWNLOADS": "never"})
    lock = (ROOT / "uv.lock").read_text()
    for name in ("dicomlab-common", "dicomlab-pacs", "dicomlab-admin-api", "dicomlab-ct-simulator"):
        assert f'name = "{name}"' in lock
    assert 'name = "pynetdicom"\nversion = "3.0.4"' in lock


def test_env_file_token_is_generated_once(tmp_path, monkeypatch):
    envf = tmp_path / "lab.env"
    envf.write_text("PACS_AE_TITLE=PACS\n")
    envf.chmod(0o644)
    monkeypatch.setenv("LAB_ENV_FILE", str(envf))
    for var in runtime.SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
    old_umask = os.umask(0)  # the file is 0600 whatever the umask
    try:
        runtime.load_env(generate_token=True)
    finally:
        os.umask(old_umask)
    first = runtime.read_env_file(envf)
    assert len(first["ADMIN_TOKEN"]) >= 24 and (envf.stat().st_mode & 0o777) == 0o600
    for var in runtime.SECRET_VARS[1:]:
        assert len(first[var]) >= 40, var
    assert [p.name for p in tmp_path.iterdir()] == ["lab.env"], "a temporary file was left behind"
    for var in runtime.SECRET_VARS:
        monkeypatch.delenv(var)
    runtime.load_env(generate_token=True)
    again = runtime.read_env_file(envf)
    assert {k: again[k] for k in runtime.SECRET_VARS} == {k: first[k] for k in runtime.SECRET_VARS}
    assert again["PACS_AE_TITLE"] == "PACS"


def test_env_file_is_written_atomically_with_mode_0600_from_the_start(tmp_path, monkeypatch):
    """The temporary file is created O_EXCL with 0600 (never readable by others, not even for a
    moment) in the same folder, then renamed over the env file."""
    envf = tmp_path / "lab.env"
    envf.write_text("KEEP=1\n")
    opened = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **k):
        opened.append((Path(path), flags, mode))
        return real_open(path, flags, mode, *a, **k)

    monkeypatch.setattr(runtime.os, "open", spy)
    runtime.write_private_file(envf, "KEEP=1\nADMIN_TOKEN=abc\n")
    (path, flags, mode), = opened
    assert path.parent == tmp_path and path != envf
    assert flags & os.O_EXCL and flags & os.O_CREAT and mode == 0o600
    assert envf.read_text() == "KEEP=1\nADMIN_TOKEN=abc\n" and (envf.stat().st_mode & 0o777) == 0o600
    assert not path.exists()


def test_a_short_admin_token_is_refused_with_a_clear_error(tmp_path, monkeypatch):
    envf = tmp_path / "lab.env"
    envf.write_text("ADMIN_TOKEN=short\n")
    monkeypatch.setenv("LAB_ENV_FILE", str(envf))
    for var in runtime.SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(runtime.LabError, match="at least 16"):
        runtime.load_env(generate_token=True)


def test_the_token_is_printed_only_to_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("ADMIN_TOKEN", "t" * 32)
    runtime.print_ready("8080", [])
    out = capsys.readouterr().out
    assert "t" * 32 not in out and "ADMIN_TOKEN" in out and str(runtime.env_file()) in out
    monkeypatch.setattr(runtime.sys.stdout, "isatty", lambda: True)
    assert "t" * 32 in runtime.token_line()


def test_each_local_service_gets_its_own_redis_user_and_no_other_secret(monkeypatch):
    env = {"REDIS_URL": "redis://127.0.0.1:7000/0", "ADMIN_TOKEN": "a" * 20, "REDIS_PACS_PASSWORD": "pp",
           "REDIS_ADMIN_PASSWORD": "aa", "REDIS_SIM_PASSWORD": "ss", "PATH": "/bin"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    pacs = runtime.service_env(env, "pacs", True)
    admin = runtime.service_env(env, "admin-api", True)
    sim = runtime.service_env(env, "ct-simulator", True)
    assert pacs["REDIS_URL"] == "redis://pacs:pp@127.0.0.1:7000/0"
    assert admin["REDIS_URL"] == "redis://admin:aa@127.0.0.1:7000/0" and admin["ADMIN_TOKEN"] == "a" * 20
    assert sim["REDIS_URL"] == "redis://sim:ss@127.0.0.1:7000/0"
    for e in (pacs, admin, sim, runtime.service_env(env, "redis", True)):
        assert not any(k.startswith("REDIS_") and k.endswith("_PASSWORD") for k in e)
    assert "ADMIN_TOKEN" not in pacs and "ADMIN_TOKEN" not in sim
    assert runtime.service_env(env, "pacs", False)["REDIS_URL"] == env["REDIS_URL"]  # a REDIS_URL given: as is


HARDENED = ("redis", "pacs", "admin-api", "ct-simulator", "ct")


@pytest.mark.parametrize("name", HARDENED)
def test_every_service_is_hardened(compose, name):
    svc = compose["services"][name]
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"] and "cap_add" not in svc
    assert svc["security_opt"] == ["no-new-privileges:true"]
    assert svc["mem_limit"] and int(svc["pids_limit"]) > 0
    log = svc["logging"]
    assert log["driver"] == "json-file" and log["options"]["max-size"] and int(log["options"]["max-file"]) >= 1


def test_redis_is_closed_on_an_internal_network(compose):
    assert compose["networks"]["registry"] == {"internal": True}
    redis_svc = compose["services"]["redis"]
    assert redis_svc["networks"] == ["registry"] and "ports" not in redis_svc
    assert "--aclfile" in redis_svc["command"] and "--protected-mode" not in redis_svc["command"]
    assert any(v.endswith(":/etc/redis/users.acl:ro") for v in redis_svc["volumes"])
    users = {"pacs": "pacs", "admin-api": "admin", "ct-simulator": "sim", "ct": "sim"}
    for name, user in users.items():
        assert compose["services"][name]["environment"]["REDIS_URL"].startswith(f"redis://{user}:${{REDIS_"), name
    assert compose["services"]["ct-simulator"]["networks"] == ["registry"]


def test_admin_api_reads_the_storage_and_never_writes_it(compose):
    """The DICOMweb routes serve the stored files: the admin API mounts the storage read only,
    and its code has no call that writes, moves or removes a file."""
    # and the lab CA's volume (DICOM TLS: the CA download and node certificates)
    assert compose["services"]["admin-api"]["volumes"] == ["storage:/data/storage:ro", "tls:/data/tls"]
    assert "tls:/data/tls" in compose["services"]["pacs"]["volumes"]
    assert compose["services"]["admin-api"]["environment"]["PACS_STORAGE_DIR"] == "/data/storage"
    writes = re.compile(r"open\([^)]*['\"][wax+]|\.write_(bytes|text)\(|\.unlink\(|os\.(replace|rename|remove)\("
                        r"|\.mkdir\(|rmtree|\.save_as\((?!buf)")
    for path in (ROOT / "admin-api" / "src").rglob("*.py"):
        assert not writes.search(path.read_text()), path


@pytest.mark.docker
def test_compose_accepts_the_file(tmp_path):
    cmd = runtime.compose_command()
    need(cmd is not None, "no docker compose / docker-compose: run scripts/docker-engine.sh")
    r = subprocess.run([*cmd, "-f", str(ROOT / "docker-compose.yml"), "--profile", "tools", "config", "--services"],
                       cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin:/usr/local/bin",
                                                                           "ADMIN_TOKEN": "x", "REDIS_PACS_PASSWORD": "p",
                                                                           "REDIS_ADMIN_PASSWORD": "a",
                                                                           "REDIS_SIM_PASSWORD": "s"})
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
    monkeypatch.setattr(runtime.commands, "docker_answers", lambda: engine)
    monkeypatch.setattr(runtime.commands, "compose_command", lambda: ["docker-compose"])
    assert runtime.choose_runtime(for_up=True) == expected


def test_a_recorded_runtime_wins_for_down(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("LAB_RUNTIME", raising=False)
    monkeypatch.setattr(runtime.commands, "docker_answers", lambda: True)
    runtime.write_state({"runtime": "local", "lab_id": "x"})
    assert runtime.choose_runtime(for_up=False) == "local"
