"""A small client of the admin API (standard library only): the runner sets
the lab up, restores it, and reads the PACS events through it."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dicomlab.envfile import read_env_file
from dicomlab.settings import LISTENER_FIELDS, NODE_FIELDS
from dicomlab.waiting import poll_until

# Listener settings the runner may change and must put back, and a node's fields: every field of
# dicomlab.settings.ListenerSettings / Node (derived there from the one declaration).
SCP_WRITABLE = LISTENER_FIELDS
NODE_WRITABLE = NODE_FIELDS
CA_ROUTE = "/api/tls/ca.pem"  # the lab CA certificate (PEM)


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any, what: str) -> None:
        self.status = status
        self.body = body
        detail = body.get("detail") if isinstance(body, dict) else body
        super().__init__(f"{what}: HTTP {status} {json.dumps(detail) if detail else ''}".strip())


def lab_env() -> dict[str, str]:
    """The environment, completed from the lab's ``.env`` (the environment wins, as in Compose)."""
    env = read_env_file(Path(os.environ.get("LAB_ENV_FILE") or ".env"))
    env.update({k: v for k, v in os.environ.items() if v})
    return env


class AdminApi:
    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._issues: bool | None = None

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(0, str(exc), f"{method} {self.url}{path}") from exc
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        if status not in ok:
            raise ApiError(status, payload, f"{method} {path}")
        return payload

    # -- what the runner uses ------------------------------------------------------
    def healthy(self) -> bool:
        try:
            self.call("GET", "/api/health")
            return True
        except ApiError:
            return False

    def wait_healthy(self, timeout: float = 30.0) -> bool:
        return bool(poll_until(self.healthy, timeout, interval=0.1))

    def scp(self) -> dict[str, Any]:
        return self.call("GET", "/api/scp")

    def patch_scp(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", "/api/scp", changes)

    def node(self, ae_title: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", "/api/nodes/" + urllib.parse.quote(ae_title, safe=""))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def put_node(self, node: dict[str, Any]) -> dict[str, Any]:
        """Create or replace the node with this AE title."""
        body = {k: node[k] for k in NODE_WRITABLE if k in node}
        if self.node(body["ae_title"]) is None:
            return self.call("POST", "/api/nodes", body)
        return self.call("PUT", "/api/nodes/" + urllib.parse.quote(body["ae_title"], safe=""), body)

    def delete_node(self, ae_title: str) -> None:
        try:
            self.call("DELETE", "/api/nodes/" + urllib.parse.quote(ae_title, safe=""))
        except ApiError as exc:
            if exc.status != 404:
                raise

    # -- DICOM TLS (the tls-pacs branch's routes) ---------------------------------------
    def lab_ca(self) -> bytes:
        """The lab CA certificate (PEM)."""
        return self.raw("GET", CA_ROUTE)

    def can_issue_certificates(self) -> bool:
        if self._issues is None:
            from ..tls import CERT_ROUTE

            try:  # an unknown node: 404 from the route itself; an admin API without the route: 404/405 too
                self.call("POST", CERT_ROUTE.format(ae="LAB-NO-SUCH-NODE"), {})
                self._issues = True
            except ApiError as exc:
                # the route answers "No authorized node has the AE title ..."; a missing route, a plain 404
                self._issues = exc.status in (404, 409, 422) and "node" in json.dumps(exc.body).lower()
        return self._issues

    def raw(self, method: str, path: str) -> bytes:
        req = urllib.request.Request(self.url + path, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read()[:300].decode(errors="replace"), f"{method} {path}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(0, str(exc), f"{method} {self.url}{path}") from exc

    def last_event_id(self) -> str:
        evs = self.call("GET", "/api/events?limit=1")
        return evs[-1]["id"] if evs else "0-0"

    def events_since(self, since: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", f"/api/events?since={urllib.parse.quote(since)}&limit=1000")
            out.extend(page)
            if len(page) < 1000:
                return out
            since = page[-1]["id"]
