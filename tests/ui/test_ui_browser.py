"""End to end in a real browser: headless Chromium opens the page, uploads an X-ray, and
sees the service's prediction and the chart. The screenshot is kept as a test artefact.

Chromium comes from :mod:`browser` (Debian's package; in CI a missing one fails the test,
locally it skips with the reason).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright
from support.browser import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def xray_upload(
    service_url: str, xray_bytes: tuple[str, bytes], tmp_path: Path
) -> tuple[Path, dict]:
    """The X-ray as a file the browser can upload, and the service's own answer for it."""
    name, data = xray_bytes
    upload = tmp_path / name
    upload.write_bytes(data)
    expected = requests.post(
        f"{service_url}/predict", files={"file": (name, data)}, timeout=30
    ).json()
    return upload, expected


def test_upload_in_a_real_browser_shows_prediction_and_chart(
    page_url: str, xray_upload: tuple[Path, dict]
) -> None:
    executable = chromium_path()
    upload, expected = xray_upload

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "ui-prediction.png"
    screenshot.unlink(missing_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(page_url)
            expect(page.get_by_text("Bone fracture X-ray classifier")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("not a diagnosis")).to_be_visible()
            page.locator("input[type=file]").set_input_files(str(upload))

            label = page.get_by_role("heading", name=expected["label"], exact=True)
            expect(label).to_be_visible(timeout=30_000)
            chart = page.locator("[data-testid=stVegaLiteChart]")
            expect(chart).to_have_count(1)
            expect(chart.locator("canvas, svg").first).to_be_visible(timeout=15_000)
            answered_by = f"Answered by model {expected['model']}, version {expected['version']}"
            expect(page.get_by_text(answered_by)).to_be_visible()
            expect(page.locator("[data-testid=stException]")).to_have_count(0)
            page.wait_for_timeout(500)  # let the chart's first paint finish for the picture
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


#: True when an element or any element inside it clips its text (an ellipsis, "Confi…").
_CLIPPED = """el => [el, ...el.querySelectorAll('*')].some(
    e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflow !== 'visible')"""


def test_at_800px_the_confidence_is_whole_and_nothing_comes_from_the_internet(
    page_url: str, xray_upload: tuple[Path, dict]
) -> None:
    """A first-time user's window: the confidence was cut to "Confi…" / "6…", the
    uploader promised 200 MB, and the tab icon came from the internet."""
    executable = chromium_path()
    upload, expected = xray_upload
    outside: list[str] = []

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 1200})
            page.on(
                "request",
                lambda r: (
                    None
                    if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                    else outside.append(r.url)
                ),
            )
            page.goto(page_url)
            expect(page.get_by_text("Bone fracture X-ray classifier")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("10MB per file", exact=False)).to_be_visible()
            page.locator("input[type=file]").set_input_files(str(upload))
            label = page.get_by_role("heading", name=expected["label"], exact=True)
            expect(label).to_be_visible(timeout=30_000)

            metric = page.locator("[data-testid=stMetric]")
            expect(metric).to_have_count(1, timeout=30_000)
            value = page.locator("[data-testid=stMetricValue]")
            expect(value).to_have_text(f"{expected['confidence']:.1%}")
            expect(page.locator("[data-testid=stMetricLabel]")).to_have_text("Confidence")
            page.wait_for_timeout(500)  # let the layout settle for the picture
            page.screenshot(path=str(ARTIFACTS / "ui-800px.png"), full_page=True)
            assert not metric.evaluate(_CLIPPED), "the confidence is clipped at 800 px"
            icon = page.locator("link[rel~=icon]").first.get_attribute("href") or ""
            assert not icon.startswith(("http:", "https:", "//")) or icon.startswith(page_url)
        finally:
            browser.close()
    assert not outside, outside
