"""The page shows where a modality outside must send, in headless Chromium under real gunicorn with
a running PACS, and says what to do when a port change leaves a Compose-style mapping behind.
Screenshot: test-artifacts/admin-api/address-stale-mapping.png."""

from __future__ import annotations

import pytest
from admin_helpers import TOKEN, Gunicorn
from test_admin_browser import browser, page, shot  # noqa: F401  (fixtures)

from lab import free_port

pytestmark = pytest.mark.browser


def test_page_shows_the_published_address_and_a_stale_mapping(page, redis_url, pacs):  # noqa: F811
    from playwright.sync_api import expect

    published = free_port()
    server = Gunicorn(redis_url, extra_env={"PACS_PUBLIC_ADDRESS": f"127.0.0.1:{published}",
                                            "PACS_PUBLISHED_TARGET": str(pacs.port)})
    try:
        page.goto(server.url + "/")
        page.fill("#token-input", TOKEN)
        page.click("#token-form button[type=submit]")
        address = page.locator("#scp-address")
        expect(address).to_have_text(f"A modality outside the lab network calls AE title PACS at 127.0.0.1:{published} "
                                     f"(published to the PACS's port {pacs.port} on the lab network).")
        expect(address).to_have_class("muted")

        new_port = free_port()
        page.fill("#scp-port", str(new_port))
        page.click("#scp-form button[type=submit]")
        # The PACS moves its listener; its event reloads the card; the mapping still points at the old port.
        expect(address).to_contain_text(f"127.0.0.1:{published} still forwards to port {pacs.port}, but the PACS "
                                        f"now listens on {new_port}")
        expect(address).to_contain_text("make up")
        expect(address).to_have_class("err")
        shot(page, "address-stale-mapping")
    finally:
        server.stop()
