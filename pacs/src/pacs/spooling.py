"""Large datasets under pynetdicom's own loops (verbose mode, refusal modes, fault
injection, ``PACS_FASTPATH=0``): pynetdicom's ``_config.STORE_RECV_CHUNKED_DATASET``.

With it, pynetdicom 3.0.4 (``DIMSEMessage.decode_msg``) writes each C-STORE
dataset to a ``NamedTemporaryFile`` as its fragments arrive -- preamble, its
own file meta, then the dataset -- and hands the EVT_C_STORE handler the path
(``event.dataset_path``); the association never holds the dataset in memory.
The handler copies the dataset part (bounded chunks) into a ``storage.Spool``,
which puts our own file meta in front and installs it like every other instance.
It is used for every size there: these loops are not the fast path, and one way
is simpler to trust.

pynetdicom's file stays in the system's temporary folder (its default), not in
``<storage>/.incoming``: a write error there happens inside pynetdicom's DIMSE
decoder, where it can only abort the association (and stock pynetdicom's DUL
thread just dies), whereas a full or read-only storage volume must be answered
0xA700 Out of Resources -- which it is, by the copy into the Spool.

pynetdicom deletes its file after the handler returns, but not when the
association is aborted in the middle of a dataset: ``discard_partial`` removes
it when the association ends.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from pynetdicom import _config

from .storage import Spool, Storage

CHUNK = 1024 * 1024


def receive_chunked() -> None:
    """Process-wide: pynetdicom writes each received C-STORE dataset to a temporary file."""
    _config.STORE_RECV_CHUNKED_DATASET = True


def dataset_offset(path: Path) -> int:
    """Where the dataset starts in a Part 10 file written by pynetdicom: after the
    128-byte preamble, "DICM" and the file meta group, whose length its first
    element (0002,0000) UL gives (explicit VR little endian)."""
    with open(path, "rb") as f:
        f.seek(132)
        head = f.read(12)
    if len(head) < 12 or head[:6] != b"\x02\x00\x00\x00UL":
        raise ValueError("no File Meta Information Group Length")
    return 144 + int(struct.unpack("<I", head[8:12])[0])


def spool_from_file(storage: Storage, path: Path, transfer_syntax: str, sop_class: str, sop_instance: str,
                    calling_aet: str) -> Spool:
    spool = storage.spool(transfer_syntax, sop_class, sop_instance, calling_aet)
    try:
        with open(path, "rb") as f:
            f.seek(dataset_offset(path))
            while chunk := f.read(CHUNK):
                spool.write(chunk)
    except BaseException:
        spool.discard()
        raise
    return spool


def discard_partial(assoc: Any) -> None:
    """Remove the file of a dataset pynetdicom was still receiving when the association ended."""
    msg = getattr(getattr(assoc, "dimse", None), "message", None)
    f = getattr(msg, "_data_set_file", None)
    if f is None:
        return
    try:
        f.close()
        os.unlink(f.name)
    except OSError:
        pass


def received_dataset(event: Any, storage: Storage, calling_aet: str) -> bytes | Spool:
    """The dataset of an EVT_C_STORE: a Spool filled from pynetdicom's file, or its bytes."""
    if not _config.STORE_RECV_CHUNKED_DATASET:
        return event.request.DataSet.getvalue()  # type: ignore[no-any-return]
    if getattr(event.request, "_dataset_path", None) is None:  # a C-STORE-RQ without a dataset
        return b""  # answered 0xC000 Cannot understand (the wire engine aborts it)
    return spool_from_file(storage, event.dataset_path, str(event.context.transfer_syntax),
                           str(event.context.abstract_syntax), str(event.request.AffectedSOPInstanceUID), calling_aet)
