"""The PACS's refusal mode and fault injection through the admin API and on the
web page: switchable at run time, validated in plain words, recorded in events."""

from __future__ import annotations

import re

import pytest
from admin_helpers import TOKEN

from dicomlab.settings import REFUSAL_MODES

FAULTS = ("fault_delay_ms", "fault_abort_after", "fault_status", "fault_stall")


def test_get_scp_shows_the_refusal_mode_and_faults(api):
    s = api.get("/api/scp").get_json()
    assert s["refusal_mode"] == "reject"
    assert (s["fault_delay_ms"], s["fault_abort_after"], s["fault_status"], s["fault_stall"]) == (0, 0, 0, False)


@pytest.mark.parametrize("mode", list(REFUSAL_MODES))
def test_every_refusal_mode_can_be_chosen(api, registry, mode):
    r = api.patch("/api/scp", json={"refusal_mode": mode})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["refusal_mode"] == mode
    assert registry.get_listener().refusal_mode == mode


def test_faults_switch_on_and_off_at_run_time_with_an_event(api, registry):
    on = {"fault_delay_ms": 1500, "fault_abort_after": 3, "fault_status": 0xA700, "fault_stall": True}
    r = api.patch("/api/scp", json=on)
    assert r.status_code == 200, r.get_json()
    assert {k: r.get_json()[k] for k in FAULTS} == on
    assert registry.get_listener().faults() == on  # what the PACS reads on the next association
    [ev] = registry.read_events(types={"settings-changed"})
    assert ev.source == "admin-api"
    for words in ("fault_delay_ms 0 → 1500", "fault_abort_after 0 → 3", "fault_status 0 → 42752", "fault_stall off → on"):
        assert words in ev.message
    r = api.patch("/api/scp", json={"fault_delay_ms": 0, "fault_abort_after": 0, "fault_status": 0, "fault_stall": False})
    assert r.status_code == 200
    assert registry.get_listener().faults() == {}
    assert len(registry.read_events(types={"settings-changed"})) == 2


INVALID = [
    ({"refusal_mode": "shrug"}, "refusal_mode", "refusal_mode is one of reject, abort, dimse-failure, close"),
    ({"refusal_mode": 1}, "refusal_mode", ""),
    ({"fault_delay_ms": -1}, "fault_delay_ms", "from 0 to 600000"),
    ({"fault_delay_ms": 600_001}, "fault_delay_ms", "from 0 to 600000"),
    ({"fault_delay_ms": "100"}, "fault_delay_ms", ""),
    ({"fault_abort_after": 1.5}, "fault_abort_after", ""),
    ({"fault_abort_after": -3}, "fault_abort_after", "from 0 to 1000000"),
    ({"fault_status": 0x10000}, "fault_status", "from 0 to 65535"),
    ({"fault_status": "0xA700"}, "fault_status", ""),
    ({"fault_stall": "yes please"}, "fault_stall", ""),
]


@pytest.mark.parametrize(("body", "field", "words"), INVALID)
def test_invalid_refusal_mode_or_fault_is_refused_in_plain_words(api, registry, body, field, words):
    before = registry.get_listener()
    r = api.patch("/api/scp", json=body)
    assert r.status_code == 422, r.get_json()
    fields = {k.split(".")[0]: v for k, v in r.get_json()["detail"]["fields"].items()}
    assert field in fields
    assert words in " ".join(fields[field])
    assert registry.get_listener() == before  # nothing half-applied


def test_openapi_documents_the_new_settings(client):
    spec = client.get("/api/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    patch = next(v for k, v in schemas.items() if k.startswith("ScpPatch"))["properties"]
    assert patch["refusal_mode"]["enum"] == list(REFUSAL_MODES)
    assert (patch["fault_status"]["minimum"], patch["fault_status"]["maximum"]) == (0, 0xFFFF)
    assert patch["fault_stall"]["type"] == "boolean"
    out = next(v for k, v in schemas.items() if k.startswith("ScpOut"))["properties"]
    assert {"refusal_mode", *FAULTS} <= set(out)


def test_the_web_page_shows_and_sends_them(client):
    page = client.get("/").get_data(as_text=True)
    options = re.findall(r'<option value="([^"]+)"', page.split('id="scp-refusal_mode"', 1)[1].split("</select>")[0])
    assert options == list(REFUSAL_MODES)
    for name in FAULTS:
        assert f'id="scp-{name}"' in page and f'data-err="scp.{name}"' in page
    js = client.get("/static/listener.js").get_data(as_text=True)  # the listener form
    for name in ("refusal_mode", *FAULTS):
        assert f'$("#scp-{name}")' in js
        assert f"{name}:" in js  # in the PATCH body
    assert TOKEN not in page  # the token never goes into the page
