"""``pacs.rawwalk`` reads exactly what pydicom reads: ``index_fields`` through the walker equals
``index_fields_pydicom`` (pydicom's ``read_dataset``), and the data phase's command set
(``wire.decode_command``) equals ``pynetdicom.dsutils.decode`` -- for the CT simulator's
instances, ``tests/dicomdata.py``'s, pynetdicom's own command sets, and hypothesis-made raw
datasets (any subset of the index tags, character sets, sequences of defined and undefined
length, private tags, odd and empty values, truncated or damaged bytes). Equal means: the same
RawDataElement tuples in the same order, the same encoding, the same converted values, the same
index fields, the same exception, and the stream left where pydicom leaves it.

A guard checks that the walker itself (not the fallback) reads a normal CT slice and a normal
C-STORE-RQ; a hash test notices a pydicom / pynetdicom change in the functions it mirrors."""

from __future__ import annotations

import hashlib
import inspect
import struct
from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import filereader
from pydicom.charset import convert_encodings, encode_string
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import dsutils
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE

from dicomlab.dicom import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from pacs import instance, rawwalk, wire
from tests.dicomdata import CT, ct_dataset

SYNTAXES = [(EXPLICIT_VR_LE, False), (IMPLICIT_VR_LE, True)]


def _outcome(call: Any) -> tuple:
    try:
        return ("ok", call())
    except Exception as exc:  # the same exception, in words, both ways
        return ("error", type(exc).__name__, str(exc))


def _pydicom_read(raw: bytes, implicit: bool) -> tuple[Dataset, int]:
    fp = BytesIO(raw)
    ds = filereader.read_dataset(fp, implicit, True, stop_when=lambda tag, vr, length: tag > 0x00200013,
                                 specific_tags=instance._INDEX_TAGS)
    return ds, fp.tell()


def _same_dataset(ours: Dataset, theirs: Dataset) -> None:
    assert list(ours._dict.items()) == list(theirs._dict.items())  # RawDataElements, before conversion
    assert all(type(k) is type(t) for k, t in zip(ours._dict, theirs._dict, strict=True))
    assert (ours.original_encoding, ours.original_character_set, ours._character_set, ours._parent_encoding) == \
        (theirs.original_encoding, theirs.original_character_set, theirs._character_set, theirs._parent_encoding)
    for tag in list(theirs._dict):  # then converted, lazily, by pydicom: the same values
        assert _outcome(lambda t=tag: repr(ours[t])) == _outcome(lambda t=tag: repr(theirs[t]))


def assert_index_equal(raw: bytes, transfer_syntax: str, implicit: bool, walked: bool | None = None) -> None:
    """index_fields (walker, or its fallback) == index_fields_pydicom, on bytes and on a BytesIO."""
    ours = _outcome(lambda: instance.index_fields(raw, transfer_syntax, "CT01"))
    assert ours == _outcome(lambda: instance.index_fields_pydicom(raw, transfer_syntax, "CT01"))
    fp_ours, fp_theirs = BytesIO(b"\0" * 6 + raw), BytesIO(b"\0" * 6 + raw)  # not at the start of its buffer
    fp_ours.seek(6)
    fp_theirs.seek(6)
    assert _outcome(lambda: instance.index_fields(fp_ours, transfer_syntax, "CT01")) == \
        _outcome(lambda: instance.index_fields_pydicom(fp_theirs, transfer_syntax, "CT01"))
    assert fp_ours.tell() == fp_theirs.tell()
    read = rawwalk.walk(raw, 0, implicit, instance._INDEX_TAG_SET, instance._LAST_INDEX_TAG)
    if walked is not None:
        assert (read is not None) == walked
    if read is not None:
        ours, theirs = _outcome(lambda: rawwalk.dataset(read[0], implicit)), _outcome(lambda: _pydicom_read(raw, implicit))
        assert ours[0] == theirs[0]
        if ours[0] == "error":  # e.g. a Specific Character Set pydicom cannot convert
            assert ours == theirs
        else:
            assert read[1] == theirs[1][1]
            _same_dataset(ours[1], theirs[1][0])


# --- real datasets -------------------------------------------------------------------------------

