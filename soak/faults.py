"""Faults on a schedule, each logged with its time and how long the lab took to recover.

    worker-kill                 SIGKILL of one listener worker (the supervisor restarts it)
    supervisor-kill             SIGKILL of the supervisor (its workers get SIGTERM and drain);
                                the soak restarts the PACS at once, as an orchestrator would
    redis-kill                  SIGKILL of redis-server, down for a few seconds, restarted on the
                                same port and data folder
    redis-outage-worker-kill    Redis killed, 0.3 s later a listener worker killed during the outage
                                (what it held only in memory for Redis dies with it), Redis back
    disk-full                   the storage tmpfs filled to the last byte by a ballast file, then freed
    read-only                   ``mount -o remount,ro`` of the storage tmpfs, then ``rw``
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from dicomlab.waiting import poll_until

from .parts import Pacs, Redis, Volume

KINDS = ("worker-kill", "redis-kill", "supervisor-kill", "disk-full", "read-only", "redis-outage-worker-kill")


class FaultInjector(threading.Thread):
    def __init__(self, pacs: Pacs, redis: Redis, volume: Volume, kinds: tuple[str, ...], interval: float,
                 until: float, say: Callable[[str], None], after_redis_start: Callable[[], None],
                 hold: float = 4.0, seed: int = 1) -> None:
        super().__init__(name="faults", daemon=True)
        self.pacs, self.redis, self.volume = pacs, redis, volume
        self.kinds = kinds
        self.interval = interval
        self.until = until  # time.monotonic() after which no fault starts
        self.say = say
        self.after_redis_start = after_redis_start  # e.g. re-register nodes when Redis kept nothing
        self.hold = hold
        self.rnd = random.Random(seed)
        self.stop_event = threading.Event()
        self.started_at = time.monotonic()
        self.log: list[dict[str, Any]] = []
        self.error: str | None = None

    def run(self) -> None:
        n = 0
        try:
            while True:
                due = self.started_at + (n + 1) * self.interval
                if due >= self.until or self.stop_event.wait(max(0.0, due - time.monotonic())):
                    return
                kind = self.kinds[n % len(self.kinds)]
                n += 1
                self._inject(kind)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.say(f"fault injector stopped: {self.error}")

    def _inject(self, kind: str) -> None:
        t0 = time.monotonic()
        entry: dict[str, Any] = {"t_s": round(t0 - self.started_at, 1),
                                 "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "kind": kind}
        try:
            entry["detail"] = getattr(self, "_" + kind.replace("-", "_"))()
            entry["ok"] = True
        except Exception as exc:
            entry["detail"] = f"failed: {type(exc).__name__}: {exc}"
            entry["ok"] = False
        entry["recovered_after_s"] = round(time.monotonic() - t0, 1)
        self.log.append(entry)
        self.say(f"[{entry['t_s']:7.1f} s] {kind}: {entry['detail']} (lab back after {entry['recovered_after_s']} s)")

    # -- the faults: each returns a line for the log once the lab is back -------------------
    def _kill_worker(self) -> tuple[int, str]:
        pids = self.pacs.worker_pids()
        if not pids:
            raise RuntimeError("no listener worker to kill")
        victim = self.rnd.choice(pids)
        os.kill(victim, signal.SIGKILL)
        return victim, f"SIGKILL listener worker pid {victim} (of {pids})"

    def _workers_back(self, victim: int, line: str) -> str:
        want = self.pacs.workers

        def back() -> bool:
            pids = self.pacs.worker_pids()
            return victim not in pids and len(pids) >= want
        if not poll_until(back, 90, interval=0.05):
            raise RuntimeError(f"{line}; the supervisor did not bring {want} workers back within 90 s")
        return f"{line}; workers now {self.pacs.worker_pids()}"

    def _worker_kill(self) -> str:
        return self._workers_back(*self._kill_worker())

    def _supervisor_kill(self) -> str:
        old = self.pacs.pid
        orphans = self.pacs.kill_supervisor()
        self.pacs.start()
        return (f"SIGKILL supervisor pid {old} (its workers {orphans} drain on SIGTERM); PACS restarted as "
                f"pid {self.pacs.pid} with workers {self.pacs.worker_pids()}")

    def _redis_down(self) -> None:
        self.redis.kill()

    def _redis_up(self) -> None:
        self.redis.start()
        self.after_redis_start()

    def _redis_kill(self) -> str:
        self._redis_down()
        time.sleep(self.hold)
        self._redis_up()
        return f"SIGKILL redis-server, down {self.hold:g} s, restarted (appendfsync {self.redis.appendfsync})"

    def _redis_outage_worker_kill(self) -> str:
        self._redis_down()
        time.sleep(0.3)  # stores go on in open associations; their index writes wait in memory
        victim, line = self._kill_worker()
        time.sleep(max(0.0, self.hold - 0.3))
        self._redis_up()
        return self._workers_back(victim, f"SIGKILL redis-server; 0.3 s later {line}; Redis back after "
                                          f"{self.hold:g} s")

    def _disk_full(self) -> str:
        took = self.volume.fill()
        free = self.volume.free_bytes()
        time.sleep(self.hold)
        self.volume.unfill()
        return f"storage tmpfs filled ({took / 2**20:.1f} MiB ballast, {free} bytes left) for {self.hold:g} s"

    def _read_only(self) -> str:
        tries = self.volume.remount("ro")
        time.sleep(self.hold)
        self.volume.remount("rw")
        return f"storage tmpfs remounted read-only ({tries} attempt(s)) for {self.hold:g} s, then read-write"
