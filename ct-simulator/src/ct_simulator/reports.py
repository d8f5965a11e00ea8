"""What ``sender.send`` and ``sender.echo`` are told and what they report: ``SendOptions``,
``SendReport`` (counts, statuses, the problem, the per-instance rows of ``--report-json``),
``EchoReport``; each report knows its exit code (``outcome``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import outcome
from .outcome import Problem
from .syntaxes import DEFAULT_PROPOSAL


@dataclass
class SendOptions:
    """How to send: proposal, parallelism and misbehaviour on demand."""

    transfer_syntaxes: tuple[str, ...] = DEFAULT_PROPOSAL  # proposed, in order of preference
    associations: int = 1
    abort_after: int | None = None  # send an A-ABORT after this many instances
    delay: float = 0.0  # seconds between instances (a slow modality)
    record: bool = False  # keep one SendReport.instances row per C-STORE tried (--report-json)


@dataclass
class SendReport:
    total: int
    sent: int = 0
    failed: int = 0
    warnings: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # SOP class -> transfer syntax
    elapsed: float = 0.0
    first_failure: str = ""
    tls_session: str = ""  # the TLS version and cipher, when sent over DICOM TLS
    # with SendOptions.record: per C-STORE tried, in order: SOP Instance UID, study and series UIDs,
    # the status answered (None: no answer) and the SHA-256 of the dataset bytes sent
    instances: list[dict[str, Any]] = field(default_factory=list)
    ladders: list[dict[str, Any]] = field(default_factory=list)  # with Link.ladder: one per association

    @property
    def rate(self) -> float:
        return (self.sent + self.failed) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.problem is None and self.failed == 0 and self.sent == self.total

    @property
    def exit_code(self) -> int:
        if self.problem is not None:
            return self.problem.exit_code
        if self.failed:
            return outcome.EXIT_INSTANCE_FAILED
        return outcome.EXIT_OK

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total, "sent": self.sent, "failed": self.failed, "warnings": self.warnings,
            "statuses": dict(self.statuses), "elapsed_s": round(self.elapsed, 3),
            "rate_per_s": round(self.rate, 1), "accepted": self.accepted, "notes": self.notes,
            "tls": self.tls_session or None,
            "problem": None if self.problem is None else {
                "kind": self.problem.kind, "message": self.problem.message, "hint": self.problem.hint,
                **self.problem.detail},
            "exit_code": self.exit_code,
        }


@dataclass
class EchoReport:
    ok: bool
    status: int | None = None
    elapsed_ms: float = 0.0
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)
    tls_session: str = ""

    @property
    def exit_code(self) -> int:
        if self.problem is not None:
            return self.problem.exit_code
        return outcome.EXIT_OK if self.ok else outcome.EXIT_INSTANCE_FAILED
