"""Sending to real peers, and every failure class produced for real and named as DESIGN.md does."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pydicom

from ct_simulator import outcome
from ct_simulator.cli import main
from ct_simulator.iod import StudyPlan, iter_instances
from ct_simulator.network import Link, associate, release
from ct_simulator.sender import SendOptions, send, store_contexts
from ct_simulator.syntaxes import DEFAULT_PROPOSAL
from lab import free_port, need_tool

from .test_objects import dciodvfy_errors


def _send(scp_port: int, *extra: str, called: str = "STORESCP") -> list[str]:
    return ["send", "--host", "127.0.0.1", "--port", str(scp_port), "--called-aet", called,
            "--rows", "64", "--cols", "64", "--progress", "never", *extra]


def test_send_to_storescp_arrives_byte_equal_and_valid(storescp, capsys):
    scp = storescp()
    rc = main(_send(scp.port, "--slices", "6", "--seed", "11", "--rows", "128", "--cols", "128"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "6 of 6 CT images sent, 0 failed" in out
    files = scp.files()
    assert len(files) == 6
    sent = {i.sop_instance_uid: i.dataset.PixelData for i in
            iter_instances(StudyPlan(slices=6, rows=128, cols=128, seed=11))}
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.PixelData == sent[ds.SOPInstanceUID]
        assert dciodvfy_errors(f) == []


def test_send_rle_and_j2k_negotiated_for_real(storescp, capsys):
    scp = storescp("+xa")  # storescp accepts every syntax it knows
    for syntax in ("rle", "j2k"):
        assert main(_send(scp.port, "--slices", "2", "--seed", "5", "--transfer-syntax", syntax)) == 0
    files = scp.files()
    assert len(files) == 2  # the same seed twice: same SOP Instance UIDs, storescp keeps one file each
    originals = [i.dataset.pixel_array for i in iter_instances(StudyPlan(slices=2, rows=64, cols=64, seed=5))]
    received = sorted((pydicom.dcmread(f) for f in files), key=lambda d: int(d.InstanceNumber))
    assert str(received[0].file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.90"  # the last one sent
    for ds, px in zip(received, originals, strict=True):
        assert np.array_equal(ds.pixel_array, px)
    assert "accepted: CT Image Storage (1.2.840.10008.5.1.4.1.1.2) as JPEG 2000" in capsys.readouterr().out


def test_associations_in_parallel(storescp):
    scp = storescp()
    rep = send(StudyPlan(slices=12, rows=32, cols=32, seed=1),
               Link("127.0.0.1", scp.port, called_aet="STORESCP"), SendOptions(associations=3))
    assert rep.ok and rep.sent == 12
    assert len(scp.files()) == 12


def test_every_association_socket_has_tcp_nodelay(storescp):
    scp = storescp()
    assoc, problem = associate(Link("127.0.0.1", scp.port, called_aet="STORESCP"),
                               store_contexts("1.2.840.10008.5.1.4.1.1.2", DEFAULT_PROPOSAL))
    assert problem is None
    try:
        sock = assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        release(assoc)


def test_echo_storescp(storescp, capsys):
    scp = storescp()
    assert main(["echo", "--host", "127.0.0.1", "--port", str(scp.port), "--called-aet", "STORESCP"]) == 0
    assert "Success" in capsys.readouterr().out


def test_storescp_refusing_is_named_rejected(storescp, capsys):
    scp = storescp("--refuse")
    rc = main(_send(scp.port, "--slices", "2"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_REJECTED
    assert "association rejected by STORESCP@127.0.0.1" in out
    assert "rejected-permanent / service-user / no-reason-given (1/1/1)" in out


def test_closed_port_is_connection_refused(capsys):
    rc = main(_send(free_port(), "--slices", "2"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_REFUSED
    assert "connection refused by 127.0.0.1:" in out and "nothing listens on that port" in out


def test_peer_that_never_answers_is_timed_out(silent_listener, capsys):
    rc = main(_send(silent_listener, "--slices", "2", "--timeout", "1"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_TIMED_OUT
    assert "timed out after 1 s waiting for 127.0.0.1:" in out


def test_dropped_syn_is_timed_out_connecting(full_backlog, capsys):
    rc = main(["echo", "--host", "127.0.0.1", "--port", str(full_backlog), "--timeout", "1"])
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_TIMED_OUT
    assert "timed out after 1 s connecting to 127.0.0.1:" in out and "firewall" in out


def test_transfer_syntax_not_accepted_is_no_context(storescp, capsys):
    scp = storescp()  # default storescp: uncompressed syntaxes only
    rc = main(_send(scp.port, "--slices", "2", "--transfer-syntax", "rle"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_NO_CONTEXT
    assert "no presentation context accepted" in out
    assert "RLE Lossless (1.2.840.10008.1.2.5): transfer-syntaxes-not-supported" in out


def test_unsupported_sop_class_is_no_context(storescp, capsys):
    scp = storescp()
    rc = main(_send(scp.port, "--slices", "1", "--sop-class", "1.2.826.0.1.3680043.9.9999.1"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_NO_CONTEXT
    assert "abstract-syntax-not-supported" in out and "does not accept the SOP class" in out


def test_per_instance_failure_statuses_are_counted_and_named(failing_scp, capsys):
    port = failing_scp.server_address[1]
    rc = main(_send(port, "--slices", "4", "--called-aet", "FAILSCP"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_INSTANCE_FAILED
    assert "2 of 4 CT images sent, 2 failed" in out
    assert "2 x 0xA700 Refused: Out of Resources" in out
    assert len(failing_scp.received) == 4


def test_report_json_records_failure_statuses(failing_scp, tmp_path):
    import json

    port = failing_scp.server_address[1]
    report = tmp_path / "report.json"
    rc = main(_send(port, "--slices", "4", "--seed", "3", "--called-aet", "FAILSCP", "--report-json", str(report)))
    assert rc == outcome.EXIT_INSTANCE_FAILED
    rows = json.loads(report.read_text())["instances"]
    assert [r["sop_instance_uid"] for r in rows] == failing_scp.received
    assert [r["status"] for r in rows] == [0x0000, 0xA700, 0x0000, 0xA700]
    assert all(len(r["sha256"]) == 64 for r in rows)


def test_abort_mid_series_on_demand(storescp, capsys):
    scp = storescp()
    rc = main(_send(scp.port, "--slices", "6", "--abort-after", "2"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_ABORTED
    assert "aborted by the simulator on purpose after 2 instances" in out
    assert len(scp.files()) == 2
    assert "Abort" in scp.output() or "ABORT" in scp.output()


def test_invalid_and_overlong_ae_titles_are_sent_as_given(storescp, capsys):
    scp = storescp("-d")  # debug output shows the A-ASSOCIATE-RQ's titles
    rc = main(_send(scp.port, "--slices", "1", "--calling-aet", "BAD\\CT-TITLE-TOO-LONG"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "goes on the wire as 'BAD\\\\CT-TITLE-TOO'" in out
    assert "BAD\\CT-TITLE-TOO" in scp.output()


def test_wrong_called_aet_is_sent_and_the_echo_still_reports(storescp, capsys):
    # storescp answers any called AE title: the lab's PACS rejects it (see test_pacs.py)
    scp = storescp()
    assert main(["echo", "--host", "127.0.0.1", "--port", str(scp.port), "--called-aet", "pacs"]) == 0


def test_delay_between_instances(failing_scp):
    port = failing_scp.server_address[1]
    rep = send(StudyPlan(slices=3, rows=16, cols=16, seed=1), Link("127.0.0.1", port, called_aet="FAILSCP"),
               SendOptions(delay=0.2))
    assert rep.elapsed >= 0.4


def test_storescu_interop_reference(storescp, tmp_path):
    """DCMTK's storescu sends what we generate: the files are good Part 10."""
    exe = need_tool("storescu", "dcmtk")
    assert main(["generate", "--out", str(tmp_path / "gen"), "--slices", "2", "--rows", "32", "--cols", "32",
                 "--seed", "1", "--progress", "never"]) == 0
    scp = storescp()
    files = [str(p) for p in sorted((tmp_path / "gen").rglob("*.dcm"))]
    proc = subprocess.run([exe, "-aec", "STORESCP", "127.0.0.1", str(scp.port), *files], capture_output=True)
    assert proc.returncode == 0
    assert len(scp.files()) == 2



def test_diagnosis_reads_no_log_text_and_importing_attaches_no_handler():
    """One diagnoser (issue #15): importing the simulator leaves pynetdicom's logger as it was (a
    fresh interpreter), and a refused connection is still named with pynetdicom's logger switched
    off: the words come from the association's sockets, not from log records."""
    import logging
    import sys

    check = ("import logging, pynetdicom; lg = logging.getLogger('pynetdicom'); before = (list(lg.handlers), lg.level); "
             "import ct_simulator.network, ct_simulator.cli, ct_simulator.sender; "
             "assert (list(lg.handlers), lg.level) == before, (lg.handlers, lg.level)")
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lg = logging.getLogger("pynetdicom")
    was = lg.disabled
    lg.disabled = True
    try:
        _assoc, problem = associate(Link("127.0.0.1", free_port()),
                                    store_contexts("1.2.840.10008.5.1.4.1.1.2", DEFAULT_PROPOSAL))
    finally:
        lg.disabled = was
    assert problem is not None and problem.kind == "connection-refused", problem
