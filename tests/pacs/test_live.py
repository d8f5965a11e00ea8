"""Live settings, SIGTERM and load, against a real PACS process."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dicomdata import CT, as_file, ct_dataset
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from lab import PacsProcess, add_node, dcmtk_env, echoscu, events_of, need_tool, rejection_of, wait_for


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_ae_title_change_applies_to_the_next_association(pacs, registry):
    add_node(registry, "CT01")
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    registry.update_listener({"ae_title": "NEWPACS"})
    r = echoscu(pacs.port, "CT01", "PACS")
    assert rejection_of(r.stderr + r.stdout) == ("Rejected Permanent", "Service User", "Called AE Title Not Recognized")
    assert echoscu(pacs.port, "CT01", "NEWPACS").returncode == 0


def test_port_change_rebinds_within_two_seconds_and_closes_the_old_port(pacs, registry):
    from lab import free_port

    add_node(registry, "CT01")
    old, new = pacs.port, free_port()
    registry.update_listener({"port": new})
    t0 = time.monotonic()
    wait_for(lambda: port_open(new) and not port_open(old), timeout=2.0, what="rebind to the new port")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0
    assert echoscu(new, "CT01", "PACS").returncode == 0
    r = echoscu(old, "CT01", "PACS")
    assert "Connection refused" in r.stderr + r.stdout
    ev = wait_for(lambda: events_of(registry, "settings-changed", reason=""))
    assert any(f"to {new}" in e.message for e in ev)


def test_port_change_to_a_busy_port_keeps_listening_and_says_why(pacs, registry):
    add_node(registry, "CT01")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        registry.update_listener({"port": busy.getsockname()[1]})
        try:
            ev = wait_for(lambda: events_of(registry, "settings-changed", reason="rebind-failed"))[-1]
        except AssertionError:
            print(pacs.log())
            raise
        assert "still listening" in ev.message
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0


def test_verbose_on_and_off_at_run_time(pacs, registry):
    add_node(registry, "CT01")
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    assert not events_of(registry, "pdu")
    registry.update_listener({"verbose": True})
    wait_for(lambda: "Verbose logging on" in pacs.log(), what="verbose on")
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    pdus = wait_for(lambda: events_of(registry, "pdu"))
    text = " ".join(e.message for e in pdus)
    assert "C-ECHO-RQ" in text and "C-ECHO-RSP" in text and "P_DATA_TF" in text or "PDU" in text
    rq = events_of(registry, "association-requested", calling_aet="CT01")
    assert rq and "Verification" in rq[-1].message and "max PDU" in rq[-1].message
    registry.update_listener({"verbose": False})
    wait_for(lambda: "Verbose logging off" in pacs.log(), what="verbose off")
    before = len(events_of(registry, "pdu"))
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    assert len(events_of(registry, "pdu")) == before


def test_max_associations_is_live(pacs, registry):
    add_node(registry, "CT01")
    registry.update_listener({"max_associations": 1})
    ae = AE(ae_title="CT01")
    ae.add_requested_context("1.2.840.10008.1.1")
    held = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    try:
        r = echoscu(pacs.port, "CT01", "PACS")
        assert rejection_of(r.stderr + r.stdout)[2] == "Local Limit Exceeded"
        registry.update_listener({"max_associations": 2})
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    finally:
        held.release()


def test_sigterm_stops_accepting_finishes_in_flight_stores_and_exits_0(redis_url, registry, tmp_path):
    pacs = PacsProcess(redis_url, tmp_path / "st").start()
    add_node(registry, "CT01")
    study, series = generate_uid(), generate_uid()
    datasets = [as_file(ct_dataset(study, series, i, rows=256, cols=256)) for i in range(1, 41)]
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established
    statuses: list[int] = []
    sent_first = threading.Event()

    def sender() -> None:
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
            sent_first.set()
        assoc.release()

    t = threading.Thread(target=sender)
    t.start()
    assert sent_first.wait(20)
    pacs.proc.send_signal(signal.SIGTERM)
    # stops accepting at once...
    wait_for(lambda: not port_open(pacs.port), timeout=5, what="listening port closed")
    # ...but the association in flight finishes
    t.join(60)
    assert pacs.proc.wait(60) == 0
    assert statuses == [0] * 40
    for ds in datasets:
        path = Path(tmp_path / "st" / study / series / f"{ds.SOPInstanceUID}.dcm")
        assert dcmread(path).PixelData == ds.PixelData
    assert "PACS stopped" in pacs.log()


def test_eight_modalities_fifty_slices_each_nothing_lost(redis_url, registry, tmp_path):
    """8 DCMTK storescu at once x 50 CT slices of 512x512: every instance stored, byte-equal."""
    exe = need_tool("storescu", "dcmtk")
    pacs = PacsProcess(redis_url, tmp_path / "st").start()
    try:
        registry.update_listener({"max_associations": 8})
        sent: dict[str, bytes] = {}
        jobs = []
        for m in range(8):
            aet = f"CT{m:02d}"
            add_node(registry, aet)
            folder = tmp_path / aet
            folder.mkdir()
            study, series = generate_uid(), generate_uid()
            for i in range(1, 51):
                ds = as_file(ct_dataset(study, series, i, rows=512, cols=512, seed=m))
                ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
                sent[str(ds.SOPInstanceUID)] = ds.PixelData
            jobs.append((aet, folder))
        procs = [subprocess.Popen([exe, "-aet", aet, "-aec", "PACS", "+sd", "127.0.0.1", str(pacs.port), str(folder)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dcmtk_env())
                 for aet, folder in jobs]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        stored = {p.stem: p for p in (tmp_path / "st").rglob("*.dcm")}
        assert len(stored) == 400
        for uid, pixels in sent.items():
            assert dcmread(stored[uid]).PixelData == pixels
        assert sum(s["instances"] for s in registry.list_studies()) == 400
    finally:
        pacs.stop()


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_listener_processes_share_the_port_and_a_dead_one_is_replaced(redis_url, registry, tmp_path):
    pacs = PacsProcess(redis_url, tmp_path / "st", extra_env={"PACS_WORKERS": "2"}).start()
    try:
        add_node(registry, "CT01")
        for _ in range(30):
            assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
        served_by = {e.assoc_id.rsplit(".", 1)[1] for e in events_of(registry, "association-accepted")}
        assert served_by == {"0", "1"}  # the kernel spread the associations over both processes
        workers = wait_for(lambda: len(children(pacs.proc.pid)) == 2 and children(pacs.proc.pid))
        import os

        os.kill(workers[1], signal.SIGKILL)
        ev = wait_for(lambda: events_of(registry, "worker-exited"), timeout=20)[-1]
        assert "Restarting" in ev.message
        wait_for(lambda: len(children(pacs.proc.pid)) == 2 and workers[1] not in children(pacs.proc.pid))
        for _ in range(10):
            assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    finally:
        assert pacs.stop() == 0


def test_single_process_mode(redis_url, registry, tmp_path):
    pacs = PacsProcess(redis_url, tmp_path / "st", extra_env={"PACS_WORKERS": "1"}).start()
    try:
        assert children(pacs.proc.pid) == []
        add_node(registry, "CT01")
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
        r = echoscu(pacs.port, "CT02", "PACS")
        assert rejection_of(r.stderr + r.stdout)[2] == "Calling AE Title Not Recognized"
    finally:
        assert pacs.stop() == 0


def test_workers_do_not_outlive_a_killed_supervisor(redis_url, registry, tmp_path):
    pacs = PacsProcess(redis_url, tmp_path / "st", extra_env={"PACS_WORKERS": "2"}).start()
    workers = wait_for(lambda: len(children(pacs.proc.pid)) == 2 and children(pacs.proc.pid))
    pacs.proc.kill()
    pacs.proc.wait()
    import os

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return open(f"/proc/{pid}/stat").read().split()[2] == "Z"

    wait_for(lambda: all(gone(p) for p in workers), timeout=40, what="workers to exit")
    wait_for(lambda: not port_open(pacs.port), timeout=5, what="the port closed")


@pytest.mark.parametrize("direct", ["1", "0"], ids=["direct-accept", "pynetdicom-accept"])
def test_sigterm_aborts_an_idle_association_after_the_grace(redis_url, registry, tmp_path, direct):
    """An association that never releases holds the PACS only for PACS_SHUTDOWN_GRACE, whichever
    accept served it (listener.Pacs._abort_now: a DirectAssociation or pynetdicom's)."""
    pacs = PacsProcess(redis_url, tmp_path / "st",
                       extra_env={"PACS_SHUTDOWN_GRACE": "1", "PACS_DIRECT_ACCEPT": direct}).start()
    add_node(registry, "CT01")
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established
    assert assoc.send_c_store(as_file(ct_dataset(generate_uid(), generate_uid(), 1))).Status == 0
    pacs.proc.send_signal(signal.SIGTERM)
    assert pacs.proc.wait(30) == 0
    wait_for(lambda: assoc.is_aborted or not assoc.is_alive(), timeout=10, what="the SCU to see the abort")
    assert "Shutting down: aborted after 1 s grace (1 instances stored" in pacs.log()
    assert len(list((tmp_path / "st").rglob("*.dcm"))) == 1


def test_open_associations_are_spread_over_the_listener_processes(redis_url, registry, tmp_path):
    """A process with more open associations leaves a new one to the less busy process."""
    pacs = PacsProcess(redis_url, tmp_path / "st", extra_env={"PACS_WORKERS": "2"}).start()
    held = []
    try:
        add_node(registry, "CT01")
        for _ in range(8):
            ae = AE(ae_title="CT01")
            ae.add_requested_context("1.2.840.10008.1.1")
            a = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
            assert a.is_established
            held.append(a)
        accepted = wait_for(lambda: len(events_of(registry, "association-accepted")) == 8
                            and events_of(registry, "association-accepted"))
        per_process = [sum(e.assoc_id.endswith(f".{w}") for e in accepted) for w in (0, 1)]
        assert min(per_process) >= 3, per_process
    finally:
        for a in held:
            a.release()
        assert pacs.stop() == 0
