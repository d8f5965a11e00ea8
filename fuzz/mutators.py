"""The seven input classes of fuzz/cases.py: each maker bends one part of a real conversation."""

from __future__ import annotations

import json
import random
import struct
import zlib

from . import wire as w
from .cases import (
    CALLED,
    CALLING,
    RECORDED_UID,
    SEEDS,
    UID_ROOT,
    Case,
    claim,
    contexts,
    conversation,
    dataset,
    hostile_text,
    split,
    store,
    uids,
)


def _bent_contexts(r: random.Random, cxs: list[bytes]) -> list[bytes]:
    """The presentation context items, one way bent (none, hundreds, even IDs, duplicates, ...)."""
    kind = r.choice(["none", "many", "even", "dup", "no-abstract", "no-ts", "bad-uid", "sub-type", "ac-type"])
    if kind == "none":
        return []
    elif kind == "many":
        return [w.presentation_context((2 * i + 1) & 0xFF, w.CT, [w.EXPLICIT_LE]) for i in range(r.randint(2, 300))]
    elif kind == "even":
        return [w.presentation_context(2, w.VERIFICATION, [w.IMPLICIT_LE]), *cxs]
    elif kind == "dup":
        return [*cxs, w.presentation_context(1, w.CT, [w.EXPLICIT_LE])]
    elif kind == "no-abstract":
        return [w.presentation_context(1, None, [w.IMPLICIT_LE]), *cxs[1:]]
    elif kind == "no-ts":
        return [w.presentation_context(1, w.VERIFICATION, []), *cxs[1:]]
    elif kind == "bad-uid":
        return [w.presentation_context(1, r.choice([b"", b"1.2.3\n", b"1" * 200, hostile_text(r, 0)]),
                                      [r.choice([b"", w.IMPLICIT_LE + "\n", b"x" * 70])]), *cxs[1:]]
    elif kind == "sub-type":
        return [w.item(0x20, b"\x01\0\0\0" + w.item(r.choice([0x31, 0x50, 0x99]), b"1.2.3")), *cxs]
    else:
        return [w.presentation_context(1, w.VERIFICATION, [w.IMPLICIT_LE], kind=0x21), *cxs[1:]]


def _bent_user(r: random.Random) -> bytes:
    """A user information item, bent (the maximum PDU, the implementation UID, sub-items)."""
    return r.choice([
        b"", w.user_information(max_pdu=r.choice([0, 1, 6, 7, 0xFFFFFFFF, r.randint(0, 1 << 32)])),
        w.user_information(impl_uid=None), w.user_information(impl_uid=b"1" * 200),
        w.user_information(version=r.randbytes(r.randint(0, 40))),
        w.user_information(extra=w.item(r.choice([0x53, 0x54, 0x56, 0x57, 0x58, 0x59, 0x77]),
                                        r.randbytes(r.randint(0, 40)))),
        w.item(0x50, w.item(0x51, b"\0\0")), w.item(0x50, r.randbytes(r.randint(0, 64))),
    ])


def _bend_item_length(r: random.Random, rq: bytearray) -> None:
    """A variable item's 2-byte length, off."""
    starts = [i for i in range(74, len(rq) - 4) if rq[i] in (0x10, 0x20, 0x30, 0x40, 0x50, 0x51, 0x52, 0x55)
              and rq[i + 1] == 0]
    if starts:
        i = r.choice(starts)
        (old,) = struct.unpack_from(">H", rq, i + 2)
        struct.pack_into(">H", rq, i + 2, r.choice([0, old + 1, max(0, old - 1), 0xFFFF, r.randint(0, 0xFFFF)]))


def case_associate_rq(r: random.Random, n: int) -> Case:
    called: bytes | str = CALLED
    calling: bytes | str = CALLING
    cxs = contexts()
    user: bytes | None = None
    app: bytes | None = None
    protocol = 1
    extra = b""
    ops = r.sample(["called", "calling", "app", "contexts", "user", "protocol", "extra", "item-length"],
                   r.randint(1, 3))
    for op in ops:
        if op == "called":
            called = r.choice([b"", b"pacs", b" PACS", b"\0" * 16, hostile_text(r), r.randbytes(16)])
        elif op == "calling":
            calling = r.choice([b"", b"fuzz", b"\0" * 16, hostile_text(r), r.randbytes(16), b"FUZZ\\X"])
        elif op == "app":
            app = r.choice([b"", w.item(0x10, b""), w.item(0x10, b"1.2.3.4"), w.item(0x10, r.randbytes(r.randint(0, 300))),
                            w.item(0x11, w.text(w.APP_CONTEXT)), w.item(0x10, w.text(w.APP_CONTEXT) * 2)])
        elif op == "contexts":
            cxs = _bent_contexts(r, cxs)
        elif op == "user":
            user = _bent_user(r)
        elif op == "protocol":
            protocol = r.choice([0, 2, 0x8001, 0xFFFF])
        elif op == "extra":
            extra = r.choice([w.item(0x99, r.randbytes(8)), r.randbytes(r.randint(1, 8)), w.item(0x10, b"1.2")])
    rq = bytearray(w.associate_rq(called, calling, cxs, user, app, protocol, extra))
    if "item-length" in ops:  # a variable item's 2-byte length, off
        _bend_item_length(r, rq)
    if r.random() < 0.2:  # the PDU length itself
        struct.pack_into(">I", rq, 2, claim(r, len(rq) - 6))
    chunks = [bytes(rq)]
    accept_after: int | None = 0
    if r.random() < 0.2:
        chunks = split(bytes(rq), r, r.randint(2, 6))
        accept_after = len(chunks) - 1
    rest = conversation(n)[1:]
    return Case("associate-rq", "+".join(ops), [*chunks, *rest], accept_after=accept_after)


