"""Untrusted text and the admin API / page: hostile AE titles and UIDs are refused in plain words;
a patient name with markup and control characters is shown as text, escaped, never run."""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from test_admin_browser import browser, page  # noqa: F401  (fixtures: one Chromium set-up)

from lab import add_node, events_of, wait_for


@pytest.mark.parametrize(("title", "words"), [
    ("CT\x1b[2J", "control characters"), ("CT\r\nX", "control characters"), ("CT\x00", "control characters"),
    ("CT\x7f", "control characters"), ("CT\x9b", "plain ASCII"), ("CT\u202e", "plain ASCII"),
])
def test_node_ae_title_with_control_characters_is_refused_in_plain_words(api, registry, title, words):
    r = api.post("/api/nodes", json={"ae_title": title, "host": "127.0.0.1", "port": 104})
    assert r.status_code == 422, r.get_json()
    data = r.get_json()
    assert words in data["error"] and "ae_title" in data["detail"]["fields"]
    assert "\x1b" not in r.get_data(as_text=True)  # the answer itself carries no raw control character
    assert registry.list_nodes() == []


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2\n", "1.2.840.10008.1.2\r", "1.2.840.10008.1.²"])
def test_listener_uid_lists_refuse_a_uid_that_is_not_whole(api, registry, uid):
    r = api.patch("/api/scp", json={"transfer_syntaxes": [uid]})
    assert r.status_code == 422, r.get_json()
    assert "not a valid DICOM UID" in r.get_json()["error"]
    assert uid not in registry.get_listener().transfer_syntaxes


def test_get_study_with_a_newline_in_the_uid_is_not_found(api):
    assert api.get("/api/studies/1.2.3%0A").status_code == 404


HOSTILE = "<img src=x onerror=document.title='pwned'>\x1b[2J\r\nX"


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore:The number of PN components")  # the '=' in the markup
def test_page_shows_a_hostile_patient_name_as_text(page, gunicorn_server, pacs, registry):  # noqa: F811
    """A real PACS stores an instance whose Patient Name is markup with control characters; the live
    log and the studies table show it as text with the controls escaped, and nothing runs."""
    from dicomdata import CT, as_file, ct_dataset
    from playwright.sync_api import expect
    from pynetdicom import AE
    from test_admin_browser import login, shot

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, gunicorn_server)
    add_node(registry, "CT01")
    ds = ct_dataset(generate_uid(), generate_uid(), 1)
    ds.PatientName = HOSTILE
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CT, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="PACS")
    assert assoc.is_established
    status = assoc.send_c_store(as_file(ds)).Status
    assoc.release()
    assert status == 0
    wait_for(lambda: events_of(registry, "store-received"), what="store-received")

    line = page.locator("#log-lines li[data-type=store-received] .msg").first
    expect(line).to_contain_text("<img src=x onerror=document.title='pwned'>")
    expect(line).to_contain_text("\\x1b[2J\\r\\nX")
    cell = page.locator("#study-rows td").first
    expect(cell).to_contain_text("<img src=x onerror=")
    shot(page, "untrusted-text")
    assert page.locator("#log-lines img, #study-rows img").count() == 0
    assert "\x1b" not in cell.inner_text() and "\x1b" not in line.inner_text()
    assert page.title() != "pwned" and not dialogs