def _simulator_instances() -> list[Dataset]:
    from ct_simulator.iod import StudyPlan, iter_instances
    plans = [StudyPlan(slices=2, rows=32, cols=32), StudyPlan(slices=1, rows=16, cols=16, seed=7,
                                                            patient_name="MÜLLER^JÖRG", accession_number="")]
    return [i.dataset for plan in plans for i in iter_instances(plan)]


def _dicomdata_instances() -> list[Dataset]:
    plain = ct_dataset("1.2.3.4", "1.2.3.4.5", 3, rows=8, cols=8)
    latin = ct_dataset("1.2.3.5", "1.2.3.5.1", 1, rows=8, cols=8)
    latin.SpecificCharacterSet = "ISO_IR 100"
    latin.PatientName = "Gérard^Hélène"
    utf8 = ct_dataset("1.2.3.6", "1.2.3.6.1", 2, rows=8, cols=8)
    utf8.SpecificCharacterSet = "ISO_IR 192"
    utf8.PatientName = "Иванов^Пётр"
    utf8.StudyDescription = "Тело"
    jis = ct_dataset("1.2.3.7", "1.2.3.7.1", 4, rows=8, cols=8)
    jis.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    jis.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    sq = ct_dataset("1.2.3.8", "1.2.3.8.1", 5, rows=8, cols=8)
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT, "1.2.3.8.9"
    sq.ReferencedImageSequence = Sequence([item])  # (0008,1140): between the wanted tags
    undefined = ct_dataset("1.2.3.9", "1.2.3.9.1", 6, rows=8, cols=8)
    undefined.ReferencedImageSequence = Sequence([item])
    undefined["ReferencedImageSequence"].is_undefined_length = True
    return [plain, latin, utf8, jis, sq, undefined]


@pytest.mark.parametrize(("transfer_syntax", "implicit"), SYNTAXES)
def test_ct_simulator_instances(transfer_syntax: str, implicit: bool) -> None:
    for ds in _simulator_instances():
        assert_index_equal(dsutils.encode(ds, implicit, True), transfer_syntax, implicit, walked=True)


@pytest.mark.parametrize(("transfer_syntax", "implicit"), SYNTAXES)
def test_dicomdata_instances(transfer_syntax: str, implicit: bool) -> None:
    datasets = _dicomdata_instances()
    for ds in datasets:
        raw = dsutils.encode(ds, implicit, True)
        undefined = "ReferencedImageSequence" in ds and ds["ReferencedImageSequence"].is_undefined_length
        assert_index_equal(raw, transfer_syntax, implicit, walked=not undefined)
    names = [instance.index_fields(dsutils.encode(ds, implicit, True), transfer_syntax, "X")["patient_name"]
             for ds in datasets[1:4]]
    assert names == ["Gérard^Hélène", "Иванов^Пётр", "Yamada^Tarou=山田^太郎=やまだ^たろう"]


def test_declines_what_it_does_not_handle() -> None:
    raw = dsutils.encode(_dicomdata_instances()[0], False, True)
    assert rawwalk.read(raw, True) is None  # explicit VR read as implicit: pydicom switches and warns
    assert rawwalk.read(raw[:200], False) is None  # an element running past the end
    assert rawwalk.read(raw, False, last=0x00200013) is not None
    assert rawwalk.read(raw.replace(b"UI", b"ui", 1), False) is None  # a VR pydicom does not know
    # found by hypothesis: pydicom's generator converts (and fails on) a Specific Character Set that a
    # second one replaces; the walker declines it, so the same ValueError comes out
    twice = b"\x08\x00\x05\x00CS\x02\x00\x00\x01\x08\x00\x05\x00CS\x00\x00"
    assert rawwalk.read(twice, False, instance._INDEX_TAG_SET) is None
    assert_index_equal(twice, EXPLICIT_VR_LE, False)
    with pytest.raises(ValueError, match="null"):
        instance.index_fields(twice, EXPLICIT_VR_LE, "X")
    with pytest.raises(struct.error):  # pydicom's own error for a cut 4-byte length, via the fallback
        instance.index_fields(raw[:2] + b"\x00\x00OB\x00\x00\x01", EXPLICIT_VR_LE, "X")


# --- hypothesis: raw datasets ----------------------------------------------------------------------

_CHARSETS = {"": ["iso8859"], "ISO_IR 100": ["latin_1"], "ISO_IR 192": ["UTF8"],
             "\\ISO 2022 IR 87": convert_encodings(["", "ISO 2022 IR 87"])}
