"""Real parts for the scenario tests: a whole local lab for the runner -- a real redis-server, the PACS
bound to 0.0.0.0 (so that network namespaces reach it), the admin API served
by werkzeug in a thread, and the simulator run as the real CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import requests

from lab import PacsProcess, RedisServer, wait_for

TOKEN = "scenario-test-token-0123456789"


class PacsOnAllAddresses(PacsProcess):
    """The PACS as ``python -m pacs --bind 0.0.0.0`` (PacsProcess binds loopback)."""

    def start(self, wait: bool = True) -> "PacsOnAllAddresses":
        env = {**os.environ, "REDIS_URL": self.redis_url, "PACS_STORAGE_DIR": str(self.storage_dir),
               "PACS_AE_TITLE": self.ae_title, "PACS_PORT": str(self.port), "PYTHONUNBUFFERED": "1",
               "PACS_TLS_PORT": str(self.tls_port), **self.extra_env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pacs", "--bind", "0.0.0.0"],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_log("listener-started", timeout=30)
        return self


class AdminServer:
    """The admin API (the Flask app) under werkzeug's threaded server."""

    def __init__(self, redis_url: str, tls_dir: Path | None = None) -> None:
        from werkzeug.serving import make_server

        from admin_api import create_app

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
        config = {"ADMIN_TOKEN": TOKEN, "REDIS_URL": redis_url, "ECHO_TIMEOUT": 2.0}
        if tls_dir is not None:  # the PACS's lab CA: the admin API downloads it and issues node certificates
            config["TLS_DIR"] = str(tls_dir)
        app = create_app(config)
        self.server = make_server("127.0.0.1", 0, app, threaded=True)  # the port it got:
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        wait_for(lambda: requests.get(self.url + "/api/health", timeout=2).ok, 10, what="the admin API")

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


class Lab:
    def __init__(self, redis: RedisServer, pacs: PacsOnAllAddresses, admin: AdminServer, workdir: Path) -> None:
        self.redis, self.pacs, self.admin, self.workdir = redis, pacs, admin, workdir

    def run_scenarios(self, *args: str, ci: bool = True, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        """``ct-simulator scenarios ...`` against this lab, as a user would run it."""
        env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "REDIS_URL", "PACS_HOST")}
        env.update({"ADMIN_TOKEN": TOKEN, "LAB_STATE_DIR": str(self.workdir / "no-lab-state"),
                    "LAB_ENV_FILE": str(self.workdir / "no.env"), "PYTHONUNBUFFERED": "1"})
        if ci:
            env["CI"] = "true"
        exe = str(Path(sys.executable).with_name("ct-simulator"))
        sub = args[0] if args else "run"
        rest = list(args[1:])
        cmd = [exe, "scenarios", sub]
        if sub == "run":
            cmd += ["--api", self.admin.url, "--pacs-host", "127.0.0.1", "--pacs-port", str(self.pacs.port),
                    "--registry-pid", str(self.redis.proc.pid), "--pacs-log", str(self.pacs.log_path),
                    "--tls-lab-ca", str(self.pacs.tls_dir)]
        return subprocess.run(cmd + rest, env=env, cwd=self.workdir, capture_output=True, text=True,
                              timeout=timeout)
