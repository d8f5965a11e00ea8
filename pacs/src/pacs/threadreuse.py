"""Threads reused between associations (pynetdicom starts two per association)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from . import malloc


class ThreadReuse:
    """Runs each task on an idle thread if there is one, else on a new daemon thread.

    An association costs two threads (its connection and its DUL); starting them is
    a good part of an association's set-up time, so finished threads wait for the
    next one instead of exiting. Daemon threads, unlike concurrent.futures' pool,
    never hold up the process at exit (the PACS drains associations itself).
    """

    KEEP_IDLE = 64  # idle threads kept; beyond that a finished thread exits

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._tasks.put((fn, args))
                return
            self._count += 1
            n = self._count
        threading.Thread(target=self._work, args=(fn, args), name=f"{self.name}-{n}", daemon=True).start()

    def _work(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        while True:
            try:
                fn(*args)
            except Exception:  # a task's own errors are its business; the thread goes on
                logging.getLogger(__name__).exception("task on %s", self.name)
            fn = args = None  # type: ignore[assignment]  # the finished association's memory is free now
            malloc.trim()  # rate-limited: freed heap pages back to the kernel (malloc.py)
            with self._lock:
                if self._idle >= self.KEEP_IDLE:
                    return
                self._idle += 1
            fn, args = self._tasks.get()
