"""The data phase against hostile and broken peers, in both engines: the socket
data phase (pacs/wire.py, "wire"), pynetdicom's loops ("verbose" mode), and stock
pynetdicom (PACS_FASTPATH=0, "stock"). Real PACS process, raw sockets after a
real negotiation. PDU caps, no silent end, spooling, max_instance_bytes, bounded
Deflate, full disk."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from dicomdata import CT, ct_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid
from test_wire import read_pdu

from dicomlab import pdu
from lab import PacsProcess, add_node, echoscu, events_of, need, tcp_pair, wait_for

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
MAX_PDU = 131072  # what the PACS advertises
ENGINES = ["wire", "verbose", "stock"]


# -- PDUs -------------------------------------------------------------------------
def _uid(u: str) -> bytes:
    return pdu.uid(u)


def associate_rq(ts: str = EXPLICIT, calling: str = "CT01") -> bytes:
    return pdu.associate_rq("PACS", calling, [(1, VERIFICATION, [IMPLICIT]), (3, CT, [ts])], 16384, "1.2.3.4",
                            pad=True)


def p_data(*pdvs: tuple[int, int, bytes]) -> bytes:
    """One P-DATA-TF of (context id, message control header, fragment) items."""
    return pdu.pdu(pdu.P_DATA_TF, b"".join(pdu.pdv(cid, mch, f) for cid, mch, f in pdvs))


def el(elem: int, value: bytes) -> bytes:
    return pdu.element(elem, value)


def command_set(field: int, message_id: int | None = 7, sop_class: str = VERIFICATION,
                sop_instance: str | None = None, with_data: bool = False) -> bytes:
    elems = [el(pdu.AFFECTED_SOP_CLASS_UID, _uid(sop_class)), el(pdu.COMMAND_FIELD, pdu.us(field))]
    if message_id is not None:
        elems.append(el(pdu.MESSAGE_ID, pdu.us(message_id)))
    elems.append(el(pdu.COMMAND_DATASET_TYPE, pdu.us(pdu.DATASET_PRESENT if with_data else pdu.NO_DATASET)))
    if sop_instance is not None:
        elems.append(el(pdu.AFFECTED_SOP_INSTANCE_UID, _uid(sop_instance)))
    return pdu.command_set(elems)


def store_command(sop_instance: str) -> bytes:
    return command_set(0x0001, 9, CT, sop_instance, with_data=True)


def dataset_header(sop_instance: str, ts: str = EXPLICIT, **extra) -> bytes:
    """A small CT dataset without pixel data, encoded in ``ts`` (uncompressed)."""
    from io import BytesIO

    from pydicom.filebase import DicomFileLike

    ds = ct_dataset(generate_uid(), generate_uid(), 1, sop_uid=sop_instance)
    del ds.PixelData
    for k, v in extra.items():
        setattr(ds, k, v)
    buf = BytesIO()
    fp = DicomFileLike(buf)
    fp.is_little_endian, fp.is_implicit_VR = True, ts == IMPLICIT
    write_dataset(fp, ds)
    return buf.getvalue()


def abort_bytes(reason: int) -> bytes:
    return pdu.abort_pdu(reason)


def status_of(body: bytes) -> int:
    i = body.index(struct.pack("<HHI", 0, 0x900, 2))
    return struct.unpack_from("<H", body, i + 8)[0]


def leftovers(root: Path) -> list[Path]:
    """Files under the storage root (its .incoming too, but not the PACS's .sop / .journal
    bookkeeping), and in the PACS's temporary folder next to it."""
    return sorted(p for d in (root, root.parent / "tmp") for p in d.rglob("*")
                  if p.is_file() and not p.is_symlink() and p.relative_to(d).parts[0] not in (".sop", ".journal"))


