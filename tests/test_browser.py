"""Real-browser test: Streamlit app in Debian's chromium driven by Playwright.

Clicks a neuron on the U-matrix and checks the nearest-patches gallery of *that* neuron appears;
clicks a heatmap pixel in the test inspector and checks the BMU panel of *that* cell appears; a
reload and a pasted URL keep the view; the F1-optimal button gives the F1-max counts; two uploads
with the same file name; the HTML report opens offline. Click-to-update latencies are printed
(reported, not asserted). Screenshots go to tests/screenshots/ (git-ignored). Skips when chromium
or playwright is missing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
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


def _serve(env_extra: dict[str, str], args: tuple[str, ...] = (), start_s: float = 120):
    """Start ``streamlit run app.py`` on a free port with ``env_extra`` (skips without Chromium or
    Playwright); yields its URL once healthy (at most ``start_s`` seconds), stops it after. Every
    browser test file starts its servers through this."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    port = _free_port()
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + start_s
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
def server(dash_model_env, demo_root):
    yield from _serve({"SOMAD_DATA_DIR": str(demo_root), "SOMAD_MODELS_DIR": str(dash_model_env[0])})


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


def _plotly_box(page, plot: str, x0: float, x1: float, y0: float, y1: float) -> list[float]:
    """Where plotly draws the data box ``[x0, x1] x [y0, y1]`` of the plot ``plot`` (a CSS selector of
    its graph div): [left, top, width, height] in pixels of its figure (its own axes' ``l2p``)."""
    return page.evaluate(
        """([plot, x0, x1, y0, y1]) => {
            const gd = document.querySelector(plot);
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const a = xa._offset + xa.l2p(x0), b = xa._offset + xa.l2p(x1);
            const u = ya._offset + ya.l2p(y0), v = ya._offset + ya.l2p(y1);
            return [Math.min(a, b), Math.min(u, v), Math.abs(b - a), Math.abs(v - u)];
        }""", [plot, x0, x1, y0, y1])


def _cell_px(page, key: str, r: int, c: int) -> list[float]:
    """Where plotly draws cell ``(r, c)`` of the rectangular map keyed ``key`` (:func:`_plotly_box`)."""
    return _plotly_box(page, f".st-key-{key} .js-plotly-plot", c - 0.5, c + 0.5, r - 0.5, r + 0.5)


def _css_box(page, css: dict[str, str]) -> list[float]:
    """The box [left, top, width, height] that the CSS properties ``css`` give the ``::after`` of the
    plot ``#gd``'s ``.svg-container``, as the dashboard's outline rule does (``widgets.outline_css``)."""
    return page.evaluate(
        """(css) => { let st = document.getElementById('outline');
            if (!st) { st = document.createElement('style'); st.id = 'outline'; document.head.append(st); }
            st.textContent = '#gd .svg-container::after{content:"";position:absolute;top:0;' +
                Object.entries(css).map(([k, v]) => `${k}:${v}`).join(';') + '}';
            const s = getComputedStyle(document.querySelector('#gd .svg-container'), '::after');
            return [s.left, s.marginTop, s.width, s.height].map(parseFloat); }""", css)


def _outline_and_cell(page, key: str, r: int, c: int) -> list[float]:
    """The box the selection outline over the chart keyed ``key`` goes around (its CSS box less its
    line on each side: the line lies just outside the cell), as [left, top, width, height] in pixels of
    the figure."""
    return page.evaluate(
        """(key) => {
            const st = getComputedStyle(document.querySelector(`.st-key-${key} .svg-container`), '::after');
            const b = parseFloat(st.borderTopWidth);
            return [parseFloat(st.left) + b, parseFloat(st.top) + parseFloat(st.marginTop) + b,
                    parseFloat(st.width) - 2 * b, parseFloat(st.height) - 2 * b];
        }""", key)


