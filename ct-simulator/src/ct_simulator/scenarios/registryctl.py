"""Taking the registry (Redis) away for the "registry down" scenario, and
bringing it back exactly as it was.

Redis is *paused*, not stopped: its process is frozen (SIGSTOP / SIGCONT, or
``docker compose pause`` in the Compose runtime). To the PACS that is a
registry that does not answer -- its 2 s Redis timeout fires -- and nothing is
lost, nothing restarts (in the local runtime the supervisor would stop the
whole lab if Redis exited).

Where the Redis process is:
  --registry-pid / LAB_REDIS_PID     a process id (tests pass their redis-server's)
  the local lab's state              <LAB_STATE_DIR or data/lab>/pids/redis.pid
  the Compose lab's state            the project in <state>/state.json -> compose pause redis
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path


class RegistryControl:
    def __init__(self, pid: int | None = None, compose: list[str] | None = None, why_not: str = "") -> None:
        self.pid = pid
        self.compose = compose
        self.why_not = why_not
        self.paused = False

    @property
    def available(self) -> bool:
        return self.pid is not None or self.compose is not None

    def describe(self) -> str:
        if self.pid is not None:
            return f"redis pid {self.pid} (SIGSTOP/SIGCONT)"
        if self.compose is not None:
            return "docker compose pause/unpause redis"
        return f"none ({self.why_not})"

    def pause(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)
        elif self.compose is not None:
            _compose(self.compose, "pause")
        else:
            raise RuntimeError(self.why_not)
        self.paused = True

    def resume(self) -> None:
        if not self.paused:
            return
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
        elif self.compose is not None:
            _compose(self.compose, "unpause")
        self.paused = False


def _compose(cmd: list[str], verb: str) -> None:
    r = subprocess.run([*cmd, verb, "redis"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} {verb} redis: exit {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip()[-800:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def compose_args(state: dict) -> list[str]:
    """The Compose command line of the lab that `make up` recorded (file, project directory, project,
    env file, profiles), so that `pause`, `logs` and `run` act on that project with its settings."""
    if state.get("compose_args"):
        return list(state["compose_args"])
    cmd = state.get("compose") or ["docker", "compose"]
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    return [*cmd, "-p", state.get("project") or "dicomlab"]


def find(pid: int | None = None) -> RegistryControl:
    """How to pause the lab's Redis, from the option, the environment or the lab's state folder."""
    if pid is None and os.environ.get("LAB_REDIS_PID"):
        pid = int(os.environ["LAB_REDIS_PID"])
    if pid is not None:
        if not _alive(pid):
            return RegistryControl(why_not=f"no process {pid}")
        return RegistryControl(pid=pid)
    state_dir = Path(os.environ.get("LAB_STATE_DIR") or "data/lab")
    try:
        state = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return RegistryControl(why_not=f"no running lab recorded in {state_dir} and no --registry-pid")
    if state.get("runtime") == "docker":
        return RegistryControl(compose=compose_args(state))
    pidfile = state_dir / "pids" / "redis.pid"
    try:
        found = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return RegistryControl(why_not="the local lab uses an external REDIS_URL (no redis.pid): give --registry-pid")
    if not _alive(found):
        return RegistryControl(why_not=f"the lab's redis (pid {found}) is not running")
    return RegistryControl(pid=found)
