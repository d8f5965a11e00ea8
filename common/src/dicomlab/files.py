"""File-system helpers the durable writes share (the PACS's storage, SOP marks and journal)."""

from __future__ import annotations

import os


def fsync_dir(folder: "str | os.PathLike[str]") -> None:
    """Make a folder's entries (a rename, a new file or link) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