def rss(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


# -- fixtures ---------------------------------------------------------------------
@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


def start_pacs(redis_url: str, storage: Path, registry, engine: str, **settings) -> PacsProcess:
    tmp = storage.parent / "tmp"  # the PACS's temporary folder (pynetdicom's chunked datasets)
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"PACS_WORKERS": "1", "PACS_FASTPATH": "0" if engine == "stock" else "1", "TMPDIR": str(tmp)}
    p = PacsProcess(redis_url, storage, extra_env=env).start()
    add_node(registry, "CT01")
    changes = {**settings, **({"verbose": True} if engine == "verbose" else {})}
    if changes:
        registry.update_listener(changes)
    return p


@pytest.fixture
def lab(redis_url, registry, tmp_path, engine):
    p = start_pacs(redis_url, tmp_path / "storage", registry, engine)
    yield p
    p.stop()


def connect(port: int, ts: str = EXPLICIT) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(associate_rq(ts))
    t, _ = read_pdu(s)
    assert t == 0x02, f"no A-ASSOCIATE-AC ({t})"
    return s


def expect_abort(s: socket.socket, reason: int) -> None:
    t, body = read_pdu(s)
    assert (t, body) == (0x07, abort_bytes(reason)[6:])
    s.settimeout(10)
    try:
        assert s.recv(100) == b""  # then the PACS closes
    except ConnectionResetError:
        pass


def aborted_event(registry, reason: str | None = None):
    match = {"calling_aet": "CT01", **({"reason": reason} if reason else {})}
    return wait_for(lambda: events_of(registry, "association-aborted", **match), what=f"an abort event {match}")[-1]


def still_serving(p: PacsProcess) -> None:
    r = echoscu(p.port, "CT01", "PACS")
    assert r.returncode == 0, r.stdout + r.stderr


# -- 1. PDU caps --------------------------------------------------------------------
CAPS = {
    "p-data-over-max": (struct.pack(">BBI", 4, 0, MAX_PDU + 7), 6, "over the negotiated maximum"),
    "release-rq-huge": (struct.pack(">BBI", 5, 0, 0x7FFFFFFF), 6, "A-RELEASE-RQ with length 2147483647"),
    "unknown-type": (struct.pack(">BBI", 0x0A, 0, 0), 1, "unrecognized PDU type 0x0A"),
    "associate-rq": (associate_rq(), 2, "A-ASSOCIATE-RQ during the data phase"),
}


@pytest.mark.parametrize("case", list(CAPS))
def test_pdu_over_its_cap_is_aborted_with_the_ps38_reason(lab, registry, engine, case):
    pdu, reason, words = CAPS[case]
    rss_before = rss(lab.proc.pid)
    s = connect(lab.port)
    s.sendall(pdu)
    expect_abort(s, reason)
    s.close()
    ev = aborted_event(registry, "pdu-invalid")
    assert words in ev.message and "'CT01' at 127.0.0.1" in ev.message
    assert rss(lab.proc.pid) - rss_before < 32 * 1024 * 1024  # nothing allocated on the peer's word
    still_serving(lab)


# -- 5. no silent end ---------------------------------------------------------------
BAD_COMMANDS = {
    "undecodable": (el(0, struct.pack("<I", 11)) + el(0x100, b"abc"), "cannot be decoded"),
    "no-message-id": (command_set(0x0030, message_id=None), "MessageID"),
}


@pytest.mark.parametrize("engine", ["wire", "verbose"])  # stock pynetdicom: see README (PACS_FASTPATH)
@pytest.mark.parametrize("case", list(BAD_COMMANDS))
def test_bad_command_set_is_aborted_and_said(lab, registry, engine, case):
    cmd, words = BAD_COMMANDS[case]
    s = connect(lab.port)
    s.sendall(p_data((1, 0x03, cmd)))
    t, body = read_pdu(s)
    assert t == 0x07 and body[2] == 2  # A-ABORT from the service provider
    s.close()
    ev = aborted_event(registry)
    if engine == "wire" or case == "no-message-id":
        assert words in ev.message and ev.reason == "dimse-invalid"
    else:  # pynetdicom's loops fail inside their decoder: said in its words
        assert "BytesLengthException" in ev.message and ev.reason == "internal-error"
    still_serving(lab)


