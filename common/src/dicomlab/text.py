"""Text from the network, made safe to print on a terminal or show on a page.

Patient names, UIDs, AE titles and descriptions come from whoever connects. Written
raw they could move the cursor, clear a terminal (ESC[2J), rewrite a log line (CR),
forge a second event line (LF) or reverse text direction (U+202E). ``safe_text``
shows every such character as a visible escape and keeps every printable character,
whatever its script, so a name in Japanese or Greek reads as sent:

- C0 controls (U+0000..U+001F), DEL (U+007F) and C1 controls (U+0080..U+009F, among
  them the 8-bit CSI U+009B): ``\\x1b``, with ``\\n``, ``\\r``, ``\\t`` for the usual three;
- line and paragraph separators (U+2028, U+2029), bidirectional controls (U+061C,
  U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) and lone surrogates (bytes
  that did not decode): ``\\u202e``.

A backslash is kept as it is (it separates DICOM values), so the result is not
reversible; it is for reading. ``safe_text`` of its own output is the same text.
"""

from __future__ import annotations

import re

_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_UNSAFE = [
    *range(0x00, 0x20), 0x7F, *range(0x80, 0xA0),
    0x2028, 0x2029,
    0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
    *range(0xD800, 0xE000),
]
_TABLE = {code: _escape(code) for code in _UNSAFE}
_FIND = re.compile("[" + "".join(re.escape(chr(c)) for c in _UNSAFE if not 0xD800 <= c < 0xE000)
                   + "\ud800-\udfff]")


def safe_text(value: object) -> str:
    """``value`` as one line of printable text (see the module docstring)."""
    text = value if isinstance(value, str) else str(value)
    # the common case, nothing to escape, costs one scan and no copy
    return text.translate(_TABLE) if _FIND.search(text) else text
