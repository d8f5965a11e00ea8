"""SOP marks written after the C-STORE's answer (sopmarks.SopMarks.point_later), on a real folder.

The rule stays "one file per SOP Instance UID, the newest wins" (README "Durability"): a mark
that the background writer has not written yet is seen by the process's own ``where``, so the
same SOP stored again under another study right away still removes the older file.
"""

from __future__ import annotations

import os
import threading

from fuzz import cases as c
from fuzz import wire as w
from pacs.sopmarks import SopMarks
from pacs.storage import Storage


def _store(storage: Storage, n: int, study: str, series: str, sop: str) -> object:
    ds = c.dataset(n, w.EXPLICIT_LE, sop_uid=sop, study_uid=study, series_uid=series)
    return storage.store(ds, w.EXPLICIT_LE, w.CT, sop, "CT01")


def test_a_mark_not_yet_written_still_finds_the_older_copy(tmp_path, monkeypatch):
    storage = Storage(tmp_path)
    marks = storage.sop_marks
    gate = threading.Event()
    real_point = SopMarks.point

    def held_point(self, sop, rel):  # the writer waits until the test lets it
        gate.wait(30)
        return real_point(self, sop, rel)

    monkeypatch.setattr(SopMarks, "point", held_point)
    sop = "1.2.826.0.1.3680043.10.1482.77.3.424242"
    first = _store(storage, 1, "1.2.3.1", "1.2.3.1.1", sop)
    assert first.ok and first.previous is None
    assert not os.path.lexists(marks.path(sop)), "the writer is held: nothing on disk yet"
    assert marks.where(sop) == f"1.2.3.1/1.2.3.1.1/{sop}.dcm"
    second = _store(storage, 2, "1.2.3.2", "1.2.3.2.1", sop)
    assert second.ok and second.previous == ("1.2.3.1", "1.2.3.1.1") and second.replaced
    assert not (tmp_path / "1.2.3.1" / "1.2.3.1.1" / f"{sop}.dcm").exists()
    assert (tmp_path / "1.2.3.2" / "1.2.3.2.1" / f"{sop}.dcm").is_file()
    gate.set()
    assert marks.flush(10)
    assert os.readlink(marks.path(sop)) == f"../../1.2.3.2/1.2.3.2.1/{sop}.dcm"


def test_the_same_place_again_changes_nothing(tmp_path):
    storage = Storage(tmp_path)
    sop = "1.2.826.0.1.3680043.10.1482.77.3.434343"
    assert _store(storage, 1, "1.2.3.1", "1.2.3.1.1", sop).ok
    again = _store(storage, 1, "1.2.3.1", "1.2.3.1.1", sop)
    assert again.ok and again.previous is None and again.replaced  # the rename replaced the file itself
    assert storage.sop_marks.flush(10)
    assert os.readlink(storage.sop_marks.path(sop)) == f"../../1.2.3.1/1.2.3.1.1/{sop}.dcm"
