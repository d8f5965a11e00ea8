"""The modality side of a scenario: one real send (or echo) by the CT simulator,
reduced to what was observed on the wire.

Runs in the runner's process, or as ``python -m ct_simulator.scenarios.probe
'<json>'`` inside a network namespace (``ip netns exec``), which prints the
same observation as JSON on stdout.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from dicomlab.conformance import SIM_SOP_CLASSES

from ..iod import StudyPlan
from ..network import Link, quiet_pynetdicom
from ..outcome import Problem
from ..sender import SendOptions, echo, send
from ..syntaxes import DEFAULT_PROPOSAL, resolve
from ..tls import TlsSpec
from . import commitprobe, qrprobe

SOP_CLASSES = SIM_SOP_CLASSES  # the simulator's one list (dicomlab.conformance)
_HEX = re.compile(r"^0x([0-9A-Fa-f]{4})")


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Do what ``spec`` says (host, port, calling_aet, called_aet, kind, slices, ...); return the observation.

    The observation: kind (ok or the simulator's failure class), codes "r/s/d" of an
    A-ASSOCIATE-RJ, the DIMSE statuses received, instances acknowledged, context
    results, elapsed seconds, and the simulator's own sentence and hint.
    """
    quiet_pynetdicom()
    link = _link(spec)
    if spec.get("kind") in qrprobe.QR_KINDS:  # find / move / get
        return qrprobe.run(spec, link)
    if spec.get("kind", "send") == "echo":
        obs, problem = _echo(link)
    else:
        obs, problem = _send(spec, link)
    if link.tls_session:
        obs["tls_session"] = link.tls_session
    if problem is not None:
        _add_problem(obs, problem)
    return obs


def _link(spec: dict[str, Any]) -> Link:
    timeout = float(spec.get("timeout", 5.0))
    return Link(host=spec["host"], port=int(spec["port"]), calling_aet=spec["calling_aet"],
                called_aet=spec["called_aet"], connect_timeout=timeout, acse_timeout=timeout,
                dimse_timeout=float(spec.get("dimse_timeout", 10.0)),
                tls=TlsSpec.from_dict(spec["tls"]) if spec.get("tls") is not None else None)


def _echo(link: Link) -> tuple[dict[str, Any], Problem | None]:
    rep = echo(link)
    obs: dict[str, Any] = {"kind": "ok" if rep.problem is None else rep.problem.kind,
                           "statuses": [] if rep.status is None else [rep.status],
                           "sent": 1 if rep.ok else 0, "elapsed_s": rep.elapsed_ms / 1000, "notes": rep.notes}
    return obs, rep.problem


def _send(spec: dict[str, Any], link: Link) -> tuple[dict[str, Any], Problem | None]:
    """A small study sent (and, with ``commit``, its storage commitment asked for and awaited)."""
    sop = spec.get("sop_class", "ct")
    plan = StudyPlan(studies=1, series=1, slices=int(spec.get("slices", 1)), rows=int(spec.get("rows", 64)),
                     cols=int(spec.get("cols", 64)), seed=int(spec.get("seed") or int.from_bytes(os.urandom(4), "big") >> 1),
                     sop_class_uid=SOP_CLASSES.get(sop, sop), duplicate_uids=bool(spec.get("duplicate_uids")),
                     station_name=spec["calling_aet"][:16])
    syntaxes = tuple(resolve(t) for t in spec["transfer_syntaxes"]) if spec.get("transfer_syntaxes") \
        else DEFAULT_PROPOSAL
    options = SendOptions(transfer_syntaxes=syntaxes, abort_after=spec.get("abort_after"),
                          record=bool(spec.get("commit")))
    listener = commitprobe.start_listener(spec)  # storage commitment (commitprobe.py)
    committed: dict[str, Any] = {}
    later = None
    try:
        rep2 = send(plan, link, options)
        if spec.get("commit") and rep2.problem is None:
            later = commitprobe.observe(spec, link, plan, rep2, listener, committed)
    finally:
        if listener is not None:
            listener.stop()
    statuses = []
    for words, n in rep2.statuses.items():
        m = _HEX.match(words)
        if m:
            statuses.extend([int(m.group(1), 16)] * n)
    obs = {"kind": "ok" if rep2.problem is None else rep2.problem.kind, "statuses": sorted(set(statuses)),
           "sent": rep2.sent, "failed": rep2.failed, "elapsed_s": rep2.elapsed, "notes": rep2.notes,
           **committed}
    problem = rep2.problem or later
    if later is not None:
        obs["kind"] = later.kind
    obs["tls_session"] = rep2.tls_session
    return obs, problem


def _add_problem(obs: dict[str, Any], problem: Problem) -> None:
    """The simulator's sentence and hint, and the codes the catalogue compares (RJ, TLS, contexts)."""
    d = problem.detail
    obs["message"] = problem.message
    obs["hint"] = problem.hint
    if problem.kind == "rejected":
        obs["codes"] = f"{d.get('result')}/{d.get('source')}/{d.get('reason')}"
    if problem.kind == "tls-failed":
        obs["tls"] = d.get("tls")
    if problem.kind == "no-context":
        obs["context_results"] = sorted({int(r["result"]) for r in d.get("rejected", [])})


def describe(obs: dict[str, Any]) -> str:
    """One line: 'rejected 1/1/3: association rejected by ...'."""
    s = obs.get("kind", "?")
    if obs.get("codes"):
        s += f" {obs['codes']}"
    failures = [st for st in obs.get("statuses", []) if st != 0]
    if failures:
        s += " " + ",".join(f"0x{st:04X}" for st in failures)
    if obs.get("tls"):
        s += f" ({obs['tls']})"
    if obs.get("tls_session"):
        s += f" over {obs['tls_session']}"
    if obs.get("context_results"):
        s += f" (context result {','.join(map(str, obs['context_results']))})"
    if "sent" in obs:
        s += f", {obs['sent']} acknowledged"
    s += commitprobe.describe(obs)
    s += f", {obs.get('elapsed_s', 0):.1f} s"
    if obs.get("message"):
        s += f" -- {obs['message']}"
    return s


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ct_simulator.scenarios.probe '<json spec>'", file=sys.stderr)
        return 2
    try:
        obs = run(json.loads(args[0]))
    except Exception as exc:  # the runner reads the reason from the JSON
        obs = {"kind": "error", "message": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(obs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
