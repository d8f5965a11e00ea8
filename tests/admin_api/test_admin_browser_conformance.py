"""The conformance check on the page, in headless Chromium, against the real PACS's live settings.

Screenshots: test-artifacts/conformance-check.png (a proposal the PACS refuses, in words) and
test-artifacts/conformance-check-ok.png (a proposal it takes). Look at them.
"""

from __future__ import annotations

import pytest
from test_admin_browser import browser, page  # noqa: F401  (fixtures: one Chromium set-up)

from dicomlab.conformance import tls_statement
from dicomlab.dicom import JPEG_LOSSLESS_SV1, RLE_LOSSLESS
from dicomlab.settings import Node
from lab import ROOT

pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "test-artifacts"


def test_the_page_runs_the_conformance_check(page, gunicorn_server, pacs, registry):  # noqa: F811
    from playwright.sync_api import expect
    from test_admin_browser import login

    registry.add_node(Node(ae_title="CT01", host="127.0.0.1", port=11113))
    registry.update_listener({"transfer_syntaxes": [JPEG_LOSSLESS_SV1, RLE_LOSSLESS]})
    login(page, gunicorn_server)
    page.click("#conf-run")
    summary = page.locator("#conf-summary")
    expect(summary).to_contain_text("CT Image Storage with Explicit VR Little Endian, Implicit VR Little Endian: "
                                    "the PACS accepts none of these transfer syntaxes")
    expect(summary).to_contain_text("every C-STORE would be refused at negotiation")
    expect(summary).to_have_class("conf-summary bad")
    ct_row = page.locator('#conf-contexts tr[data-sop="1.2.840.10008.5.1.4.1.1.2"]')
    expect(ct_row.locator("td").nth(2)).to_have_text("JPEG Lossless SV1, RLE Lossless")
    expect(ct_row.locator("td").nth(3)).to_have_text("none")
    expect(page.locator("#conf-pacs")).to_contain_text(f"{pacs.port}")
    tls = tls_statement(registry.get_listener().to_dict(), [n.to_dict() for n in registry.list_nodes()])
    expect(page.locator("#conf-pacs")).to_contain_text(tls["words"])  # plain TCP, or the TLS port once it exists
    expect(page.locator("#conf-sim")).to_contain_text("--transfer-syntax rle: RLE Lossless")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#conformance").screenshot(path=str(ARTIFACTS / "conformance-check.png"))

    # The simulator proposing RLE: the C-STORE context is accepted (the C-ECHO still is not).
    page.select_option("#conf-transfer_syntax", "rle")
    page.click("#conf-run")
    expect(ct_row.locator("td").nth(4)).to_have_text("CT Image Storage with RLE Lossless only: accepted as RLE Lossless.")
    registry.update_listener({"transfer_syntaxes": [RLE_LOSSLESS, "1.2.840.10008.1.2"]})
    page.click("#conf-run")
    expect(summary).to_have_class("conf-summary ok")
    expect(summary).to_contain_text("CT01 and the PACS agree")
    page.locator("#conformance").screenshot(path=str(ARTIFACTS / "conformance-check-ok.png"))
