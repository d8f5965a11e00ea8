"""The ladder in headless Chromium: from the live log and from a node's status, the page draws
an accepted and a rejected association as SVG. Screenshots: test-artifacts/ladder-accepted.png
and test-artifacts/ladder-rejected.png (look at them)."""

from __future__ import annotations

import pytest
import requests
from admin_helpers import AUTH
from test_admin_browser import browser, login, page  # noqa: F401  (fixtures: one Chromium set-up)

from lab import ROOT, echoscu, events_of, wait_for

pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "test-artifacts"


def _send(pacs, slices: int = 12) -> None:
    from ct_simulator.cli import main

    assert main(["send", "--host", "127.0.0.1", "--port", str(pacs.port), "--called-aet", "PACS", "--calling-aet",
                 "CT01", "--rows", "32", "--cols", "32", "--slices", str(slices), "--progress", "never"]) == 0


def test_the_page_draws_the_ladder_of_an_accepted_and_a_rejected_association(page, gunicorn_server, pacs,  # noqa: F811
                                                                             registry):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    r = requests.post(gunicorn_server.url + "/api/nodes", headers=AUTH, timeout=10,
                      json={"ae_title": "CT01", "host": "127.0.0.1", "port": 104, "description": "CT, room 2"})
    assert r.status_code == 201, r.text
    _send(pacs)
    assert echoscu(pacs.port, "CT99", "PACS").returncode != 0
    wait_for(lambda: events_of(registry, "association-rejected"), timeout=20, what="the rejection")
    wait_for(lambda: events_of(registry, "association-released"), timeout=20, what="the release")
    login(page, gunicorn_server)

    # From the node's status: its last association, accepted, 12 instances stored.
    row = page.locator("#node-list li", has_text="CT01")
    row.get_by_role("button", name="Last association").click()
    dialog = page.locator("#ladder-dialog")
    expect(dialog).to_be_visible()
    ladder = dialog.locator("svg.ladder-svg")
    expect(ladder).to_be_visible()
    for label in ("TCP connect", "A-ASSOCIATE-RQ", "A-ASSOCIATE-AC", "C-STORE-RQ x 12", "C-STORE-RSP x 12",
                  "A-RELEASE-RQ", "A-RELEASE-RP"):
        expect(ladder.locator("text.ladder-label", has_text=label)).to_have_count(1)
    expect(ladder.locator("text.ladder-line", has_text="12 x Success")).to_have_count(1)
    expect(ladder.locator("text.ladder-lane-title").first).to_have_text("CT01")
    expect(dialog.locator(".ladder-contexts tbody tr")).to_have_text(
        ["1CT Image StorageExplicit VR Little Endian, Implicit VR Little EndianacceptedExplicit VR Little Endian"])
    expect(dialog.locator(".ladder-problem")).to_have_count(0)
    dialog.screenshot(path=str(ARTIFACTS / "ladder-accepted.png"))
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    # From the live log: the rejected association, its reason and fix in front.
    line = page.locator("#log-lines li[data-type=association-rejected]").last
    page.locator("#log").screenshot(path=str(ARTIFACTS / "ladder-log.png"))
    line.get_by_role("button", name="ladder").click()
    expect(dialog).to_be_visible()
    problem = dialog.locator(".ladder-problem.bad")
    expect(problem).to_contain_text("Association rejected: rejected-permanent / service-user / "
                                    "calling-AE-title-not-recognized (1/1/3)")
    expect(problem).to_contain_text("Calling AE title 'CT99' is not an authorized node.")
    expect(problem.locator(".ladder-fix")).to_contain_text("Fix: Add 'CT99'")
    rj = dialog.locator("svg g.ladder-step.bad")
    expect(rj.locator("text.ladder-label")).to_have_text("A-ASSOCIATE-RJ 1/1/3")
    expect(rj.locator("text.ladder-line")).to_have_text(["result: rejected-permanent", "source: service-user",
                                                         "reason: calling-AE-title-not-recognized"])
    expect(dialog.locator("svg text.ladder-label", has_text="C-STORE")).to_have_count(0)
    dialog.screenshot(path=str(ARTIFACTS / "ladder-rejected.png"))


def test_verbose_mode_adds_the_pdu_detail_under_the_ladder(page, gunicorn_server, pacs, registry):  # noqa: F811
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    for method, path, body in (("post", "/api/nodes", {"ae_title": "CT01", "host": "127.0.0.1", "port": 104}),
                               ("patch", "/api/scp", {"verbose": True})):
        r = getattr(requests, method)(gunicorn_server.url + path, headers=AUTH, json=body, timeout=10)
        assert r.ok, r.text
    assert echoscu(pacs.port, "CT01", "PACS").returncode == 0
    wait_for(lambda: events_of(registry, "association-released"), timeout=20, what="the release")
    login(page, gunicorn_server)
    page.locator("#log-lines li[data-type=association-released]").last.get_by_role("button", name="ladder").click()
    dialog = page.locator("#ladder-dialog")
    expect(dialog.locator("svg text.ladder-label", has_text="C-ECHO-RSP")).to_have_count(1)
    details = dialog.locator("details", has_text="PDU detail, verbose mode")
    details.locator("summary").click()
    expect(details.locator("li", has_text="DIMSE received: C-ECHO-RQ").first).to_be_visible()
    expect(details.locator("li", has_text="PDU sent: A_RELEASE_RP").first).to_be_visible()
    dialog.screenshot(path=str(ARTIFACTS / "ladder-verbose.png"))
