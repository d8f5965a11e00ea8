"""File-system helpers the durable writes share (the PACS's storage, SOP marks and journal)."""

from __future__ import annotations

import ctypes
import os
from typing import Any

SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-out of the range's dirty pages, do not wait


def _sync_file_range() -> Any:
    """libc's sync_file_range (Linux), which os does not wrap; None elsewhere."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()


def fsync_dir(folder: "str | os.PathLike[str]") -> None:
    """Make a folder's entries (a rename, a new file or link) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def start_writeback(fd: int) -> bool:
    """Have the kernel begin writing ``fd``'s dirty pages to the disk now, without waiting
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so that work done before the ``fdatasync``
    overlaps the disk's. Not a durability step: only the ``fdatasync`` is. A failure here is
    left for the ``fdatasync`` to report. False where it is not available (not Linux)."""
    if _SYNC_FILE_RANGE is None:
        return False
    _SYNC_FILE_RANGE(fd, 0, 0, SYNC_FILE_RANGE_WRITE)  # ctypes releases the GIL for the call
    return True