_NAMES = ["DOE^JOHN", "Gérard^Hélène", "Иванов^Пётр", "Yamada^Tarou=山田^太郎=やまだ^たろう", "", "Ä"]
_VR_OF = {0x00080005: "CS", 0x00080016: "UI", 0x00080018: "UI", 0x00080020: "DA", 0x00080030: "TM",
          0x00080050: "SH", 0x00080060: "CS", 0x00081030: "LO", 0x0008103E: "LO", 0x00100010: "PN",
          0x00100020: "LO", 0x00100030: "DA", 0x00100040: "CS", 0x0020000D: "UI", 0x0020000E: "UI",
          0x00200010: "SH", 0x00200011: "IS", 0x00200013: "IS"}
_LONG = {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UC", "UN", "UR", "UT"}
_FILLER_TAGS = [0x00080008, 0x00080012, 0x00081140, 0x00090010, 0x00091001, 0x00180050, 0x00190010,
                0x00191002, 0x00200032, 0x00280010, 0x7FE00010, 0x00100021, 0x0008103F]
_SQ_TAGS = [0x00080006, 0x00081032, 0x00081110, 0x00081140, 0x00091010, 0x00100050, 0x00200012]


def _element(tag: int, vr: str, value: bytes, implicit: bool, undefined: bool = False) -> bytes:
    length = 0xFFFFFFFF if undefined else len(value)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", length) + value
    if vr in _LONG:
        return head + vr.encode() + b"\0\0" + struct.pack("<L", length) + value
    return head + vr.encode() + struct.pack("<H", length) + value


def _sequence(tag: int, undefined: bool, item_undefined: bool, implicit: bool) -> bytes:
    inner = _element(0x00081155, "UI", b"1.2.3.4\0", implicit)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF if item_undefined else len(inner)) + inner
    if item_undefined:
        item += struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    if not undefined:
        return _element(tag, "SQ", item, implicit)
    return _element(tag, "SQ", item, implicit, undefined=True) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


_text = st.text(st.sampled_from("0123456789.^ ABCZaz-\\"), max_size=24).map(str.encode)


@st.composite
def raw_datasets(draw: Any, implicit: bool) -> bytes:
    charset = draw(st.sampled_from(sorted(_CHARSETS)))
    parts: list[tuple[int, bytes]] = []
    if draw(st.booleans()):
        parts.append((0x00080005, _element(0x00080005, "CS", charset.encode(), implicit)))
    for tag in draw(st.lists(st.sampled_from(sorted(_VR_OF)), max_size=18)):
        if tag == 0x00100010:
            value = encode_string(draw(st.sampled_from(_NAMES)), _CHARSETS[charset])
        else:
            value = draw(_text | st.binary(max_size=12))  # odd lengths, empty, any bytes
        vr = draw(st.sampled_from([_VR_OF[tag]] * 4 + ["UN", "LO", "OB"]))
        parts.append((tag, _element(tag, vr, value, implicit)))
    for tag in draw(st.lists(st.sampled_from(_FILLER_TAGS), max_size=6)):
        vr = draw(st.sampled_from(["LO", "OB", "UN", "US", "DS", "OW"]))
        parts.append((tag, _element(tag, vr, draw(st.binary(max_size=40)), implicit)))
    for tag in draw(st.lists(st.sampled_from(_SQ_TAGS), max_size=3)):
        parts.append((tag, _sequence(tag, draw(st.booleans()), draw(st.booleans()), implicit)))
    if draw(st.booleans()):
        parts.sort(key=lambda p: p[0])  # otherwise in any order: the stop is at the first tag beyond
    raw = b"".join(p[1] for p in parts)
    damage = draw(st.sampled_from(["none", "none", "cut", "byte"]))
    if damage == "cut" and raw:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif damage == "byte" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return raw


@pytest.mark.filterwarnings("ignore")  # pydicom warns about damaged data (the same both ways)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), implicit=st.booleans())
def test_hypothesis_datasets(data: Any, implicit: bool) -> None:
    transfer_syntax = IMPLICIT_VR_LE if implicit else EXPLICIT_VR_LE
    assert_index_equal(data.draw(raw_datasets(implicit)), transfer_syntax, implicit)


# --- command sets ----------------------------------------------------------------------------------

