"""A dataset handed to storage as the P-DATA fragments it came in (``Pieces``, no joined copy)
is stored byte for byte as the same dataset joined, however it was cut -- inside the header
(read whole then), after it, in many small pieces -- and indexed the same."""

from __future__ import annotations

import pytest
from dicomdata import CT, ct_dataset, encoded
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from pacs.instance import _head_fields
from pacs.storage import Pieces, Storage


def _encoded(implicit: bool) -> tuple[bytes, str]:
    ds = ct_dataset(generate_uid(), generate_uid(), 7, rows=128, cols=128)
    return encoded(ds, implicit), str(ds.SOPInstanceUID)


def _cut(raw: bytes, sizes: list[int]) -> Pieces:
    out, at = Pieces(), 0
    for n in sizes:
        out.append(memoryview(raw)[at:at + n])
        at += n
    if at < len(raw):
        out.append(memoryview(raw)[at:])
    return out


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("cut", ["whole", "in-header", "after-header", "many-small", "more-than-iov-max"])
def test_fragments_are_stored_as_the_joined_dataset(tmp_path, ts, cut):
    raw, sop = _encoded(ts == ImplicitVRLittleEndian)
    sizes = {"whole": [], "in-header": [40], "after-header": [4096, 8192], "many-small": [997] * 20,
             "more-than-iov-max": [16] * 1500}[cut]
    joined = Storage(tmp_path / "a").store(raw, ts, CT, sop, "CT01")
    pieces = _cut(raw, sizes)
    assert pieces.size == len(raw)
    cut_up = Storage(tmp_path / "b").store(pieces, ts, CT, sop, "CT01")
    assert joined.ok and cut_up.ok, (joined.message, cut_up.message)
    assert cut_up.path.read_bytes() == joined.path.read_bytes()
    # the header read from the first fragment alone when it holds it (no join at all)
    read_from_head = _head_fields(pieces[0], ts, "CT01") is not None
    if cut in ("whole", "after-header"):
        assert read_from_head
    elif cut in ("in-header", "more-than-iov-max"):
        assert not read_from_head  # 40 or 16 bytes: it cannot be sure, so the pieces are joined
    assert {k: v for k, v in cut_up.meta.items() if k != "path"} == {
        k: v for k, v in joined.meta.items() if k != "path"}


def test_an_empty_dataset_in_pieces_is_refused_as_before(tmp_path):
    store = Storage(tmp_path / "s")
    before = store.store(b"", ExplicitVRLittleEndian, CT, "1.2.3", "CT01")
    after = store.store(Pieces(), ExplicitVRLittleEndian, CT, "1.2.3", "CT01")
    assert not before.ok and (after.status, after.message) == (before.status, before.message)
