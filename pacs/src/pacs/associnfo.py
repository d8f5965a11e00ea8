"""What an association's events carry for its ladder (``dicomlab.ladder``).

The association-accepted and association-rejected events (associations.py) carry, in
``detail``, what the PACS saw of the request: when the TCP connection came (the
gate's accept, gate.py), the proposed presentation contexts, the maximum PDU and
the implementation; the accepted event also carries the result for each context.
UIDs are stored as UIDs (names are looked up when the ladder is built) and in a
compact form, so an association that proposes 128 contexts adds a few KiB to one
event, not one event per context. Building it never raises: the ladder is an aid,
the decision does not depend on it.
"""

from __future__ import annotations

import logging
from typing import Any

LOG = logging.getLogger(__name__)
MAX_CONTEXTS = 128  # PS3.8: presentation context ids are the odd numbers 1..255


def request_detail(assoc: Any, times: tuple[float, float]) -> dict[str, Any]:
    """``{"connected", "request_ms", "max_pdu", "implementation", "contexts": [[id, abstract, [ts, ...]], ...]}``;
    ``times``: the TCP connect and the moment the request was complete (Unix seconds)."""
    connected, requested = times
    try:
        rq = assoc.requestor
        prim = rq.primitive
        contexts = [
            [int(cx.context_id or 0), str(cx.abstract_syntax or ""), [str(t) for t in cx.transfer_syntax]]
            for cx in list(getattr(prim, "presentation_context_definition_list", None) or [])[:MAX_CONTEXTS]
        ]
        impl = " ".join(str(v) for v in (rq.implementation_class_uid, rq.implementation_version_name) if v)
        return {"connected": round(connected, 4), "request_ms": round((requested - connected) * 1000, 2),
                "max_pdu": int(rq.maximum_length or 0), "implementation": impl, "contexts": contexts}
    except Exception:  # an aid only: never in the way of the decision
        LOG.exception("request detail for the ladder")
        return {"connected": round(connected, 4)}


def context_results(assoc: Any) -> list[list[Any]]:
    """``[[id, result, transfer syntax], ...]`` as negotiated: result 0 acceptance, 1 user
    rejection, 2 no reason, 3 abstract syntax not supported, 4 transfer syntaxes not supported."""
    try:
        out = [[int(cx.context_id or 0), 0, str(cx.transfer_syntax[0]) if cx.transfer_syntax else ""]
               for cx in assoc.accepted_contexts]
        out += [[int(cx.context_id or 0), int(cx.result if cx.result is not None else 2), ""]
                for cx in assoc.rejected_contexts]
        return sorted(out)[:MAX_CONTEXTS]
    except Exception:
        LOG.exception("context results for the ladder")
        return []
