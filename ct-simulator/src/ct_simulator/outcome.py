"""What happened to an echo or a send, in the words of DESIGN.md, with the fix.

    Problem                       one failure class (``kind``), its exit code,
    │                             a sentence for a PACS administrator and a hint
    ├── rejected                  A-ASSOCIATE-RJ with result / source / reason
    ├── connection-refused        nothing listens on host:port
    ├── timed-out                 TCP connect or the association answer never came
    ├── unreachable               no route, unknown host name
    ├── aborted                   the peer (or the simulator, on purpose) aborted
    ├── no-context                no presentation context accepted
    ├── instance-failed           a C-STORE answered with a failure status
    ├── cannot-encode             a transfer syntax the simulator cannot write
    └── tls-failed                DICOM TLS failed (``detail["tls"]``: the reason key of
                                  ``ct_simulator.tlsfail``: unknown-ca, host-name-mismatch, ...)

Exit codes are stable so that scripts and the scenario runner can use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, VERIFICATION_SERVICE_CLASS_STATUS

from dicomlab.dicom import RJ_REASON, RJ_RESULT, RJ_SOURCE, Rejection
from dicomlab.text import safe_text

EXIT_OK = 0
EXIT_ERROR = 1  # bad input or an unexpected error
# 2: argparse's own exit code for a usage error
EXIT_REJECTED = 3
EXIT_REFUSED = 4
EXIT_TIMED_OUT = 5
EXIT_NO_CONTEXT = 6
EXIT_INSTANCE_FAILED = 7
EXIT_ABORTED = 8
EXIT_UNREACHABLE = 9
EXIT_REGISTRY = 10
EXIT_TLS = 11

KIND_EXIT = {
    "rejected": EXIT_REJECTED,
    "connection-refused": EXIT_REFUSED,
    "timed-out": EXIT_TIMED_OUT,
    "no-context": EXIT_NO_CONTEXT,
    "instance-failed": EXIT_INSTANCE_FAILED,
    "aborted": EXIT_ABORTED,
    "unreachable": EXIT_UNREACHABLE,
    "cannot-encode": EXIT_ERROR,
    "tls-failed": EXIT_TLS,
    "error": EXIT_ERROR,
}

EXIT_CODES_HELP = """exit codes:
  0  everything sent (or echoed)      6  no presentation context accepted
  1  bad input or unexpected error    7  some instances failed (C-STORE status)
  2  usage error                      8  association aborted
  3  association rejected             9  host unreachable / unknown
  4  connection refused              10  registry (Redis) unavailable
  5  timed out                      11  DICOM TLS failed (handshake, certificate, port)"""


@dataclass
class Problem:
    """One failure: its class, a sentence, the fix, and the raw facts."""

    kind: str
    message: str
    hint: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the sentence may quote the peer (AE titles, status comments): printable text only,
        # on the terminal, in the JSON report and in the worker's send-failed event alike
        self.message = safe_text(self.message)
        self.hint = safe_text(self.hint)

    @property
    def exit_code(self) -> int:
        return KIND_EXIT.get(self.kind, EXIT_ERROR)

    def text(self) -> str:
        return f"{self.message} {self.hint}".strip()


_TLS_1_3 = {
    None: " If the node has tls required, it must come over DICOM TLS to the PACS's TLS port (--tls).",
    "cert": " Over TLS the PACS also checks the node's certificate: its subject CN must be {calling} (the "
            "certificate issued for this node, not another's).",
    "no-cert": " If the node has client_certificate required, present the certificate issued for it "
               "(--tls-bundle, or --tls-cert and --tls-key).",
}


def rejection(rj: Rejection, calling: str, called: str, peer: str, tls: str | None = None) -> Problem:
    """The A-ASSOCIATE-RJ in words, with what to check for each reason. ``tls``: None (plain), "cert"
    (over TLS with a client certificate) or "no-cert": a 1/1/3 may be the PACS's TLS policy."""
    result = RJ_RESULT.get(rj.result, f"result {rj.result}")
    source = RJ_SOURCE.get(rj.source, f"source {rj.source}")
    reason = RJ_REASON.get((rj.source, rj.reason), f"reason {rj.reason}")
    hints = {
        (1, 3): f"Is {calling} registered (and enabled) on the PACS, with this host's address? "
                "AE titles are case-sensitive.",
        (1, 7): f"The PACS does not answer to the called AE title {called!r}: use the PACS's AE title "
                "(its listener settings). AE titles are case-sensitive.",
        (1, 1): "The PACS gave no reason: read its log for this association.",
        (3, 1): "The PACS is temporarily unable to decide (its registry may be down): try again later.",
        (3, 2): "The PACS has too many associations open: try again later, or raise its maximum.",
        (2, 2): "The PACS does not speak this protocol version.",
        (2, 1): "The PACS gave no reason: read its log for this association.",
        (1, 2): "The PACS does not support the DICOM application context.",
    }
    hint = hints.get((rj.source, rj.reason), "")
    if (rj.source, rj.reason) == (1, 3):
        hint += _TLS_1_3[tls].format(calling=calling)
    return Problem(
        "rejected",
        f"association rejected by {called}@{peer}: {result} / {source} / {reason} ({rj.codes}).",
        hint,
        {"result": rj.result, "source": rj.source, "reason": rj.reason,
         "result_text": result, "source_text": source, "reason_text": reason},
    )


