"""The lab's ``.env`` file, read the way Compose reads it (the subset the lab writes).

One ``KEY=value`` per line; blank lines and ``#`` comments are skipped, as are lines without
``=``; key and value are stripped, and one pair of matching quotes (``'`` or ``"``) around the
value is removed. No interpolation, no ``export``. A missing file reads as empty; a file that
exists but cannot be read raises (the caller says so rather than run without its secrets).

Dependency-free: ``scripts/lab.py`` imports it even where the lab's packages are not installed.
"""

from __future__ import annotations

from pathlib import Path


def parse_env_text(text: str) -> dict[str, str]:
    """The variables of an env file's text; a later line wins over an earlier one."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of the env file at ``path``; {} when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return parse_env_text(text)
