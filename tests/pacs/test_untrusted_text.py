"""Text from the network is never written raw: control characters are escaped on stdout, in the
event stream (so on the page) and in the simulator's output; UIDs are checked as whole strings."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from dicomdata import CT, as_file, ct_dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicomlab.aetitle import check_host, check_uid
from dicomlab.errors import ValidationError
from dicomlab.events import Event, EventLog
from dicomlab.text import safe_text
from lab import add_node, events_of, wait_for

# What must never reach a terminal or a page raw: C0 (but the line end we write), DEL, C1, and the
# line/paragraph separators and bidirectional controls.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
HOSTILE_NAME = "EVIL\x1b[2J\r\nFORGED INFO store-received\x9b^X"
CANNOT_UNDERSTAND = 0xC000


# -- the function ------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,shown", [
    ("\x1b[2J", "\\x1b[2J"), ("a\r\nb", "a\\r\\nb"), ("\x9b31m", "\\x9b31m"), ("\x00\x7f", "\\x00\\x7f"),
    ("tab\there", "tab\\there"), ("\u202egnp.exe", "\\u202egnp.exe"), ("x\u2028y", "x\\u2028y"),
    ("YAMADA^Taro=山田^太郎=やまだ^たろう", "YAMADA^Taro=山田^太郎=やまだ^たろう"), ("Müller\u3000Ж", "Müller\u3000Ж"),
    ("A\\B", "A\\B"), ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"), ("\udcff", "\\udcff"),
])
def test_safe_text_escapes_controls_and_keeps_printable_text(raw, shown):
    assert safe_text(raw) == shown


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text())
def test_safe_text_output_has_no_control_characters_and_is_stable(text):
    out = safe_text(text)
    assert not RAW_CONTROL.search(out.replace("\n", "\x0b"))  # a newline counts too
    assert safe_text(out) == out
    if not RAW_CONTROL.search(text) and "\n" not in text and not re.search("[\ud800-\udfff]", text):
        assert out == text  # nothing to escape: unchanged


def test_event_text_fields_are_made_safe_when_the_event_is_created():
    ev = Event("store-received", f"stored x (patient {HOSTILE_NAME})", calling_aet="CT\x1b]0;pwn\x07",
               called_aet="PA\nCS", peer="1.2.3.4\r", assoc_id="a1\x9b")
    for value in (ev.message, ev.calling_aet, ev.called_aet, ev.peer, ev.assoc_id, ev.line()):
        assert not RAW_CONTROL.search(value) and "\n" not in value and "\r" not in value
    assert "\\x1b[2J\\r\\n" in ev.message and ev.called_aet == "PA\\nCS"
    assert len(ev.line().splitlines()) == 1


def test_stream_and_stdout_carry_the_escaped_text(redis_url, registry, tmp_path):
    from dicomlab.registry import connect

    out = (tmp_path / "out.txt").open("w+")
    EventLog(connect(redis_url), "pacs", out=out).emit("store-received", f"patient {HOSTILE_NAME}",
                                                      calling_aet="CT\x1b[2J")
    out.seek(0)
    printed = out.read()
    assert printed.count("\n") == 1 and not RAW_CONTROL.search(printed)
    stored = events_of(registry, "store-received")[-1]
    assert stored.message == safe_text(f"patient {HOSTILE_NAME}") and stored.calling_aet == "CT\\x1b[2J"


# -- a real PACS, a real SCU ---------------------------------------------------------------------------
def _send(port: int, ds, calling: str = "CT01") -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(as_file(ds, ExplicitVRLittleEndian))
        return int(rsp.Status) if "Status" in rsp else -1
    finally:
        assoc.release()


def test_patient_name_with_control_characters_is_escaped_on_stdout_and_in_the_stream(pacs, registry):
    add_node(registry, "CT01")
    ds = ct_dataset(generate_uid(), generate_uid(), 1)
    ds.SpecificCharacterSet = "ISO_IR 100"  # Latin-1: 0x9B is the C1 control CSI, as sent
    ds.PatientName = HOSTILE_NAME
    assert _send(pacs.port, ds) == 0
    ev = wait_for(lambda: events_of(registry, "store-received"), what="store-received")[-1]
    assert not RAW_CONTROL.search(ev.message) and "\n" not in ev.message, repr(ev.message)
    assert "\\x1b[2J\\r\\nFORGED" in ev.message and "\\x9b" in ev.message  # shown, not dropped
    lines = [ln for ln in pacs.log().splitlines() if "store-received" in ln and "EVIL" in ln]
    assert len(lines) == 1, lines  # one line: the name's newline did not forge a second event line
    assert not RAW_CONTROL.search(lines[0].replace("\r", "\x0b")), repr(lines[0])
    assert "FORGED" in lines[0]
    assert not any(ln.startswith("FORGED") for ln in pacs.log().splitlines())


@pytest.mark.parametrize("which", ["sop_uid", "study_uid", "series_uid"])
def test_uid_with_a_trailing_newline_is_refused_by_storage(pacs, registry, which):
    """At the byte level (pydicom strips it before sending): "<uid>\n" in the dataset (and in the
    command, for the SOP Instance UID) is answered 0xC000 Cannot Understand, and nothing is stored."""
    from fuzz import cases as c
    from fuzz import wire as w

    add_node(registry, c.CALLING)
    uid = {"sop_uid": c.uids(7)[2], "study_uid": c.uids(7)[0], "series_uid": c.uids(7)[1]}[which] + "\n"
    ds = c.dataset(7, **{which: uid})
    cmd = w.command_set(w.store_rq_elements(uid if which == "sop_uid" else c.uids(7)[2]))
    out = w.exchange("127.0.0.1", pacs.port, [w.associate_rq("PACS", c.CALLING, c.contexts()[:2]),
                                             *w.message_pdus(3, cmd, ds), w.RELEASE_RQ], quiet=5)
    assert [(f, s) for f, s, _ in out.statuses] == [(0x8001, CANNOT_UNDERSTAND)], out.summary()
    assert [p for p in Path(pacs.storage_dir).rglob("*") if p.is_file()] == []
    ev = wait_for(lambda: events_of(registry, "store-failed"), what="store-failed")[-1]
    assert "not a valid UID" in ev.message and "\\n" in ev.message and "\n" not in ev.message


# -- the validators ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["1.2.3\n", "1.2.3\r", "\n1.2.3", "1.2.²", "1.2.١", "1.02.3", "1..2", "", "1" * 65,
                                 "1.2.3 ", "1.2.3\x00"])
def test_check_uid_refuses_anything_but_a_whole_uid(bad):
    with pytest.raises(ValidationError):
        check_uid(bad)


def test_check_uid_accepts_uids():
    for uid in ("1.2.840.10008.1.2", "0", "2.25.329800735698586629295641978511506172918", "1" * 64):
        assert check_uid(uid) == uid


@pytest.mark.parametrize("bad", ["host\n.example", "a\n.b", "exa\nmple.org"])
def test_check_host_refuses_a_newline_inside_a_label(bad):
    with pytest.raises(ValidationError):
        check_host(bad)


def test_listener_settings_refuse_a_uid_with_a_newline():
    from dicomlab.settings import ListenerSettings

    with pytest.raises(ValidationError):
        ListenerSettings(transfer_syntaxes=["1.2.840.10008.1.2\n"]).validate()
    with pytest.raises(ValidationError):
        ListenerSettings(sop_classes=["1.2.840.10008.5.1.4.1.1.²"]).validate()  # str.isdigit() took it


def test_storage_valid_uid_checks_the_whole_string():
    from pacs.storage import valid_uid

    assert valid_uid("1.2.3") and not valid_uid("1.2.3\n") and not valid_uid("1.2.3\n4")


def test_simulator_problem_and_terminal_lines_are_escaped(capsys):
    from ct_simulator import cli
    from ct_simulator.outcome import Problem

    p = Problem("rejected", "association rejected by PA\x1b[2JCS@1.2.3.4", "check \r\nthis")
    assert "\x1b" not in p.message and "\r" not in p.hint and "\\x1b[2J" in p.message
    cli._say(f"note: the PACS said {HOSTILE_NAME}")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and not RAW_CONTROL.search(out) and struct.calcsize("B") == 1