def refused(peer: str) -> Problem:
    return Problem("connection-refused", f"connection refused by {peer}: nothing listens on that port.",
                   "Check the PACS's host and port (is the PACS running, did its port change?).", {"peer": peer})


def connect_timed_out(peer: str, seconds: float) -> Problem:
    return Problem("timed-out", f"timed out after {seconds:g} s connecting to {peer}.",
                   "A firewall dropping packets, or a host that is down or unreachable: check the address "
                   "and the network path.", {"peer": peer, "seconds": seconds, "phase": "connect"})


def answer_timed_out(peer: str, seconds: float) -> Problem:
    return Problem("timed-out",
                   f"timed out after {seconds:g} s waiting for {peer} to answer the association request "
                   "(the TCP connection was accepted).",
                   "Is a DICOM service listening there, and is it overloaded?",
                   {"peer": peer, "seconds": seconds, "phase": "association"})


def response_timed_out(peer: str, seconds: float, what: str) -> Problem:
    return Problem("timed-out",
                   f"no answer from {peer} to {what} within {seconds:g} s (DIMSE timeout); the simulator aborted "
                   "the association (the association itself had been accepted).",
                   "The PACS accepted the association but stopped answering: is it stalled or overloaded? "
                   "A longer DIMSE timeout helps only with a slow PACS.",
                   {"peer": peer, "seconds": seconds, "phase": "dimse"})


def unreachable(peer: str, error: str) -> Problem:
    return Problem("unreachable", f"cannot reach {peer}: {error}.",
                   "Check the host name or address and the route to it.", {"peer": peer, "error": error})


def aborted(peer: str, by: str, when: str) -> Problem:
    return Problem("aborted", f"the association with {peer} was aborted by {by} {when}.",
                   "Read the PACS's log for this association." if by != "the simulator" else "",
                   {"peer": peer, "by": by})


def tls_failed(peer: str, words: Any) -> Problem:
    """``words``: a ``ct_simulator.tlsfail.TlsWords``."""
    return Problem("tls-failed", words.sentence, words.hint, {"peer": peer, "tls": words.reason})


def status_words(status: int, service: str = "store") -> str:
    """'0xA700 Refused: Out of Resources' (failure category and meaning)."""
    table = STORAGE_SERVICE_CLASS_STATUS if service == "store" else VERIFICATION_SERVICE_CLASS_STATUS
    category, meaning = table.get(status, ("Failure", "unknown status"))
    if ":" in meaning or meaning.lower().startswith(category.lower()):
        return f"0x{status:04X} {meaning}"
    return f"0x{status:04X} {category}: {meaning}"


def instance_failed(count: int, total: int, first: str) -> Problem:
    return Problem("instance-failed", f"{count} of {total} instances failed; first failure: {first}.",
                   "The association was accepted: the PACS refused these objects; read its log.",
                   {"failed": count, "total": total})


CONTEXT_RESULTS = {
    1: "user-rejection",
    2: "no-reason (provider-rejection)",
    3: "abstract-syntax-not-supported",
    4: "transfer-syntaxes-not-supported",
}


def no_context(peer: str, rejected: list[tuple[str, list[str], int]]) -> Problem:
    """``rejected``: (abstract syntax, proposed transfer syntaxes, result) per context."""
    from dicomlab.dicom import uid_name

    parts = []
    hints = []
    for abstract, syntaxes, result in rejected:
        why = CONTEXT_RESULTS.get(result, f"result {result}")
        parts.append(f"{uid_name(abstract)} with {', '.join(uid_name(s) for s in syntaxes)}: {why}")
        if result == 3:
            hints.append(f"the PACS does not accept the SOP class {uid_name(abstract)} (from this node)")
        elif result == 4:
            hints.append("the PACS accepts none of the proposed transfer syntaxes: propose another one "
                         "(--transfer-syntax) or have the PACS accept it")
    hint = "; ".join(dict.fromkeys(hints)) or "ask the PACS administrator what this node may send"
    return Problem("no-context", f"no presentation context accepted by {peer}: " + "; ".join(parts) + ".",
                   hint[0].upper() + hint[1:] + ".",
                   {"rejected": [{"abstract_syntax": a, "transfer_syntaxes": s, "result": r} for a, s, r in rejected]})
