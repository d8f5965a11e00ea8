"""C-ECHO from the PACS's AE title to a node, with the outcome in plain words
(``dicomlab.outbound`` opens the association and names a failure)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomlab.outbound import association

STATUS_SUCCESS = 0x0000  # Success


@dataclass
class EchoResult:
    ok: bool
    status: int | None
    error: str | None
    elapsed_ms: float
    calling_aet: str
    called_aet: str
    address: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def send_echo(calling_aet: str, called_aet: str, host: str, port: int, timeout: float = 3.0) -> EchoResult:
    started = time.perf_counter()

    def result(ok: bool, status: int | None, error: str | None) -> EchoResult:
        return EchoResult(ok, status, error, round((time.perf_counter() - started) * 1000, 1), calling_aet,
                          called_aet, f"{host}:{port}")

    with association(calling_aet, called_aet, host, port, [build_context(Verification)], timeout=timeout) as out:
        if not out.ok:
            return result(False, None, out.error)
        rsp = out.assoc.send_c_echo()
        status = getattr(rsp, "Status", None) if rsp else None
        if status is None:
            return result(False, None, f"no answer to the C-ECHO request within {timeout:g} s")
        if status == STATUS_SUCCESS:
            return result(True, int(status), None)
        return result(False, int(status), f"the node answered the C-ECHO with status 0x{int(status):04X}")
