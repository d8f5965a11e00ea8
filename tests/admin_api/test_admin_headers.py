"""Security headers: CSP (default-src 'self'; frame-ancestors 'none'), nosniff, no-referrer;
the page and the Swagger docs still work under them in Chromium; a short token is refused."""

from __future__ import annotations

import re
import shutil

import pytest
from admin_helpers import TOKEN

from admin_api.headers import BASE_POLICY, policy_for
from lab import need

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.parametrize("path", ["/", "/api/health", "/api/nodes", "/api/docs", "/api/openapi.json",
                                  "/static/app.js", "/no-such-page"])
def test_every_response_carries_the_security_headers(client, path):
    r = client.get(path)
    csp = r.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'self'; frame-ancestors 'none'")
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    if path in ("/", "/api/nodes"):
        assert csp == BASE_POLICY  # the page has no inline script or style


def test_the_docs_page_allows_exactly_its_own_inline_blocks(client):
    r = client.get("/api/docs")
    html = r.get_data(as_text=True)
    csp = r.headers["Content-Security-Policy"]
    assert csp == policy_for(html)
    assert len(re.findall(r"'sha256-[A-Za-z0-9+/=]+'", csp)) == 2  # one inline <script>, one <style>
    assert policy_for(html.replace("dom_id", "dom_ID")) != csp  # another script would not run


def test_policy_for_pages_without_inline_blocks_is_the_base_policy():
    assert policy_for(None) == BASE_POLICY
    assert policy_for('<script src="/a.js"></script><link rel="stylesheet" href="/s.css">') == BASE_POLICY
    inline = policy_for("<script>alert(1)</script>")
    assert "script-src 'self' 'sha256-" in inline and "style-src" not in inline


def test_a_short_admin_token_is_refused_at_start(redis_url):
    from admin_api import create_app

    with pytest.raises(RuntimeError, match="at least 16"):
        create_app({"ADMIN_TOKEN": "short-token", "REDIS_URL": redis_url})
    create_app({"ADMIN_TOKEN": "x" * 16, "REDIS_URL": redis_url})


@pytest.mark.browser
def test_page_and_docs_work_in_chromium_under_the_policy(gunicorn_server):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "chromium not found: install Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    from playwright.sync_api import expect

    violations: list[str] = []
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            page = b.new_page()
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.on("pageerror", lambda e: violations.append(str(e)))
            page.goto(gunicorn_server.url + "/")
            page.fill("#token-input", TOKEN)
            page.click("#token-form button[type=submit]")
            expect(page.locator("#stream-state")).to_have_text("live", timeout=15_000)
            page.goto(gunicorn_server.url + "/api/docs")
            page.wait_for_selector(".opblock", timeout=15_000)
            assert page.locator(".opblock").count() >= 10
        finally:
            b.close()
    assert not violations, violations