def test_command_fragmented_over_pdvs_and_pdus_is_understood(lab, registry, engine, tmp_path):
    s = connect(lab.port)
    cmd = command_set(0x0030)
    a, b, c = cmd[:5], cmd[5:30], cmd[30:]
    s.sendall(p_data((1, 0x01, a), (1, 0x01, b)))
    s.sendall(p_data((1, 0x03, c)))
    t, body = read_pdu(s)
    assert t == 0x04 and status_of(body) == 0
    # a C-STORE whose command and dataset are each split, across PDUs
    uid = generate_uid()
    cmd, data = store_command(uid), dataset_header(uid) + pixel_element(4096)
    s.sendall(p_data((3, 0x01, cmd[:17])))
    s.sendall(p_data((3, 0x03, cmd[17:]), (3, 0x00, data[:100])))
    s.sendall(p_data((3, 0x00, data[100:3000])) + p_data((3, 0x02, data[3000:])))
    t, body = read_pdu(s)
    assert t == 0x04 and status_of(body) == 0
    s.sendall(struct.pack(">BBII", 5, 0, 4, 0))
    assert read_pdu(s)[0] == 0x06
    s.close()
    [f] = [p for p in leftovers(lab.storage_dir) if p.suffix == ".dcm"]
    assert f.read_bytes().endswith(data)


def test_peer_abort_in_the_middle_of_a_dataset_keeps_nothing(lab, registry, engine):
    registry.update_listener({"spool_threshold_bytes": 64 * 1024})  # half of it is spooled already
    s = connect(lab.port)
    uid = generate_uid()
    data = dataset_header(uid) + pixel_element(1024 * 1024)
    s.sendall(p_data((3, 0x03, store_command(uid))))
    for off in range(0, 512 * 1024, 60000):
        s.sendall(p_data((3, 0x00, data[off:off + 60000])))
    s.sendall(struct.pack(">BBIBBBB", 7, 0, 4, 0, 0, 0, 0))  # A-ABORT, source 0 (service user)
    s.close()
    ev = aborted_event(registry)
    assert "abort" in ev.message.lower()
    wait_for(lambda: not leftovers(lab.storage_dir), what="no file left")
    still_serving(lab)
    assert not leftovers(lab.storage_dir)


# -- 2/3. spooling and max_instance_bytes ----------------------------------------------
def pixel_element(n: int) -> bytes:
    """(7FE0,0010) OB of ``n`` bytes, explicit VR little endian (no n-byte value here)."""
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, n) + bytes(range(256)) * (n // 256) + bytes(n % 256)


def send_big(s: socket.socket, uid: str, size: int, digest=None) -> None:
    """A C-STORE of a dataset with a ``size``-byte pixel element, generated block by block."""
    head = dataset_header(uid) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, size)
    s.sendall(p_data((3, 0x03, store_command(uid))))
    block = os.urandom(1 << 20)
    if digest is not None:
        digest.update(head)
    s.sendall(p_data((3, 0x00, head)))
    frag, sent = 65536, 0
    while sent < size:
        n = min(frag, size - sent)
        piece = block[sent % len(block):][:n]
        sent += n
        if digest is not None:
            digest.update(piece)
        s.sendall(p_data((3, 0x02 if sent == size else 0x00, piece)))

