"""scripts/lab.py's rule for the listener settings: what is stored in Redis is in force; the
environment only seeds an empty registry, and `make up` says in one line when they differ."""

from __future__ import annotations

import pytest
from e2e_support import runtime


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("PACS_PORT", "PACS_AE_TITLE"):
        monkeypatch.delenv(var, raising=False)


def test_no_notice_when_the_environment_sets_nothing_or_agrees(monkeypatch):
    stored = {"port": "52057", "ae_title": "PACS"}
    assert runtime.seed_notice(stored) is None
    monkeypatch.setenv("PACS_PORT", "52057")
    monkeypatch.setenv("PACS_AE_TITLE", "PACS")
    assert runtime.seed_notice(stored) is None
    monkeypatch.setenv("PACS_PORT", "41799")
    assert runtime.seed_notice({}) is None  # nothing stored yet: the environment seeds it


def test_one_line_says_the_stored_port_is_in_force(monkeypatch):
    monkeypatch.setenv("PACS_PORT", "41799")
    line = runtime.seed_notice({"port": "52057", "ae_title": "PACS"})
    assert line is not None and "\n" not in line
    assert line.startswith("PACS_PORT=41799 in the environment, but Redis stores port 52057: the stored value "
                           "is in force"), line
    assert "make reset" in line and "web page" in line


def test_port_and_ae_title_together_in_one_line(monkeypatch):
    monkeypatch.setenv("PACS_PORT", "104")
    monkeypatch.setenv("PACS_AE_TITLE", "OTHER")
    line = runtime.seed_notice({"port": "11104", "ae_title": "PACS"})
    assert line is not None and "\n" not in line
    assert "PACS_PORT=104 and PACS_AE_TITLE=OTHER in the environment, but Redis stores port 11104 and " \
           "AE title PACS: the stored values are in force" in line


def test_parse_stored_takes_the_json_line_of_the_one_off_container():
    assert runtime.parse_stored('noise\n{"port": "104", "ae_title": "PACS"}\n') == {"port": "104", "ae_title": "PACS"}
    assert runtime.parse_stored("{}\n") == {}
    assert runtime.parse_stored("Traceback ...\nredis.exceptions.ConnectionError\n") is None


def test_values_read_from_the_lab_are_printed_without_control_characters(monkeypatch):
    monkeypatch.setenv("PACS_AE_TITLE", "PACS")
    line = runtime.seed_notice({"ae_title": "EVIL\x1b[2J", "port": "104"})
    assert line is not None and "\x1b" not in line and "AE title EVIL?[2J" in line
    lines = runtime.listener_lines("local", {"ae_title": "X\x07", "port": 104, "public": None}, {})
    assert "\x07" not in "".join(lines) and "AE title X?" in lines[0]
