"""Fuzz cases: whole conversations with one or more fields bent, each with its input class.

A case is reproducible from (seed, index): ``generate(seed, index)``. Classes:

    associate-rq   A-ASSOCIATE-RQ items: lengths, item types, AE titles, contexts, user info, max PDU
    p-data         P-DATA-TF fragmentation, PDV headers (lengths, context ids, control bits)
    command        command sets: field values, missing elements, wrong VRs and lengths
    dataset        datasets: truncated, bad lengths, odd transfer syntaxes, hostile text
    pdu-header     PDU types and length fields, PDUs out of order
    early-close    a real conversation cut at any byte, closed or reset
    recorded       a recorded real storescu association with bytes flipped, inserted, removed

The makers of each class are in fuzz/mutators.py. No length a case puts on the wire
claims more than ``MAX_CLAIM`` bytes: a PACS that
allocates from the length field (a known defect) must not take the machine's memory.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import wire as w

MAX_CLAIM = 4 * 1024 * 1024
CLASSES = {"associate-rq": 3, "p-data": 3, "command": 3, "dataset": 3, "pdu-header": 2, "early-close": 2,
           "recorded": 3}
CALLING = "FUZZ"  # registered as an authorized node by the runner
CALLED = "PACS"
# context id -> (abstract syntax, transfer syntax) proposed by every case (the runner accepts them all)
CONTEXTS = {1: (w.VERIFICATION, w.IMPLICIT_LE), 3: (w.CT, w.EXPLICIT_LE), 5: (w.CT, w.IMPLICIT_LE),
            7: (w.CT, w.DEFLATED_LE), 9: (w.CT, w.EXPLICIT_BE)}
UID_ROOT = "1.2.826.0.1.3680043.10.1482.77"
SEEDS = Path(__file__).parent / "seeds"


@dataclass
class Case:
    klass: str
    name: str
    chunks: list[bytes]
    close: str = "after"  # see wire.exchange
    accept_after: int | None = 0
    ident: str = ""  # seed:index
    notes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["chunks"] = [c.hex() for c in self.chunks]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Case":
        d = dict(d)
        d["chunks"] = [bytes.fromhex(c) for c in d["chunks"]]
        return cls(**d)


def save_cases(path: Path, cases: list[Case], **extra: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**extra, "cases": [c.to_json() for c in cases]}, indent=1))


def load_cases(path: Path) -> list[Case]:
    return [Case.from_json(d) for d in json.loads(path.read_text())["cases"]]


# -- the valid parts --------------------------------------------------------------------------------
def uids(n: int) -> tuple[str, str, str]:
    """Study, series and instance UIDs of case ``n`` (unique per case)."""
    return f"{UID_ROOT}.1.{n}", f"{UID_ROOT}.2.{n}", f"{UID_ROOT}.3.{n}"


def contexts() -> list[bytes]:
    return [w.presentation_context(cid, a, [ts]) for cid, (a, ts) in CONTEXTS.items()]


def dataset(n: int, syntax: str = w.EXPLICIT_LE, patient: bytes = b"FUZZ^CASE", sop_uid: str | None = None,
            charset: bytes = b"ISO_IR 100", study_uid: str | None = None, series_uid: str | None = None) -> bytes:
    """A small CT image dataset, encoded by hand (element order, VRs and lengths as DICOM says)."""
    study, series, sop = uids(n)
    sop = sop if sop_uid is None else sop_uid
    study = study if study_uid is None else study_uid
    series = series if series_uid is None else series_uid
    explicit = syntax != w.IMPLICIT_LE
    big = syntax == w.EXPLICIT_BE
    elems = [
        (0x0008, 0x0005, b"CS", charset), (0x0008, 0x0016, b"UI", w.uid_bytes(w.CT)),
        (0x0008, 0x0018, b"UI", w.uid_bytes(sop)), (0x0008, 0x0060, b"CS", b"CT"),
        (0x0010, 0x0010, b"PN", patient), (0x0010, 0x0020, b"LO", b"FZ0001"),
        (0x0020, 0x000D, b"UI", w.uid_bytes(study)), (0x0020, 0x000E, b"UI", w.uid_bytes(series)),
        (0x0020, 0x0011, b"IS", b"1 "), (0x0028, 0x0010, b"US", None), (0x0028, 0x0011, b"US", None),
        (0x7FE0, 0x0010, b"OW", bytes(range(256)) * 2),
    ]
    fmt = ">" if big else "<"
    out = b""
    for group, elem, vr, value in elems:
        if value is None:
            value = struct.pack(fmt + "H", 16)
        if len(value) % 2:
            value += b"\0" if vr == b"UI" else b" "
        if not explicit:
            out += struct.pack("<HHI", group, elem, len(value)) + value
        elif vr in (b"OW", b"OB", b"SQ", b"UN", b"UT"):
            out += struct.pack(fmt + "HH2sHI", group, elem, vr, 0, len(value)) + value
        else:
            out += struct.pack(fmt + "HH2sH", group, elem, vr, len(value)) + value
    if syntax == w.DEFLATED_LE:
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        out = c.compress(out) + c.flush()
    return out


def store(n: int, cid: int = 3, message_id: int = 1, **kw: object) -> tuple[bytes, bytes]:
    """(command set, dataset) of a valid C-STORE of case ``n`` on context ``cid``."""
    ds = dataset(n, CONTEXTS[cid][1], **kw)  # type: ignore[arg-type]
    return w.command_set(w.store_rq_elements(uids(n)[2], message_id)), ds


def conversation(n: int, cid: int = 3) -> list[bytes]:
    """A valid association: request, C-ECHO, C-STORE, release (one chunk per PDU)."""
    cmd, ds = store(n, cid, 2)
    return [w.associate_rq(CALLED, CALLING, contexts()),
            *w.message_pdus(1, w.command_set(w.echo_rq_elements(1)), None),
            *w.message_pdus(cid, cmd, ds), w.RELEASE_RQ]


# -- helpers --------------------------------------------------------------------------------------
def claim(r: random.Random, near: int = 0) -> int:
    """A length field value: off by a little from ``near``, a boundary, or anything up to MAX_CLAIM."""
    return r.choice([0, 1, 2, 3, 4, 5, 6, 7, 0xFF, 0xFFFF, MAX_CLAIM, max(0, near - 1), near + 1, max(0, near - 2),
                     near + r.randint(2, 64), r.randint(0, MAX_CLAIM)])


def hostile_text(r: random.Random, size: int = 16) -> bytes:
    pool = [b"\x1b[2J", b"\r", b"\n", b"\x9b", b"\x00", b"\\", b"<img src=x onerror=alert(1)>", b"\x7f",
            b"\xe2\x80\xae", b"%s%n", b"'", b'"', b"  ", b"A", b"^"]
    out = b"".join(r.choice(pool) for _ in range(r.randint(1, 6)))
    return out[:size] if size else out


def clamp(chunks: list[bytes], r: random.Random) -> list[bytes]:
    """Walk the PDU headers as a receiver would; any claimed length over MAX_CLAIM is cut to at most it."""
    data = bytearray(b"".join(chunks))
    off = 0
    while off + 6 <= len(data):
        (length,) = struct.unpack_from(">I", data, off + 2)
        if length > MAX_CLAIM:
            length = r.randint(0, MAX_CLAIM)
            struct.pack_into(">I", data, off + 2, length)
        off += 6 + length
    out, pos = [], 0
    for c in chunks:
        out.append(bytes(data[pos:pos + len(c)]))
        pos += len(c)
    return out


def complete(chunks: list[bytes]) -> bool:
    """True when the bytes are whole PDUs (a receiver is not left waiting for the rest of one)."""
    _, rest = w.parse_pdus(b"".join(chunks))
    return not rest


def split(data: bytes, r: random.Random, pieces: int) -> list[bytes]:
    cuts = sorted(r.sample(range(1, len(data)), min(pieces - 1, len(data) - 1))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


RECORDED_UID = b"1.2.826.0.1.3680043.10.1482.77.3.999999999"  # in fuzz/seeds/storescu-ct.json


def generate(seed: int, index: int, classes: list[str] | None = None) -> Case:
    """Case ``index`` of run ``seed``: the same bytes every time."""
    r = random.Random(seed * 1_000_003 + index)
    names = classes or list(CLASSES)
    from .mutators import MAKERS

    klass = r.choices(names, weights=[CLASSES[c] for c in names])[0]
    n = (seed % 900) * 1_000_000 + index
    case = MAKERS[klass](r, n)
    case.chunks = clamp(case.chunks, r)
    case.ident = f"{seed}:{index}"
    case.notes["complete"] = "yes" if complete(case.chunks) else "no"
    return case
