"""Click latency of the dashboard measured in a real browser (Debian chromium driven by Playwright).

Starts ``streamlit run app.py`` of a checkout (``--app-dir``, default this one) on a free port,
opens the SOM explorer and clicks ``--clicks`` neurons with training patches on the U-matrix,
then opens the Test inspector and clicks ``--clicks`` heatmap cells of the selected image.
Each click is timed from the mouse click to

* ``shown``: the text that only the new view has (the gallery heading "Nearest training patches of
  neuron (r, c)", or the cell panel heading "Cell (r, c): BMU"), and
* ``settled``: the script run has ended and no element of the page is stale (everything the click
  changed has arrived).

Everything cached per model (evaluation of the test split, decoded training images) is warmed by
two clicks that are not counted. Compare checkouts on the same model, one after the other::

    nice -n 5 python benchmarks/browser_clicks.py --models-dir models --data-dir ../shared/data/mvtec_ad \\
        --category bottle --clicks 15
    nice -n 5 python benchmarks/browser_clicks.py --app-dir /tmp/somad-main --models-dir $PWD/models ...

Prints the medians with ``os.getloadavg()``: timings depend on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
CHART_READY = "[data-testid='stPlotlyChart'] rect.nsewdrag"
"""CSS selector of a drawn plotly chart's drag layer: once it exists, a click on the chart is handled."""
SETTLED_JS = ("() => !document.querySelector(\"[data-testid='stStatusWidgetRunningIcon']\")"
              " && !document.querySelector(\"[data-stale='true']\")")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app_dir: Path, models_dir: Path, data_dir: Path, launcher: tuple[str, ...] = ("-m", "streamlit"),
                 env_extra: dict | None = None, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` of ``app_dir`` on a free port (``launcher``: what follows ``python``);
    the server's output goes to ``log`` when given (else it is dropped)."""
    port = _free_port()
    env = dict(os.environ, SOMAD_DATA_DIR=str(data_dir), SOMAD_MODELS_DIR=str(models_dir),
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", **(env_extra or {}))
    proc = subprocess.Popen([sys.executable, *launcher, "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=app_dir, env=env, stdout=open(log, "wb") if log else subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("streamlit did not start" + (": " + Path(log).read_text()[-2000:] if log else ""))


def click_data_point(page, chart_index: int, x: float, y: float) -> None:
    """Click data coordinates ``(x, y)`` of the ``chart_index``-th plotly chart (see tests/test_browser.py)."""
    page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot').length > {chart_index}"
                           f" && document.querySelectorAll('.js-plotly-plot')[{chart_index}]._fullLayout")
    px, py = page.evaluate(
        """([i, x, y]) => {
            const gd = document.querySelectorAll('.js-plotly-plot')[i];
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const r = gd.getBoundingClientRect();
            return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)];
        }""", [chart_index, x, y])
    page.mouse.click(px, py)


def settle(page) -> None:
    page.wait_for_timeout(300)
    try:
        page.wait_for_function(SETTLED_JS, polling=50, timeout=120_000)
    except Exception:
        print("the page did not settle within 120 s; going on", flush=True)


def timed_click(page, chart: int, x: float, y: float, text: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    click_data_point(page, chart, x, y)
    try:
        page.get_by_text(text).first.wait_for(timeout=120_000)
    except Exception:
        page.screenshot(path="browser_clicks_failed.png", full_page=True)
        print(f"waiting for '{text}' failed: see browser_clicks_failed.png", flush=True)
        raise
    shown = time.perf_counter() - t0
    try:
        page.wait_for_function(SETTLED_JS, polling=50, timeout=60_000)
    except Exception:  # the page never reported the end of the run: count the click as not settled
        page.screenshot(path="browser_clicks_unsettled.png", full_page=True)
        print("the page did not settle within 60 s: see browser_clicks_unsettled.png", flush=True)
        return shown, float("nan")
    return shown, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--app-dir", default=str(REPO), help="checkout whose app.py is served")
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--model", default="default", help="model name under <models-dir>/<category>/")
    ap.add_argument("--clicks", type=int, default=15)
    ap.add_argument("--chromium", default=os.environ.get("SOMAD_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--json", help="append the result as one JSON line to this file")
    ap.add_argument("--only", choices=("neuron", "cell"), help="time only this kind of click")
    ap.add_argument("--footprint", action="store_true",
                    help="neuron clicks with a test image's footprint on the U-matrix (footprint=1 in the URL)")
    ap.add_argument("--shot-image", help='after the clicks, screenshot this test image ("<defect>/<file>") on '
                                         "the map (SOM explorer with its footprint) into --shots")
    ap.add_argument("--shot-cell", default="", help="and the Test inspector with this cell 'r,c' clicked")
    ap.add_argument("--shots", default="benchmarks/results/screenshots")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from somad.persistence import load_model

    model = load_model(Path(args.models_dir) / args.category / args.model)
    hits = model.hit_map()
    rows, cols = model.grid_
    h, w = model.feature_shape_
    s = model.image_size
    rng = np.random.default_rng(0)
    busy = np.flatnonzero(hits.ravel() > 0)
    neurons = [divmod(int(j), cols) for j in rng.choice(busy, args.clicks + 2, replace=False)]
    cells = [(int(rng.integers(2, h - 2)), int(rng.integers(2, w - 2))) for _ in range(args.clicks + 2)]
    query = f"?model={args.model}&category={args.category}"
    proc, url = start_server(Path(args.app_dir), Path(args.models_dir).resolve(), Path(args.data_dir).resolve())
    out = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.set_default_timeout(600_000)
            print("opening the SOM explorer (the first load scores the test split)", flush=True)
            page.goto(f"{url}/som_explorer{query}" + ("&footprint=1" if args.footprint else ""))
            page.get_by_text("Test images where this neuron is the BMU").first.wait_for()
            page.get_by_role("button", name="Inspect").first.wait_for()
            settle(page)
            times = []
            for n, (r, c) in enumerate(neurons if args.only != "cell" else []):
                if model.topology == "hexagonal":
                    x, y = c + 0.5 * (r % 2), r * 3 ** 0.5 / 2
                else:
                    x, y = c, r
                t = timed_click(page, 0, x, y, f"Nearest training patches of neuron ({r}, {c})")
                if n >= 2:
                    times.append(t)
                print(f"neuron ({r}, {c}): {t[0]:.2f} s shown, {t[1]:.2f} s settled", flush=True)
                page.wait_for_timeout(300)
            out["neuron"] = times
            page.goto(f"{url}/test_inspector{query}")
            page.get_by_text("Click a pixel of the heatmap").first.wait_for()
            page.locator(".js-plotly-plot").first.wait_for()
            settle(page)
            idx = 0  # the clickable heatmap is the page's first plotly chart
            times = []
            for n, (r, c) in enumerate(cells if args.only != "neuron" else []):
                t = timed_click(page, idx, (c + 0.5) * s / w, (r + 0.5) * s / h, f"Cell ({r}, {c}): BMU")
                if n >= 2:
                    times.append(t)
                print(f"cell ({r}, {c}): {t[0]:.2f} s shown, {t[1]:.2f} s settled", flush=True)
                page.wait_for_timeout(300)
            out["cell"] = times
            if args.shot_image:
                shots = Path(args.shots)
                shots.mkdir(parents=True, exist_ok=True)
                stem = args.shot_image.replace("/", "_").rsplit(".", 1)[0]
                page.goto(f"{url}/som_explorer{query}&footprint=1&image={args.shot_image}")
                page.get_by_text("Footprint of the image on the U-matrix").first.wait_for()
                settle(page)
                page.screenshot(path=str(shots / f"footprint_{stem}.png"), full_page=True)
                cell = f"&cell={args.shot_cell}" if args.shot_cell else ""
                page.goto(f"{url}/test_inspector{query}&image={args.shot_image}{cell}")
                page.get_by_text("heatmap: click a pixel").first.wait_for()
                if args.shot_cell:
                    page.get_by_text("Distance of cell").first.wait_for()
                settle(page)
                page.screenshot(path=str(shots / f"inspector_{stem}.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    load = os.getloadavg()
    result = {"app_dir": str(Path(args.app_dir).resolve()), "model": f"{args.category}/{args.model}",
              "grid": list(model.grid_), "clicks": args.clicks, "footprint": args.footprint, "loadavg": [round(v, 2) for v in load]}
    for kind, label in (("neuron", "neuron click (SOM explorer)"), ("cell", "heatmap-cell click (Test inspector)")):
        if not out.get(kind):
            continue
        shown = [t[0] for t in out[kind]]
        settled = [t[1] for t in out[kind] if t[1] == t[1]] or [float("nan")]
        result[kind] = {"shown_median_s": round(statistics.median(shown), 3),
                        "settled_median_s": round(statistics.median(settled), 3),
                        "settled_max_s": round(max(settled), 3)}
        print(f"{label}: median {statistics.median(shown):.2f} s to the new view, "
              f"{statistics.median(settled):.2f} s until the page settled (max {max(settled):.2f} s), "
              f"{len(shown)} clicks")
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
