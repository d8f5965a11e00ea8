"""Several listener processes on one port, so the PACS uses every core.

One Python process tops out near 0.4x DCMTK storescp (the GIL; measured with
`make bench`, bench/README.md). The supervisor forks ``PACS_WORKERS`` listener processes before
it starts any thread; they all accept from one listening socket opened before
the fork (a busier one leaves new connections to the others), and a worker
restarted later or moved to a new port binds its own SO_REUSEPORT socket. Each worker is a complete ``Pacs``: it decides
every association from Redis itself. The association limit (policy row 5) is
shared through a counter array made before the fork. The supervisor restarts a
worker that dies (resetting its counter) and, on SIGTERM, forwards it to every
worker and exits 0 once all of them drained and exited 0.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

STOP = {signal.SIGTERM, signal.SIGINT}


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (even by SIGKILL), so no
    orphan keeps the shared port open."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Supervisor:
    def __init__(self, workers: int, run_worker: Callable[[int, Any, Any, int, Any, Any], int],
                 say: Callable[[str], None], listen_socket: Any = None) -> None:
        """``run_worker(index, shared_counters, shared_ports, ready_fd, listen_socket, load)`` runs
        in the child (``listen_socket``: the socket they all accept from, or None; ``load``: each
        worker's open connections); it
        writes its port to ``ready_fd`` once listening and returns an exit code."""
        self.n = workers
        self.run_worker = run_worker
        self.say = say
        self.shared = multiprocessing.get_context("fork").Array("i", workers)
        self.ports = multiprocessing.get_context("fork").Array("i", workers)
        self.load = multiprocessing.get_context("fork").Array("i", workers)  # open connections, per worker
        self.pids: dict[int, int] = {}  # pid -> worker index
        # Opened before the fork, accepted from by every worker. The supervisor closes its own
        # copy once they are up, so the port closes when the workers move off it; a worker
        # restarted later binds its own (SO_REUSEPORT) socket on the current port.
        self.listen_socket = listen_socket
        self.stopping = False

    def _spawn(self, index: int) -> int:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(r)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _die_with_parent()
            code = 1
            try:
                code = self.run_worker(index, self.shared, self.ports, w, self.listen_socket, self.load)
            except BaseException as exc:  # a worker never returns into the supervisor's code
                print(f"pacs worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            finally:
                sys.stdout.flush()
                os._exit(code)
        os.close(w)
        self.pids[pid] = index
        self._ready_fds[r] = index
        return pid

    def run(self) -> int:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # queued while blocked, taken by sigwait
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP | {signal.SIGCHLD})
        self._ready_fds: dict[int, int] = {}
        for i in range(self.n):
            self._spawn(i)
        ready = self._wait_ready(timeout=60)
        if self.listen_socket is not None:
            self.listen_socket.close()
            self.listen_socket = None
        if not ready:
            self._stop_all()
            return 1
        while True:
            sig = signal.sigwait(STOP | {signal.SIGCHLD})
            if sig in STOP:
                return self._stop_all()
            self._reap_and_restart()

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._ready_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                self.say(f"PACS workers {sorted(self._ready_fds.values())} did not start within {timeout:.0f} s.")
                return False
            readable, _, _ = select.select(list(self._ready_fds), [], [], min(left, 0.5))
            for fd in readable:
                data = os.read(fd, 64)
                os.close(fd)
                index = self._ready_fds.pop(fd)
                if not data:  # closed without a port: the worker failed to listen
                    self.say(f"PACS worker {index} could not start listening; see the lines above.")
                    return False
        return True

    def _reap_and_restart(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            with self.shared.get_lock():
                self.shared[index] = 0  # its associations died with it
            self.load[index] = 0
            code = os.waitstatus_to_exitcode(status)
            self.say(f"PACS worker {index} (pid {pid}) exited with {code}; its open associations were lost "
                     "(their unacknowledged instances must be resent). Restarting it.")
            self._spawn(index)
            self._wait_ready(timeout=60)

    def _stop_all(self) -> int:
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        worst = 0
        for pid in list(self.pids):
            try:
                _, status = os.waitpid(pid, 0)
                worst = max(worst, abs(os.waitstatus_to_exitcode(status)))
            except ChildProcessError:
                pass
        self.pids.clear()
        return 0 if worst == 0 else 1
