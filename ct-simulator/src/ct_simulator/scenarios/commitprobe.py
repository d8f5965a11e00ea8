"""Storage Commitment in the scenarios: the modality asks the PACS to commit what
it sent, and waits for the report on its own listener.

Action keys (catalogue.toml): ``commit = true``; ``listen_port`` where the
modality listens for the report ("{listen_port}": a free port the runner picks;
the node's ``port`` may say "{listen_port}" or "{closed_port}", a port nothing
listens on); ``listen = false`` to misbehave by not listening; ``commit_extra``
(SOP Instance UIDs never sent, asked too); ``commit_timeout`` (s);
``report_status`` (the status the modality answers the report with).

Observed (expect.modality keys): ``report`` = received | not-awaited | missing,
``committed`` and ``not_committed`` (counts in the report), ``failure_reason``
(one Failure Reason the report must carry). The kind is the send's, else
``timed-out`` for a report that never came, else ``instance-failed`` when the
report lists failures.

Where the PACS must reach the listener: the address it sees the modality come
from (``{peer}``). In the local runtime that is 127.0.0.1; in Compose, with the
runner on the host, it is the lab network's gateway, so the host must accept
connections from the PACS container on the listen port (a host firewall that
drops them turns every report into a timeout).
"""

from __future__ import annotations

import time
from typing import Any

from pydicom.uid import generate_uid

KEYS = {"commit", "listen", "listen_port", "commit_extra", "commit_timeout", "report_status"}
EXPECT_KEYS = {"report", "committed", "not_committed", "failure_reason"}


def start_listener(spec: dict[str, Any]) -> Any:
    """The modality's report listener, before anything is sent (None: not listening, on purpose)."""
    if not spec.get("commit") or spec.get("listen", True) is False:
        return None
    from ..listener import Listener

    return Listener(spec["calling_aet"][:16], int(spec["listen_port"]), None,
                    bind=str(spec.get("listen_bind", "0.0.0.0")),
                    report_status=int(spec.get("report_status", 0))).start()


def observe(spec: dict[str, Any], link: Any, plan: Any, rep: Any, listener: Any, obs: dict[str, Any]) -> Any:
    """Ask for commitment of what was acknowledged (and ``commit_extra`` UIDs never sent); fill ``obs``;
    return the Problem that decides the kind (or None)."""
    from ..commit import commit

    refs = [(plan.sop_class_uid, row["sop_instance_uid"]) for row in rep.instances if row["status"] == 0x0000]
    refs += [(plan.sop_class_uid, generate_uid()) for _ in range(int(spec.get("commit_extra", 0)))]
    c = commit(link, refs, listener, float(spec.get("commit_timeout", 5.0)))
    if listener is None:  # not listening, but still up (as a modality would be) while the PACS tries
        time.sleep(float(spec.get("commit_timeout", 5.0)))
    obs["notes"] = list(rep.notes) + c.notes
    if c.report is not None:
        obs["report"] = "received"
        obs["committed"] = len(c.report.committed)
        obs["not_committed"] = len(c.report.failed)
        obs["failure_reasons"] = sorted({r for _c, _i, r in c.report.failed})
    else:
        obs["report"] = "not-awaited" if listener is None and c.problem is None else "missing"
    if c.problem is not None:
        return c.problem
    if c.report is not None and c.report.failed:
        obs["kind"] = "instance-failed"
        obs["message"] = (f"{len(c.report.failed)} of {len(refs)} instance(s) not committed "
                          f"(failure reasons {', '.join(f'0x{r:04X}' for r in obs['failure_reasons'])})")
    return None


def compare(expected: dict[str, Any], obs: dict[str, Any]) -> list[str]:
    out = []
    for key in ("report", "committed", "not_committed"):
        if key in expected and obs.get(key) != expected[key]:
            out.append(f"modality: expected {key} {expected[key]}, observed {obs.get(key)}")
    if "failure_reason" in expected and expected["failure_reason"] not in obs.get("failure_reasons", []):
        seen = ",".join(f"0x{r:04X}" for r in obs.get("failure_reasons", [])) or "none"
        out.append(f"modality: expected failure reason 0x{expected['failure_reason']:04X} in the report, "
                   f"observed {seen}")
    return out


def describe(obs: dict[str, Any]) -> str:
    if "report" not in obs:
        return ""
    if obs["report"] == "received":
        return f"; report: {obs.get('committed')} committed, {obs.get('not_committed')} not"
    return f"; report {obs['report']}"
