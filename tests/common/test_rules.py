"""The shared rules: AE titles (PS3.5), hosts, ports, settings and their Redis encoding."""

from __future__ import annotations

import pytest

from dicomlab.aetitle import (
    check_ae_title,
    check_host,
    check_port,
    near_miss,
    resolve_host,
    same_address,
    same_ae_title,
)
from dicomlab.errors import AETitleError, ValidationError
from dicomlab.settings import ListenerSettings, Node


@pytest.mark.parametrize("value,expected", [
    ("CT01", "CT01"), ("  CT01  ", "CT01"), ("ct01", "ct01"), ("A B", "A B"), ("X" * 16, "X" * 16),
    ("CT_01-A.b", "CT_01-A.b"),
])
def test_valid_ae_titles(value, expected):
    assert check_ae_title(value) == expected


@pytest.mark.parametrize("value,words", [
    ("X" * 17, "at most 16 characters"), ("", "empty or only spaces"), ("    ", "empty or only spaces"),
    ("CT\\01", "backslash"), ("CT\t01", "control characters"), ("CT\n", "control characters"),
    ("CTé", "plain ASCII"), (42, "must be text"),
])
def test_invalid_ae_titles_say_why_in_plain_words(value, words):
    with pytest.raises(AETitleError, match=words):
        check_ae_title(value)


def test_ae_title_comparison_is_case_sensitive_spaces_not_significant():
    assert same_ae_title("CT01 ", " CT01")
    assert not same_ae_title("CT01", "ct01")
    assert near_miss("ct01", {"CT01", "MR01"}) == "CT01"
    assert near_miss("CT01", {"CT01"}) is None
    assert near_miss("XX", {"CT01"}) is None


@pytest.mark.parametrize("value,expected", [
    ("192.168.1.10", "192.168.1.10"), ("::1", "::1"), ("ct-simulator", "ct-simulator"),
    ("PACS.example.org.", "pacs.example.org"),
])
def test_valid_hosts(value, expected):
    assert check_host(value) == expected


@pytest.mark.parametrize("value", ["", "bad host", "-lead.example", "a..b", "300.1.1.1", "under_score", "x" * 64])
def test_invalid_hosts(value):
    with pytest.raises(ValidationError):
        check_host(value)


@pytest.mark.parametrize("value", [0, 65536, -1, "104", 1.5, True])
def test_invalid_ports(value):
    with pytest.raises(ValidationError):
        check_port(value)


def test_resolution_and_address_comparison():
    assert resolve_host("127.0.0.1") == {"127.0.0.1"}
    assert "127.0.0.1" in resolve_host("localhost")
    assert same_address("::ffff:127.0.0.1", {"127.0.0.1"})
    assert not same_address("127.0.0.2", {"127.0.0.1"})
    with pytest.raises(OSError):
        resolve_host("no-such-host.invalid")


def test_settings_round_trip_through_redis_encoding():
    s = ListenerSettings(ae_title="PACS", port=104, verbose=True, max_associations=3,
                         refusal_mode="abort", fault_status=0xA700, fault_stall=True).validate()
    assert ListenerSettings.from_redis(s.to_redis()) == s
    n = Node(ae_title=" CT01 ", host="10.0.0.5", port=104, services=["C-STORE", "C-ECHO"]).validate()
    assert n.ae_title == "CT01" and n.services == ["C-ECHO", "C-STORE"]
    assert Node.from_redis(n.to_redis()) == n


@pytest.mark.parametrize("changes,field", [
    ({"port": 0}, "port"), ({"max_associations": 0}, "max_associations"), ({"verbose": "yes"}, "verbose"),
    ({"transfer_syntaxes": []}, "transfer_syntaxes"), ({"sop_classes": ["1.2.x"]}, "sop_classes"),
    ({"refusal_mode": "ignore"}, "refusal_mode"), ({"fault_status": 0x10000}, "fault_status"),
])
def test_invalid_listener_settings_name_the_field(changes, field):
    with pytest.raises(ValidationError) as e:
        ListenerSettings(**changes).validate()
    assert e.value.field == field
