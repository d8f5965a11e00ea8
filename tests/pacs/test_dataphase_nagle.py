"""A modality that keeps Nagle's algorithm on (storescu as Debian builds DCMTK) is not held by
the PACS's delayed ACKs. Counted, not timed: the kernel's DelayedACKs over a real storescu's
send (``lab.delayed_acks``). Both engines (``make test-stock`` runs this file on stock loops)."""

from __future__ import annotations

import subprocess

import pytest
from dicomdata import as_file
from pydicom.uid import ExplicitVRLittleEndian
from test_qr import make_study

from lab import PacsProcess, add_node, dcmtk_env, delayed_acks, need_tool


@pytest.mark.parametrize("quickack", ["1", "0"], ids=["quickack", "off"])
def test_small_instances_from_a_nagle_storescu_wait_for_no_delayed_ack(quickack, redis_url, registry, tmp_path):
    """storescu with Nagle on writes a C-STORE-RQ's command PDU, then its dataset PDU: with small
    instances both are small segments, and the second waits until the first is acknowledged. The
    PACS asks for an immediate ACK after each PDU it reads and after each answer it sends (so the
    next request's first segment is acknowledged as it comes): a few delayed ACKs at most over 40
    instances. With ``PACS_QUICKACK=0`` about one per instance (the check can fail); measured
    before the fix of the answer side: 53, 1.8 s for the 40 (0.2 s now)."""
    storescu = need_tool("storescu", "dcmtk")
    files = tmp_path / "files"
    files.mkdir()
    for i, ds in enumerate(make_study(40)):
        as_file(ds, ExplicitVRLittleEndian).save_as(files / f"{i}.dcm", enforce_file_format=True)
    add_node(registry, "CT01")
    pacs = PacsProcess(redis_url, tmp_path / "storage", extra_env={"PACS_QUICKACK": quickack}).start()
    try:
        before = delayed_acks()
        r = subprocess.run([storescu, "-aet", "CT01", "-aec", "PACS", "+sd", "127.0.0.1", str(pacs.port), str(files)],
                           capture_output=True, text=True, env=dcmtk_env(nodelay=False), timeout=120)
        waited = delayed_acks() - before
        assert r.returncode == 0, r.stderr
        assert len(list((tmp_path / "storage").rglob("*.dcm"))) == 40
    finally:
        pacs.stop()
    if quickack == "1":
        assert waited < 20, f"{waited} delayed ACKs for 40 C-STOREs"
    else:
        assert waited >= 20, f"only {waited} delayed ACKs: the check cannot tell"