@pytest.mark.parametrize("engine", ["wire", "verbose"])
def test_large_instance_is_spooled_byte_equal_without_holding_it(redis_url, registry, tmp_path, engine):
    p = start_pacs(redis_url, tmp_path / "storage", registry, engine, spool_threshold_bytes=1024 * 1024)
    try:
        s = connect(p.port)
        send_big(s, generate_uid(), 100_000)  # warm up: first store, imports, buffers
        assert status_of(read_pdu(s)[1]) == 0
        peak_before = rss(p.proc.pid, "VmHWM")
        uid, digest = generate_uid(), hashlib.sha256()
        send_big(s, uid, 100 * 1024 * 1024, digest)
        t, body = read_pdu(s)
        assert t == 0x04 and status_of(body) == 0
        growth = rss(p.proc.pid, "VmHWM") - peak_before
        print(f"{engine}: PACS peak RSS growth {growth / 2**20:.1f} MiB for a 100 MiB instance")
        s.sendall(struct.pack(">BBII", 5, 0, 4, 0))
        read_pdu(s)
        s.close()
        [f] = p.storage_dir.rglob(f"{uid}.dcm")
        stored = hashlib.sha256()
        with open(f, "rb") as fh:
            fh.seek(132)
            (meta_len,) = struct.unpack("<I", fh.read(12)[8:])
            fh.seek(144 + meta_len)
            while chunk := fh.read(1 << 20):
                stored.update(chunk)
        assert stored.hexdigest() == digest.hexdigest()
        assert growth < 48 * 1024 * 1024, f"PACS peak RSS grew by {growth / 2**20:.0f} MiB for a 100 MiB instance"
        assert not list((p.storage_dir / ".incoming").iterdir())
    finally:
        p.stop()


def test_instance_over_max_instance_bytes_is_aborted(redis_url, registry, tmp_path, engine):
    p = start_pacs(redis_url, tmp_path / "storage", registry, engine,
                   max_instance_bytes=1024 * 1024, spool_threshold_bytes=64 * 1024)
    try:
        s = connect(p.port)
        send_big(s, generate_uid(), 200_000)  # under the limit: stored
        assert status_of(read_pdu(s)[1]) == 0
        try:
            send_big(s, generate_uid(), 3 * 1024 * 1024)
        except OSError:
            pass  # the PACS closed while we were still sending
        t, body = read_pdu(s)
        assert (t, body) == (0x07, abort_bytes(0)[6:])
        s.close()
        ev = aborted_event(registry, "instance-too-large")
        assert "more than 1048576 bytes for one instance" in ev.message and "max_instance_bytes" in ev.message
        wait_for(lambda: len(leftovers(p.storage_dir)) == 1, what="only the first instance left")
        assert not list((p.storage_dir / ".incoming").iterdir())
        still_serving(p)
    finally:
        p.stop()


# -- 4. Deflate -------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["wire", "verbose"])
def test_deflated_dataset_is_stored_and_a_deflate_bomb_is_not_inflated(redis_url, registry, tmp_path, engine):
    p = start_pacs(redis_url, tmp_path / "storage", registry, engine,
                   transfer_syntaxes=[EXPLICIT, DEFLATED])
    try:
        s = connect(p.port, DEFLATED)
        uid = generate_uid()
        plain = dataset_header(uid) + pixel_element(8192)
        z = zlib.compressobj(wbits=-15)
        deflated = z.compress(plain) + z.flush()
        s.sendall(p_data((3, 0x03, store_command(uid)), (3, 0x02, deflated)))
        assert status_of(read_pdu(s)[1]) == 0
        [f] = p.storage_dir.rglob(f"{uid}.dcm")
        assert f.read_bytes().endswith(deflated)  # stored as received

        # the bomb: 1 GiB of zeros in a private element before the Study Instance UID
        bomb_uid = generate_uid()
        head = struct.pack("<HH2sH", 0x0008, 0x0016, b"UI", len(_uid(CT))) + _uid(CT)
        head += struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", len(_uid(bomb_uid))) + _uid(bomb_uid)
        head += struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, 1 << 30)
        z = zlib.compressobj(9, wbits=-15)
        parts = [z.compress(head)]
        zeros = bytes(1 << 20)
        for _ in range(1024):
            parts.append(z.compress(zeros))
        parts.append(z.flush())
        bomb = b"".join(parts)
        assert len(bomb) < 2 * 1024 * 1024
        peak_before = rss(p.proc.pid, "VmHWM")
        s.sendall(p_data((3, 0x03, store_command(bomb_uid))))
        for off in range(0, len(bomb), 65536):
            s.sendall(p_data((3, 0x02 if off + 65536 >= len(bomb) else 0x00, bomb[off:off + 65536])))
        t, body = read_pdu(s)
        assert t == 0x04 and status_of(body) & 0xF000 == 0xC000
        growth = rss(p.proc.pid, "VmHWM") - peak_before
        print(f"{engine}: PACS peak RSS growth {growth / 2**20:.1f} MiB for a 1 GiB Deflate bomb")
        assert growth < 48 * 1024 * 1024
        ev = wait_for(lambda: events_of(registry, "store-failed"))[-1]
        assert "header fields" in ev.message
        assert not list(p.storage_dir.rglob(f"{bomb_uid}*"))
        s.close()
    finally:
        p.stop()


