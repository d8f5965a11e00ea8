"""Start, stop and look at the whole lab: as Docker Compose, or as local processes.

The sub-commands of scripts/lab.py and its argument parser (see scripts/lab.py for the whole story)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from labctl.compose import Compose, compose_command, docker_answers
from labctl.docker import docker_down, docker_up
from labctl.env import (
    ROOT,
    LabError,
    clear_state,
    load_env,
    read_state,
    running_state,
    say,
    service_env,
    service_redis_url,
    state_dir,
)
from labctl.listener import live_listener, shown
from labctl.local import alive, local_checks, local_down, local_up, supervise, supervisor_alive, wait_redis


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
