"""Real-browser test of the regions, training replay and Compare models views (Chromium + Playwright):
the region count and the compared model live in the URL (reload and pasted link keep them), the replay's
slider changes the shown epoch, the compare page shows both models. Latencies are printed, never
asserted; screenshots go to tests/screenshots/. Skips when chromium or playwright is missing."""
from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
from test_browser import ARGS, CHROMIUM, SHOTS, _serve, _no_exception, _report_latency


@pytest.fixture(scope="module")
def server2(two_models_env, demo_root):
    serving = _serve({"SOMAD_DATA_DIR": str(demo_root), "SOMAD_MODELS_DIR": str(two_models_env[0])})
    url = next(serving)
    yield url
    next(serving, None)


@pytest.fixture(scope="module")
def page2(server2):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 2400})
        pg.set_default_timeout(120_000)
        yield pg
        browser.close()


def _query(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def _wait_query(page, key: str, value: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline and _query(page).get(key) != value:
        page.wait_for_timeout(200)
    assert _query(page).get(key) == value, page.url


def test_regions_and_replay_with_url_round_trip(page2, server2):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page2.goto(f"{server2}/som_explorer?model=hex96&regions=3")
    page2.get_by_text("3 regions, as chosen by the user").wait_for()
    page2.get_by_text("Training replay: epoch 2 of 2").first.wait_for()
    _no_exception(page2)
    # the replay's slider: a click at the rail's left end shows epoch 1
    rail = page2.locator("rect.slider-rail-touch-rect").first
    rail.scroll_into_view_if_needed()
    box = rail.bounding_box()
    page2.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)
    page2.get_by_text("Training replay: epoch 1 of 2").first.wait_for()
    # a new region count goes into the URL and survives a reload and a pasted link
    field = page2.get_by_label("Number of regions (0 = automatic, at most 20)")
    field.fill("4")
    t0 = time.perf_counter()
    field.press("Enter")
    page2.get_by_text("4 regions, as chosen by the user").wait_for()
    _report_latency("region count -> regions redrawn", t0)
    _wait_query(page2, "regions", "4")
    page2.screenshot(path=str(SHOTS / "regions_replay.png"), full_page=True)
    page2.reload()
    page2.get_by_text("4 regions, as chosen by the user").wait_for()
    assert _query(page2)["model"] == "hex96"
    page2.goto(f"{server2}/som_explorer?model=small")
    page2.get_by_text("chosen automatically").first.wait_for()
    page2.get_by_text("fitted without a training replay").wait_for()
    _no_exception(page2)


def test_compare_page_with_url_round_trip(page2, server2):
    page2.goto(f"{server2}/compare?model=small&vs=hex96&image=good/000.png")
    page2.get_by_text("Both heatmaps of one test image").wait_for()
    page2.get_by_text("hex96: score").wait_for()
    page2.get_by_text("small: score").wait_for()
    _no_exception(page2)
    assert _query(page2)["vs"] == "hex96" and _query(page2)["image"] == "good/000.png"
    page2.locator("[data-testid='stPlotlyChart']").nth(1).wait_for()  # the curves come last: wait, then count
    assert page2.locator("[data-testid='stPlotlyChart']").count() == 2  # ROC and PRO overlays
    # another test image: into the URL, kept on reload
    page2.locator("[data-testid='stSelectbox']").filter(has_text="Test image").click()  # opens it
    t0 = time.perf_counter()
    page2.get_by_role("option", name="scratch/001.png").click()
    _wait_query(page2, "image", "scratch/001.png")
    _report_latency("compare image pick -> URL", t0)
    page2.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
    page2.reload()
    page2.get_by_text("Both heatmaps of one test image").wait_for()
    page2.get_by_text("hex96: score").wait_for()
    assert _query(page2)["image"] == "scratch/001.png" and _query(page2)["vs"] == "hex96"
    _no_exception(page2)
