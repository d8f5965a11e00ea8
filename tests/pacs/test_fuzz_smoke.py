"""CI smoke of `make fuzz`: a few hundred structural fuzz cases per engine against a live PACS.

The cases come from a fixed seed (fuzz/cases.py is deterministic for (seed, index)), so CI
plays the same bytes every time. One fuzz run per engine (module fixture); each test
below is one of the checks made after every batch. Every check is a hard test in every
engine except the known limitations below, xfail(strict=False) for the engine named.
"""

from __future__ import annotations

import pytest

from fuzz.run import Report, run_engine

pytestmark = pytest.mark.timeout(900)

SEED = 20261130
CASES = 300
STOCK_DUL = ("known limitation of the stock engine (PACS_FASTPATH=0): pynetdicom 3.0.4's "
             "DULServiceProvider.run_reactor calls state_machine.do_action outside its try, so an exception while "
             "decoding a DIMSE message (DT-2) kills the DUL thread with a traceback and no A-ABORT; fixed only by "
             "overriding that loop, as the fast path does (fastpath.LabDUL._run)")
READ_AHEAD = ("known limitation of the stock engine (PACS_FASTPATH=0): pynetdicom 3.0.4's DUL thread reads on while "
              "the association thread stores; a protocol error right after a complete C-STORE (a second "
              "A-RELEASE-RQ, an A-RELEASE-RQ of the wrong length) aborts the association while the instance is "
              "being stored, so it is kept, durable, without its Success answer reaching the peer (which sends it "
              "again: same UID, same file). The socket data phase and the fast path's loops read the next PDU only "
              "after answering (fastpath.LabDUL.reads_held)")
LIMITS = {"test_no_file_is_left_without_a_success_answer": {"stock": READ_AHEAD},
          "test_no_traceback_in_the_pacs_log": {"stock": STOCK_DUL},
          "test_no_association_ends_without_a_final_pdu": {"stock": STOCK_DUL}}


@pytest.fixture(scope="module", params=["socket", "loops", "stock"])
def report(request, tmp_path_factory) -> Report:
    """(With PACS_FASTPATH=0 in the environment, `make test-stock`, "socket" is the stock engine.)"""
    return run_engine(request.param, CASES, SEED, batch_size=100, concurrency=4,
                      out_dir=tmp_path_factory.mktemp(f"fuzz-{request.param}"), progress=False, keep_going=True,
                      echo_limit=10.0)  # answered at all: tests do not time (`make fuzz` holds it to 1 s)


@pytest.fixture(autouse=True)
def known_limit(request):
    """xfail(strict=False) only for the engine a known limitation applies to."""
    if "report" in request.fixturenames:
        engine = request.node.callspec.params.get("report")
        reason = LIMITS.get(request.node.originalname, {}).get(engine)
        if reason:
            request.applymarker(pytest.mark.xfail(strict=False, reason=reason))


def _problems(rep: Report, *words: str) -> list[str]:
    return [p for f in rep.failures for p in f["problems"] if any(w in p for w in words)]


def test_every_case_ran_and_the_pacs_stayed_up(report):
    assert report.cases == CASES
    assert not _problems(report, "process exited", "processes changed"), report.failures


def test_an_authorized_echo_is_answered_after_every_batch(report):
    assert not _problems(report, "C-ECHO"), report.failures


def test_no_file_is_left_without_a_success_answer(report):
    assert not _problems(report, "without a Success", "temporary file"), report.failures


def test_threads_descriptors_and_memory_return_within_bounds(report):
    assert not _problems(report, "threads", "open fds", "RSS"), report.failures


def test_no_traceback_in_the_pacs_log(report):
    assert not report.findings, report.findings


def test_no_association_ends_without_a_final_pdu(report):
    silent = {k: v for k, v in report.observations.items() if "silent-close" in k and "incomplete" not in k}
    assert not silent, (silent, report.examples)


def test_the_fuzzer_sees_answers(report):
    """The cases are not all thrown away at the first byte: stores are answered (guards the generator)."""
    answered = sum(v for k, v in report.outcomes.items() if "RSP(0x8001,0x0000)" in k or "A-RELEASE-RP" in k)
    assert answered >= CASES // 10, report.outcomes
