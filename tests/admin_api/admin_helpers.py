"""Real parts for the admin API tests: the token, a test-client wrapper, a
pynetdicom Verification SCP, and the app under real gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from lab import ROOT, free_port

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
    """A real pynetdicom Verification SCP on a free loopback port."""

    def __init__(self, ae_title: str = "ECHOPEER", require_called: bool = False) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification

        self.port = free_port()
        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = require_called
        self.ae.add_supported_context(Verification)
        self.echoes: list[str] = []

        def on_echo(event):
            self.echoes.append(event.assoc.requestor.ae_title)
            return 0x0000  # Success

        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_ECHO, on_echo)])

    def stop(self) -> None:
        self.server.shutdown()


class Gunicorn:
    """The admin API under real gunicorn (the config file of admin-api/)."""

    def __init__(self, redis_url: str, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="lab-admin-")) / "gunicorn.log"
        env = {**os.environ, "REDIS_URL": redis_url, "ADMIN_TOKEN": TOKEN, "ADMIN_PORT": str(self.port),
               "PYTHONUNBUFFERED": "1", "PACS_TLS_DIR": str(self.log_path.parent / "tls"), **(extra_env or {})}
        self._log = open(self.log_path, "ab")
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self.proc = subprocess.Popen(
            [gunicorn, "-c", str(ROOT / "admin-api" / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{self.port}",
             "admin_api:create_app()"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/api/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{self.log()}")
            time.sleep(0.05)

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
