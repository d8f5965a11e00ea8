"""The send path on the wire: every answer kept, PDUs the peer can take, failures named (real DCMTK peers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from io import BytesIO

import pydicom
import pytest
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from ct_simulator import outcome
from ct_simulator.cli import main
from ct_simulator.iod import StudyPlan, iter_instances
from ct_simulator.network import Link
from ct_simulator.sender import SendOptions, send
from ct_simulator.syntaxes import encode_bytes
from ct_simulator.wire import c_store_rq, frame, parse_command
from lab import delayed_acks, need, need_tool, wait_until

CT = "1.2.840.10008.5.1.4.1.1.2"
UID = "1.2.826.0.1.3680043.8.498.1"


def _send(port: int, *extra: str) -> list[str]:
    return ["send", "--host", "127.0.0.1", "--port", str(port), "--called-aet", "STORESCP",
            "--rows", "32", "--cols", "32", "--progress", "never", *extra]


def test_back_to_back_sends_lose_no_answer(storescp):
    """20 back-to-back sends of 300 small slices, no failure.

    With pynetdicom's send_c_store, its reactor took ~1 C-STORE response in 4000 off the queue (the SCU
    then waited out the DIMSE timeout for an instance the peer had stored): this caught it in most runs.
    """
    scp = storescp("--ignore")  # answers at once: the answers follow each other as fast as they can
    link = Link("127.0.0.1", scp.port, called_aet="STORESCP", dimse_timeout=5)
    failures = []
    for run in range(20):
        rep = send(StudyPlan(slices=300, rows=16, cols=16, seed=run), link, SendOptions())
        if not rep.ok:
            failures.append((run, rep.exit_code, rep.problem and rep.problem.message, dict(rep.statuses)))
    assert failures == []


def test_command_set_is_what_pynetdicom_encodes():
    prim = C_STORE()
    prim.MessageID, prim.AffectedSOPClassUID, prim.AffectedSOPInstanceUID = 7, CT, UID
    prim.Priority = 0
    prim.DataSet = BytesIO(b"\0\0")
    msg = C_STORE_RQ()
    msg.primitive_to_message(prim)
    theirs = encode(msg.command_set, True, True)
    assert c_store_rq(7, CT, UID) == theirs
    cmd = parse_command(theirs)
    assert cmd[0x0110] == b"\x07\x00" and cmd[0x1000].rstrip(b"\0").decode() == UID


def test_pdus_decode_with_pynetdicom_and_respect_the_peer_maximum():
    payload = bytes(range(256)) * 40  # 10240 bytes
    out = bytearray()
    frame(3, payload, False, 4096, out)
    pos, data, controls = 0, b"", []
    while pos < len(out):
        length = int.from_bytes(out[pos + 2:pos + 6], "big")
        assert length + 6 <= 4096 + 6 and length <= 4096
        pdu = P_DATA_TF()
        pdu.decode(bytes(out[pos:pos + 6 + length]))
        prim: P_DATA = pdu.to_primitive()
        ((cx, pdv),) = prim.presentation_data_value_list
        assert cx == 3
        controls.append(pdv[0])
        data += pdv[1:]
        pos += 6 + length
    assert data == payload
    assert controls == [0x00, 0x00, 0x02]  # dataset fragments, the last one marked


def test_encoded_dataset_is_byte_equal_to_pynetdicoms_encoding():
    """The cached element encodings give exactly what pydicom/pynetdicom encode, series after series."""
    syntaxes = (("1.2.840.10008.1.2.1", False, False), ("1.2.840.10008.1.2", True, False),
                ("1.2.840.10008.1.2.1.99", False, True))
    for inst in iter_instances(StudyPlan(studies=2, series=2, slices=3, rows=32, cols=32, seed=3,
                                         patient_name="MÜLLER^JOSÉ")):
        for syntax, implicit, deflated in syntaxes:
            assert encode_bytes(inst.dataset, syntax) == encode(inst.dataset, implicit, True, deflated)
        ds = decode(BytesIO(encode_bytes(inst.dataset, syntaxes[0][0])), False, True)
        assert ds.SOPInstanceUID == inst.sop_instance_uid and ds.PixelData == inst.dataset.PixelData


def test_small_peer_pdu_is_respected_and_arrives_byte_equal(storescp, capsys):
    scp = storescp("--max-pdu", "4096")
    assert main(_send(scp.port, "--slices", "3", "--seed", "9", "--rows", "96", "--cols", "96")) == 0
    sent = {i.sop_instance_uid: i.dataset.PixelData for i in
            iter_instances(StudyPlan(slices=3, rows=96, cols=96, seed=9))}
    files = scp.files()
    assert len(files) == 3
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.PixelData == sent[ds.SOPInstanceUID]


def test_peer_abort_mid_series_is_named(storescp, capsys):
    scp = storescp("--abort-after")  # storescp aborts after receiving the first C-STORE-RQ
    rc = main(_send(scp.port, "--slices", "5", "--json"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_ABORTED, out
    assert "was aborted by the peer while sending instance 1" in out
    assert "A-ABORT from the service-user" in out or "closed the connection" in out


def test_peer_abort_during_the_dataset_is_named(storescp, capsys):
    scp = storescp("--abort-during")
    rc = main(_send(scp.port, "--slices", "5", "--rows", "256", "--cols", "256"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_ABORTED, out
    assert "aborted by the peer while sending instance 1" in out


def test_no_answer_within_the_dimse_timeout(storescp, capsys):
    scp = storescp("--sleep-during", "3")
    rc = main(_send(scp.port, "--slices", "3", "--dimse-timeout", "1"))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_TIMED_OUT, out
    assert "to the C-STORE of instance 1 within 1 s (DIMSE timeout)" in out



@pytest.mark.netns
@pytest.mark.parametrize("on", [True, False], ids=["quickack", "off"])
def test_the_answers_of_a_nagle_storescp_wait_for_no_delayed_ack(on, tmp_path):
    """A storescp with Nagle's algorithm on (as Debian builds DCMTK) writes each C-STORE-RSP in small
    segments and holds each until the one before is acknowledged. The simulator asks for an
    immediate ACK once a C-STORE is written, and once each PDU's header and body are read
    (``wire.QUICKACK``), so no answer waits for the delayed-ACK timer: also after a 512 KiB write,
    whose last segments the kernel sends after ``sendall`` returned (without the header's ACK,
    half of the C-STOREs waited on some connections: three sends, so that this is seen). Counted, not timed: the real simulator and the real
    storescp in a network namespace of their own, whose kernel counts the ACKs its timer sent.
    With ``wire.QUICKACK`` off the same send makes one per instance (the check can fail)."""
    exe = need_tool("storescp", "dcmtk")
    need(os.geteuid() == 0 and shutil.which("ip") is not None,
         "needs root and ip (iproute2) for a network namespace: run as root, as CI does")
    ns, port, slices, sends = f"dlab-dack-{os.getpid()}", 11104, 20, 3  # 512² slices: writes that outlast sendall
    subprocess.run(["ip", "netns", "add", ns], check=True)
    scp = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        out = tmp_path / "in"
        out.mkdir()
        scp = subprocess.Popen(["ip", "netns", "exec", ns, exe, "-aet", "STORESCP", "-od", str(out), str(port)],
                               env={**os.environ, "TCP_NODELAY": "0"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
        send = ("import sys; from ct_simulator import wire; from ct_simulator.cli import main; "
                f"wire.QUICKACK = {on}; sys.exit(main(sys.argv[1:]))")
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", send, *_send(port, "--slices", str(slices), "--rows", "512", "--cols", "512")]
        wait_until(lambda: subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                                           f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"],
                                          capture_output=True).returncode == 0, 15, interval=0.2,
                   what="storescp to listen in the namespace")
        before = delayed_acks(ns)
        for _ in range(sends):  # each its own connection: whether writes outlast sendall varies by connection
            sent = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert sent.returncode == 0, sent.stdout + sent.stderr
        waited = delayed_acks(ns) - before
        assert len(list(out.iterdir())) == sends * slices  # storescp keeps each received copy
        if on:
            assert waited <= 3, f"{waited} delayed ACKs for {sends} x {slices} C-STOREs"
        else:
            assert waited >= slices // 2, f"only {waited} delayed ACKs: the check cannot tell"
    finally:
        if scp is not None:
            scp.terminate()
            scp.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)
