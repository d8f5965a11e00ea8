"""The PACS under fuzz: a real process with a real redis-server, and the checks after a batch.

Engines (``--engines``):

    socket   the default: pynetdicom negotiates, the data phase runs on the socket (pacs.wire)
    loops    pynetdicom's own per-association loops (listener setting ``verbose: true``)
    stock    stock pynetdicom loops everywhere (environment ``PACS_FASTPATH=0``)

Health after each batch (the bounds are the README's, "make fuzz"):

- an authorized C-ECHO is answered (Success) within ``ECHO_SECONDS``;
- the listener processes are the same ones (none died and was restarted);
- no file in storage but for an instance answered Success in the batch, and no temporary file;
- threads, open file descriptors and RSS of the PACS (supervisor and workers together) are
  back within ``THREADS`` / ``FDS`` / ``RSS`` of their value after the warm-up, within ``SETTLE`` s.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from . import cases as c
from . import wire as w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lab import PacsProcess, RedisServer, free_port  # noqa: E402

ENGINES = {"socket": ({}, False), "loops": ({}, True), "stock": ({"PACS_FASTPATH": "0"}, False)}
ECHO_SECONDS = 1.0
THREADS, FDS, RSS = 8, 16, 64 * 1024 * 1024
SETTLE = 10.0
# Above the warm-up's 64 held associations (fuzz/run.py): the PACS's thread pools are at their
# ceiling (threadreuse.ThreadReuse.KEEP_IDLE) before the baseline, so growth past it is threads held.
MAX_ASSOCIATIONS = 100


@dataclass
class Resources:
    threads: int
    fds: int
    rss: int
    pids: tuple[int, ...]

    def over(self, start: "Resources") -> list[str]:
        out = []
        if self.threads > start.threads + THREADS:
            out.append(f"threads {self.threads} > {start.threads} + {THREADS}")
        if self.fds > start.fds + FDS:
            out.append(f"open fds {self.fds} > {start.fds} + {FDS}")
        if self.rss > start.rss + RSS:
            out.append(f"RSS {self.rss >> 20} MiB > {start.rss >> 20} + {RSS >> 20} MiB")
        return out

    def text(self) -> str:
        return f"{self.threads} threads, {self.fds} fds, {self.rss >> 20} MiB RSS"


@dataclass
class Target:
    engine: str
    workdir: Path
    workers: int = 1
    redis: RedisServer | None = None
    pacs: PacsProcess | None = None
    log_offset: int = 0
    known_files: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def port(self) -> int:
        assert self.pacs is not None
        return self.pacs.port

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def start(self) -> "Target":
        from dicomlab.dicom import DEFAULT_TRANSFER_SYNTAXES
        from dicomlab.registry import Registry, connect
        from dicomlab.settings import ListenerSettings, Node

        env, verbose = ENGINES[self.engine]
        self.redis = RedisServer().start()
        registry = Registry(connect(self.redis.url))
        port = free_port()
        registry.seed_listener(ListenerSettings(ae_title=c.CALLED, port=port))
        registry.update_listener({"verbose": verbose, "max_associations": MAX_ASSOCIATIONS, "transfer_syntaxes": [
            *DEFAULT_TRANSFER_SYNTAXES, w.DEFLATED_LE, w.EXPLICIT_BE]})
        registry.add_node(Node(ae_title=c.CALLING, host="127.0.0.1", port=104, services=["C-ECHO", "C-STORE"]))
        self.pacs = PacsProcess(self.redis.url, self.storage, ae_title=c.CALLED, port=port,
                                extra_env={"PACS_WORKERS": str(self.workers), **env}).start()
        return self

    def restart(self) -> None:
        assert self.pacs is not None
        self.pacs.stop()
        self.pacs.start()
        self.log_offset = 0

    def hold(self, count: int) -> None:
        """Open ``count`` associations at once, then echo and release on each: the PACS's
        thread pools reach their working size before the baseline is taken."""
        import socket

        rq = w.associate_rq(c.CALLED, c.CALLING, [w.presentation_context(1, w.VERIFICATION, [w.IMPLICIT_LE])])
        rest = b"".join([*w.message_pdus(1, w.command_set(w.echo_rq_elements(1)), None), w.RELEASE_RQ])
        socks = []
        for _ in range(count):
            # one at a time, each accepted before the next: all at once, a loaded PACS left more than
            # max_pending_per_address (16) of them pending and closed the rest, so the pools did not
            # fill and the baseline was low (a 10,000-case run then failed "threads 46 > 37 + 8")
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            s.sendall(rq)
            try:
                s.recv(65536)  # the A-ASSOCIATE-AC
            except OSError:
                pass
            socks.append(s)
        for s in socks:
            try:
                s.sendall(rest)
            except OSError:
                pass
        for s in socks:
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            s.close()

    def stop(self) -> None:
        if self.pacs:
            self.pacs.stop()
        if self.redis:
            self.redis.stop()

    # -- checks ---------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.pacs is not None and self.pacs.proc is not None and self.pacs.proc.poll() is None

    def resources(self) -> Resources:
        assert self.pacs is not None and self.pacs.proc is not None
        top = psutil.Process(self.pacs.proc.pid)
        procs = [top, *top.children(recursive=True)]
        threads = fds = rss = 0
        for p in procs:
            try:
                threads += p.num_threads()
                fds += len(os.listdir(f"/proc/{p.pid}/fd"))
                rss += p.memory_info().rss
            except (psutil.Error, OSError):
                pass
        return Resources(threads, fds, rss, tuple(sorted(p.pid for p in procs)))

    def settled(self, start: Resources) -> tuple[Resources, list[str]]:
        """Wait up to SETTLE s for the resources to come back within bounds."""
        deadline = time.monotonic() + SETTLE
        while True:
            now = self.resources()
            over = now.over(start)
            if not over or time.monotonic() > deadline:
                return now, over
            time.sleep(0.25)

    def echo(self, limit: float = ECHO_SECONDS) -> tuple[bool, float, str]:
        conv = [w.associate_rq(c.CALLED, c.CALLING, [w.presentation_context(1, w.VERIFICATION, [w.IMPLICIT_LE])]),
                *w.message_pdus(1, w.command_set(w.echo_rq_elements(7)), None), w.RELEASE_RQ]
        out = w.exchange("127.0.0.1", self.port, conv, quiet=limit, limit=limit + 1)
        ok = any(f == 0x8030 and s == 0 for f, s, _ in out.statuses)
        return ok, out.seconds, out.summary()

    def echo_in_time(self, limit: float = ECHO_SECONDS) -> tuple[bool, float, str]:
        """The C-ECHO answered with Success; the time is the whole association (request,
        echo, release), which must fit in ``limit``."""
        ok, seconds, what = self.echo(limit)
        return ok and seconds <= limit, seconds, what

    def files(self) -> dict[str, tuple[int, int]]:
        out = {}
        if self.storage.is_dir():
            for p in self.storage.rglob("*"):
                # not the SOP marks (.sop/<xx>/<UID>, sopmarks.py): symbolic links to stored files,
                # which are checked themselves (a mark's name has no .dcm to strip, so its "stem"
                # would never match the UID answered Success)
                if p.is_file() and not p.is_symlink():
                    st = p.stat()
                    out[str(p.relative_to(self.storage))] = (st.st_ino, st.st_mtime_ns)
        return out

    def file_problems(self, successes: set[str]) -> list[str]:
        """Files that are new or changed since the last check and not answered Success, and temp files."""
        now = self.files()
        problems = []
        for rel, stamp in now.items():
            name = Path(rel).name
            if name.startswith(".") or name.endswith(".tmp"):
                problems.append(f"temporary file left: {rel}")
            elif self.known_files.get(rel) != stamp and Path(rel).stem not in successes:
                problems.append(f"file stored without a Success answer: {rel}")
        self.known_files = now
        return problems

    def new_log(self) -> str:
        assert self.pacs is not None
        with open(self.pacs.log_path, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        self.log_offset += len(data)
        return data.decode("utf-8", errors="replace")


def tracebacks(log: str) -> list[str]:
    """The last line (exception type and message) of each traceback in a log excerpt."""
    out = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                j += 1
            out.append(signature(lines[j].strip() if j < len(lines) else "(cut off)"))
    return out


def signature(last_line: str) -> str:
    """A traceback's last line without the particulars (quoted values, numbers, byte dumps), so
    one defect hit with different bytes counts once."""
    import re

    text = re.sub(r"b'(?:[^'\\]|\\.)*'", "b'…'", last_line)  # byte dumps
    text = re.sub(r"'[^']*\\[^']*'", "'…'", text)  # quoted values with escapes (one per bad byte)
    text = re.sub(r"\d+", "N", text)
    return text[:200]
