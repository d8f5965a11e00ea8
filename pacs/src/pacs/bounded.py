"""Readers that let pydicom find a dataset's header fields without reading (or
inflating) more than ``HEADER_LIMIT`` bytes of it: what ``storage`` parses with."""

from __future__ import annotations

import zlib
from typing import Any

HEADER_LIMIT = 4 * 1024 * 1024  # bytes of a dataset read (or inflated) to find the header fields


class HeaderTooLarge(Exception):
    """The header fields were not found within HEADER_LIMIT bytes."""


class Inflated:
    """The first bytes of a Deflated dataset (PS3.5 A.5: raw deflate), inflated on
    demand and at most ``limit`` of them: what pydicom's reader needs (read, seek,
    tell) to find the header fields, without inflating the rest (a small
    compressed dataset can inflate to gigabytes)."""

    def __init__(self, chunks: Any, limit: int = HEADER_LIMIT) -> None:
        self._chunks = chunks  # iterator of compressed bytes
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()
        self._pos = 0
        self._limit = limit
        self._pending = b""

    def _fill(self, upto: int) -> None:
        while len(self._buf) < upto:
            if len(self._buf) >= self._limit:
                raise HeaderTooLarge(f"more than {self._limit} bytes inflated before the header fields")
            want = self._limit - len(self._buf) + 1  # one byte over the limit tells "more"
            if self._z.unconsumed_tail:
                out = self._z.decompress(self._z.unconsumed_tail, want)
            else:
                chunk = next(self._chunks, b"")
                if not chunk:
                    self._buf += self._z.flush()
                    return
                out = self._z.decompress(chunk, want)
            self._buf += out

    def read(self, n: int = -1) -> bytes:
        end = self._limit + 1 if n is None or n < 0 else self._pos + n
        self._fill(end)
        out = bytes(self._buf[self._pos:end])
        self._pos += len(out)
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._pos + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


class ReadBound:
    """A file positioned at a dataset, to pydicom's reader: values it skips are
    seeked over, and at most ``limit`` bytes are read."""

    def __init__(self, f: Any, limit: int = HEADER_LIMIT) -> None:
        self._f, self._left = f, limit
        self.seek, self.tell = f.seek, f.tell

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._left:
            raise HeaderTooLarge(f"more than {HEADER_LIMIT} bytes read before the header fields")
        out: bytes = self._f.read(n)
        self._left -= len(out)
        return out


def chunks(source: Any, size: int = 65536) -> Any:
    """Compressed bytes in chunks: from a buffer, or read from a file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for i in range(0, len(view), size):
            yield view[i:i + size]
        return
    while chunk := source.read(size):
        yield chunk
