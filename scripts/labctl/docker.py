"""The Docker runtime: `up` and `down` of the lab as a Compose project."""

from __future__ import annotations

import os
import time

from labctl.compose import Compose, choose_base_images, docker_health
from labctl.env import (
    SERVICES,
    LabError,
    clear_state,
    deadline_loop,
    port_in_use,
    print_ready,
    read_state,
    say,
    write_compose_acl,
    write_state,
)
from labctl.listener import docker_publish_stored, lab_admin_port, listener_lines, live_listener
from labctl.local import supervisor_alive


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
