"""The slice viewer in headless Chromium, under real gunicorn, over a CT study the simulator
sent into a real PACS: open the study, its series, move through the stack, pick the lung
window, read the value under the cursor. Screenshot: test-artifacts/viewer-lung.png."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from admin_helpers import AUTH, TOKEN, Gunicorn
from dicomweb_lab import simulator_send
from test_admin_browser import browser, page  # noqa: F401  (fixtures)

from lab import ROOT, PacsProcess, add_node

pytestmark = pytest.mark.browser
SCREENSHOT = ROOT / "test-artifacts" / "viewer-lung.png"


@pytest.fixture(scope="module")
def image_lab(redis_server, tmp_path_factory):
    from dicomlab.registry import Registry, connect

    c = redis_server.client()
    c.flushall()
    c.close()
    pacs = PacsProcess(redis_server.url, tmp_path_factory.mktemp("viewer") / "storage").start()
    api = None
    try:
        add_node(Registry(connect(redis_server.url)), "CT01", "127.0.0.1")
        study = simulator_send(pacs, "VIEWER-1", 8, 21, size=512)
        api = Gunicorn(redis_server.url, extra_env={"PACS_STORAGE_DIR": str(pacs.storage_dir)})
        yield pacs, api, study
    finally:
        if api:
            api.stop()
        pacs.stop()


def _open_the_series(pg, api) -> None:
    """Log in, open the study from the studies table, then its one series."""
    from playwright.sync_api import expect

    pg.goto(api.url + "/")
    pg.fill("#token-input", TOKEN)
    pg.click("#token-form button[type=submit]")
    row = pg.locator("#study-rows tr", has_text="VIEWER-1")
    row.click()
    expect(pg.locator("#images")).to_be_visible()
    expect(pg.locator("#img-title")).to_contain_text("VIEWER-1")
    series = pg.locator("#img-series button")
    expect(series).to_have_count(1)
    expect(series).to_contain_text("CT")
    expect(series).to_contain_text("8 images")
    series.click()


def _through_the_stack_to(pg, canvas, files, chest: int) -> None:
    """Through the stack: the arrow key, the wheel, the slider (to the chest slice), then the lung window."""
    from playwright.sync_api import expect

    canvas.focus()
    pg.keyboard.press("ArrowDown")
    expect(canvas).to_have_attribute("data-sop", str(files[1].SOPInstanceUID))
    canvas.hover()
    pg.mouse.wheel(0, 120)
    expect(canvas).to_have_attribute("data-sop", str(files[2].SOPInstanceUID))
    pg.locator("#img-slider").fill(str(chest + 1))
    expect(pg.locator("#img-slice")).to_have_text(f"Slice {chest + 1} / 8 (instance {chest + 1})")
    expect(canvas).to_have_attribute("data-sop", str(files[chest].SOPInstanceUID))

    pg.get_by_role("button", name="Lung (W 1500 / L -600)").click()
    expect(canvas).to_have_attribute("data-window", "-600,1500")
    expect(pg.locator("#img-window")).to_have_text("Lung: W 1500 / L -600")


def _canvas_is_the_servers_rendering(pg, api, study: str, series_uid: str, sop: str, hu_slice) -> None:
    """The canvas holds exactly the server's rendering of that slice in the lung window."""
    from PIL import Image

    png = requests.get(f"{api.url}/api/dicomweb/studies/{study}/series/{series_uid}/instances/{sop}/rendered",
                       params={"window": "-600,1500"}, headers={**AUTH, "Accept": "image/png"}, timeout=30)
    expected = np.asarray(Image.open(io.BytesIO(png.content)))
    drawn = pg.evaluate("""() => {
        const c = document.querySelector('#img-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const out = [];
        for (let i = 0; i < d.length; i += 4) out.push(d[i]);
        return [c.width, c.height, out];
    }""")
    assert (drawn[0], drawn[1]) == (512, 512)
    assert np.array_equal(np.array(drawn[2], dtype=np.uint8).reshape(512, 512), expected)
    # Lung is dark grey to black in this window, bone white, air black: a real chest slice.
    lung = (hu_slice > -950) & (hu_slice < -700)
    assert lung.sum() > 2000 and 0 < expected[lung].mean() < 110


def _value_under_the_cursor(pg, canvas, hu_slice) -> None:
    """The value under the cursor, in HU, as the file says it; then the screenshot."""
    from playwright.sync_api import expect

    box = canvas.bounding_box()
    for fx, fy in ((0.5, 0.5), (0.3, 0.45), (0.7, 0.4)):
        pg.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        value = pg.locator("#img-value")
        expect(value).to_contain_text("HU")
        text = value.text_content()
        x, y = (int(t) for t in text.split(":")[0].replace("x", "").replace("y", "").split(","))
        assert abs(x - int(512 * fx)) <= 2 and abs(y - int(512 * fy)) <= 2
        assert float(value.get_attribute("data-value")) == pytest.approx(hu_slice[y, x])

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    pg.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.45)
    expect(pg.locator("#img-value")).to_contain_text("HU")
    pg.locator("#images").screenshot(path=str(SCREENSHOT))


def test_open_a_study_its_series_and_a_slice_in_the_lung_window(page, image_lab):  # noqa: F811
    from playwright.sync_api import expect
    from pydicom import dcmread

    pacs, api, study = image_lab
    series_dir = next((pacs.storage_dir / study).iterdir())
    files = sorted((dcmread(p) for p in series_dir.glob("*.dcm")), key=lambda d: int(d.InstanceNumber))
    hu = [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in files]
    # The slice with the most lung (-950..-700 HU): the one the lung window is for.
    chest = int(np.argmax([((h > -950) & (h < -700)).sum() for h in hu]))

    _open_the_series(page, api)
    canvas = page.locator("#img-canvas")
    expect(page.locator("#img-slice")).to_have_text("Slice 1 / 8 (instance 1)")
    expect(canvas).to_have_attribute("data-sop", str(files[0].SOPInstanceUID))
    expect(canvas).to_have_attribute("data-window", "40,400")  # soft tissue first
    _through_the_stack_to(page, canvas, files, chest)
    _canvas_is_the_servers_rendering(page, api, study, series_dir.name, str(files[chest].SOPInstanceUID), hu[chest])
    _value_under_the_cursor(page, canvas, hu[chest])
