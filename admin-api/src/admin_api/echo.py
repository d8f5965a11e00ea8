"""C-ECHO from the PACS's AE title to a node, with the outcome in plain words
(``dicomlab.outbound`` opens the association and names a failure).

A node whose ``tls`` is ``required`` is echoed over DICOM TLS, as the PACS calls it
(``dicomlab.tlsclient``: the lab CA and the PACS's certificate in the TLS folder the admin
API shares with the PACS); a failed handshake is named with its cause
(``dicomlab.tlswords``) in ``error`` and ``tls_cause``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomlab.outbound import association

STATUS_SUCCESS = 0x0000  # Success
TLS_KINDS = ("tls-handshake-failed", "tls-unavailable")  # failures whose event reason is the kind itself


@dataclass
class EchoResult:
    ok: bool
    status: int | None
    error: str | None
    elapsed_ms: float
    calling_aet: str
    called_aet: str
    address: str
    tls: str = ""  # the TLS version the echo went over ("" plain)
    tls_cause: str | None = None  # a failed TLS handshake's cause (dicomlab.tlswords codes)
    kind: str | None = None  # dicomlab.outbound's reason key of a failed association

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def send_echo(calling_aet: str, called_aet: str, host: str, port: int, timeout: float = 3.0, *,
              tls: str = "off", tls_folder: str | None = None) -> EchoResult:
    """``tls`` is the node's setting (``required``: over DICOM TLS, with the files in ``tls_folder``)."""
    started = time.perf_counter()
    used_tls = ""

    def result(ok: bool, status: int | None, error: str | None, cause: str | None = None,
               kind: str | None = None) -> EchoResult:
        return EchoResult(ok, status, error, round((time.perf_counter() - started) * 1000, 1), calling_aet,
                          called_aet, f"{host}:{port}", used_tls, cause, kind)

    with association(calling_aet, called_aet, host, port, [build_context(Verification)], timeout=timeout,
                     tls=tls, tls_folder=tls_folder) as out:
        if not out.ok:
            return result(False, None, out.error, out.cause, out.kind)
        used_tls = out.tls
        rsp = out.assoc.send_c_echo()
        status = getattr(rsp, "Status", None) if rsp else None
        if status is None:
            return result(False, None, f"no answer to the C-ECHO request within {timeout:g} s")
        if status == STATUS_SUCCESS:
            return result(True, int(status), None)
        return result(False, int(status), f"the node answered the C-ECHO with status 0x{int(status):04X}")
