"""The browsable API docs work on an air-gapped network: /api/docs loads its Swagger UI script,
style and icon from the admin API itself, never from a CDN."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from lab import need

ORIGIN = "http://127.0.0.1"


class _Refs(HTMLParser):
    """Every URL the page makes the browser fetch: script src, link href, img src, style @import/url()."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self._style = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.refs.append(("script", a["src"]))
        elif tag == "link" and a.get("href"):
            self.refs.append((f"link rel={a.get('rel')}", a["href"]))
        elif tag in ("img", "iframe") and a.get("src"):
            self.refs.append((tag, a["src"]))
        self._style = tag == "style"

    def handle_data(self, data):
        if self._style:
            for url in re.findall(r"""url\(\s*['"]?([^'")]+)|@import\s+['"]([^'"]+)""", data):
                self.refs.append(("style", next(u for u in url if u)))


def page_refs(html: str) -> list[tuple[str, str]]:
    p = _Refs()
    p.feed(html)
    return p.refs


def test_docs_page_assets_are_all_served_by_the_app(client):
    r = client.get("/api/docs")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    refs = page_refs(html)
    kinds = {k for k, _ in refs}
    assert "script" in kinds and any(k.startswith("link") for k in kinds), refs
    for kind, ref in refs:
        url = urljoin(f"{ORIGIN}/api/docs", ref)
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.hostname}" == ORIGIN and parts.port is None, \
            f"{kind} {ref!r} is loaded from another host: the docs page stays blank on an air-gapped network"
        got = client.get(parts.path)  # no bearer token: the docs page and its assets are public, like /api/docs
        assert got.status_code == 200, (ref, got.status_code)
        assert len(got.get_data()) > 100, ref
    scripts = [ref for kind, ref in refs if kind == "script"]
    assert any(client.get(s).get_data(as_text=True).count("SwaggerUIBundle") for s in scripts), \
        "no script of the page defines Swagger UI"
    # nothing in the inline script points the browser elsewhere either (e.g. the public validator)
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", re.sub(r"//\s*referring to .*", "", html)), \
        re.findall(r"https?://[^\s\"']+", html)


def test_docs_assets_are_only_the_swagger_ui_files(client):
    assert client.get("/api/docs/assets/index.html").status_code == 404
    assert client.get("/api/docs/assets/..%2Fpyproject.toml").status_code == 404
    r = client.get("/api/docs/assets/swagger-ui.css")
    assert r.status_code == 200 and r.content_type.startswith("text/css")


@pytest.mark.browser
def test_docs_render_in_chromium_with_every_other_host_blocked(gunicorn_server):
    """Headless Chromium opens /api/docs with every request to another host refused: the API's
    operations still render, and every request the page made went to the admin API."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "chromium not found: install Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    origin = gunicorn_server.url
    seen: list[str] = []
    blocked: list[str] = []

    def route(r):
        seen.append(r.request.url)
        if r.request.url.startswith(origin + "/"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = b.new_page()
            page.route("**/*", route)
            page.goto(origin + "/api/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
            assert "DICOM Lab admin API" in page.inner_text(".swagger-ui .info .title")
            page.wait_for_selector(".opblock", timeout=15_000)
            assert page.locator(".opblock").count() >= 10
        finally:
            b.close()
    assert not blocked, f"the docs page asked other hosts for {blocked}"
    assert any(u.endswith("/api/openapi.json") for u in seen), seen
