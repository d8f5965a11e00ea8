"""``ct-simulator scenarios list | run [NAME ...] [--junit FILE]``.

Against a running lab, in either runtime. Where things are:
  admin API   --api, else ADMIN_URL, else http://127.0.0.1:$ADMIN_PORT (8080)
  token       --token, else ADMIN_TOKEN (environment, then .env)
  PACS        --pacs-host / --pacs-port, else PACS_HOST and the listener port from
              GET /api/scp (Compose runtime: 127.0.0.1 and PACS_PUBLISHED_PORT, 11112)
  registry    --registry-pid, else LAB_REDIS_PID, else the lab's state (data/lab)
  PACS log    --pacs-log, else the local lab's log, else `docker compose logs pacs`
              (read only for what the PACS cannot store while its registry is down)
  DICOM TLS   --pacs-tls-port, else the listener's tls_port (Compose: PACS_TLS_PUBLISHED_PORT,
              2762); the lab CA certificate and node certificates from the admin API; the lab
              CA's folder (--tls-lab-ca, else PACS_TLS_DIR or tls/ beside the storage; Compose:
              copied out of the pacs container) signs only the expired certificate
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import catalogue, container, netns, registryctl, report
from .adminapi import AdminApi, ApiError, lab_env
from .runner import DEFAULT_AET, LabContext, PacsLog, Result, Runner


def add_parser(sub: Any) -> None:
    p = sub.add_parser("scenarios", help="the misconfiguration catalogue: list it, or run it against the lab",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="scenarios_command", required=True)
    ls = ss.add_parser("list", help="the scenarios, what is wrong, what is expected")
    ls.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    ls.add_argument("--catalogue", help="a catalogue file (default: the one shipped with the simulator)")
    run = ss.add_parser("run", help="run scenarios (default: all) and print expected vs observed")
    run.add_argument("names", nargs="*", metavar="NAME", help="scenario names (default: all)")
    run.add_argument("--junit", metavar="FILE", help="also write JUnit XML")
    run.add_argument("--catalogue", help="a catalogue file (default: the one shipped with the simulator)")
    run.add_argument("--api", help="admin API base URL")
    run.add_argument("--token", help="admin API token (default: ADMIN_TOKEN)")
    run.add_argument("--pacs-host", help="where the modality reaches the PACS")
    run.add_argument("--pacs-port", type=int, help="the PACS port as seen from here")
    run.add_argument("--calling-aet", default=DEFAULT_AET, help=f"the scenarios' modality AE title ({DEFAULT_AET})")
    run.add_argument("--registry-pid", type=int, help="the Redis process to pause for the registry-down scenario")
    run.add_argument("--pacs-log", metavar="FILE", help="the PACS's stdout (its event lines)")
    run.add_argument("--pacs-tls-port", type=int, help="the PACS's DICOM TLS port as seen from here")
    run.add_argument("--tls-lab-ca", metavar="DIR",
                     help="the lab CA's folder (ca.pem, ca.key; default PACS_TLS_DIR, else tls/ beside the "
                          "storage): signs the expired certificate of expired-client-certificate")
    run.add_argument("--event-timeout", type=float, default=10.0, help="seconds to wait for PACS events (10)")
    run.add_argument("--verbose", action="store_true", help="print tracebacks of runner errors")
    p.set_defaults(func=main)


def _state(env: dict[str, str]) -> dict[str, Any]:
    state_dir = Path(env.get("LAB_STATE_DIR") or "data/lab")
    try:
        return json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def _tls_dir(a: argparse.Namespace, env: dict[str, str], state: dict[str, Any]) -> str | None:
    """The local lab CA's folder: as the PACS finds it (PACS_TLS_DIR, else tls/ beside the storage)."""
    if a.tls_lab_ca:
        return a.tls_lab_ca
    if env.get("PACS_TLS_DIR"):
        return env["PACS_TLS_DIR"]
    storage = env.get("PACS_STORAGE_DIR") or state.get("storage")
    if storage:
        return os.path.join(os.path.dirname(os.path.abspath(storage)), "tls")
    return None


