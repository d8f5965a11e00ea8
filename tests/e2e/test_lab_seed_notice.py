"""scripts/lab.py's rule for the listener settings: what is stored in Redis is in force; the
environment only seeds an empty registry, and `make up` says in one line when they differ."""

from __future__ import annotations

import pytest
from e2e_support import runtime


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("PACS_PORT", "PACS_AE_TITLE", "PACS_TLS_PORT"):
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


def test_the_tls_port_follows_the_same_rule(monkeypatch):
    monkeypatch.setenv("PACS_TLS_PORT", "2762")
    line = runtime.seed_notice({"port": "104", "ae_title": "PACS", "tls_port": "12762"})
    assert line is not None and line.startswith("PACS_TLS_PORT=2762 in the environment, but Redis stores TLS port "
                                                "12762: the stored value is in force"), line


def test_make_up_prints_the_live_tls_port():
    assert runtime.live_tls(True, "2762", {"tls_port": 12762}) == 12762  # the running PACS's port wins
    assert runtime.live_tls(True, "2762", {"tls_port": None}) is None  # running with TLS off
    assert runtime.live_tls(True, "2762") == 2762 and runtime.live_tls(False, "2762") is None
    live = {"ae_title": "PACS", "port": 104, "public": {"port": 11112}, "tls": 2762}
    lines = runtime.listener_lines("docker", live, {"PACS_TLS_PUBLISHED_PORT": "12762"})
    assert any(x.startswith("PACS TLS     127.0.0.1:12762  DICOM TLS (published to port 2762") for x in lines), lines
    lines = runtime.listener_lines("local", {**live, "tls": 41762}, {"PACS_TLS_DIR": "/lab/tls"})
    assert "PACS TLS     127.0.0.1:41762  DICOM TLS; lab CA: /lab/tls/ca.pem" in lines
    assert "PACS TLS     off" in runtime.listener_lines("local", {**live, "tls": None}, {})[1]