def test_map_cell_box_is_where_plotly_draws_the_cell(tmp_path):
    """figures.map_cell_box and map_cell_css against plotly.js itself (the copy in the plotly package, no
    server): square, wide, tall and single-cell rectangular grids, each drawn at its own width and at
    two narrower ones (Streamlit shrinks a figure to a narrower column; the CSS box must follow); the
    same for image_cell_box and image_cell_css on image figures."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    import plotly

    from somad import figures

    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    (tmp_path / "plotly.min.js").write_bytes(js.read_bytes())
    (tmp_path / "index.html").write_text("<html><body><div id='gd'></div><script src='plotly.min.js'></script></body></html>")
    cases = [((56, 56), 420, [(0, 0), (10, 20), (55, 55)]), ((2, 20), 420, [(0, 0), (1, 19)]),
             ((30, 3), 420, [(0, 0), (29, 2)]), ((1, 1), 300, [(0, 0)]), ((100, 100), 400, [(50, 7)]),
             ((16, 16), 400, [(3, 12)])]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page()
        page.goto((tmp_path / "index.html").as_uri())
        for shape, size, cells in cases:
            fig = figures.som_map(np.random.default_rng(0).random(shape), "rectangular", size=size)
            spec = json.loads(fig.to_json())
            # drawn at its own width, and narrower, as Streamlit draws a figure in a narrower column
            for drawn in (size, size - 90, 200):
                spec["layout"]["width"] = drawn
                page.evaluate("(f) => Plotly.newPlot('gd', f.data, f.layout)", spec)
                for r, c in cells:
                    got = _plotly_box(page, "#gd", c - 0.5, c + 0.5, r - 0.5, r + 0.5)
                    if drawn == size:
                        assert figures.map_cell_box(shape, "rectangular", size, (r, c)) == pytest.approx(got, abs=0.05)
                    box = _css_box(page, figures.map_cell_css(shape, "rectangular", size, (r, c)))
                    assert box == pytest.approx(got, abs=0.05), (shape, drawn, (r, c))
        # the Test inspector's heatmap (figures.image_figure): square, wide and tall images, with and
        # without the colour bar, over 56x56 and 7x9 feature grids
        from somad import viz

        scale = viz.HeatScale.for_model((1.0, 5.0), 8.0)
        for (ih, iw), feat, bar, cells in [((520, 520), (56, 56), True, [(0, 0), (20, 41), (55, 55)]),
                                           ((316, 520), (56, 56), True, [(0, 55), (30, 3)]),
                                           ((520, 300), (7, 9), False, [(6, 8), (3, 0)])]:
            fig = figures.image_figure(np.zeros((ih, iw, 3), np.uint8), feat, "t", size=400, model_size=224,
                                       scale=scale if bar else None)
            spec = json.loads(fig.to_json())
            for drawn in (400, 368, 250, 560):  # a stretched chart in a column wider than the figure: 560
                spec["layout"]["width"] = drawn
                page.evaluate("(f) => Plotly.newPlot('gd', f.data, f.layout)", spec)
                for cell in cells:
                    (r, c), (h, w) = cell, feat
                    got = _plotly_box(page, "#gd", c * 224 / w, (c + 1) * 224 / w, r * 224 / h, (r + 1) * 224 / h)
                    if drawn == 400:
                        assert figures.image_cell_box((ih, iw), feat, 400, cell, bar) == pytest.approx(got, abs=0.05)
                    box = _css_box(page, figures.image_cell_css((ih, iw), feat, 400, cell, colorbar=bar))
                    assert box == pytest.approx(got, abs=0.05), ((ih, iw), drawn, cell)
        browser.close()


def _report_latency(what: str, t0: float) -> None:
    """Print a click-to-update time (reported with ``pytest -s``; never asserted: it depends on the machine)."""
    print(f"\nlatency {what}: {time.perf_counter() - t0:.2f} s")


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
    page.evaluate("() => { document.querySelector('.st-key-som_umatrix .js-plotly-plot').dataset.somadTag = '1'; }")
    t0 = time.perf_counter()
    _click_data_point(page, 0, c, r)  # rectangular grid: neuron (r, c) is drawn at x = c, y = r
    page.get_by_text(f"Nearest training patches of neuron ({r}, {c})").wait_for()
    _report_latency("neuron click -> gallery heading", t0)
    page.wait_for_timeout(500)
    # the clicked neuron is outlined on both maps where plotly draws it, over figures left as they were:
    # the U-matrix's chart is the same element as before the click (Streamlit replaces a changed figure)
    for key in ("som_umatrix", "som_hitmap"):
        assert _outline_and_cell(page, key, r, c) == pytest.approx(_cell_px(page, key, r, c), abs=0.5), key
    assert page.evaluate("() => document.querySelector('.st-key-som_umatrix .js-plotly-plot').dataset.somadTag") == "1"
    n = min(16, int(hits[r, c]))
    page.get_by_text(f"#{n} d=").wait_for()  # gallery captions: "#i d=<distance> · <file> (row,col)"
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
    key = page.evaluate("() => [...document.querySelector('[class*=\"st-key-heat_\"]').classList]"
                        ".find(k => k.startsWith('st-key-heat_')).slice(7)")
    page.evaluate(f"() => {{ document.querySelector('.st-key-{key} .js-plotly-plot').dataset.somadTag = '1'; }}")
    t0 = time.perf_counter()
    _click_data_point(page, 0, (c + 0.5) * s / w, (r + 0.5) * s / h)
    page.get_by_text(f"Cell ({r}, {c}): BMU").wait_for()
    _report_latency("heatmap cell click -> BMU panel", t0)
    page.get_by_text("BMU and k nearest neurons").wait_for()
    page.wait_for_timeout(1500)
    _no_exception(page)
    # the clicked cell is outlined where plotly draws it, over the heatmap's unchanged chart (the same
    # element as before the click: Streamlit replaces a changed figure)
    drawn = _plotly_box(page, f".st-key-{key} .js-plotly-plot", c * s / w, (c + 1) * s / w, r * s / h,
                        (r + 1) * s / h)
    assert _outline_and_cell(page, key, r, c) == pytest.approx(drawn, abs=0.5)
    assert page.evaluate(f"() => document.querySelector('.st-key-{key} .js-plotly-plot').dataset.somadTag") == "1"
    # a double-click leaves the axes as they are (plotly's zoom reset would move the heatmap under its outline)
    ranges = f"() => {{ const l = document.querySelector('.st-key-{key} .js-plotly-plot')._fullLayout; " \
             "return [...l.xaxis.range, ...l.yaxis.range]; }"
    before = page.evaluate(ranges)
    box = page.locator(f".st-key-{key} rect.nsewdrag").first.bounding_box()
    page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(1500)
    assert page.evaluate(ranges) == pytest.approx(before)
    assert page.get_by_text("Open neuron").count() == model.k
    page.screenshot(path=str(SHOTS / "test_inspector.png"), full_page=True)


def test_reload_and_pasted_url_keep_the_view(page, server, dash_model_env, dash_eval):
    """The neuron clicked above (or typed here) survives F5; a pasted link opens the same image and neuron."""
    model = dash_model_env[2]
    page.goto(f"{server}/som_explorer")
    page.get_by_text("Nearest training patches of neuron").first.wait_for()
    page.get_by_label("Neuron row").fill("2")
    page.get_by_label("Neuron row").press("Enter")
    page.get_by_label("Neuron col").fill("3")
    page.get_by_label("Neuron col").press("Enter")
    page.get_by_text("Nearest training patches of neuron (2, 3)").wait_for()
    page.wait_for_function("() => window.location.search.includes('neuron=2%2C3')"
                           " || window.location.search.includes('neuron=2,3')")
    page.reload()
    page.get_by_text("Nearest training patches of neuron (2, 3)").wait_for()
    _no_exception(page)
    # a pasted link in a fresh browser context (a new session): image, cell and neuron
    sample = dash_eval.samples[-1]
    name = f"{sample.defect}/{sample.path.name}"
    url = f"{server}/test_inspector?model=small&image={name}&cell=4,5&neuron=1,1"
    ctx = page.context.browser.new_context(viewport={"width": 1400, "height": 2000})
    other = ctx.new_page()
    other.set_default_timeout(90_000)
    other.goto(url)
    other.get_by_text(f"{name}: score").wait_for()
    other.get_by_text("Cell (4, 5): BMU").wait_for()
    other.goto(f"{server}/som_explorer?model=small&neuron=5,6")
    other.get_by_text("Nearest training patches of neuron (5, 6)").wait_for()
    _no_exception(other)
    ctx.close()
    assert model.grid_[0] > 6


def test_f1_optimal_button_gives_f1_max_counts(page, server, dash_eval):
    page.goto(f"{server}/test_inspector")
    page.get_by_text("Click a pixel of the heatmap").wait_for()
    page.get_by_role("button", name=re.compile("^F1-optimal")).click()
    labels, scores = dash_eval.labels, dash_eval.scores
    pred = scores >= dash_eval.metrics["image_f1_threshold"]
    tp, fp, fn = int((pred & (labels == 1)).sum()), int((pred & (labels == 0)).sum()), int((~pred & (labels == 1)).sum())
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(dash_eval.metrics["image_f1_max"])
    for name, value in (("TP", tp), ("FP", fp), ("FN", fn)):
        metric = page.locator("[data-testid='stMetric']", has_text=name).first
        expect_text(metric, str(value))
    _no_exception(page)
    page.screenshot(path=str(SHOTS / "f1_optimal.png"), full_page=True)


def expect_text(locator, text: str) -> None:
    from playwright.sync_api import expect

    expect(locator.locator("[data-testid='stMetricValue']")).to_have_text(text)


def test_two_uploads_with_the_same_name(page, server, demo_root, tmp_path):
    """MVTec reuses file names across folders: two '000.png' uploads gave a duplicate-key traceback."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(demo_root / "tiles" / "test" / "good" / "000.png", a / "000.png")
    shutil.copy(demo_root / "tiles" / "test" / "hole" / "000.png", b / "000.png")
    page.goto(f"{server}/try_an_image")
    page.get_by_text("Upload one or more images").wait_for()
    # the page stops until something is uploaded; its link still carries the view state
    page.wait_for_function("() => window.location.search.includes('model=small')", timeout=15_000)
    page.locator("input[type='file']").set_input_files([str(a / "000.png"), str(b / "000.png")])
    page.get_by_text("Summary").wait_for()
    page.get_by_role("button", name="Download overlay PNG").nth(1).wait_for()
    page.wait_for_timeout(1500)
    _no_exception(page)
    assert page.get_by_role("button", name="Download overlay PNG").count() == 2
    page.screenshot(path=str(SHOTS / "try_an_image.png"), full_page=True)


