"""Durable C-STORE against a real PACS process: byte-equal files, replacement,
the study index, path safety, full and read-only disks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dicomdata import CT, as_file, ct_dataset, write_series
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from lab import PacsProcess, add_node, dcmtk_env, events_of, need, need_tool, wait_for

OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def send(port: int, datasets, calling: str = "CT01", ts: str = ExplicitVRLittleEndian) -> list[int]:
    """C-STORE each dataset on one association; returns the statuses."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CT, [ts])
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established, "association not established"
    try:
        statuses = []
        for ds in datasets:
            if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
                as_file(ds, ts)
            rsp = assoc.send_c_store(ds)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
        return statuses
    finally:
        assoc.release()


def stored_files(root: Path) -> list[Path]:
    """Every file under the study folders (the PACS's own .sop / .journal bookkeeping aside)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0].startswith("."))


def test_storescu_instance_is_stored_byte_equal(pacs, registry, tmp_path):
    exe = need_tool("storescu", "dcmtk")
    add_node(registry, "CT01")
    files = write_series(tmp_path / "in", 3)
    r = subprocess.run([exe, "-aet", "CT01", "-aec", "PACS", "127.0.0.1", str(pacs.port), *map(str, files)],
                       capture_output=True, text=True, env=dcmtk_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    for f in files:
        sent = dcmread(f)
        path = pacs.storage_dir / sent.StudyInstanceUID / sent.SeriesInstanceUID / f"{sent.SOPInstanceUID}.dcm"
        got = dcmread(path)
        assert got.PixelData == sent.PixelData
        assert got.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert got.file_meta.SourceApplicationEntityTitle == "CT01"
        assert got.SOPInstanceUID == sent.SOPInstanceUID
    study = registry.get_study(dcmread(files[0]).StudyInstanceUID)
    assert study["instances"] == 3 and study["series"] == 1
    assert study["patient_name"] == "LAB^TEST" and study["calling_aet"] == "CT01"
    assert len(events_of(registry, "store-received", calling_aet="CT01")) == 3
    assert not list(pacs.storage_dir.rglob("*.tmp"))


def test_stored_file_passes_dcmtk_checks(pacs, registry):
    exe = need_tool("dcmftest", "dcmtk")
    add_node(registry, "CT01")
    ds = ct_dataset(generate_uid(), generate_uid(), 1)
    assert send(pacs.port, [ds]) == [0]
    path = next(pacs.storage_dir.rglob("*.dcm"))
    r = subprocess.run([exe, str(path)], capture_output=True, text=True)
    assert r.stdout.startswith("yes"), r.stdout


def test_dataset_bytes_are_kept_as_received_in_a_compressed_syntax(pacs, registry):
    add_node(registry, "CT01")
    ds = as_file(ct_dataset(generate_uid(), generate_uid(), 1, rows=32, cols=32))
    ds.compress(RLELossless)
    assert send(pacs.port, [ds], ts=RLELossless) == [0]
    got = dcmread(next(pacs.storage_dir.rglob("*.dcm")))
    assert got.file_meta.TransferSyntaxUID == RLELossless
    assert got.PixelData == ds.PixelData  # the encapsulated bytes, unchanged


def test_same_sop_instance_uid_replaces_and_says_so(pacs, registry):
    add_node(registry, "CT01")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = ct_dataset(study, series, 1, sop_uid=sop, seed=1)
    second = ct_dataset(study, series, 1, sop_uid=sop, seed=2)
    assert send(pacs.port, [first, second]) == [0, 0]
    files = list(pacs.storage_dir.rglob("*.dcm"))
    assert len(files) == 1
    assert dcmread(files[0]).PixelData == second.PixelData
    ev = wait_for(lambda: events_of(registry, "store-replaced"))[-1]
    assert sop in ev.message and ev.detail["replaced"] is True
    assert registry.get_study(study)["instances"] == 1


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the point of the test
@pytest.mark.parametrize(
    "keyword,bad_uid",
    [("SOPInstanceUID", "../../x"), ("SOPInstanceUID", "1.2.3/../../../../tmp/evil"), ("SOPInstanceUID", ".."),
     ("StudyInstanceUID", "../../x"), ("StudyInstanceUID", "."), ("SeriesInstanceUID", "../.."),
     ("StudyInstanceUID", "1.2." + "3" * 70)],
)
def test_uids_never_escape_the_storage_root(pacs, registry, tmp_path, keyword, bad_uid):
    add_node(registry, "CT01")
    ds = ct_dataset(generate_uid(), generate_uid(), 1)
    setattr(ds, keyword, bad_uid)
    assert send(pacs.port, [ds]) == [CANNOT_UNDERSTAND]
    assert stored_files(pacs.storage_dir) == []
    assert not (tmp_path / "x").exists() and not Path("/tmp/evil.dcm").exists()
    ev = wait_for(lambda: events_of(registry, "store-failed"))[-1]
    assert "not a valid UID" in ev.message


def test_unparseable_dataset_answers_cannot_understand(pacs, registry):
    add_node(registry, "CT01")
    ds = ct_dataset(generate_uid(), generate_uid(), 1)
    del ds.StudyInstanceUID
    assert send(pacs.port, [ds]) == [CANNOT_UNDERSTAND]
    assert stored_files(pacs.storage_dir) == []


@pytest.fixture
def small_disk(tmp_path):
    need(Path("/proc/self/mountinfo").exists(), "needs Linux mounts")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    need(r.returncode == 0, f"cannot mount a small tmpfs (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_answers_out_of_resources_and_keeps_no_partial_file(small_disk, redis_url, registry):
    pacs = PacsProcess(redis_url, small_disk / "storage").start()
    try:
        add_node(registry, "CT01")
        study, series = generate_uid(), generate_uid()
        # 64x64 fits; 512x512 (512 KiB) cannot fit in a 256 KiB disk
        small = ct_dataset(study, series, 1)
        big = ct_dataset(study, series, 2, rows=512, cols=512)
        assert send(pacs.port, [small, big]) == [0, OUT_OF_RESOURCES]
        files = stored_files(small_disk / "storage")
        assert [f.name for f in files] == [f"{small.SOPInstanceUID}.dcm"]  # no partial, no temporary file
        ev = wait_for(lambda: events_of(registry, "store-failed"))[-1]
        assert ev.detail["status"] == OUT_OF_RESOURCES and "No space left" in ev.message
        assert registry.get_study(study)["instances"] == 1  # only what was stored is indexed
    finally:
        pacs.stop()


def test_read_only_disk_answers_out_of_resources(small_disk, redis_url, registry):
    pacs = PacsProcess(redis_url, small_disk / "storage").start()
    try:
        add_node(registry, "CT01")
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        assert send(pacs.port, [ct_dataset(generate_uid(), generate_uid(), 1)]) == [OUT_OF_RESOURCES]
        ev = wait_for(lambda: events_of(registry, "store-failed"))[-1]
        assert "Read-only" in ev.message
        assert stored_files(small_disk / "storage") == []
    finally:
        pacs.stop()


def test_node_allowed_echo_only_gets_verification_and_nothing_else(pacs, registry):
    add_node(registry, "CT01", services=["C-ECHO"])
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established
    try:
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [Verification]
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    ev = wait_for(lambda: events_of(registry, "context-rejected", calling_aet="CT01"))[-1]
    assert ev.reason == "service-not-allowed" and "CT Image Storage" in ev.message
    assert ev.detail["abstract_syntax"] == CT


def test_node_allowed_store_only_gets_no_verification(pacs, registry):
    add_node(registry, "CT01", services=["C-STORE"])
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    try:
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [CT]
    finally:
        assoc.release()
    ev = wait_for(lambda: events_of(registry, "context-rejected", calling_aet="CT01"))[-1]
    assert ev.reason == "service-not-allowed" and "Verification" in ev.message


def test_transfer_syntax_and_sop_class_refusals_are_named(pacs, registry):
    add_node(registry, "CT01")
    registry.update_listener({"transfer_syntaxes": [ExplicitVRLittleEndian, ImplicitVRLittleEndian]})
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CT, ["1.2.840.10008.1.2.4.90"])  # JPEG 2000 lossless only
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", [ExplicitVRLittleEndian])  # MR: not accepted
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    # accepted at association level with every context refused: the SCU aborts by itself
    assert assoc.is_aborted and not assoc.accepted_contexts
    evs = wait_for(lambda: len(events_of(registry, "context-rejected")) >= 2 and events_of(registry, "context-rejected"))
    by_reason = {e.reason: e for e in evs}
    assert "JPEG 2000 Lossless" in by_reason["transfer-syntax-not-supported"].message
    assert "MR Image Storage" in by_reason["abstract-syntax-not-supported"].message
    assert wait_for(lambda: events_of(registry, "association-aborted", calling_aet="CT01"))


@pytest.mark.parametrize("aet", ["CT01", "ODD", ""])
@pytest.mark.parametrize("sop", ["1.2.3.4", "1.2.840.10008.5.1.4.1.1.2.123456789.1"])
def test_part10_header_equals_pydicoms(aet, sop):
    """The hand-encoded file meta is pydicom's, byte for byte."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    from pacs.storage import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, part10_header

    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless):
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = CT
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ts
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        if aet:
            meta.SourceApplicationEntityTitle = aet
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        buf.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(buf, meta, enforce_standard=True)
        assert part10_header(CT, sop, ts, aet) == buf.getvalue()


def test_a_series_folder_removed_between_two_stores_is_made_again(redis_url, registry, tmp_path):
    """The PACS remembers the series folders it made (no stat per C-STORE); a study removed
    meanwhile (the admin API deletes its folder) must not make the next instance fail.
    One listener process, so both associations meet the same memory."""
    add_node(registry, "CT01")
    pacs = PacsProcess(redis_url, tmp_path / "storage", extra_env={"PACS_WORKERS": "1"}).start()
    try:
        _store_remove_store(pacs)
    finally:
        pacs.stop()


def _store_remove_store(pacs) -> None:
    import shutil

    study, series = generate_uid(), generate_uid()
    assert send(pacs.port, [ct_dataset(study, series, 1)]) == [0]
    shutil.rmtree(pacs.storage_dir / study)
    second = ct_dataset(study, series, 2)
    assert send(pacs.port, [second]) == [0]  # not 0xA700: the folder is made again
    assert [p.name for p in (pacs.storage_dir / study / series).glob("*.dcm")] == [f"{second.SOPInstanceUID}.dcm"]
