"""The page's storage commitment section, live, in headless Chromium: a report the
PACS cannot deliver shows as retrying with its error, then as reported once the
node's port is fixed; the study row shows its commitment state."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid
from test_admin_browser import browser, login, page, shot  # noqa: F401 - fixtures
from test_admin_commitment import CT, SERVICES, _store_one

from ct_simulator.commit import request
from ct_simulator.listener import Listener
from ct_simulator.network import Link
from dicomlab.settings import Node
from lab import free_port

pytestmark = pytest.mark.browser


def test_commitment_section_follows_the_report(page, gunicorn_server, pacs, registry):  # noqa: F811
    from playwright.sync_api import expect

    registry.update_listener({"commitment_interval": 1, "commitment_attempts": 20})
    wrong = free_port()
    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=wrong, services=list(SERVICES)))
    login(page, gunicorn_server)
    _study, sop = _store_one(pacs)
    with Listener("CT01", 0, bind="127.0.0.1") as lst:
        link = Link(host="127.0.0.1", port=pacs.port, calling_aet="CT01", called_aet="PACS")
        assert request(link, generate_uid(), [(CT, sop)]) is None
        row = page.locator("#commitment-rows tr").first
        expect(row).to_have_attribute("data-state", "retrying", timeout=30_000)
        expect(row).to_contain_text(f"127.0.0.1:{wrong}: connection refused")
        shot(page, "20-commitment-retrying")
        registry.patch_node("CT01", {"port": lst.port})
        expect(row).to_have_attribute("data-state", "reported", timeout=30_000)
        expect(row).to_contain_text("1 committed, 0 failed")
        expect(page.locator("#study-rows tr").first).to_contain_text("reported: 1 of 1 committed")
        shot(page, "21-commitment-reported")
