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

from . import commitprobe

KINDS = ("ok", "rejected", "connection-refused", "timed-out", "unreachable", "aborted", "no-context",
         "instance-failed", "tls-failed", "qr-failed")
SIDES = ("modality", "pacs", "network", "none")
SETUP_KEYS = {"node", "refused_nodes", "scp", "network", "drop", "registry", "hold",
              "destination"}  # destination: a move destination node (scenarios/qrprobe.py)
ACTION_KEYS = {"kind", "calling_aet", "called_aet", "port", "slices", "sop_class", "transfer_syntaxes",
               "abort_after", "timeout", "dimse_timeout", "duplicate_uids", "tls", *commitprobe.KEYS,
               "destination", "role"}  # Q/R actions (scenarios/qrprobe.py)
ACTION_KINDS = ("send", "echo", "find", "move", "get")
# action.tls: how the modality does DICOM TLS (tlsprep.tls_spec turns it into a ct_simulator.tls.TlsSpec)
TLS_KEYS = {"ca", "cert", "outdated", "server_name"}
TLS_CA = ("lab", "other")  # trust the lab CA, or a CA of the modality's own
TLS_CERT = ("issued", "none", "expired", "other-node")  # the node's own (admin API), none, expired, another node's
MODALITY_KEYS = {"kind", "codes", "status", "sent", "context_result", "min_elapsed_s", "tls",
                 *commitprobe.EXPECT_KEYS}
EVENT_KEYS = {"type", "reason", "outcome", "message", "count", "who", "calling_aet", "where", "cause"}
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
    # "modality": events of the scenario's calling AE title; "peer": events from the modality's address
    # (connections closed before any association: a failed TLS handshake has no AE title); "any"
    who: str = "modality"
    calling_aet: str | None = None  # overrides the action's calling AE title
    # "stream": the event stream (through the admin API); "log": the PACS's stdout event
    # lines, for what the PACS cannot store while the registry is down
    where: str = "stream"
    cause: str | None = None  # detail.cause of a tls-handshake-failed event

    def describe(self) -> str:
        s = self.type + (f"/{self.reason}" if self.reason else "") + (f" ({self.cause})" if self.cause else "")
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
    def needs_tls(self) -> bool:
        return "tls" in self.action or self.action.get("port") in ("tls", "plain") or \
            bool((self.setup.get("scp") or {}).get("tls_enabled"))

    @property
    def needs_pacs_log(self) -> bool:
        return any(e.where == "log" for e in self.pacs)

    def expected_modality(self) -> str:
        m = self.modality
        s = " | ".join(m["kind"]) if isinstance(m["kind"], list) else m["kind"]
        if "codes" in m:
            s += f" {m['codes']}"
        if "status" in m:
            s += f" 0x{m['status']:04X}"
        if "context_result" in m:
            s += f" (context result {m['context_result']})"
        if "sent" in m:
            s += f", {m['sent']} acknowledged"
        if "tls" in m:
            s += f" ({m['tls']})"
        if "min_elapsed_s" in m:
            s += f", >= {m['min_elapsed_s']:g} s"
        if "report" in m:
            s += f"; report {m['report']}" + (f": {m['committed']} committed, {m['not_committed']} not"
                                               if "committed" in m and "not_committed" in m else "")
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
    if "tls" in action:
        tls = action["tls"]
        if not isinstance(tls, dict):
            raise CatalogueError(f"{where}: action.tls is a table")
        _check_keys(f"{where} action.tls", tls, TLS_KEYS)
        if tls.get("ca", "lab") not in TLS_CA:
            raise CatalogueError(f"{where}: action.tls.ca is one of {', '.join(TLS_CA)}")
        if tls.get("cert", "issued") not in TLS_CERT:
            raise CatalogueError(f"{where}: action.tls.cert is one of {', '.join(TLS_CERT)}")
    expect = dict(raw.get("expect") or {})
    _check_keys(f"{where} expect", expect, {"modality", "pacs", "pacs_silent"})
    modality = dict(expect.get("modality") or {})
    _check_keys(f"{where} expect.modality", modality, MODALITY_KEYS)
    kinds = modality.get("kind")
    if not (kinds in KINDS or (isinstance(kinds, list) and kinds and all(k in KINDS for k in kinds))):
        raise CatalogueError(f"{where}: expect.modality.kind is one of {', '.join(KINDS)} (or a list of them: "
                             "what the modality may see, e.g. behind a port proxy)")
    events = []
    for e in expect.get("pacs") or []:
        _check_keys(f"{where} expect.pacs", e, EVENT_KEYS)
        if not isinstance(e.get("type"), str):
            raise CatalogueError(f"{where}: every expect.pacs entry has a type")
        if e.get("who", "modality") not in ("modality", "peer", "any"):
            raise CatalogueError(f"{where}: who is modality, peer or any")
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
