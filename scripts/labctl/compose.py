"""Docker Compose plumbing: the Compose command, the project, the base images, health."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess

from labctl.env import (
    OFFICIAL_PYTHON,
    OFFICIAL_REDIS,
    ROOT,
    SECRET_VARS,
    STANDIN_PYTHON,
    STANDIN_REDIS,
    LabError,
    compose_acl_file,
    env_file,
    say,
)


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) when the plugin exists, else ``docker-compose`` (v1)."""
    if os.environ.get("LAB_COMPOSE"):
        return shlex.split(os.environ["LAB_COMPOSE"])
    candidates = [["docker", "compose"], ["docker-compose"]]
    for cmd in candidates:
        if shutil.which(cmd[0]) is None:
            continue
        try:
            if subprocess.run([*cmd, "version"], capture_output=True, timeout=30).returncode == 0:
                return cmd
        except (subprocess.TimeoutExpired, OSError):
            continue
    return None


# -- docker runtime -----------------------------------------------------------------------------


class Compose:
    def __init__(self, project: str, images: dict[str, str] | None = None) -> None:
        cmd = compose_command()
        if cmd is None:
            raise LabError("no Compose command: install docker-compose (Debian) or the docker compose plugin")
        self.cmd = cmd
        self.project = project
        self.images = images or {}  # the base images `up` chose: later commands must see the same file
        self.env: dict[str, str] = {}  # the stored listener `up` published (PACS_PORT, ...): the same, too

    @classmethod
    def from_state(cls, state: dict | None) -> "Compose":
        state = state or {}
        compose = cls(state.get("project") or os.environ.get("COMPOSE_PROJECT_NAME") or "dicomlab",
                      state.get("images"))
        compose.env = dict(state.get("compose_env") or {})
        return compose

    def base(self, profiles: bool = False) -> list[str]:
        args = [*self.cmd, "-f", str(ROOT / "docker-compose.yml"), "--project-directory", str(ROOT),
                "-p", self.project]
        if env_file().exists():
            args += ["--env-file", str(env_file())]
        if profiles:
            args += ["--profile", "tools"]
        return args

    def run(self, *args: str, profiles: bool = False, check: bool = True, capture: bool = False,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        full = [*self.base(profiles), *args]
        env = {**os.environ, **self.images, **self.env}
        env.setdefault("ADMIN_TOKEN", "not-needed-here")  # the file requires one; only `up` uses it
        for var in SECRET_VARS[1:]:  # the Redis passwords, likewise (`up` generates them first)
            env.setdefault(var, "not-needed-here")
        env.setdefault("LAB_REDIS_ACL_FILE", str(compose_acl_file()))
        r = subprocess.run(full, text=True, capture_output=capture, timeout=timeout, cwd=ROOT, env=env)
        if check and r.returncode != 0:
            detail = (r.stderr or "").strip()[-2000:] if capture else ""
            raise LabError(f"{' '.join(full[:2])} {' '.join(args)} failed (exit {r.returncode}) {detail}")
        return r

    def container(self, service: str) -> str:
        r = self.run("ps", "-a", "-q", service, capture=True, check=False)
        ids = r.stdout.split()
        return ids[0] if ids else ""


def image_present(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def pull(image: str) -> bool:
    try:
        r = subprocess.run(["docker", "pull", "-q", image], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def choose_base_images() -> None:
    """Set PYTHON_IMAGE / REDIS_IMAGE: given ones as they are; else official or stand-ins."""
    mode = (os.environ.get("LAB_BASE_IMAGES") or "auto").lower()
    wanted = {"PYTHON_IMAGE": (OFFICIAL_PYTHON, STANDIN_PYTHON), "REDIS_IMAGE": (OFFICIAL_REDIS, STANDIN_REDIS)}
    missing = []
    for var, (official, standin) in wanted.items():
        if os.environ.get(var):
            continue
        if mode != "standin" and (image_present(official) or (mode != "local-only" and pull(official))):
            os.environ[var] = official
        else:
            missing.append((var, standin))
    if missing:
        if not all(image_present(s) for _, s in missing):
            say("no image registry answers: building stand-in base images from Debian packages "
                "(scripts/base-images.sh; cached after the first time)")
            r = subprocess.run(["bash", str(ROOT / "scripts" / "base-images.sh")], cwd=ROOT)
            if r.returncode != 0:
                raise LabError("building the stand-in base images failed (see above); "
                               "or set PYTHON_IMAGE / REDIS_IMAGE to images you have")
        for var, standin in missing:
            os.environ[var] = standin
    say(f"base images: PYTHON_IMAGE={os.environ['PYTHON_IMAGE']} REDIS_IMAGE={os.environ['REDIS_IMAGE']}")


def docker_health(compose: Compose, service: str) -> str:
    cid = compose.container(service)
    if not cid:
        return "missing"
    r = subprocess.run(["docker", "inspect", "--format", "{{json .State}}", cid], capture_output=True, text=True)
    if r.returncode != 0:
        return "missing"
    st = json.loads(r.stdout)
    if st.get("Status") != "running":
        return st.get("Status", "unknown")
    return (st.get("Health") or {}).get("Status", "running")