def case_p_data(r: random.Random, n: int) -> Case:
    cmd, ds = store(n)
    op = r.choice(["fragment", "multi-pdv", "flags", "context", "pdv-length", "empty", "data-first", "bytewise",
                   "no-last"])
    rq = w.associate_rq(CALLED, CALLING, contexts())
    msgs: list[bytes]
    if op == "fragment":
        msgs = w.message_pdus(3, cmd, ds, r.choice([1, 2, 7, 64, 1000]))
    elif op == "multi-pdv":
        parts = w.fragments(cmd, r.randint(1, 40))
        msgs = [w.p_data(*[w.pdv(3, 0x01 | (0x02 if i == len(parts) - 1 else 0), p) for i, p in enumerate(parts)],
                         w.pdv(3, 0x02, ds))]
    elif op == "flags":
        msgs = [w.p_data(w.pdv(3, r.choice([0x00, 0x02, 0x01, 0x04, 0xFF, 0x03]), cmd)),
                w.p_data(w.pdv(3, r.choice([0x00, 0x01, 0x03, 0xFC, 0x02]), ds))]
    elif op == "context":
        msgs = [w.p_data(w.pdv(r.choice([3, 2, 0, 255, 1, 5]), 0x03, cmd)),
                w.p_data(w.pdv(r.choice([3, 5, 1, 11, 0]), 0x02, ds))]
    elif op == "pdv-length":
        msgs = [w.p_data(w.pdv(3, 0x03, cmd, length=r.choice([0, 1, 2, len(cmd) + 3, len(cmd), len(cmd) + 100]))),
                w.p_data(w.pdv(3, 0x02, ds))]
    elif op == "empty":
        msgs = [w.p_data(), w.pdu(0x04, b"\0" * r.randint(1, 5)), *w.message_pdus(3, cmd, ds)]
    elif op == "data-first":
        msgs = [w.p_data(w.pdv(3, 0x02, ds)), w.p_data(w.pdv(3, 0x03, cmd))]
    elif op == "bytewise":
        msgs = [b for m in w.message_pdus(3, cmd, ds) for b in split(m, r, r.randint(2, 12))]
    else:
        msgs = [w.p_data(w.pdv(3, 0x01, cmd)), w.p_data(w.pdv(3, 0x00, ds))]
    return Case("p-data", op, [rq, *msgs, w.RELEASE_RQ])


def case_command(r: random.Random, n: int) -> Case:
    _, ds = store(n)
    elems = w.store_rq_elements(uids(n)[2])
    group_length: int | None = None
    ops = r.sample(["drop", "field", "dataset-type", "el-length", "group-length", "explicit", "extra", "order",
                    "truncate", "flip", "uids"], r.randint(1, 3))
    with_data = True
    for op in ops:
        if op == "drop" and elems:
            del elems[r.randrange(len(elems))]
        elif op == "field":
            elems[1] = w.element(0x0100, w.us(r.choice([0x0020, 0x0010, 0x0021, 0x8001, 0x0FFF, 0xFFFF, 0,
                                                        r.randint(0, 0xFFFF)])))
        elif op == "dataset-type":
            value = r.choice([0x0101, 0x0000, 0x0102, 0xFFFF])
            elems = [e for e in elems if e[2:4] != b"\x00\x08"] + [w.element(0x0800, w.us(value))]
            with_data = r.random() < 0.5
        elif op == "el-length" and elems:
            i = r.randrange(len(elems))
            e = bytearray(elems[i])
            struct.pack_into("<I", e, 4, claim(r, len(e) - 8))
            elems[i] = bytes(e)
        elif op == "group-length":
            group_length = claim(r, 0)
        elif op == "explicit":
            elems = [e[:4] + r.choice([b"UI", b"US", b"UL", b"XX"]) + struct.pack("<H", len(e) - 8) + e[8:]
                     for e in elems]
        elif op == "extra":
            elems.insert(r.randrange(len(elems) + 1), w.element(r.choice([0x0001, 0x0600, 0x0901, 0x5010, 0x0902]),
                                                              r.randbytes(r.choice([0, 1, 2, 4, 9]))))
        elif op == "order":
            r.shuffle(elems)
        elif op == "uids":
            elems = [e for e in elems if e[2:4] != b"\x00\x10"] + [w.element(0x1000, w.uid_bytes(
                r.choice([uids(n)[2] + "\n", "", "1" * 70, uids(n)[2] + "\x1b[2J", "1.2.3"])))]
    cmd = w.command_set(elems, group_length)
    if "truncate" in ops:
        cmd = cmd[:r.randrange(len(cmd))]
    if "flip" in ops and cmd:
        b = bytearray(cmd)
        for _ in range(r.randint(1, 4)):
            b[r.randrange(len(b))] = r.randrange(256)
        cmd = bytes(b)
    msgs = w.message_pdus(3, cmd, ds if with_data else None)
    return Case("command", "+".join(ops), [w.associate_rq(CALLED, CALLING, contexts()), *msgs, w.RELEASE_RQ])


