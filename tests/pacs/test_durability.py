"""Recovery without a person: the journal of index and event writes while Redis is
away, the start-up reconcile, the duplicate-SOP rule and the modes of stored files,
against real redis-server and PACS processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest
from dicomdata import CT, as_file, ct_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from lab import PacsProcess, RedisServer, add_node, echoscu, events_of, wait_for

ONE = {"PACS_WORKERS": "1"}  # one process: its SIGKILL is a real crash (no supervisor to drain it)


@pytest.fixture
def own_redis():
    """A redis-server of this test's own: stopped and restarted (with its data) by the test."""
    server = RedisServer().start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def registry_of(url: str):
    from dicomlab.registry import Registry, connect

    return Registry(connect(url))


def associate(port: int, calling: str = "CT01"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    return assoc


def store(assoc, ds) -> int:
    rsp = assoc.send_c_store(as_file(ds))
    return int(rsp.Status) if "Status" in rsp else -1


def journal_entries(storage: Path) -> list[dict]:
    out = []
    for p in sorted((storage / ".journal").glob("*.jsonl")):
        out += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return out


def instances(registry, study: str) -> int:
    from dicomlab.errors import NotFound

    try:
        return registry.get_study(study)["instances"]
    except NotFound:
        return 0


def instance_files(storage: Path) -> list[Path]:
    return sorted(p for p in storage.glob("*/*/*.dcm"))


# -- the journal ---------------------------------------------------------------------------------
def test_instances_acknowledged_while_redis_is_away_survive_a_crash_of_the_pacs(own_redis, tmp_path):
    storage = tmp_path / "storage"
    registry = registry_of(own_redis.url)
    add_node(registry, "CT01")
    pacs = PacsProcess(own_redis.url, storage, extra_env=ONE).start()
    study, series = generate_uid(), generate_uid()
    before = [ct_dataset(study, series, i) for i in range(1, 3)]
    during = [ct_dataset(study, series, i) for i in range(3, 9)]
    try:
        assoc = associate(pacs.port)
        assert [store(assoc, ds) for ds in before] == [0, 0]
        wait_for(lambda: registry.get_study(study)["instances"] == 2, what="the first two indexed")
        registry.client.save()  # the restarted Redis comes back with what it had
        own_redis.stop()
        # Success: each is on disk, and its index entry and event are in the journal (fsync'd)
        assert [store(assoc, ds) for ds in during] == [0] * len(during)
        entries = journal_entries(storage)
        journaled = [op["meta"]["sop_instance_uid"] for e in entries for op in e["ops"]
                     if op["op"] == "record_instance"]
        assert journaled == [ds.SOPInstanceUID for ds in during]
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        pacs.proc.send_signal(signal.SIGKILL)  # a crash during the outage
        pacs.proc.wait(10)
        assoc.abort()
    finally:
        pacs.stop()
    own_redis.start()
    assert registry.get_study(study)["instances"] == 2  # the outage's instances are not there yet
    pacs = PacsProcess(own_redis.url, storage, extra_env=ONE).start()
    try:
        wait_for(lambda: registry.get_study(study)["instances"] == 8, timeout=30, what="the journal replayed")
        received = [e.detail["sop_instance_uid"] for e in events_of(registry, "store-received")]
        assert received == [ds.SOPInstanceUID for ds in before + during]  # in order, each once
        wait_for(lambda: not journal_entries(storage), what="the journal emptied")
        assert not list((storage / ".journal").glob("*.jsonl"))  # the dead process's file is gone
        ev = wait_for(lambda: len(evs := events_of(registry, "storage-reconciled")) == 2 and evs, timeout=30)[-1]
        assert ev.detail["files"] == 8 and ev.detail["added"] == 0  # the journal had it all
    finally:
        pacs.stop()


def test_when_redis_answers_nothing_is_journaled(pacs, registry):
    add_node(registry, "CT01")
    assoc = associate(pacs.port)
    try:
        study, series = generate_uid(), generate_uid()
        assert [store(assoc, ct_dataset(study, series, i)) for i in range(1, 4)] == [0, 0, 0]
    finally:
        assoc.release()
    assert registry.get_study(study)["instances"] == 3
    assert not list((pacs.storage_dir / ".journal").glob("*.jsonl"))


def _journal_with_entries(folder: Path, n: int, study: str):
    from dicomlab import indexops
    from dicomlab.events import Event
    from dicomlab.journal import Journal

    j = Journal(folder, name="test")
    series = [f"{study}.1", f"{study}.2"]
    items = []
    for i in range(n):
        meta = {"study_uid": study, "series_uid": series[i % 2], "sop_instance_uid": f"{study}.9.{i}",
                "patient_name": "LAB^TEST", "modality": "CT"}
        ev = Event(type="store-received", message=f"Stored instance {i}")
        items.append((ev.to_stream(), [indexops.record_instance(meta)]))
    j.append(items)
    return j


def _commands(pipe, entry):
    from dicomlab.events import _commands as event_commands

    event_commands(pipe, entry["event"], entry["ops"], 10_000)


def test_replaying_a_journal_twice_leaves_the_same_index_and_events(registry, tmp_path):
    """A crash after the replay reached Redis but before the file was removed: the file
    is replayed again at the next start, and nothing is counted twice."""
    from dicomlab.journal import Journal

    folder = tmp_path / ".journal"
    j = _journal_with_entries(folder, 7, "1.2.77")
    copy = tmp_path / "copy.jsonl"
    shutil.copy(j.path, copy)
    assert j.replay(registry.client, _commands) == 7
    study = registry.get_study("1.2.77")
    assert study["instances"] == 7 and sorted(s["instance_count"] for s in study["series_list"]) == [3, 4]
    assert len(registry.read_events()) == 7
    assert j.path.stat().st_size == 0  # emptied once replayed
    j.close()
    shutil.copy(copy, folder / j.name)  # as if the crash came before the truncation: an orphan
    other = Journal(folder, name="next")
    assert other.has_pending()
    assert other.replay(registry.client, _commands) == 0  # the mark says it was applied
    assert not (folder / j.name).exists()
    # even without the mark (e.g. it expired), the index ops are idempotent
    registry.client.delete(f"dicomlab:journal:{j.name}")
    shutil.copy(copy, folder / j.name)
    assert other.replay(registry.client, _commands) == 7
    study = registry.get_study("1.2.77")
    assert study["instances"] == 7 and sorted(s["instance_count"] for s in study["series_list"]) == [3, 4]


def test_a_torn_last_line_is_dropped_and_a_live_journal_is_left_alone(registry, tmp_path):
    from dicomlab.journal import Journal

    folder = tmp_path / ".journal"
    live = _journal_with_entries(folder, 2, "1.2.78")  # holds its lock: another process's live file
    dead = folder / "dead-1-abc.jsonl"
    dead.write_text(live.path.read_text() + '{"seq": 3, "event": {"type": "store-rec')  # torn by a crash
    other = Journal(folder, name="next")
    assert other.replay(registry.client, _commands) == 2  # only the dead file's two whole entries
    assert live.path.exists() and not dead.exists()
    assert registry.get_study("1.2.78")["instances"] == 2


# -- the reconcile at start --------------------------------------------------------------------------
def make_files(storage: Path, count: int, per_series: int = 100) -> list[tuple[str, str, str]]:
    """``count`` small Part 10 files in the storage layout, fast: one template, UIDs of one length."""
    template = as_file(ct_dataset("1.2.826.0.1.3680043.10.1482.7.100000", "1.2.826.0.1.3680043.10.1482.7.200000",
                                  1, rows=8, cols=8, sop_uid="1.2.826.0.1.3680043.10.1482.7.30000000"))
    template.file_meta.SourceApplicationEntityTitle = "OLDCT"
    raw_path = storage.parent / "template.dcm"
    template.save_as(raw_path, enforce_file_format=True)
    raw = raw_path.read_bytes()
    made = []
    run = f"{os.getpid() % 100:02d}{int(time.time()) % 10000:04d}"
    for i in range(count):
        study = f"1.2.826.0.1.3680043.10.1482.7.1{run[-5:]}"[:36]
        series = f"1.2.826.0.1.3680043.10.1482.7.2{i // per_series:05d}"
        sop = f"1.2.826.0.1.3680043.10.1482.7.3{i:07d}"
        data = (raw.replace(b"1.2.826.0.1.3680043.10.1482.7.100000", study.encode())
                .replace(b"1.2.826.0.1.3680043.10.1482.7.200000", series.encode())
                .replace(b"1.2.826.0.1.3680043.10.1482.7.30000000", sop.encode()))
        folder = storage / study / series
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{sop}.dcm").write_bytes(data)
        made.append((study, series, sop))
    return made


def test_reconcile_at_start_indexes_files_removes_orphans_and_settles_duplicates(redis_url, registry, tmp_path):
    storage = tmp_path / "storage"
    made = make_files(storage, 3000)
    study = made[0][0]
    old = time.time() - 3600
    series_folder = storage / made[0][0] / made[0][1]
    orphan = series_folder / f".{made[0][2]}.deadbeef.tmp"
    orphan.write_bytes(b"half an instance")
    os.utime(orphan, (old, old))
    spool = storage / ".incoming" / "a00001.part"
    spool.parent.mkdir()
    spool.write_bytes(b"a spooled upload cut by a crash")
    os.utime(spool, (old, old))
    # a crash between writing the new copy and removing the old one left the same SOP twice
    dup_sop = made[-1][2]
    elder = storage / study / "1.2.826.0.1.3680043.10.1482.7.299999" / f"{dup_sop}.dcm"
    elder.parent.mkdir()
    shutil.copy(storage / made[-1][0] / made[-1][1] / f"{dup_sop}.dcm", elder)
    os.utime(elder, (old, old))
    add_node(registry, "CT01")
    pacs = PacsProcess(redis_url, storage).start()
    try:
        # the listener answers while the reconcile runs
        assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
        ev = wait_for(lambda: events_of(registry, "storage-reconciled"), timeout=120, what="the reconcile")[-1]
        echo = events_of(registry, "echo-received", calling_aet="CT01")[0]
        assert tuple(map(int, echo.id.split("-"))) < tuple(map(int, ev.id.split("-")))  # served during it
        assert ev.detail["files"] == 3000 and ev.detail["added"] == 3000
        assert ev.detail["orphans_removed"] == 2 and ev.detail["duplicates_removed"] == 1
        assert "reconciled 3,000 file(s)" in ev.message and "2 orphan temporary file(s) removed" in ev.message
        s = registry.get_study(study)
        assert s["instances"] == 3000 and s["series"] == 30 and s["calling_aet"] == "OLDCT"
        assert not orphan.exists() and not spool.exists() and not elder.exists()
    finally:
        pacs.stop()
    # a second start finds nothing to do
    pacs = PacsProcess(redis_url, storage).start()
    try:
        ev = wait_for(lambda: len(events_of(registry, "storage-reconciled")) == 2
                      and events_of(registry, "storage-reconciled"), timeout=120)[-1]
        assert ev.detail["added"] == 0 and ev.detail["orphans_removed"] == 0
    finally:
        pacs.stop()


def test_reindex_is_the_reconcile(redis_url, registry, tmp_path):
    import subprocess
    import sys

    storage = tmp_path / "storage"
    made = make_files(storage, 50, per_series=25)
    fresh = storage / made[0][0] / made[0][1] / ".x.1234.tmp"
    fresh.write_bytes(b"")  # by hand while the PACS may run: temporary files stay
    r = subprocess.run([sys.executable, "-m", "pacs", "reindex", "--redis-url", redis_url, "--storage", str(storage)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "indexed 50 file(s)" in r.stdout and "50 added to the index" in r.stdout
    assert registry.get_study(made[0][0])["instances"] == 50 and fresh.exists()


# -- one file per SOP Instance UID --------------------------------------------------------------------
def test_same_sop_under_another_study_keeps_only_the_newest(pacs, registry):
    add_node(registry, "CT01")
    study_a, series_a, study_b, series_b = (generate_uid() for _ in range(4))
    sop = generate_uid()
    assoc = associate(pacs.port)
    try:
        assert store(assoc, ct_dataset(study_a, series_a, 1, sop_uid=sop, seed=1)) == 0
        assert store(assoc, ct_dataset(study_a, series_a, 2)) == 0
        newest = ct_dataset(study_b, series_b, 1, sop_uid=sop, seed=2)
        assert store(assoc, newest) == 0
    finally:
        assoc.release()
    files = [p for p in instance_files(pacs.storage_dir) if p.name == f"{sop}.dcm"]
    assert files == [pacs.storage_dir / study_b / series_b / f"{sop}.dcm"]
    from pydicom import dcmread

    assert dcmread(files[0]).PixelData == newest.PixelData
    a, b = registry.get_study(study_a), registry.get_study(study_b)
    assert a["instances"] == 1 and a["series_list"][0]["instance_count"] == 1
    assert b["instances"] == 1 and b["patient_name"] == "LAB^TEST"
    ev = wait_for(lambda: events_of(registry, "store-replaced"))[-1]
    assert ev.detail["previous_study_uid"] == study_a and ev.detail["previous_series_uid"] == series_a
    assert ev.detail["study_uid"] == study_b and study_a in ev.message and "newest wins" in ev.message


def test_a_study_emptied_by_a_move_leaves_the_index(pacs, registry):
    add_node(registry, "CT01")
    study_a, series_a, study_b, series_b, sop = (generate_uid() for _ in range(5))
    assoc = associate(pacs.port)
    try:
        assert store(assoc, ct_dataset(study_a, series_a, 1, sop_uid=sop)) == 0
        assert store(assoc, ct_dataset(study_b, series_b, 1, sop_uid=sop)) == 0
    finally:
        assoc.release()
    assert [s["study_uid"] for s in registry.list_studies()] == [study_b]
    assert registry.get_study(study_b)["instances"] == 1
    assert len(instance_files(pacs.storage_dir)) == 1


# -- modes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_stored_files_are_0640_and_folders_0750_whatever_the_umask(redis_url, registry, tmp_path, umask):
    add_node(registry, "CT01")
    old = os.umask(umask)
    try:
        pacs = PacsProcess(redis_url, tmp_path / "storage").start()
    finally:
        os.umask(old)
    try:
        study, series = generate_uid(), generate_uid()
        assoc = associate(pacs.port)
        try:
            assert store(assoc, ct_dataset(study, series, 1)) == 0
        finally:
            assoc.release()
        [path] = instance_files(pacs.storage_dir)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
        assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o750
    finally:
        pacs.stop()


def test_a_listener_process_killed_during_an_outage_is_recovered_by_the_running_pacs(own_redis, tmp_path):
    """Several listener processes: the supervisor restarts the killed one, and its journal is
    replayed once Redis answers -- without restarting the PACS."""
    storage = tmp_path / "storage"
    registry = registry_of(own_redis.url)
    add_node(registry, "CT01")
    pacs = PacsProcess(own_redis.url, storage, extra_env={"PACS_WORKERS": "2"}).start()
    try:
        study, series = generate_uid(), generate_uid()
        sent = [ct_dataset(study, series, i) for i in range(1, 6)]
        assoc = associate(pacs.port)
        registry.client.save()
        own_redis.stop()
        assert [store(assoc, ds) for ds in sent] == [0] * 5
        [journal] = [p for p in (storage / ".journal").glob("*.jsonl") if sent[0].SOPInstanceUID in p.read_text()]
        worker_pid = int(journal.name.split("-")[2])
        assert worker_pid != pacs.proc.pid
        os.kill(worker_pid, signal.SIGKILL)
        assoc.abort()
        wait_for(lambda: "exited with -9" in pacs.log(), timeout=30, what="the supervisor to see the kill")
        own_redis.start()
        wait_for(lambda: instances(registry, study) == 5, timeout=60, what="the journal replayed")
        received = [e.detail["sop_instance_uid"] for e in events_of(registry, "store-received")]
        assert received == [ds.SOPInstanceUID for ds in sent]
        wait_for(lambda: not journal.exists(), what="the dead process's journal removed")
        assert pacs.proc.poll() is None
    finally:
        pacs.stop()


def test_the_pacs_restarted_after_a_sigkill_of_its_supervisor_recovers_by_itself(own_redis, tmp_path):
    """SIGKILL of the supervisor during an outage: its listener processes stop (their journals
    stay on disk); a new PACS replays them once Redis answers, and the reconcile finds nothing
    missing."""
    storage = tmp_path / "storage"
    registry = registry_of(own_redis.url)
    add_node(registry, "CT01")
    pacs = PacsProcess(own_redis.url, storage, extra_env={"PACS_WORKERS": "2"}).start()
    study, series = generate_uid(), generate_uid()
    sent = [ct_dataset(study, series, i) for i in range(1, 5)]
    try:
        # the first start's reconcile is done (and said so) before Redis goes away
        wait_for(lambda: events_of(registry, "storage-reconciled"), timeout=60, what="the first reconcile")
        assoc = associate(pacs.port)
        registry.client.save()
        own_redis.stop()
        assert [store(assoc, ds) for ds in sent] == [0] * 4
        assoc.abort()
        workers = {int(p.name.split("-")[2]) for p in (storage / ".journal").glob("*.jsonl")}
        pacs.proc.send_signal(signal.SIGKILL)
        pacs.proc.wait(10)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), timeout=60,
                 what="the listener processes to stop with their supervisor")
    finally:
        pacs.stop()
    assert any(sent[-1].SOPInstanceUID in p.read_text() for p in (storage / ".journal").glob("*.jsonl"))
    own_redis.start()
    pacs = PacsProcess(own_redis.url, storage, port=pacs.port, extra_env={"PACS_WORKERS": "2"}).start()
    try:
        wait_for(lambda: instances(registry, study) == 4, timeout=60, what="the journals replayed")
        received = [e.detail["sop_instance_uid"] for e in events_of(registry, "store-received")]
        assert received == [ds.SOPInstanceUID for ds in sent]
        ev = wait_for(lambda: len(evs := events_of(registry, "storage-reconciled")) == 2 and evs, timeout=60)[-1]
        assert ev.detail["files"] == 4 and ev.detail["added"] == 0
        wait_for(lambda: not [p for p in (storage / ".journal").glob("*.jsonl") if p.stat().st_size], timeout=30,
                 what="the journals emptied")
    finally:
        pacs.stop()


# -- Redis came back without what it had answered: the reconcile runs again ---------------------
def _store_study(port: int, n: int) -> tuple[str, list[str]]:
    study, series = generate_uid(), generate_uid()
    datasets = [ct_dataset(study, series, i) for i in range(1, n + 1)]
    assoc = associate(port)
    try:
        assert [store(assoc, ds) for ds in datasets] == [0] * n
    finally:
        assoc.release()
    return study, [ds.SOPInstanceUID for ds in datasets]


def _indexed(registry, study: str) -> set[str]:
    from dicomlab import keys

    return set(registry.client.smembers(keys.study_instances(study)))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_redis_killed_and_back_empty_gets_the_index_back_without_a_restart(own_redis, tmp_path, workers):
    """A SIGKILL of Redis that loses index writes it had answered (here: all of them, it
    restarts with an empty data folder): the running PACS sees it come back, reconciles
    again, and the index lists every stored instance; the PACS is not restarted."""
    storage = tmp_path / "storage"
    registry = registry_of(own_redis.url)
    add_node(registry, "CT01")
    pacs = PacsProcess(own_redis.url, storage, extra_env={"PACS_WORKERS": workers}).start()
    try:
        wait_for(lambda: events_of(registry, "storage-reconciled"), timeout=60, what="the start-up reconcile")
        study, sops = _store_study(pacs.port, 5)
        assert _indexed(registry, study) == set(sops)
        own_redis.proc.kill()  # SIGKILL; it had no persistence: it comes back empty
        own_redis.proc.wait(10)
        # the listener's own word (not the event writer's, which can say "unreachable" first)
        wait_for(lambda: "unreachable: every association is refused" in pacs.log(), timeout=30,
                 what="the PACS's listener to see Redis away")
        own_redis.start()
        assert _indexed(registry, study) == set()  # Redis lost it
        wait_for(lambda: _indexed(registry, study) == set(sops), timeout=60, what="the index restored")
        ev = wait_for(lambda: [e for e in events_of(registry, "storage-reconciled") if e.detail.get("added")],
                      timeout=30, what="the reconcile event")[-1]
        assert ev.detail["added"] == 5 and "registry-back" in ev.detail["why"]
        assert pacs.proc.poll() is None  # the same PACS
    finally:
        pacs.stop()


def test_redis_emptied_without_an_outage_gets_the_index_back(own_redis, tmp_path):
    """Redis lost its data between two polls (the PACS saw no outage): the PACS notices it
    must seed the listener settings again, and reconciles."""
    storage = tmp_path / "storage"
    registry = registry_of(own_redis.url)
    add_node(registry, "CT01")
    pacs = PacsProcess(own_redis.url, storage, extra_env=ONE).start()
    try:
        wait_for(lambda: events_of(registry, "storage-reconciled"), timeout=60, what="the start-up reconcile")
        study, sops = _store_study(pacs.port, 4)
        registry.client.flushall()
        wait_for(lambda: _indexed(registry, study) == set(sops), timeout=60, what="the index restored")
        ev = wait_for(lambda: events_of(registry, "storage-reconciled"), timeout=30, what="the reconcile event")[-1]
        assert ev.detail["added"] == 4 and ev.detail["why"] == ["registry-empty"]
        assert "came back empty" in ev.message
        assert "unreachable" not in pacs.log()  # no outage seen
    finally:
        pacs.stop()


def test_reconcile_restores_a_study_record_redis_lost_after_its_instance_sets(registry, tmp_path):
    """Redis (appendfsync everysec, killed) can keep the first commands of an instance's index
    writes and lose the last: the instance is listed, its study's fields are gone. The
    reconcile writes the study's fields again (the instance lists were complete)."""
    from dicomlab import keys
    from pacs.reconcile import reconcile
    from pacs.storage import Storage

    storage = tmp_path / "storage"
    made = make_files(storage, 6, per_series=3)
    study = made[0][0]
    assert reconcile(Storage(storage, fsync=False), registry, None).added == 6
    registry.client.delete(keys.study(study))  # the last command of the pipeline, lost
    report = reconcile(Storage(storage, fsync=False), registry, None)
    assert report.added == 6  # the study's series, indexed again (idempotent)
    s = registry.get_study(study)
    assert s["instances"] == 6 and s["calling_aet"] == "OLDCT"
    assert reconcile(Storage(storage, fsync=False), registry, None).added == 0