def _command_set(kind: str, message_id: int = 1, sop_instance: str = "1.2.3.4.5", move: bool = False) -> bytes:
    if kind == "echo":
        p: Any = C_ECHO()
        p.MessageID, p.AffectedSOPClassUID = message_id, "1.2.840.10008.1.1"
        msg: Any = C_ECHO_RQ()
    else:
        p = C_STORE()
        p.MessageID, p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = message_id, CT, sop_instance
        p.Priority = 0
        if move:
            p.MoveOriginatorApplicationEntityTitle, p.MoveOriginatorMessageID = "MOVESCU", 17
        msg = C_STORE_RQ()
    msg.primitive_to_message(p)
    return dsutils.encode(msg.command_set, True, True)


def _fields(cs: Dataset) -> tuple:
    """What the data phase reads of a command set (``_command_complete``, ``_dispatch``)."""
    return tuple(repr(cs.get(k)) for k in ("CommandField", "MessageID", "CommandDataSetType",
                                           "AffectedSOPInstanceUID", "AffectedSOPClassUID", "Priority",
                                           "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"))


def assert_command_equal(raw: bytes, walked: bool | None = None) -> None:
    ours = _outcome(lambda: wire.decode_command(bytearray(raw)))
    theirs = _outcome(lambda: dsutils.decode(BytesIO(raw), True, True))
    assert ours[0] == theirs[0]
    if ours[0] == "error":
        assert ours == theirs
    else:
        _same_dataset(ours[1], theirs[1])
        assert _outcome(lambda: _fields(ours[1])) == _outcome(lambda: _fields(theirs[1]))
    if walked is not None:
        assert (rawwalk.read(bytearray(raw), True) is not None) == walked


@pytest.mark.parametrize(("kind", "move"), [("echo", False), ("store", False), ("store", True)])
def test_pynetdicom_command_sets(kind: str, move: bool) -> None:
    raw = _command_set(kind, 4711, "1.2.826.0.1.3680043.9.1", move)
    assert_command_equal(raw, walked=True)
    msg = C_STORE_RQ() if kind == "store" else C_ECHO_RQ()  # pynetdicom reads ours as its own
    msg.command_set = wire.decode_command(bytearray(raw))
    mine = msg.message_to_primitive()
    msg.command_set = dsutils.decode(BytesIO(raw), True, True)
    assert vars(mine) == vars(msg.message_to_primitive())


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["echo", "store"]), message_id=st.integers(0, 65535), move=st.booleans(),
       uid=st.text(st.sampled_from("0123456789."), min_size=1, max_size=64),
       damage=st.sampled_from(["none", "cut", "byte"]), at=st.integers(0, 200), byte=st.integers(0, 255))
def test_hypothesis_command_sets(kind: str, message_id: int, move: bool, uid: str, damage: str, at: int,
                                 byte: int) -> None:
    raw = _command_set(kind, message_id, uid, move)
    at = at % len(raw)
    if damage == "cut":
        raw = raw[:at]
    elif damage == "byte":
        raw = raw[:at] + bytes([byte]) + raw[at + 1:]
    assert_command_equal(raw, walked=True if damage == "none" else None)


# --- guards ----------------------------------------------------------------------------------------