def case_dataset(r: random.Random, n: int) -> Case:
    cid = r.choice([3, 3, 5, 7, 9])
    op = r.choice(["truncate", "length", "undefined", "garbage-seq", "wrong-syntax", "deflate", "empty", "uid",
                   "class", "text", "flip"])
    kw: dict = {}
    if op == "uid":
        kw["sop_uid"] = r.choice([uids(n)[2] + "\n", uids(n)[2] + ".0", "1" * 70, uids(n)[2] + "\x9b"])
    if op == "text":
        kw["patient"] = hostile_text(r, 0)
        kw["charset"] = r.choice([b"ISO_IR 100", b"", b"ISO 2022 IR 87", b"ISO_IR 192", b"\x1b$B"])
    cmd, ds = store(n, cid, **kw)
    if op == "truncate":
        ds = ds[:r.randrange(max(1, len(ds)))]
    elif op == "length":
        b = bytearray(ds)
        spots = [i for i in range(0, min(len(b) - 8, 400), 2) if b[i:i + 2] in (b"\x10\x00", b"\x20\x00", b"\x08\x00")]
        if spots:
            i = r.choice(spots)
            struct.pack_into("<H" if cid in (3, 7) else "<I", b, i + 6 if cid in (3, 7) else i + 4,
                             claim(r, 16) & (0xFFFF if cid in (3, 7) else 0xFFFFFFFF))
        ds = bytes(b)
    elif op == "undefined":
        ds = ds + struct.pack("<HH2sHI", 0x0040, 0x0275, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000,
                                                                                            0xFFFFFFFF)
    elif op == "garbage-seq":
        ds = struct.pack("<HH2sHI", 0x0008, 0x1110, b"SQ", 0, r.choice([8, 16, 0xFFFFFFFF])) + r.randbytes(16) + ds
    elif op == "wrong-syntax":
        ds = dataset(n, r.choice([w.EXPLICIT_LE, w.IMPLICIT_LE, w.EXPLICIT_BE, w.DEFLATED_LE]))
    elif op == "deflate":
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = r.choice([dataset(n) + b"\0" * r.choice([0, 1 << 20, 8 << 20]), r.randbytes(64)])
        ds = c.compress(body) + c.flush()
        if r.random() < 0.3:
            ds = ds[: len(ds) // 2]
        cid = 7
        cmd = w.command_set(w.store_rq_elements(uids(n)[2]))
    elif op == "empty":
        ds = b""
    elif op == "class":
        cmd = w.command_set(w.store_rq_elements(uids(n)[2], sop_class=r.choice([w.VERIFICATION, "1.2.3", ""])))
    elif op == "flip" and ds:
        b = bytearray(ds)
        for _ in range(r.randint(1, 6)):
            b[r.randrange(min(len(b), 300))] = r.randrange(256)
        ds = bytes(b)
    msgs = w.message_pdus(cid, cmd, ds, r.choice([16372, 16372, 100, 4096]))
    return Case("dataset", f"{op}@{cid}", [w.associate_rq(CALLED, CALLING, contexts()), *msgs, w.RELEASE_RQ])


def case_pdu_header(r: random.Random, n: int) -> Case:
    rq = w.associate_rq(CALLED, CALLING, contexts())
    conv = conversation(n)
    op = r.choice(["unknown-first", "unknown-later", "reserved", "release-length", "abort-first", "pdata-first",
                   "scp-pdus", "second-rq", "claim", "header-only", "abort-length"])
    accept_after: int | None = 0
    if op == "unknown-first":
        chunks = [w.pdu(r.choice([0, 8, 9, 0x10, 0x81, 0xFF]), r.randbytes(r.randint(0, 32)))]
        accept_after = None
    elif op == "unknown-later":
        chunks = [rq, w.pdu(r.choice([0, 8, 0x41, 0xFF, 1, 2, 3]), r.randbytes(r.randint(0, 32))), *conv[1:]]
    elif op == "reserved":
        b = bytearray(r.choice(conv))
        b[1] = r.randint(1, 255)
        chunks = [rq, *conv[1:-1], bytes(b), w.RELEASE_RQ] if b[0] != 1 else [bytes(b), *conv[1:]]
    elif op == "release-length":
        chunks = [rq, w.pdu(0x05, b"\0" * r.choice([0, 3, 5, 100]), length=None)]
    elif op == "abort-first":
        chunks = [w.abort(r.randint(0, 3), r.randint(0, 6))]
        accept_after = None
    elif op == "abort-length":
        chunks = [rq, w.pdu(0x07, b"\0" * r.choice([0, 2, 5, 40]))]
    elif op == "pdata-first":
        chunks = conv[1:]
        accept_after = None
    elif op == "scp-pdus":
        chunks = [r.choice([w.RELEASE_RP, w.associate_rq(kind=0x02), w.pdu(0x03, b"\0\x01\x01\x03")]), *conv]
        accept_after = None
    elif op == "second-rq":
        chunks = [rq, rq, *conv[1:]]
    elif op == "claim":
        target = r.choice([0, 1, 2, len(conv) - 1])
        b = bytearray(conv[target])
        struct.pack_into(">I", b, 2, claim(r, len(b) - 6))
        chunks = [*conv[:target], bytes(b), *conv[target + 1:]]
        if target == 0:
            accept_after = None
    else:  # header-only
        chunks = [rq, conv[1][:6]] if r.random() < 0.5 else [rq[:6]]
        accept_after = 0 if len(chunks) > 1 else None
    return Case("pdu-header", op, chunks, accept_after=accept_after)


def case_early_close(r: random.Random, n: int) -> Case:
    conv = conversation(n)
    data = b"".join(conv)
    cut = r.randrange(1, len(data))
    pieces = [data[:cut]]
    if r.random() < 0.5 and cut > len(conv[0]):  # as an SCU would: the request alone first
        pieces = [conv[0], data[len(conv[0]):cut]]
    return Case("early-close", f"cut@{cut}/{len(data)}", pieces, close=r.choice(["now", "reset"]),
                accept_after=None)


_RECORDED: list[bytes] | None = None


def recorded() -> list[bytes]:
    """The PDUs a real DCMTK storescu sent in one association (fuzz/seeds/storescu-ct.json)."""
    global _RECORDED
    if _RECORDED is None:
        _RECORDED = [bytes.fromhex(h) for h in json.loads((SEEDS / "storescu-ct.json").read_text())["pdus"]]
    return _RECORDED


def case_recorded(r: random.Random, n: int) -> Case:
    pdus = recorded()
    new_uid = f"{UID_ROOT}.3.{n + 100_000_000:09d}".encode()  # same length as RECORDED_UID: no length changes
    pdus = [p.replace(RECORDED_UID, new_uid) for p in pdus]
    data = bytearray(b"".join(pdus))
    bounds = [0]
    for p in pdus:
        bounds.append(bounds[-1] + len(p))
    ops = []
    for _ in range(r.randint(1, 8)):
        op = r.choice(["flip", "byte", "insert", "delete", "dup", "header"])
        ops.append(op)
        i = r.randrange(len(data))
        if op == "flip":
            data[i] ^= 1 << r.randrange(8)
        elif op == "byte":
            data[i] = r.choice([0, 0xFF, 0x7F, 0x80, r.randrange(256)])
        elif op == "insert":
            data[i:i] = r.randbytes(r.randint(1, 16))
        elif op == "delete":
            del data[i:i + r.randint(1, 16)]
        elif op == "dup":
            data[i:i] = data[i:i + r.randint(1, 64)]
        else:  # a byte of a PDU header
            j = r.choice(bounds[:-1]) + r.randrange(6)
            if j < len(data):
                data[j] = r.randrange(256)
    chunks = [bytes(data[a:b]) for a, b in zip(bounds[:-1], [*bounds[1:-1], len(data)], strict=True) if a < len(data)]
    return Case("recorded", "+".join(ops), chunks, accept_after=None)


MAKERS = {"associate-rq": case_associate_rq, "p-data": case_p_data, "command": case_command,
          "dataset": case_dataset, "pdu-header": case_pdu_header, "early-close": case_early_close,
          "recorded": case_recorded}
