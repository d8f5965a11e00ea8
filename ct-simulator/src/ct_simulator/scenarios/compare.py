"""Observed against expected: the PACS's events (from the admin API, or its stdout lines)
matched with a scenario's expectations, and the modality's observation with its
``modality`` block."""

from __future__ import annotations

import time
from typing import Any

from . import commitprobe
from .catalogue import EventExpectation, Scenario
from .context import LabContext

# Event types that mean "the PACS saw this modality"
SEEN_TYPES = ("association-", "context-", "store-", "echo-received")


def observe_pacs(ctx: LabContext, sc: Scenario, expectations: list[EventExpectation], since: str, calling: str,
                  ns_peer: str, started_utc: str) -> tuple[str, list[str]]:
    deadline = time.monotonic() + ctx.event_timeout
    while True:
        events = ctx.api.events_since(since)
        log = ctx.pacs_log.lines(started_utc) if sc.needs_pacs_log and ctx.pacs_log else []
        found = [_matching_lines(log, e, calling) if e.where == "log"
                 else _matching(events, e, calling, ns_peer or ctx.peer) for e in expectations]
        done = all(len(f) >= (e.count or 1) for f, e in zip(found, expectations, strict=True))
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    misses = []
    parts = []
    for exp, got in zip(expectations, found, strict=True):
        n = len(got)
        if exp.count is None and n == 0 or exp.count is not None and n != exp.count:
            misses.append(f"PACS: expected {exp.describe()}, found {n}")
        parts.append(f"{exp.describe().split(' x')[0]} x{n}")
    if sc.pacs_silent:
        seen = [e for e in events if e["type"].startswith(SEEN_TYPES)
                and (e.get("calling_aet") == calling or (ns_peer and e.get("peer") == ns_peer))]
        if seen:
            misses.append(f"PACS: expected no event from this modality, found {len(seen)}")
            parts.append("; ".join(f"{e['type']}/{e.get('reason', '')}" for e in seen[:3]))
        else:
            parts.append("no event from this modality")
    return ", ".join(parts), misses


def _host(peer: str) -> str:
    """The address of 'host:port', '[v6]:port' or a bare address."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer


def _matching(events: list[dict[str, Any]], exp: EventExpectation, calling: str,
              peer: str = "") -> list[dict[str, Any]]:
    out = []
    who = exp.calling_aet or calling
    for e in events:
        if e["type"] != exp.type:
            continue
        if exp.who == "modality" and e.get("calling_aet", "") != who:
            continue
        if exp.who == "peer" and _host(e.get("peer", "")) != _host(peer):
            continue
        if exp.cause is not None and (e.get("detail") or {}).get("cause") != exp.cause:
            continue
        if exp.reason is not None and e.get("reason", "") != exp.reason:
            continue
        if exp.outcome is not None and e.get("outcome", "") != exp.outcome:
            continue
        if exp.message is not None and exp.message not in e.get("message", ""):
            continue
        out.append(e)
    return out


def _matching_lines(lines: list[tuple[str, str]], exp: EventExpectation, calling: str) -> list[str]:
    who = exp.calling_aet or calling
    return [line for type_, line in lines if type_ == exp.type
            and (exp.who == "any" or f" {who}@" in line)
            and (exp.message is None or exp.message in line)
            and (exp.outcome is None or exp.outcome in line)]


def compare_modality(expected: dict[str, Any], obs: dict[str, Any]) -> list[str]:
    out = []
    kind = obs.get("kind")
    kinds = expected["kind"] if isinstance(expected["kind"], list) else [expected["kind"]]
    if kind not in kinds:
        out.append(f"modality: expected {' or '.join(kinds)}, observed {kind}")
    if "codes" in expected and obs.get("codes") != expected["codes"]:
        out.append(f"modality: expected A-ASSOCIATE-RJ {expected['codes']}, observed {obs.get('codes') or 'none'}")
    if "status" in expected and expected["status"] not in obs.get("statuses", []):
        seen = ",".join(f"0x{s:04X}" for s in obs.get("statuses", [])) or "none"
        out.append(f"modality: expected status 0x{expected['status']:04X}, observed {seen}")
    if "tls" in expected and kind == "tls-failed" and obs.get("tls") != expected["tls"]:
        out.append(f"modality: expected the TLS failure {expected['tls']}, observed {obs.get('tls') or 'none'}")
    if "sent" in expected and obs.get("sent") != expected["sent"]:
        out.append(f"modality: expected {expected['sent']} acknowledged, observed {obs.get('sent')}")
    if "context_result" in expected and expected["context_result"] not in obs.get("context_results", []):
        out.append(f"modality: expected context result {expected['context_result']}, "
                   f"observed {obs.get('context_results')}")
    if "min_elapsed_s" in expected and obs.get("elapsed_s", 0) < expected["min_elapsed_s"]:
        out.append(f"modality: expected at least {expected['min_elapsed_s']:g} s, observed {obs.get('elapsed_s', 0):.2f} s")
    return out + commitprobe.compare(expected, obs)