def test_walker_handles_a_normal_ct_slice_and_c_store_rq(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the walker silently declined everything, the speed would go unnoticed: with the fallbacks
    made to fail, a 512x512 CT slice from the simulator and a C-STORE-RQ are still read."""
    from ct_simulator.iod import StudyPlan, iter_instances
    ds = next(iter(iter_instances(StudyPlan(slices=1)))).dataset
    raw = dsutils.encode(ds, False, True)
    expected = instance.index_fields_pydicom(raw, EXPLICIT_VR_LE, "CT01")

    def no_fallback(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the pydicom fallback was used")

    monkeypatch.setattr(instance, "index_fields_pydicom", no_fallback)
    monkeypatch.setattr(wire, "decode", no_fallback)
    meta = instance.understand(raw, EXPLICIT_VR_LE, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "CT01")
    assert meta == expected
    cs = wire.decode_command(bytearray(_command_set("store", 9, str(ds.SOPInstanceUID))))
    assert (cs.CommandField, cs.MessageID, cs.AffectedSOPInstanceUID) == (1, 9, ds.SOPInstanceUID)


# sha256 of inspect.getsource, pydicom 3.0.2 / pynetdicom 3.0.4: rawwalk mirrors these
MIRRORED = {
    "pydicom.filereader.data_element_generator": "cf5cdd64dcf5572087ce61108fb52b9f7808129a5e539197486263b96fec1450",
    "pydicom.filereader.read_dataset": "12a694baec9551995d72333693e8115744a43830e1a7af66f1bc314b859da6ed",
    "pydicom.filereader._is_implicit_vr": "af95884d0fe396becef6d6dd2d558ace62a447bda61996bd4fc13ee51d1051cc",
    "pynetdicom.dsutils.decode": "33aaa74edebf31884a6626b1df7173cc52e9a26f7e00d78fe95247c9f8e24e49",
}


def test_mirrored_sources_unchanged() -> None:
    changed = []
    for name, digest in MIRRORED.items():
        module, function = name.rsplit(".", 1)
        source = inspect.getsource(getattr(__import__(module, fromlist=[function]), function))
        if hashlib.sha256(source.encode()).hexdigest() != digest:
            changed.append(name)
    assert not changed, (f"{changed} changed upstream: re-read pacs/rawwalk.py against them (and run this "
                         "file's equivalence tests), then update MIRRORED")


_TEXT_CHARSETS = [None, "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", "ISO_IR 13", "GB18030", "ISO_IR 144", "GBK",
             "ISO 2022 IR 149", "ISO 2022 IR 58", "ISO_IR 6", "ISO_IR 166", "ISO_IR 127", "ISO_IR 138",
             "ISO 2022 IR 6\\ISO 2022 IR 87", "ISO 2022 IR 100", "ISO_IR 101"]
_TEXT_KEYWORDS = [("PatientName", "PN"), ("PatientID", "LO"), ("StudyDescription", "LO"),
                  ("SeriesDescription", "LO"), ("StudyID", "SH")]


@settings(max_examples=600, deadline=None)
@given(keyword_vr=st.sampled_from(_TEXT_KEYWORDS), charset=st.sampled_from(_TEXT_CHARSETS), implicit=st.booleans(),
       value=st.one_of(st.binary(max_size=40), st.text(alphabet=st.characters(max_codepoint=127), max_size=40)
                       .map(lambda t: t.encode("ascii")),
                       st.sampled_from([b"DOE^JOHN", b"DOE^JOHN ", b"A^B==", b"=ABC", b"A^B^C^D^E", b"  X  \x00",
                                        b"", b" ", b"\x00", b"ONE\\TWO", b"\x1b$B", b"A\tB\nC", b"Yen\x5cSign"])))
def test_text_fast_path_equals_pydicom(keyword_vr, charset, implicit, value) -> None:
    """``instance._text`` decodes plain ASCII itself; whatever the bytes, VR and character set,
    it answers what pydicom's conversion answers (or fails where pydicom fails)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    keyword, vr = keyword_vr
    tag = instance._TEXT[keyword][0]
    elements = {BaseTag(tag): RawDataElement(BaseTag(tag), None if implicit else vr, len(value), value, 0,
                                             implicit, True)}
    if charset is not None:
        cs = charset.encode()
        elements[BaseTag(0x00080005)] = RawDataElement(BaseTag(0x00080005), None if implicit else "CS", len(cs),
                                                       cs, 0, implicit, True)
    outcomes = []
    for read in (instance._text, instance._text_pydicom):
        ds = rawwalk.dataset(dict(elements), implicit)  # a fresh Dataset each: pydicom converts in place
        try:
            outcomes.append(("ok", read(ds, keyword)))
        except Exception as exc:  # noqa: BLE001 - compared, not hidden
            outcomes.append(("error", type(exc).__name__))
    assert outcomes[0] == outcomes[1]


def test_text_fast_path_is_taken_for_plain_ascii(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard: a plain ASCII name must not go through pydicom (or the speed is gone unnoticed)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    tag = BaseTag(0x00100010)
    ds = rawwalk.dataset({tag: RawDataElement(tag, "PN", 8, b"DOE^JOHN", 0, False, True)}, False)
    monkeypatch.setattr(Dataset, "__getattr__", lambda self, name: (_ for _ in ()).throw(AssertionError(name)))
    assert instance._text(ds, "PatientName") == "DOE^JOHN"
