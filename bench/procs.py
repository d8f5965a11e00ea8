"""Processes the bench starts, and nothing else: each in its own process group, all stopped in the end.

Every child is started with ``start_new_session=True`` (so Ctrl-C at the terminal reaches only the
bench, which then stops its children in order), recorded in ``Children``, and stopped by
``Children.stop_all`` from a ``finally``: SIGTERM to the group, a deadline, then SIGKILL.
Waiting is always polling with a deadline, never a bare sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dicomlab import ports
from dicomlab.waiting import wait_until

T = TypeVar("T")


def free_port() -> int:
    """A port free on every address (not only 127.0.0.1: Orthanc's HTTP server binds all of them, and
    the hostile workloads' floods use ports on 127.0.0.2...). Bound for a moment, never listened on."""
    return ports.free_port("")


def poll(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.01,
         alive: Callable[[], str | None] | None = None) -> T:
    """Call ``predicate`` until it returns something truthy; ``alive`` returns a reason to give up early
    (dicomlab.waiting.wait_until, with the bench's short interval)."""
    return wait_until(predicate, timeout, interval=interval, what=what, alive=alive)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def dcmtk_env(**extra: str) -> dict[str, str]:
    """DCMTK with TCP_NODELAY (Debian's DCMTK uses Nagle otherwise: ~30x slower on loopback)."""
    return {**os.environ, "TCP_NODELAY": "1", **extra}


class Children:
    """The processes this bench started, stopped by process group."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], log: Path | None = None, **kw: Any) -> subprocess.Popen[Any]:
        if log is not None:
            fh = open(log, "ab")
            kw.setdefault("stdout", fh)
            kw.setdefault("stderr", subprocess.STDOUT)
        else:
            kw.setdefault("stdout", subprocess.DEVNULL)
            kw.setdefault("stderr", subprocess.DEVNULL)
        kw.setdefault("stdin", subprocess.DEVNULL)
        try:
            proc = subprocess.Popen(argv, start_new_session=True, **kw)
        finally:
            if log is not None:
                fh.close()  # the child holds its own copy
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the process group of ``proc``: ``sig``, then SIGKILL after ``timeout``."""
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            # leftovers of the group (storescp --fork children, say)
            _signal_group(proc.pid, signal.SIGKILL)
        finally:
            if proc in self.procs:
                self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc, timeout=10)
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
