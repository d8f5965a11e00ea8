"""End to end in headless Chromium: the page under real gunicorn, with a running PACS.

Add a node, see it listed, press Echo, see the live event appear, remove it.
Screenshots go to test-artifacts/admin-api/ (look at them).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from admin_helpers import TOKEN

from lab import ROOT, need

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts" / "admin-api"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    need(CHROMIUM is not None, "chromium not found: install Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1500})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def echoscu(pacs, calling: str) -> None:
    tool = shutil.which("echoscu")
    need(tool is not None, "echoscu not found: install Debian's dcmtk")
    subprocess.run([tool, "-aet", calling, "-aec", "PACS", "127.0.0.1", str(pacs.port)], check=True, timeout=20,
                   capture_output=True)


def login(page, server) -> None:
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#stream-state")).to_have_text("live")


def _log_in_for_the_first_time(page, server, pacs) -> None:
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    expect(page.locator("#token-overlay")).to_be_visible()
    shot(page, "01-token")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-overlay")).to_be_hidden()
    expect(page.locator("#scp-ae_title")).to_have_value("PACS")
    expect(page.locator("#scp-port")).to_have_value(str(pacs.port))
    expect(page.locator("#stream-state")).to_have_text("live")
    expect(page.locator("#nodes-empty")).to_be_visible()


def _inline_validation(page) -> None:
    """Inline validation, in plain words, from the shared rules."""
    from playwright.sync_api import expect

    page.fill("#node-ae_title", "A_VERY_LONG_AE_TITLE")
    page.fill("#node-host", "not a host!")
    page.fill("#node-port", "70000")
    page.click("#node-submit")
    expect(page.locator('[data-err="node.ae_title"]')).to_contain_text("AE titles are at most 16 characters")
    shot(page, "02-validation")
    page.fill("#node-ae_title", "ECHOPEER")
    page.click("#node-submit")
    expect(page.locator('[data-err="node.host"]')).to_contain_text("neither an IP address nor a valid host name")
    page.fill("#node-host", "127.0.0.1")
    page.click("#node-submit")
    expect(page.locator('[data-err="node.port"]')).to_contain_text("from 1 to 65535")


def _add_the_node(page, echo_peer):
    """Add the node (the form as _inline_validation left it): listed, NEVER SEEN, and the live log says so."""
    from playwright.sync_api import expect

    page.fill("#node-port", str(echo_peer.port))
    page.fill("#node-description", "pynetdicom peer standing in for a CT")
    page.click("#node-submit")
    row = page.locator("#node-list li", has_text="ECHOPEER")
    expect(row.locator(".node-summary")).to_have_text(f"ECHOPEER (127.0.0.1 : {echo_peer.port}) NEVER SEEN")
    expect(page.locator("#log-lines li[data-type=node-added]")).to_contain_text("ECHOPEER")
    expect(page.locator('[data-err="node.ae_title"]')).to_be_empty()
    return row


def _echo_both_ways(page, row, pacs, echo_peer) -> None:
    from playwright.sync_api import expect

    # Echo: the PACS's AE title echoes the node; status and live log follow.
    row.get_by_role("button", name="Echo").click()
    expect(row.locator(".node-summary")).to_have_text(f"ECHOPEER (127.0.0.1 : {echo_peer.port}) CONNECTED")
    expect(row.locator(".echo-result")).to_contain_text("Echo answered: Success")
    expect(page.locator("#log-lines li[data-type=echo-sent]")).to_contain_text("answered Success")
    assert echo_peer.echoes == ["PACS"]

    # The node calls the PACS (DCMTK echoscu): the PACS's own events arrive live.
    echoscu(pacs, "ECHOPEER")
    expect(page.locator("#log-lines li[data-type=association-accepted]").first).to_be_visible()
    shot(page, "03-echo")


def _unreachable_node_edited_then_a_send(page) -> None:
    from playwright.sync_api import expect

    # Echo a node that is not there: UNREACHABLE, in plain words.
    page.fill("#node-ae_title", "GONE")
    page.fill("#node-host", "127.0.0.1")
    page.fill("#node-port", "1")
    page.click("#node-submit")
    gone = page.locator("#node-list li", has_text="GONE")
    gone.get_by_role("button", name="Echo").click()
    expect(gone.locator(".node-summary")).to_have_text("GONE (127.0.0.1 : 1) UNREACHABLE")
    expect(gone.locator(".echo-result")).to_contain_text("connection refused")

    # Edit, then ask the simulator to send.
    gone.get_by_role("button", name="Edit").click()
    expect(page.locator("#node-submit")).to_have_text("Save changes")
    page.uncheck("#node-store")
    page.click("#node-submit")
    expect(gone.locator(".node-meta")).to_contain_text("C-ECHO")
    expect(gone.locator(".node-meta")).not_to_contain_text("C-STORE")
    expect(page.locator("#log-lines li[data-type=node-changed]")).to_contain_text("services C-ECHO + C-STORE → C-ECHO")
    page.click("#sim-send")
    expect(page.locator("#sim-result")).to_contain_text(re.compile(r"Job \w+ queued: .* → PACS at 127\.0\.0\.1 : \d+"))
    shot(page, "04-unreachable-edit-send")


def _remove_then_reload(page, row) -> None:
    from playwright.sync_api import expect

    # Remove: confirmed, gone from the list, and the log says so.
    page.on("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Remove").click()
    expect(page.locator("#node-list li", has_text="ECHOPEER")).to_have_count(0)
    expect(page.locator("#log-lines li[data-type=node-removed]")).to_contain_text("ECHOPEER")
    shot(page, "05-removed")

    # The token is kept for the tab: a reload does not ask again.
    page.reload()
    expect(page.locator("#token-overlay")).to_be_hidden()
    expect(page.locator("#node-list li")).to_have_count(1)


def test_add_echo_watch_and_remove_a_node(page, gunicorn_server, pacs, echo_peer):
    _log_in_for_the_first_time(page, gunicorn_server, pacs)
    _inline_validation(page)
    row = _add_the_node(page, echo_peer)
    _echo_both_ways(page, row, pacs, echo_peer)
    _unreachable_node_edited_then_a_send(page)
    _remove_then_reload(page, row)


@pytest.fixture
def sim_worker(redis_url):
    """The CT simulator worker (another service of the lab) as a real process: SIM_AE_TITLE CT01."""
    import importlib.util
    import os
    import sys
    import tempfile

    from lab import free_port, wait_port

    need(importlib.util.find_spec("ct_simulator") is not None, "the ct-simulator package is not installed")
    port = free_port()
    log = open(tempfile.mkstemp(prefix="lab-sim-", suffix=".log")[1], "w+b")
    env = {**os.environ, "REDIS_URL": redis_url, "SIM_AE_TITLE": "CT01", "SIM_PORT": str(port),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ct_simulator", "worker", "--bind", "127.0.0.1",
                             "--echo-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port, timeout=20)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_authorize_the_ct_then_send_a_study_and_see_it_arrive(page, gunicorn_server, pacs, sim_worker):
    from playwright.sync_api import expect

    login(page, gunicorn_server)
    # Before the CT is authorized, the PACS refuses it, and the log says why.
    page.fill("#sim-slices", "2")
    page.click("#sim-send")
    expect(page.locator("#sim-result")).to_contain_text("queued")
    expect(page.locator("#log-lines li[data-type=association-rejected]").first).to_contain_text("CT01")

    page.fill("#node-ae_title", "CT01")
    page.fill("#node-host", "127.0.0.1")
    page.fill("#node-port", str(sim_worker))
    page.fill("#node-description", "CT simulator")
    page.click("#node-submit")
    row = page.locator("#node-list li", has_text="CT01")
    row.get_by_role("button", name="Echo").click()
    expect(row.locator(".node-summary")).to_have_text(f"CT01 (127.0.0.1 : {sim_worker}) CONNECTED")

    page.click("#sim-send")
    study = page.locator("#study-rows tr").first
    expect(study).to_be_visible(timeout=30_000)
    expect(study).to_contain_text("CT01")
    expect(study.locator("td").nth(6)).to_have_text("2")  # images
    expect(page.locator("#log-lines li[data-type=store-received]").first).to_be_visible()
    shot(page, "07-study-received")


def test_verbose_shows_pdu_detail_live(page, gunicorn_server, pacs, registry):
    from playwright.sync_api import expect

    from dicomlab.settings import Node

    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113))
    login(page, gunicorn_server)
    page.check("#scp-verbose")
    page.click("#scp-form button[type=submit]")
    changed = page.locator("#log-lines li[data-type=settings-changed]")
    # Two lines: the admin API's (the stored change) and the PACS's (applied), in either order.
    expect(changed.filter(has_text="verbose off → on")).to_have_count(1)
    expect(changed.filter(has_text="Verbose logging on")).to_have_count(1)
    echoscu(pacs, "CT01")
    expect(page.locator("#log-lines li[data-type=association-accepted]").first).to_be_visible()
    expect(page.locator("#log-lines li[data-type=pdu]").first).to_be_visible()
    # The accepted association shows in the node's status without a reload.
    expect(page.locator("#node-list li .node-summary")).to_have_text("CT01 (127.0.0.1 : 11113) CONNECTED")
    page.uncheck("#log-pdu")
    expect(page.locator("#log-lines li[data-type=pdu]").first).to_be_hidden()
    page.check("#log-pdu")
    shot(page, "06-verbose")


def test_a_wrong_token_is_asked_again(page, gunicorn_server):
    from playwright.sync_api import expect

    page.goto(gunicorn_server.url + "/")
    page.fill("#token-input", "not-the-token")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-error")).to_contain_text("That token is not right")
    expect(page.locator("#token-overlay")).to_be_visible()
