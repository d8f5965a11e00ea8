"""The catalogue as data: ``catalogue.toml`` loaded into ``Scenario`` records.

The file is the single source of what each scenario sets up, does and
expects; this module only reads and checks it (unknown keys are errors, so a
typo in the catalogue cannot silently weaken an expectation).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

KINDS = ("ok", "rejected", "connection-refused", "timed-out", "unreachable", "aborted", "no-context",
         "instance-failed", "qr-failed")
SIDES = ("modality", "pacs", "network", "none")
SETUP_KEYS = {"node", "refused_nodes", "scp", "network", "drop", "registry", "hold",
              "destination"}  # destination: a move destination node (scenarios/qrprobe.py)
ACTION_KEYS = {"kind", "calling_aet", "called_aet", "port", "slices", "sop_class", "transfer_syntaxes",
               "abort_after", "timeout", "dimse_timeout", "duplicate_uids",
               "destination", "role"}  # Q/R actions (scenarios/qrprobe.py)
ACTION_KINDS = ("send", "echo", "find", "move", "get")
MODALITY_KEYS = {"kind", "codes", "status", "sent", "context_result", "min_elapsed_s"}
EVENT_KEYS = {"type", "reason", "outcome", "message", "count", "who", "calling_aet", "where"}
DROPS = ("timeout", "icmp-unreachable")


class CatalogueError(ValueError):
    """The catalogue file is not what the runner understands."""


@dataclass
class EventExpectation:
    type: str
    reason: str | None = None
    outcome: str | None = None
    message: str | None = None
    count: int | None = None  # exact; None: at least one
    who: str = "modality"  # "modality": events of the scenario's calling AE title; "any"
    calling_aet: str | None = None  # overrides the action's calling AE title
    # "stream": the event stream (through the admin API); "log": the PACS's stdout event
    # lines, for what the PACS cannot store while the registry is down
    where: str = "stream"

    def describe(self) -> str:
        s = self.type + (f"/{self.reason}" if self.reason else "")
        if self.where == "log":
            s += " [PACS log]"
        if self.outcome:
            s += f" ({self.outcome})"
        if self.count is not None:
            s += f" x{self.count}"
        return s


@dataclass
class Scenario:
    name: str
    title: str
    wrong: str
    side: str
    hint: str
    setup: dict[str, Any] = field(default_factory=dict)
    action: dict[str, Any] = field(default_factory=dict)
    modality: dict[str, Any] = field(default_factory=dict)
    pacs: list[EventExpectation] = field(default_factory=list)
    pacs_silent: bool = False

    @property
    def needs_netns(self) -> bool:
        return self.setup.get("network") == "netns"

    @property
    def needs_registry_control(self) -> bool:
        return self.setup.get("registry") == "paused"

    @property
    def needs_pacs_log(self) -> bool:
        return any(e.where == "log" for e in self.pacs)

    def expected_modality(self) -> str:
        m = self.modality
        s = m["kind"]
        if "codes" in m:
            s += f" {m['codes']}"
        if "status" in m:
            s += f" 0x{m['status']:04X}"
        if "context_result" in m:
            s += f" (context result {m['context_result']})"
        if "sent" in m:
            s += f", {m['sent']} acknowledged"
        if "min_elapsed_s" in m:
            s += f", >= {m['min_elapsed_s']:g} s"
        return s

    def expected_pacs(self) -> str:
        if self.pacs_silent:
            return "no event from this modality"
        return ", ".join(e.describe() for e in self.pacs)


def _check_keys(where: str, got: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _scenario(raw: dict[str, Any], index: int) -> Scenario:
    where = f"scenario #{index + 1} ({raw.get('name', '?')})"
    _check_keys(where, raw, {"name", "title", "wrong", "side", "hint", "setup", "action", "expect"})
    for key in ("name", "title", "wrong", "side", "hint"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise CatalogueError(f"{where}: {key} is required text")
    if raw["side"] not in SIDES:
        raise CatalogueError(f"{where}: side is one of {', '.join(SIDES)}")
    setup = dict(raw.get("setup") or {})
    _check_keys(f"{where} setup", setup, SETUP_KEYS)
    if setup.get("drop") not in (None, *DROPS):
        raise CatalogueError(f"{where}: drop is one of {', '.join(DROPS)}")
    if setup.get("drop") and setup.get("network") != "netns":
        raise CatalogueError(f"{where}: drop needs network = \"netns\"")
    action = dict(raw.get("action") or {})
    _check_keys(f"{where} action", action, ACTION_KEYS)
    if action.get("kind", "send") not in ACTION_KINDS:
        raise CatalogueError(f"{where}: action kind is one of {', '.join(ACTION_KINDS)}")
    expect = dict(raw.get("expect") or {})
    _check_keys(f"{where} expect", expect, {"modality", "pacs", "pacs_silent"})
    modality = dict(expect.get("modality") or {})
    _check_keys(f"{where} expect.modality", modality, MODALITY_KEYS)
    if modality.get("kind") not in KINDS:
        raise CatalogueError(f"{where}: expect.modality.kind is one of {', '.join(KINDS)}")
    events = []
    for e in expect.get("pacs") or []:
        _check_keys(f"{where} expect.pacs", e, EVENT_KEYS)
        if not isinstance(e.get("type"), str):
            raise CatalogueError(f"{where}: every expect.pacs entry has a type")
        if e.get("who", "modality") not in ("modality", "any"):
            raise CatalogueError(f"{where}: who is modality or any")
        if e.get("where", "stream") not in ("stream", "log"):
            raise CatalogueError(f"{where}: where is stream or log")
        if e.get("where") == "log" and e.get("reason"):
            raise CatalogueError(f"{where}: a log line carries no reason; match its message instead")
        events.append(EventExpectation(**e))
    silent = bool(expect.get("pacs_silent", False))
    if not events and not silent:
        raise CatalogueError(f"{where}: expect a PACS event (expect.pacs) or its silence (pacs_silent = true)")
    return Scenario(name=raw["name"], title=raw["title"], wrong=raw["wrong"], side=raw["side"],
                    hint=" ".join(raw["hint"].split()), setup=setup, action=action, modality=modality,
                    pacs=events, pacs_silent=silent)


def default_path() -> Path:
    return Path(str(resources.files(__package__).joinpath("catalogue.toml")))


def load(path: str | Path | None = None) -> list[Scenario]:
    p = Path(path) if path else default_path()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"cannot read the catalogue {p}: {exc}") from exc
    _check_keys(str(p), data, {"scenario"})
    scenarios = [_scenario(raw, i) for i, raw in enumerate(data.get("scenario") or [])]
    names = [s.name for s in scenarios]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CatalogueError(f"{p}: duplicate scenario name(s) {', '.join(dupes)}")
    return scenarios


def select(scenarios: list[Scenario], names: list[str]) -> list[Scenario]:
    """The scenarios named (in catalogue order); an unknown name is an error that lists the names."""
    if not names:
        return scenarios
    known = {s.name for s in scenarios}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CatalogueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    wanted = set(names)
    return [s for s in scenarios if s.name in wanted]