# -- full disk while spooling ------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    need(r.returncode == 0, f"cannot mount a small tmpfs: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_while_spooling_answers_out_of_resources(small_disk, redis_url, registry):
    p = start_pacs(redis_url, small_disk / "storage", registry, "wire", spool_threshold_bytes=64 * 1024)
    try:
        s = connect(p.port)
        send_big(s, generate_uid(), 8 * 1024 * 1024)  # twice the disk
        t, body = read_pdu(s)
        assert t == 0x04 and status_of(body) == 0xA700
        s.close()
        ev = wait_for(lambda: events_of(registry, "store-failed"))[-1]
        assert "No space left" in ev.message
        assert leftovers(small_disk / "storage") == []  # no partial file, not even in .incoming
        still_serving(p)
    finally:
        p.stop()


# -- the two ways into storage write the same file ----------------------------------------
@pytest.mark.parametrize("ts", [EXPLICIT, IMPLICIT, DEFLATED])
def test_spooled_and_in_memory_stores_write_identical_files(tmp_path, ts):
    from pacs.storage import Storage

    uid = generate_uid()
    raw = dataset_header(uid, ts) + (b"" if ts == IMPLICIT else pixel_element(300_000))
    if ts == DEFLATED:
        z = zlib.compressobj(wbits=-15)
        raw = z.compress(raw) + z.flush()
    a, b = Storage(tmp_path / "a", fsync=False), Storage(tmp_path / "b", fsync=False)
    ra = a.store(raw, ts, CT, uid, "CT01")
    spool = b.spool(ts, CT, uid, "CT01")
    for off in range(0, len(raw), 7777):
        spool.write(memoryview(raw)[off:off + 7777])
    rb = spool.commit()
    assert ra.ok and rb.ok, (ra.message, rb.message)
    assert ra.meta == {**rb.meta, "path": ra.meta["path"]}
    assert ra.path.read_bytes() == rb.path.read_bytes()
    assert not list(a.incoming.iterdir()) and not list(b.incoming.iterdir())
    # the same checks on both ways: a request UID that differs from the dataset's
    other = b.spool(ts, CT, generate_uid(), "CT01")
    other.write(raw)
    bad = other.commit()
    assert bad.status == 0xC000 and a.store(raw, ts, CT, generate_uid()).status == 0xC000
    assert not list(b.incoming.iterdir())


@pytest.mark.parametrize("pdu_type,length,verdict", [
    (0x04, MAX_PDU + 6, None), (0x04, MAX_PDU + 7, 6), (0x04, 5, 6), (0x04, 6, None),
    (0x05, 4, None), (0x05, 0, 6), (0x06, 4, None), (0x07, 4, None), (0x07, 5, 6),
    (0x01, 100, 2), (0x02, 100, 2), (0x03, 4, 2), (0x00, 4, 1), (0x08, 4, 1), (0xFF, 0, 1),
])
def test_the_pdu_rule(pdu_type, length, verdict):
    from pacs.wire import check_pdu

    bad = check_pdu(pdu_type, length, MAX_PDU)
    assert (bad[0] if bad else None) == verdict


def test_reads_are_capped_before_allocation():
    from pacs.wire import recv_up_to

    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError):
            recv_up_to(a, 1 << 40, cap=MAX_PDU + 6)  # would be a 1 TiB bytearray
        b.sendall(b"abc")
        b.close()
        assert recv_up_to(a, 6, cap=6) == b"abc"
    finally:
        a.close()


