"""The page's Query/Retrieve parts in headless Chromium: the listener's Q/R limits (shown,
saved, a bad value refused in words) and each node's C-MOVE destination line."""

from __future__ import annotations

import pytest
from test_admin_browser import browser, login, page, shot  # noqa: F401 - fixtures

from lab import wait_for

pytestmark = pytest.mark.browser


def test_qr_settings_and_move_destinations(page, gunicorn_server, pacs, registry):  # noqa: F811
    from playwright.sync_api import expect

    from dicomlab.settings import Node

    registry.add_node(Node(ae_title="WS01", host="127.0.0.1", port=11119, services=["C-ECHO", "C-MOVE"]))
    registry.add_node(Node(ae_title="OLD01", host="127.0.0.1", port=104, enabled=False))
    login(page, gunicorn_server)
    expect(page.locator("#scp-qr_max_matches")).to_have_value("1000")
    page.fill("#scp-qr_max_matches", "25")
    page.click("#scp-form button[type=submit]")
    wait_for(lambda: registry.get_listener().qr_max_matches == 25, what="qr_max_matches saved")
    page.fill("#scp-qr_max_suboperations", "0")
    page.click("#scp-form button[type=submit]")
    expect(page.locator('[data-err="scp.qr_max_suboperations"]')).to_contain_text("whole number from 1")
    assert registry.get_listener().qr_max_suboperations == 10_000
    ws = page.locator('#node-list li[data-ae="WS01"] .node-meta')
    expect(ws).to_contain_text("C-MOVE destination: the PACS sends to WS01 at 127.0.0.1 : 11119")
    expect(page.locator('#node-list li[data-ae="OLD01"] .node-meta')).to_contain_text("not a C-MOVE destination")
    shot(page, "07-query-retrieve")


def test_an_edit_made_while_a_save_is_on_its_way_is_kept(page, gunicorn_server, pacs, registry):  # noqa: F811
    """The administrator saves one field, then types in another before the save has come back.
    The save must not put the stored value over what was typed, and the next save must send it.
    The typing is made to land at the worst moment: when the PATCH answer has arrived, before the
    page has read it (it failed one CI run by chance, before the page counted edits)."""
    from playwright.sync_api import expect

    login(page, gunicorn_server)
    expect(page.locator("#scp-qr_max_matches")).to_have_value("1000")
    page.evaluate(
        """() => {
          const realFetch = window.fetch;
          window.fetch = async (path, options) => {
            const resp = await realFetch(path, options);
            if (options && options.method === "PATCH" && path === "/api/scp") {
              window.fetch = realFetch;
              const field = document.querySelector("#scp-qr_max_suboperations");
              field.value = "0";
              field.dispatchEvent(new Event("input", { bubbles: true }));
            }
            return resp;
          };
        }"""
    )
    save = page.locator("#scp-form button[type=submit]")
    page.fill("#scp-qr_max_matches", "25")
    save.click()
    wait_for(lambda: registry.get_listener().qr_max_matches == 25, what="qr_max_matches saved")
    expect(save).to_be_enabled()  # the save and the read-back are over
    expect(page.locator("#scp-qr_max_suboperations")).to_have_value("0")
    save.click()
    expect(page.locator('[data-err="scp.qr_max_suboperations"]')).to_contain_text("whole number from 1")
    assert registry.get_listener().qr_max_suboperations == 10_000
