"""The stored instances, as the DICOMweb routes see them: the study index in Redis
(``dicomlab.keys``, written by the PACS through ``dicomlab.indexops``) says what
exists; the storage layout of the PACS (``pacs/storage.py``:
``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``) says where.

No path ever comes from a request. A path is built only from three UIDs that
(1) match the storage rule in full (digits and dots, at most 64 characters: the
rule the PACS applies before a UID becomes a path part, so everything it stored
can be reached, and nothing else can be named) and (2) are members of the index
(the series is in the study, the instance in the series); the resolved path must
sit three levels under the storage root.

Headers (every element before Pixel Data) are read once per file version and
kept in a bounded LRU (``HeaderCache``), keyed by path, size and modification
time, so a replaced instance is read again.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomlab import keys
from dicomlab.errors import NotFound, RegistryUnavailable

# The PACS's rule for a UID that becomes a path part (pacs.storage.valid_uid).
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
UID_MAX = 64


def is_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= UID_MAX and _UID.fullmatch(value) is not None


def uid_or_404(value: str, what: str) -> str:
    if not is_uid(value):
        raise NotFound(f"No {what} {value[:80]!r} was received: a UID is digits and dots, at most 64 characters.")
    return value


@dataclass(frozen=True)
class FileKey:
    """One version of one stored file."""

    path: str
    size: int
    mtime_ns: int


class LRU:
    """A thread-safe LRU bounded by the total ``cost`` of its entries."""

    def __init__(self, budget: int) -> None:
        self.budget = max(0, int(budget))
        self.used = 0
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Any) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Any, value: Any, cost: int) -> None:
        if cost > self.budget:
            return  # larger than the whole cache: not kept
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.used -= old[1]
            self._items[key] = (value, cost)
            self.used += cost
            while self.used > self.budget:
                _, (_, c) = self._items.popitem(last=False)
                self.used -= c

    def __len__(self) -> int:
        return len(self._items)


class Store:
    """Find studies, series and instances through the index, and their files."""

    def __init__(self, client: redis.Redis, root: str | os.PathLike[str], header_budget: int = 16 << 20) -> None:
        self.client = client
        self.root = Path(root).resolve()
        self.headers = LRU(header_budget)

    def _redis(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (redis.RedisError, OSError) as exc:
            raise RegistryUnavailable(f"the registry (Redis) is unreachable: {exc}") from exc

    # -- the index ------------------------------------------------------------------
    def studies(self) -> list[dict[str, Any]]:
        """Every study of the index, most recent first, with its series (JSON of the index)."""
        uids = self._redis(self.client.zrevrange, keys.STUDIES, 0, -1)

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for u in uids:
                pipe.hgetall(keys.study(u))
                pipe.hgetall(keys.study_series(u))
                pipe.scard(keys.study_instances(u))
            return pipe.execute()

        raws = self._redis(read)
        out = []
        for i, uid in enumerate(uids):
            study, series, count = raws[3 * i:3 * i + 3]
            if not study or not is_uid(uid):
                continue
            out.append({**study, "study_uid": uid, "series_list": [json.loads(v) for v in series.values()],
                        "instances": int(count)})
        return out

    def series(self, study_uid: str) -> list[dict[str, Any]]:
        """The series of one study (404 when the study is not in the index)."""
        uid_or_404(study_uid, "study with the Study Instance UID")
        raw = self._redis(self.client.hgetall, keys.study_series(study_uid))
        if not raw:
            raise NotFound(f"No study with the Study Instance UID {study_uid!r} was received.")

        def counts() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for s in raw:
                pipe.scard(keys.series_instances(study_uid, s))
            return pipe.execute()

        out = []
        for (series_uid, v), n in zip(raw.items(), self._redis(counts), strict=True):
            if is_uid(series_uid):
                out.append({**json.loads(v), "series_uid": series_uid, "study_uid": study_uid, "instances": int(n)})
        return out

    def study(self, study_uid: str) -> dict[str, str]:
        uid_or_404(study_uid, "study with the Study Instance UID")
        raw = self._redis(self.client.hgetall, keys.study(study_uid))
        if not raw:
            raise NotFound(f"No study with the Study Instance UID {study_uid!r} was received.")
        return raw

    def sop_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """The SOP Instance UIDs of one series (404 when the index does not have it)."""
        uid_or_404(study_uid, "study with the Study Instance UID")
        uid_or_404(series_uid, "series with the Series Instance UID")
        members = self._redis(self.client.smembers, keys.series_instances(study_uid, series_uid))
        if not members:
            raise NotFound(f"No series {series_uid!r} was received in the study {study_uid!r}.")
        return sorted(m for m in members if is_uid(m))

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """The file of one indexed instance; 404 unless the index has it and the file is there."""
        for value, what in ((study_uid, "study with the Study Instance UID"),
                            (series_uid, "series with the Series Instance UID"),
                            (sop_uid, "instance with the SOP Instance UID")):
            uid_or_404(value, what)
        if not self._redis(self.client.sismember, keys.series_instances(study_uid, series_uid), sop_uid):
            raise NotFound(f"No instance {sop_uid!r} was received in the series {series_uid!r} "
                           f"of the study {study_uid!r}.")
        return self._file(study_uid, series_uid, sop_uid)

    def _file(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        path = self.root / study_uid / series_uid / f"{sop_uid}.dcm"
        if path.parent.parent.parent != self.root:  # belt and braces after the UID rule
            raise NotFound("Refused a path outside the storage folder.")
        if not path.is_file():
            raise NotFound(f"The index lists the instance {sop_uid!r}, but its file is not in the storage folder "
                           f"({self.root}): is the admin API given the PACS's storage (PACS_STORAGE_DIR)?")
        return path

    # -- files ----------------------------------------------------------------------
    @staticmethod
    def file_key(path: Path) -> FileKey:
        st = path.stat()
        return FileKey(str(path), st.st_size, st.st_mtime_ns)

    def header(self, path: Path) -> Dataset:
        """Every element before Pixel Data, with the file meta (cached per file version)."""
        key = self.file_key(path)
        ds = self.headers.get(key)
        if ds is None:
            ds = dcmread(path, stop_before_pixels=True)
            self.headers.put(key, ds, cost=4096 + 256 * len(ds))  # a rough size: elements, not bytes
        return ds

    def series_headers(self, study_uid: str, series_uid: str) -> list[tuple[str, Dataset]]:
        """(SOP Instance UID, header) of every instance of a series whose file is there."""
        out = []
        for sop in self.sop_uids(study_uid, series_uid):
            try:
                out.append((sop, self.header(self._file(study_uid, series_uid, sop))))
            except (NotFound, OSError, InvalidDicomError):
                continue  # the index is ahead of the files (reconcile pending): listed when it is there
        return out
