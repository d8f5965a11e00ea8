"""DICOM TLS on the page, in headless Chromium under real gunicorn with a running PACS: the
listener form's TLS fields, the certificate line, "Download the lab CA certificate" and a
node's "Certificate" (a PEM bundle)."""

from __future__ import annotations

import pytest
from cryptography import x509
from test_admin_browser import browser, login, page, shot  # noqa: F401  (fixtures: one Chromium set-up)

from dicomlab.settings import Node
from dicomlab.tlsca import common_name
from lab import free_port, wait_for

pytestmark = pytest.mark.browser


def test_tls_settings_certificate_and_downloads_on_the_page(page, gunicorn_server, pacs, registry):  # noqa: F811
    from playwright.sync_api import expect

    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", tls="required", client_certificate="required"))
    login(page, gunicorn_server)
    expect(page.locator("#scp-tls_enabled")).to_be_checked()
    expect(page.locator("#scp-tls_port")).to_have_value(str(pacs.tls_port))
    expect(page.locator("#tls-cert")).to_contain_text(f"listening on TLS port {pacs.tls_port}")
    expect(page.locator("#tls-cert")).to_contain_text("CN=PACS")
    expect(page.locator("#tls-cert")).to_contain_text("valid until")
    expect(page.locator("#node-list")).to_contain_text("TLS required, client certificate required")
    with page.expect_download() as dl:
        page.click("#tls-ca-download")
    assert dl.value.suggested_filename == "dicomlab-ca.pem"
    ca = x509.load_pem_x509_certificate(open(dl.value.path(), "rb").read())
    assert common_name(ca) == "DICOM Lab CA"
    with page.expect_download() as dl:
        page.click('#node-list li[data-ae="CT01"] button:has-text("Certificate")')
    assert dl.value.suggested_filename == "CT01.pem"
    bundle = open(dl.value.path(), "rb").read()
    assert common_name(x509.load_pem_x509_certificates(bundle)[0]) == "CT01" and b"PRIVATE KEY" in bundle
    expect(page.locator("#node-list")).to_contain_text("Saved CT01.pem")
    shot(page, "tls-01-settings")
    # move the TLS port from the form: the PACS follows
    new = free_port()
    page.fill("#scp-tls_port", str(new))
    page.click("#scp-form button[type=submit]")
    wait_for(lambda: (registry.get_heartbeat() or {}).get("tls_port") == new, timeout=20, what="the TLS port moved")
    assert registry.get_listener().tls_port == new
