"""Real parts for the admin API tests: the token, a test-client wrapper, a
pynetdicom Verification SCP, and the app under real gunicorn."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from dicomlab.waiting import wait_until
from lab import ROOT

TOKEN = "lab-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    """The test client with the bearer token on every request."""

    def __init__(self, client) -> None:
        self.client = client

    def __getattr__(self, method):
        def call(path, **kw):
            headers = {**AUTH, **kw.pop("headers", {})}
            return getattr(self.client, method)(path, headers=headers, **kw)

        return call


class EchoPeer:
    """A real pynetdicom Verification SCP on loopback, on the port it got (bound to port 0)."""

    def __init__(self, ae_title: str = "ECHOPEER", require_called: bool = False) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = require_called
        self.ae.add_supported_context(Verification)
        self.echoes: list[str] = []

        def on_echo(event):
            self.echoes.append(event.assoc.requestor.ae_title)
            return 0x0000  # Success

        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           evt_handlers=[(evt.EVT_C_ECHO, on_echo)])
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()


class Gunicorn:
    """The admin API under real gunicorn (the config file of admin-api/), bound to port 0: the
    port it got is read from gunicorn's "Listening at:" line (info level, its default)."""

    def __init__(self, redis_url: str, extra_env: dict[str, str] | None = None) -> None:
        self.log_path = Path(tempfile.mkdtemp(prefix="lab-admin-")) / "gunicorn.log"
        env = {**os.environ, "REDIS_URL": redis_url, "ADMIN_TOKEN": TOKEN, "ADMIN_API_LOG_LEVEL": "info",
               "PYTHONUNBUFFERED": "1", "PACS_TLS_DIR": str(self.log_path.parent / "tls"), **(extra_env or {})}
        self._log = open(self.log_path, "ab")
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self.proc = subprocess.Popen(
            [gunicorn, "-c", str(ROOT / "admin-api" / "gunicorn.conf.py"), "--bind", "127.0.0.1:0",
             "admin_api:create_app()"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        )
        exited = lambda: self.proc.poll() is not None and f"gunicorn exited ({self.proc.returncode})"  # noqa: E731
        try:
            self.port = wait_until(self._bound_port, 30, interval=0.05, what="gunicorn to listen",
                                   error=RuntimeError, alive=exited)
            self.url = f"http://127.0.0.1:{self.port}"
            wait_until(self._healthy, 30, interval=0.05, what="gunicorn to start", error=RuntimeError, alive=exited)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{self.log()}") from None

    def _bound_port(self) -> int | None:
        m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log())
        return int(m.group(1)) if m else None

    def _healthy(self) -> bool:
        try:
            return requests.get(self.url + "/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