def _compose_tls_dir(state: dict[str, Any], workdir: str) -> str | None:
    """Compose: the lab CA, copied out of the pacs container's tls volume into the runner's private work
    folder (removed after the run), to sign the expired certificate of expired-client-certificate."""
    if state.get("runtime") != "docker":
        return None
    dest = Path(workdir) / "lab-ca"
    dest.mkdir(mode=0o700)
    try:  # `docker cp` by container id: docker-compose v1 has no `cp`
        r = subprocess.run([*registryctl.compose_args(state), "ps", "-q", "pacs"], capture_output=True, text=True,
                           timeout=60)
        container = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else ""
        if not container:
            return None
        for name in ("ca.pem", "ca.key"):
            r = subprocess.run(["docker", "cp", f"{container}:/data/tls/{name}", str(dest / name)],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                return None
    except (OSError, subprocess.SubprocessError):
        return None
    return str(dest)


def _pacs_log(a: argparse.Namespace, state: dict[str, Any]) -> PacsLog | None:
    if a.pacs_log:
        return PacsLog(path=a.pacs_log)
    if state.get("runtime") == "local" and state.get("log"):
        return PacsLog(path=state["log"])
    if state.get("runtime") == "docker":
        return PacsLog(cmd=[*registryctl.compose_args(state), "logs", "--no-color", "pacs"])
    return None


def main(a: argparse.Namespace) -> int:
    try:
        scenarios = catalogue.load(a.catalogue)
    except catalogue.CatalogueError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    if a.scenarios_command == "list":
        return _list(a, scenarios)
    try:
        chosen = catalogue.select(scenarios, a.names)
    except catalogue.CatalogueError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 2
    env = lab_env()
    admin = _admin(a, env)
    if admin is None:
        return 1
    url, api, scp = admin
    state = _state(env)
    runtime = state.get("runtime") or env.get("LAB_RUNTIME") or "local"
    ctx = _context(a, env, state, runtime, api, scp)
    elsewhere = _elsewhere(ctx, state, runtime)
    log = (lambda m: print(m, file=sys.stderr)) if a.verbose else None
    runner = Runner(ctx, log)
    print(f"lab: {runtime} runtime, admin API {url}, PACS {scp['ae_title']} at {ctx.pacs_host}:{ctx.pacs_port}; "
          f"registry control: {ctx.registry.describe()}; PACS log: "
          f"{ctx.pacs_log.describe() if ctx.pacs_log else 'none'}; modality elsewhere: {elsewhere}", flush=True)
    try:
        runner.calibrate()
    except (RuntimeError, ApiError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"lab: the PACS sees this host's modality as {ctx.peer}; running {len(chosen)} scenario(s)", flush=True)
    results = _run_all(runner, chosen)
    report.print_results(results)
    if a.junit:
        report.write_junit(results, a.junit)
        print(f"JUnit XML: {a.junit}")
    return 0 if all(r.ok for r in results) else 1


def _list(a: argparse.Namespace, scenarios: list[catalogue.Scenario]) -> int:
    if a.json:
        print(json.dumps([{**s.__dict__, "pacs": [e.__dict__ for e in s.pacs]} for s in scenarios], indent=2))
    else:
        report.print_list(scenarios)
    return 0


def _admin(a: argparse.Namespace, env: dict[str, str]) -> tuple[str, AdminApi, dict[str, Any]] | None:
    """The admin API (its URL, a client, the listener settings), or None when it cannot be used (said why)."""
    token = a.token or env.get("ADMIN_TOKEN")
    if not token:
        print("FAILED: no admin token: set ADMIN_TOKEN (make up writes it into .env) or give --token",
              file=sys.stderr)
        return None
    url = a.api or env.get("ADMIN_URL") or f"http://127.0.0.1:{env.get('ADMIN_PORT') or 8080}"
    api = AdminApi(url, token)
    try:
        scp = api.scp()
    except ApiError as exc:
        print(f"FAILED: the admin API at {url} does not answer as expected ({exc}); is the lab up (make up)?",
              file=sys.stderr)
        return None
    return url, api, scp


def _context(a: argparse.Namespace, env: dict[str, str], state: dict[str, Any], runtime: str, api: AdminApi,
             scp: dict[str, Any]) -> LabContext:
    """Where the modality reaches the PACS from here, and what this lab lets the runner do."""
    if runtime == "docker":
        host = a.pacs_host or "127.0.0.1"
        port = a.pacs_port or int(env.get("PACS_PUBLISHED_PORT") or 11112)
        tls_port = a.pacs_tls_port or int(env.get("PACS_TLS_PUBLISHED_PORT") or 2762)
    else:
        host = a.pacs_host or env.get("PACS_HOST") or "127.0.0.1"
        port = a.pacs_port or int(scp["port"])
        tls_port = a.pacs_tls_port or scp.get("tls_port")
    ctx = LabContext(api=api, pacs_host=host, pacs_port=port, direct_port=port == int(scp["port"]),
                     calling=a.calling_aet, registry=registryctl.find(a.registry_pid),
                     netns_reason=netns.unavailable_reason(), event_timeout=a.event_timeout,
                     pacs_log=_pacs_log(a, state), pacs_tls_port=tls_port,
                     workdir=tempfile.mkdtemp(prefix="lab-scenarios-tls-"))
    ctx.tls_dir = _tls_dir(a, env, state) if runtime != "docker" or a.tls_lab_ca else _compose_tls_dir(state, ctx.workdir)
    if "tls_port" not in scp:
        ctx.tls_reason = "this PACS has no DICOM TLS listener settings (tls_port)"
    return ctx


def _elsewhere(ctx: LabContext, state: dict[str, Any], runtime: str) -> str:
    """Set up the modality "elsewhere" (stale leftovers removed); what it is, in words."""
    if runtime == "docker" and state.get("runtime") == "docker":
        # Compose: the modality "elsewhere" is a second simulator container on the lab network.
        compose = registryctl.compose_args(state)
        ctx.elsewhere = lambda: container.ComposeModality(compose)
        ctx.drop_reason = container.drop_unavailable_reason()
        container.cleanup_stale(compose)
        return "a second simulator container (`ct`, profile tools)" + \
            (f"; packet drops: no -- {ctx.drop_reason}" if ctx.drop_reason else "")
    if ctx.netns_reason is None:
        netns.cleanup_stale()
    return "network namespaces " + ("(yes)" if ctx.netns_reason is None else f"(no -- {ctx.netns_reason})")


def _run_all(runner: Runner, chosen: list[catalogue.Scenario]) -> list[Result]:
    """Each scenario in turn, its status on stderr as it ends; the TLS work folder removed after."""
    results = []
    try:
        for sc in chosen:
            r = runner.run(sc)
            print(f"  {sc.name}: {r.status}" + (f" ({r.reason})" if r.reason else ""), file=sys.stderr, flush=True)
            results.append(r)
    finally:
        shutil.rmtree(runner.ctx.workdir, ignore_errors=True)
    return results
