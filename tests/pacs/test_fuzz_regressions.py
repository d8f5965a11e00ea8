"""Every input the fuzzer found breaking something, replayed against a live PACS in both engines.

The inputs are fuzz/regressions/*.json (byte strings per case, as ``python -m fuzz.run``
saved them under build/fuzz/findings/), each with the defect it showed. The expected
outcome is the same for all (fuzz/replay.py ``judge``): no traceback in the PACS's log,
a final PDU (A-ABORT, A-ASSOCIATE-RJ or A-RELEASE-RP) rather than a silent close, no
file without a Success answer, and a C-ECHO answered afterwards.

A case that fails today only because of a defect being fixed is xfail(strict=False) with
that defect as the reason; a reason starting "NEW" is a defect the fuzzer found that is
not (yet) on any branch's list. To add a case: copy it from build/fuzz/findings/ into a
file here and give it a ``defect`` note (see DEFECTS).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pytest

from fuzz import cases as c
from fuzz.replay import judge
from fuzz.target import Target

pytestmark = pytest.mark.timeout(600)

HERE = Path(__file__).resolve().parents[2] / "fuzz" / "regressions"
DEFECTS = {
    "dataphase": "known (issue 10 item 5, branch dataphase): an exception in pacs/wire.py DataPhase ends the "
                 "association without A-ABORT (after the store, when the response is what fails)",
    "dul-loop": "issue 10 item 5: an exception in pynetdicom's DUL loop (state machine, DIMSE decoding) ends the "
                "association without A-ABORT and prints a traceback (fastpath.LabDUL._run)",
    "negotiation": "NEW: pynetdicom raises while decoding or negotiating a malformed A-ASSOCIATE-RQ (a presentation "
                   "context without an abstract syntax or with an even ID, an unknown user identity type); the "
                   "connection ends without A-ASSOCIATE-RJ or A-ABORT",
}


def _load() -> list[tuple[str, c.Case]]:
    out = []
    for path in sorted(HERE.glob("*.json")):
        for case in c.load_cases(path):
            out.append((path.stem, case))
    return out


CASES = _load()


@pytest.fixture(scope="module", params=["socket", "loops", "stock"])
def target(request):
    t = Target(request.param, Path(tempfile.mkdtemp(prefix=f"fuzz-regress-{request.param}-"))).start()
    yield t
    t.stop()


@pytest.mark.parametrize("case", [
    pytest.param(case, id=f"{case.ident}-{case.klass}-{case.notes.get('engine', '')}",
                 marks=[pytest.mark.xfail(strict=False, reason=DEFECTS[case.notes["defect"]])]
                 if case.notes.get("defect") in DEFECTS else [])
    for name, case in CASES
])
def test_fuzz_finding_is_handled(target, case):
    problems = judge(target, case)
    assert not problems, f"{case.klass} {case.name} ({case.notes.get('found', '')}): " + "; ".join(problems)


def test_there_are_regression_cases():
    assert len(CASES) >= 5 and all(case.chunks for _, case in CASES)


@pytest.mark.xfail(strict=False, reason="NEW (fuzzer, loops engine: a C-ECHO answer began with a 0x00 byte): "
                                        "fastpath.LabDUL.ring() writes to the wake-up pipe's descriptor number after "
                                        "run_reactor closed it, so into whatever socket or pipe now has that number")
def test_a_finished_dul_writes_nothing_into_a_reused_descriptor():
    from pynetdicom import AE

    from pacs.fastpath import LabAssociation

    assoc = LabAssociation(AE(), "acceptor")
    dul = assoc.dul
    dul._kill_thread = True
    t = threading.Thread(target=dul.run_reactor)
    t.start()
    t.join(10)
    r, w = os.pipe()  # the lowest free descriptor numbers: most likely those the DUL's pipe had
    try:
        assoc.dul.to_provider_queue.put("A-ABORT")  # e.g. acse.send_abort once the DUL has ended
        dul.kill_dul()
        os.set_blocking(r, False)
        try:
            leaked = os.read(r, 16)
        except BlockingIOError:
            leaked = b""
        assert leaked == b"", f"{leaked!r} written into descriptor {w}, which belongs to someone else now"
    finally:
        os.close(r)
        os.close(w)
