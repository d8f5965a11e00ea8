"""Where a modality outside the lab reaches the PACS: the page and `make ps` show it.

The environment says how the PACS is exposed (``scripts/lab.py`` and docker-compose.yml set it):

- ``PACS_PUBLIC_ADDRESS``: ``host`` or ``host:port``. With a port, a mapping publishes the PACS
  there (Compose: ``127.0.0.1:${PACS_PUBLISHED_PORT}``); with a host only (local processes),
  a modality calls the listener's own port on that host. Unset: ``PACS_HOST`` and the
  listener's port.
- ``PACS_PUBLISHED_TARGET``: the port inside the container that the mapping forwards to.

A port change through the API moves the listener at once, but a Compose mapping is fixed when
its container is created: when the live port is no longer the mapping's target, the address
says so and how to publish the new port (run ``make up`` again).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask


def _port(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def load(app: Flask) -> None:
    """Read the exposure from the environment into the app config."""
    raw = (os.environ.get("PACS_PUBLIC_ADDRESS") or "").strip()
    host, port = raw, None
    if raw.count(":") == 1:  # host:port (an IPv6 address alone has several colons)
        host, _, p = raw.partition(":")
        port = _port(p)
    app.config.setdefault("PACS_PUBLIC_HOST", host or None)
    app.config.setdefault("PACS_PUBLIC_PORT", port)
    app.config.setdefault("PACS_PUBLISHED_TARGET", _port(os.environ.get("PACS_PUBLISHED_TARGET")))


def public_address(config: Any, ae_title: str, live_port: int) -> dict[str, Any]:
    """The address a modality outside must use, whether it reaches the live listener, and a
    sentence saying so (with the fix when it does not)."""
    host = config.get("PACS_PUBLIC_HOST") or config["PACS_HOST"]
    published = config.get("PACS_PUBLIC_PORT")
    target = config.get("PACS_PUBLISHED_TARGET")
    if not published:
        return {"host": host, "port": live_port, "published": False, "target": None, "current": True,
                "text": f"A modality calls AE title {ae_title} at {host}:{live_port}."}
    if target is None or target == live_port:
        return {"host": host, "port": published, "published": True, "target": target, "current": True,
                "text": f"A modality outside the lab network calls AE title {ae_title} at {host}:{published} "
                        f"(published to the PACS's port {live_port} on the lab network)."}
    return {"host": host, "port": published, "published": True, "target": target, "current": False,
            "text": f"{host}:{published} still forwards to port {target}, but the PACS now listens on "
                    f"{live_port}: a modality outside the lab network cannot reach it until you run "
                    f"`make up` again (it publishes the new port by re-creating the PACS container), "
                    f"or set the port back to {target}."}