def test_html_report_opens_offline(page, server, tmp_path):
    page.goto(f"{server}/metrics")
    button = page.get_by_role("button", name="Download HTML report")
    button.wait_for()
    with page.expect_download(timeout=120_000) as info:
        button.click()
    path = tmp_path / "report.html"
    info.value.save_as(path)
    ctx = page.context.browser.new_context(offline=True, viewport={"width": 1300, "height": 1800})
    ctx.route(re.compile(r"^https?://"), lambda route: route.abort())  # nothing remote may load
    rep = ctx.new_page()
    rep.goto(path.as_uri())
    rep.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 6")
    assert rep.locator(".js-plotly-plot").count() == 6  # curves, histogram, U-matrix, hit map and (issue 19) the regions map
    assert rep.locator("img[alt='heatmap']").count() >= 1
    rep.screenshot(path=str(SHOTS / "report.png"), full_page=True)
    ctx.close()


def _wait_url(page, param: str, value: str) -> None:
    page.wait_for_function("([p, v]) => new URLSearchParams(window.location.search).get(p) === v", arg=[param, value])


def test_footprint_and_cell_on_map_with_url_round_trip(page, server, dash_model_env, dash_eval):
    """Issue 19: a test image's footprint on the U-matrix, a click on a footprint neuron shows the cells
    that chose it (the fragment rerun also updates the URL), a reload keeps it; a heatmap cell shows where
    it lands (distance map, crops), and its 'Open neuron' link opens the SOM explorer with the footprint."""
    model = dash_model_env[2]
    ev = dash_eval
    h, w = model.feature_shape_
    i = int(np.flatnonzero(ev.labels == 1)[-1])
    name = f"{ev.samples[i].defect}/{ev.samples[i].path.name}"
    bmu = ev.patches.neighbours[i * h * w:(i + 1) * h * w, 0].numpy()
    counts = np.bincount(bmu, minlength=model.grid_[0] * model.grid_[1])
    j = int(np.argsort(-counts, kind="stable")[1])  # not the preselected busiest training neuron, most likely
    r, c = divmod(j, model.grid_[1])
    page.goto(f"{server}/som_explorer?model=small&footprint=1&image={name}")
    page.get_by_text("Nearest training patches of neuron").first.wait_for()
    page.locator("[data-testid='stPlotlyChart']").first.locator("rect.nsewdrag").first.wait_for()
    page.wait_for_timeout(1000)
    t0 = time.perf_counter()
    _click_data_point(page, 0, c, r)
    page.get_by_text(f"Neuron ({r}, {c}) was chosen by {int(counts[j])} cells").wait_for()
    _report_latency("footprint neuron click -> cells of the image", t0)
    _wait_url(page, "neuron", f"{r},{c}")
    _wait_url(page, "footprint", "1")
    page.get_by_text(f"Where neuron ({r}, {c}) lives").first.wait_for()
    _no_exception(page)
    page.screenshot(path=str(SHOTS / "som_explorer_footprint.png"), full_page=True)
    page.reload()
    page.get_by_text(f"Neuron ({r}, {c}) was chosen by {int(counts[j])} cells").wait_for()
    _no_exception(page)
    # the Test inspector: a cell of the same image on the map
    page.goto(f"{server}/test_inspector?model=small&image={name}")
    page.get_by_text("Click a pixel of the heatmap").wait_for()
    page.locator("[data-testid='stPlotlyChart']").first.locator("rect.nsewdrag").first.wait_for()
    page.wait_for_timeout(1000)
    cr, cc = h // 2, w // 2
    s = model.image_size
    t0 = time.perf_counter()
    _click_data_point(page, 0, (cc + 0.5) * s / w, (cr + 0.5) * s / h)
    page.get_by_text(f"Cell ({cr}, {cc}): BMU").wait_for()
    _report_latency("heatmap cell click -> BMU panel (with map views)", t0)
    page.get_by_text("Nearest normal training patches of its BMU").first.wait_for()
    page.get_by_text(f"Distance of cell ({cr}, {cc}) to every neuron").first.wait_for()
    _wait_url(page, "cell", f"{cr},{cc}")
    _no_exception(page)
    page.screenshot(path=str(SHOTS / "test_inspector_cell_on_map.png"), full_page=True)
    b = int(bmu[cr * w + cc])
    br, bc = divmod(b, model.grid_[1])
    page.get_by_role("button", name=f"Open neuron ({br}, {bc}) in the SOM explorer").click()
    page.get_by_text(f"Neuron ({br}, {bc}) was chosen by {int(counts[b])} cells").wait_for()
    _wait_url(page, "footprint", "1")
    _no_exception(page)


