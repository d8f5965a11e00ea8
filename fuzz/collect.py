"""Turn the fuzzer's findings into regression cases: ``python -m fuzz.collect build/fuzz OUT.json``.

Reads every build/fuzz/**/findings/*.json (one case each, with the traceback it caused),
notes the defect class (tests/pacs/test_fuzz_regressions.py DEFECTS) and writes one file
of cases that the regression test replays in both engines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import cases as c


def defect(engine: str, signature: str) -> str:
    if any(w in signature for w in ("abstract_syntax", "list index out of range", "context_id", "User Identity")):
        return "negotiation"  # pynetdicom decoding / negotiating the A-ASSOCIATE-RQ, in either engine
    if "InvalidEventError" in signature or engine != "socket":
        return "dul-loop"  # pynetdicom's state machine / DIMSE decoding in the DUL thread
    return "dataphase"  # pacs/wire.py


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print(__doc__)
        return 2
    found, out = Path(args[0]), Path(args[1])
    cases, seen = [], set()
    for path in sorted(found.rglob("findings/*.json")):
        d = json.loads(path.read_text())
        for case in c.load_cases(path):
            key = (d["engine"], d["traceback"])
            if key in seen:
                continue
            seen.add(key)
            case.notes.update(engine=d["engine"], found=d["traceback"], defect=defect(d["engine"], d["traceback"]))
            cases.append(case)
    c.save_cases(out, cases, about="inputs the fuzzer found breaking the PACS (python -m fuzz.collect); "
                                    "replayed by tests/pacs/test_fuzz_regressions.py")
    print(f"{len(cases)} cases to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