@pytest.mark.skipif(pdu.TCP_QUICKACK is None, reason="TCP_QUICKACK is Linux's")
@pytest.mark.parametrize("on", [True, False], ids=["quickack", "off"])
def test_the_data_phase_acknowledges_each_pdu_at_once(on, monkeypatch):
    """The socket data phase asks the kernel for an immediate ACK after each PDU it reads, so a
    modality that keeps Nagle's algorithm on is not held by the delayed ACK (up to 40 ms; README,
    "How the PACS is built for speed"). Real code on a real loopback TCP connection, in this process: the
    socket is put in delayed-ACK mode, a P-DATA-TF (the first fragment of a command) arrives, and
    once the data phase has taken it the socket is in quickack mode (with wire.QUICKACK off, not)."""
    import threading
    from types import SimpleNamespace

    from pacs import wire

    monkeypatch.setattr(wire, "QUICKACK", on)
    client, server = tcp_pair()
    assoc = SimpleNamespace(accepted_contexts=[SimpleNamespace(context_id=1)],
                            requestor=SimpleNamespace(maximum_length=0))
    phase = wire.DataPhase(assoc, server, echo=lambda a: 0, store=lambda *a: 0, max_pdu_in=MAX_PDU,
                           idle_timeout=10)
    ended: list[BaseException] = []

    def serve() -> None:
        try:
            phase._serve()
        except BaseException as exc:  # noqa: BLE001 - the client closes: PeerGone, as expected
            ended.append(exc)

    t = threading.Thread(target=serve, daemon=True)
    try:
        server.setsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK, 0)
        t.start()
        fragment = b"\x00\x00\x00\x00"  # of a command set: more to come (not the last fragment)
        client.sendall(pdu.pdu(pdu.P_DATA_TF, struct.pack(">IBB", len(fragment) + 2, 1, 0x01) + fragment))
        wait_for(lambda: phase.msg.command == fragment, what="the data phase to take the fragment")
        assert server.getsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK) == int(on)
    finally:
        client.close()
        t.join(10)
        server.close()
    assert ended and isinstance(ended[0], wire.PeerGone)


@pytest.mark.skipif(pdu.TCP_QUICKACK is None, reason="TCP_QUICKACK is Linux's")
@pytest.mark.parametrize("on", [True, False], ids=["quickack", "off"])
def test_pynetdicom_loops_acknowledge_each_pdu_at_once_too(on, monkeypatch):
    """Under pynetdicom's own loops (verbose, refusal and fault modes, Storage Commitment, Q/R, both
    engines) the PACS reads through ``FastSocket.recv`` and its PDU guard: the guard asks for the
    immediate ACK once each PDU's header is read and again after its body. Real code on a real
    loopback TCP connection."""
    from types import SimpleNamespace

    from pacs import wire
    from pacs.guard import PduGuard

    monkeypatch.setattr(wire, "QUICKACK", on)
    client, server = tcp_pair()
    try:
        assoc = SimpleNamespace(dul=SimpleNamespace(state_machine=SimpleNamespace(current_state="Sta6")),
                                acceptor=SimpleNamespace(maximum_length=MAX_PDU), lab_session=None)
        guard = PduGuard(assoc)
        server.setsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK, 0)
        fragment = b"\x00\x00\x00\x00"
        client.sendall(pdu.pdu(pdu.P_DATA_TF, struct.pack(">IBB", len(fragment) + 2, 1, 0x01) + fragment))

        def read(n: int) -> bytearray:
            return pdu.recv_up_to(server, n)

        header = guard.recv(server, 6, read)
        assert header[0] == 0x04 and server.getsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK) == int(on)
        server.setsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK, 0)
        body = guard.recv(server, struct.unpack(">I", header[2:6])[0], read)
        assert bytes(body[6:]) == fragment
        assert server.getsockopt(socket.IPPROTO_TCP, pdu.TCP_QUICKACK) == int(on)
    finally:
        client.close()
        server.close()