# ------------------------------------------------------------------ a shared, read-only demo
PRESENTER_PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def viewer_server(dash_model_env, demo_root, tmp_path_factory):
    """A server as the README's "Running a shared demo" starts it: read-only, the data roots fixed,
    a presenter password in a secrets file."""
    secrets = tmp_path_factory.mktemp("secrets") / "secrets.toml"
    secrets.write_text(f'presenter_password = "{PRESENTER_PASSWORD}"\n')
    yield from _serve({"SOMAD_DATA_DIR": str(demo_root), "SOMAD_MODELS_DIR": str(dash_model_env[0]),
                       "SOMAD_READ_ONLY": "1", "SOMAD_DATA_ROOTS": str(demo_root)},
                      ("--secrets.files", str(secrets)))


def test_shared_demo_viewer_cannot_write_and_roots_are_fixed(page, viewer_server, dash_model_env, tmp_path):
    """A viewer sees no write control; a crafted link and a wrong password change nothing; a root
    outside the allowed ones is refused without saying anything about it; the presenter unlocks one tab."""
    models = dash_model_env[0] / "tiles"
    before = sorted(p.name for p in models.iterdir())
    page.goto(f"{viewer_server}/?model=small&delete=small&default=small")
    page.get_by_text("Viewer mode").wait_for()
    page.get_by_text("Saved models", exact=True).wait_for()
    page.get_by_text("unknown link parameters 'default', 'delete' ignored").wait_for()
    for label in ("Make default", "Default", "Rename", "Delete...", "Fit", "Fit a demo model"):
        assert page.get_by_role("button", name=label, exact=True).count() == 0, label
    assert page.get_by_text("Fit a new model").count() == 0
    from playwright.sync_api import expect

    # no free-text root, no rename box, no fit form. Only pickers: a selectbox's search box is an
    # <input type="text"> too (role combobox), so free text is told by its widget, once the pickers are drawn.
    page.get_by_role("combobox", name="Model").wait_for()
    free_text = page.locator("[data-testid='stTextInput'] input:not([type='password']), textarea")
    try:  # retried: a rerun's stale elements leave the page late
        expect(free_text).to_have_count(0, timeout=30_000)
    except AssertionError:
        texts = free_text.evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "shared_demo_viewer_text_inputs.png"), full_page=True)
        raise AssertionError(f"a viewer sees free-text inputs {texts}") from None
    assert page.get_by_role("combobox", name="Dataset root").count() == 1  # the fixed roots, as a picker
    page.get_by_text("Presenter? Unlock this tab").click()
    page.get_by_label("Presenter password").fill("guess")
    page.get_by_role("button", name="Unlock presenter mode").click()
    page.get_by_text("Wrong password").wait_for()
    assert page.get_by_role("button", name="Rename").count() == 0
    _no_exception(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "shared_demo_viewer.png"), full_page=True)
    assert sorted(p.name for p in models.iterdir()) == before  # nothing renamed, deleted or marked
    # links outside the allowed roots: an existing folder and a missing one read alike
    secret = tmp_path / "private"
    (secret / "tiles").mkdir(parents=True)
    texts = []
    for root in (secret, tmp_path / "missing"):
        page.goto(f"{viewer_server}/som_explorer?root={root}&category=tiles")
        page.get_by_text("is not one of the data sets this dashboard shows").wait_for()
        page.get_by_text("Nearest training patches of neuron").first.wait_for()
        texts.append(page.locator("[data-testid='stAlertContentError']").all_inner_texts())
        assert str(tmp_path) not in page.content()
        _no_exception(page)
    assert texts[0] == texts[1] and len(texts[0]) == 1
    # the presenter unlocks this tab only (after the wait the wrong try started)
    time.sleep(1.2)
    page.goto(viewer_server)
    page.get_by_text("Presenter? Unlock this tab").click()
    page.get_by_label("Presenter password").fill(PRESENTER_PASSWORD)
    page.get_by_role("button", name="Unlock presenter mode").click()
    page.get_by_role("button", name="Rename").wait_for()
    ctx = page.context.browser.new_context()
    other = ctx.new_page()
    other.goto(viewer_server)
    other.get_by_text("Viewer mode").wait_for()
    assert other.get_by_role("button", name="Rename").count() == 0
    ctx.close()
