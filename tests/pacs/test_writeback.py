"""A C-STORE's file is on its way to the disk before its fdatasync: the storage starts the
write-out (``sync_file_range``) as soon as the dataset is written and reads the header fields
while the disk works. Observed with the kernel's own page counts for the file
(``cachestat``, Linux 6.5+): at the fdatasync no page of it is still only dirty.

Without ``start_writeback`` the kernel would leave those pages dirty for up to
``vm.dirty_expire_centisecs`` (30 s), and these tests fail."""

from __future__ import annotations

import ctypes
import os
import platform
import threading

import pytest
from dicomdata import CT, ct_dataset, encoded
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomlab.files import start_writeback
from pacs.storage import Storage

SYS_CACHESTAT = 451  # the same number on x86_64 and aarch64


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


_libc = ctypes.CDLL(None, use_errno=True)


def cachestat(fd: int) -> _Stat:
    """The page cache's counts for the whole file: cached, dirty, under writeback."""
    out = _Stat()
    if _libc.syscall(SYS_CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(out), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return out


def _kernel_has_cachestat(tmp_path) -> str | None:
    if platform.system() != "Linux":
        return "cachestat is a Linux system call"
    fd = os.open(tmp_path / "probe", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        cachestat(fd)
    except OSError as exc:
        return f"this kernel ({platform.release()}) has no cachestat (Linux 6.5+): {exc}"
    finally:
        os.close(fd)
    return None


@pytest.fixture
def counts(tmp_path):
    why = _kernel_has_cachestat(tmp_path)
    if why is not None:
        pytest.skip(why)
    return cachestat


def test_start_writeback_leaves_no_page_only_dirty(tmp_path, counts):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, os.urandom(4 << 20))
        before = counts(fd)
        assert before.nr_dirty > 0  # the control: written, not yet on its way
        assert start_writeback(fd) is True
        after = counts(fd)
        assert after.nr_dirty == 0, (before.nr_dirty, after.nr_dirty, after.nr_writeback)
        os.fdatasync(fd)
        assert counts(fd).nr_writeback == 0
    finally:
        os.close(fd)


class _Watched(Storage):
    """The real storage, with the file's page counts taken where the fdatasync is about to run."""

    seen: list[tuple[int, int]]

    def _install(self, tmp, fd, meta):
        self._at_install(fd)
        return super()._install(tmp, fd, meta)

    def _at_install(self, fd: int) -> None:
        st = cachestat(fd)
        self.seen.append((st.nr_cache, st.nr_dirty))


def _encoded(rows: int) -> tuple[bytes, str]:
    ds = ct_dataset(generate_uid(), generate_uid(), 1, rows=rows, cols=rows)
    return encoded(ds), str(ds.SOPInstanceUID)


def test_a_c_store_file_is_being_written_out_before_its_fdatasync(tmp_path, counts):
    storage = _Watched(tmp_path / "storage")
    storage.seen = []
    for _ in range(5):
        raw, sop = _encoded(512)  # a CT slice: 512 KiB
        result = storage.store(raw, ExplicitVRLittleEndian, CT, sop, "CT01")
        assert result.ok, result.message
        stored = result.path.read_bytes()
        assert stored[132:].startswith(b"\x02\x00") and stored.endswith(raw)  # Part 10 meta, then the dataset
    assert len(storage.seen) == 5
    for cached, dirty in storage.seen:
        assert cached >= 128 and dirty == 0, storage.seen
    assert not list(storage.incoming.iterdir())


def test_a_dataset_refused_after_its_write_leaves_nothing(tmp_path, counts):
    """The file is written before the header is read: a dataset whose SOP Instance UID differs
    from the request's is written, refused, and its temporary file removed."""
    storage = Storage(tmp_path / "storage")
    raw, sop = _encoded(64)
    other = generate_uid()
    result = storage.store(raw, ExplicitVRLittleEndian, CT, other, "CT01")
    assert result.status == 0xC000 and "differs" in result.message
    assert not list(storage.incoming.iterdir())
    assert sorted(p.name for p in storage.root.iterdir()) == [".incoming", ".sop"]
    # and a request whose own SOP Instance UID is not a UID is refused before anything is written
    bad = storage.store(raw, ExplicitVRLittleEndian, CT, "../../x", "CT01")
    assert bad.status == 0xC000 and not list(storage.incoming.iterdir())


def test_a_spooled_dataset_is_written_out_as_it_arrives(tmp_path, counts):
    """A large dataset (spooled to its file fragment by fragment) has its write-out started every
    few MiB while it arrives and the rest before its header is read back: at the fdatasync no
    page is still only dirty (but the few appended to while being written out), and while it
    arrives at most WRITEBACK_EVERY of it is."""
    from pacs.storage import WRITEBACK_EVERY

    storage = _Watched(tmp_path / "storage")
    storage.seen = []
    raw, sop = _encoded(2300)  # 10 MiB of pixel data: 2 MiB after the last start while it arrives
    spool = storage.spool(ExplicitVRLittleEndian, CT, sop, "CT01")
    most_dirty = 0
    for off in range(0, len(raw), 64 << 10):
        spool.write(memoryview(raw)[off:off + (64 << 10)])
        most_dirty = max(most_dirty, counts(spool._fd).nr_dirty)
    assert len(raw) > 2 * WRITEBACK_EVERY
    assert 0 < most_dirty * 4096 <= WRITEBACK_EVERY + (64 << 10) + 4096, most_dirty
    result = spool.commit()
    assert result.ok, result.message
    assert result.path.read_bytes().endswith(raw)
    (cached, dirty), = storage.seen
    # a page appended to while it was being written out stays dirty (the kernel does not start a
    # page twice): one per start at most, against ~500 pages (the 2 MiB tail) without the start
    assert cached > 0 and dirty <= len(raw) // WRITEBACK_EVERY + 1, storage.seen


class _Held(_Watched):
    """The first C-STORE waits at its fdatasync until told, so a second one runs beside it."""

    def _at_install(self, fd: int) -> None:
        super()._at_install(fd)
        if len(self.seen) == 1:
            self.first_at_install.set()
            assert self.go_on.wait(30)


def test_beside_another_c_store_the_write_out_is_left_to_the_fdatasync(tmp_path, counts):
    """With several associations storing at once the early start did not pay (bench/README.md,
    tenth session): a C-STORE starts it only when no other one of its process is being stored."""
    storage = _Held(tmp_path / "storage")
    storage.seen, storage.first_at_install, storage.go_on = [], threading.Event(), threading.Event()
    (raw1, sop1), (raw2, sop2) = _encoded(512), _encoded(512)
    results = {}
    first = threading.Thread(target=lambda: results.update(
        a=storage.store(raw1, ExplicitVRLittleEndian, CT, sop1, "CT01")))
    first.start()
    try:
        assert storage.first_at_install.wait(30)
        results["b"] = storage.store(raw2, ExplicitVRLittleEndian, CT, sop2, "CT01")
    finally:
        storage.go_on.set()
        first.join(30)
    assert results["a"].ok and results["b"].ok
    (_, dirty_alone), (_, dirty_beside) = storage.seen
    assert dirty_alone == 0 and dirty_beside >= 128, storage.seen
    # and alone again afterwards
    raw3, sop3 = _encoded(512)
    assert storage.store(raw3, ExplicitVRLittleEndian, CT, sop3, "CT01").ok
    assert storage.seen[2][1] == 0, storage.seen
