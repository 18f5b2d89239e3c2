"""Real-browser test: Streamlit app in Debian's chromium driven by Playwright.

Clicks a neuron on the U-matrix and checks the nearest-patches gallery of *that* neuron appears;
clicks a heatmap pixel in the test inspector and checks the BMU panel of *that* cell appears.
Screenshots go to tests/screenshots/ (git-ignored). Skips when chromium or playwright is missing.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("SOMAD_CHROMIUM", "/usr/bin/chromium"))
SHOTS = REPO / "tests" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(dash_model_env, demo_root):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    port = _free_port()
    env = dict(os.environ, SOMAD_DATA_DIR=str(demo_root), SOMAD_MODELS_DIR=str(dash_model_env[0]),
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 2000})
        pg.set_default_timeout(90_000)
        yield pg
        browser.close()


def _click_data_point(page, chart_index: int, x: float, y: float) -> None:
    """Click data coordinates ``(x, y)`` of the ``chart_index``-th plotly chart of the page, converted
    to screen pixels with the chart's own axes (robust to margins, colour bars and aspect constraints)."""
    px, py = page.evaluate(
        """([i, x, y]) => {
            const gd = document.querySelectorAll('.js-plotly-plot')[i];
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const r = gd.getBoundingClientRect();
            return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)];
        }""", [chart_index, x, y])
    page.mouse.click(px, py)


def _no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, page.locator(
        "[data-testid='stException']").first.inner_text()


def test_click_neuron_shows_gallery(page, server, dash_model_env):
    model = dash_model_env[2]
    rows, cols = model.grid_
    hits = model.hit_map()
    # the page preselects the neuron with most hits: click the second-most, so a change is visible
    r, c = (int(v) for v in np.unravel_index(np.argsort(-hits, axis=None, kind="stable")[1], hits.shape))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{server}/som_explorer")
    page.get_by_text("Nearest training patches of neuron").first.wait_for()
    chart = page.locator("[data-testid='stPlotlyChart']").first
    chart.locator("rect.nsewdrag").first.wait_for()
    page.wait_for_timeout(1000)
    _click_data_point(page, 0, c, r)  # rectangular grid: neuron (r, c) is drawn at x = c, y = r
    page.get_by_text(f"Nearest training patches of neuron ({r}, {c})").wait_for()
    n = min(16, int(hits[r, c]))
    page.get_by_text(f"#{n} d=").wait_for()  # gallery captions: "#i d=<distance> · img <k> (row,col)"
    page.wait_for_timeout(1500)
    _no_exception(page)
    assert page.locator("[data-testid='stImageCaption']", has_text=" d=").count() == n
    page.screenshot(path=str(SHOTS / "som_explorer.png"), full_page=True)


def test_click_pixel_shows_bmu(page, server, dash_model_env):
    model = dash_model_env[2]
    h, w = model.feature_shape_
    r, c = h // 2, w // 3
    page.goto(f"{server}/test_inspector")
    page.get_by_text("Click a pixel of the heatmap").wait_for()
    chart = page.locator("[data-testid='stPlotlyChart']").first
    chart.locator("rect.nsewdrag").first.wait_for()
    page.wait_for_timeout(1000)
    s = model.image_size
    _click_data_point(page, 0, (c + 0.5) * s / w, (r + 0.5) * s / h)
    page.get_by_text(f"Cell ({r}, {c}): BMU").wait_for()
    page.get_by_text("BMU and k nearest neurons").wait_for()
    page.wait_for_timeout(1500)
    _no_exception(page)
    assert page.get_by_text("Open neuron").count() == model.k
    page.screenshot(path=str(SHOTS / "test_inspector.png"), full_page=True)
