"""The listener in force (AE title and port): stored in Redis; the environment only seeds it."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from labctl.compose import Compose, docker_health
from labctl.env import ROOT, poll_until, say, service_redis_url

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
    if not poll_until(lambda: docker_health(compose, "redis") == "healthy", timeout, interval=1.0):
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
