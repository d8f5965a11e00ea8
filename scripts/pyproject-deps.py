"""Print the third-party requirements of the lab packages named on the command line.

The Dockerfiles install these before they copy any code, so that a code change
does not reinstall the dependencies. The lab's own distributions (``dicomlab-*``)
are left out: they are installed from the copied source afterwards.

Usage: python pyproject-deps.py DIR [DIR ...]   (each DIR holds a pyproject.toml)
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

OWN = re.compile(r"^dicomlab(-[a-z0-9-]+)?\s*($|[\[<>=!~;@ ])", re.IGNORECASE)


def requirements(dirs: list[str]) -> list[str]:
    out: list[str] = []
    for d in dirs:
        project = tomllib.loads((Path(d) / "pyproject.toml").read_text())["project"]
        for req in project.get("dependencies", []):
            if not OWN.match(req) and req not in out:
                out.append(req)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(requirements(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
