"""Load test of the dashboard: N browser sessions (Playwright + Chromium) on one Streamlit server.

Each session opens the app and, once every session has it open (they arrive together unless
``--stagger``), looks at it for its think time and loops until the time is up: the SOM explorer (neuron clicks on the
U-matrix), the Test inspector (heatmap-cell clicks), Try an image (one more large JPEG uploaded and
scored and shown each round, up to ``--uploads``), changing pages through the navigation. It reports click latency (click to the
updated heading) p50 / p95, the server's resident memory (RSS, of the Streamlit process) at the
start, at its peak and at the end after every session closed and the server had time to drop
them, the RSS growth per upload (RSS just after it was shown minus just before), and the number of exceptions (shown in a page or logged,
a session that failed, a JavaScript error in a page).

A viewer looks at every result for its think time (``--think``, uniform 0.5x to 1.5x) before the
next action: the opened app, each click, each upload and, since 2026-12-05, each page change (before,
the first click on a page came as soon as its chart was drawn, while the page was still settling: no
person clicks a heatmap cell 0 s after the page appeared). Every click, page change and upload is in
the run's ``action_log`` (viewer, kind, start, end), to see what a slow click met.

    python benchmarks/dashboard_load.py --viewers 1 4 8 --seconds 240 --uploads 3 --settle 130 --think 3 \\
        --data-dir ../shared/data/mvtec_ad --category bottle --out benchmarks/results/dashboard_load.json

A click is timed from the mouse click to the heading of the new view. If the chart moved between
measuring the point and clicking (a late layout change), the click lands on another neuron or cell:
the view still changes, the sample counts, and ``clicks_elsewhere`` says how often; a click that
changes nothing within 60 s is counted in ``clicks_lost`` and the session goes on.

Needs a fitted model of the category in ``--models-dir`` (``python -m somad fit --data-dir
../shared/data/mvtec_ad --category bottle``) and Debian's chromium. The large JPEGs (2500x2500,
about 2.5 MB) are made from the category's test images in a temporary folder.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

import browser_clicks

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CHROMIUM = os.environ.get("SOMAD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS_DIR = Path(os.environ["SOMAD_LOAD_SHOTS"]) if os.environ.get("SOMAD_LOAD_SHOTS") else None
"""Where a session that fails saves a screenshot of its page (set ``SOMAD_LOAD_SHOTS``)."""
NAV = {"som": "SOM explorer", "inspector": "Test inspector", "try": "Try an image", "model": "Model"}


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (VmRSS of /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``every`` seconds; ``peak`` and ``samples`` (time, MB)."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop_flag = pid, every, [], False

    def run(self) -> None:
        while not self.stop_flag:
            try:
                self.samples.append((time.time(), rss_mb(self.pid)))
            except OSError:
                return
            time.sleep(self.every)

    @property
    def peak(self) -> float:
        return max(v for _, v in self.samples)


def make_jpegs(data_dir: Path, category: str, folder: Path, n: int, px: int) -> list[Path]:
    """``n`` large JPEGs (``px`` x ``px``) from the category's test images, with a little noise so
    that each file is distinct."""
    from somad import data

    samples = data.test_samples(data_dir, category)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rgb = data.read_raw(samples[(i * 7) % len(samples)].path)
        big = np.asarray(Image.fromarray(rgb).resize((px, px), Image.BILINEAR), dtype=np.int16)
        big = np.clip(big + rng.integers(-10, 11, big.shape), 0, 255).astype(np.uint8)
        path = folder / f"large_{i:02d}.jpg"
        Image.fromarray(big).save(path, quality=95)
        out.append(path)
    return out


def start_server(models_dir: Path, data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """This checkout's app on a free port, its output in ``log`` (:func:`browser_clicks.start_server`)."""
    return browser_clicks.start_server(REPO, models_dir, data_dir, log=log)


async def click_data_point(page, x: float, y: float) -> None:
    px, py = await page.evaluate(
        """([x, y]) => {
            const gd = document.querySelectorAll('.js-plotly-plot')[0];
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const r = gd.getBoundingClientRect();
            return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)];
        }""", [x, y])
    await page.mouse.click(px, py)


HEADINGS_JS = "[...document.querySelectorAll('h1, h2, h3, h4')].map(h => h.textContent.trim())"
"""JavaScript: the texts of the page's headings."""
HEADING_JS = f"""([kind, expected, before]) => {{
    const hs = {HEADINGS_JS}.filter(t => t.startsWith(kind));
    if (hs.some(t => t.startsWith(expected))) return 'hit';
    return hs.some(t => t !== before) ? 'elsewhere' : false;
}}"""
LOST_S = 60
"""A click whose view has not changed after this many seconds is counted as lost and the session goes on."""


async def screenshot(page, name: str) -> None:
    """Save the page as ``name`` in :data:`SHOTS_DIR` (when set); a failing screenshot is ignored."""
    if SHOTS_DIR:
        SHOTS_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            await page.screenshot(path=str(SHOTS_DIR / name), full_page=True)


async def heading(page, kind: str) -> str | None:
    """The text of the page's first heading that starts with ``kind`` (None when there is none)."""
    return await page.evaluate(f"kind => {HEADINGS_JS}.find(t => t.startsWith(kind)) ?? null", kind)


async def timed_click(page, stats: dict, label: str, kind: str, expected: str, x: float, y: float,
                      viewer: int = 0) -> None:
    """Click data point ``(x, y)`` of the page's first chart and wait until a heading starting with
    ``expected`` is shown: one latency sample (label, seconds, end time). When another heading of
    ``kind`` replaces the old one instead (the chart moved between measuring and clicking, so the
    click landed on another neuron or cell) the sample counts as well and ``stats["elsewhere"]``
    says how often; a click that changes nothing within :data:`LOST_S` is counted in ``stats["lost"]``.
    Each timed click is also logged in ``stats["actions"]`` as (viewer, label, start, end) (epoch seconds)."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    before = await heading(page, kind)
    t0, t_wall0 = time.perf_counter(), time.time()
    await click_data_point(page, x, y)
    try:
        got = await page.wait_for_function(HEADING_JS, arg=[kind, expected, before], timeout=LOST_S * 1000,
                                           polling=50)
    except PlaywrightTimeout:
        stats["lost"] += 1
        stats["lost_detail"].append({"kind": label, "expected": expected, "before": before,
                                     "after": await heading(page, kind), "at": time.time()})
        await screenshot(page, f"lost-{stats['lost']}.png")
        return
    stats["clicks"].append((label, time.perf_counter() - t0, time.time()))
    stats["actions"].append((viewer, label, t_wall0, time.time()))
    if await got.json_value() == "elsewhere":
        stats["elsewhere"] += 1


async def count_exceptions(page) -> int:
    return await page.locator("[data-testid='stException']").count()


async def session(browser, url: str, model, jpegs: list[Path], until: float, stats: dict, rng: random.Random,
                  max_uploads: int, pid: int | None = None, think: float = 0.0, rounds: int = 0,
                  delay: float = 0.0, opened: asyncio.Barrier | None = None, viewer: int = 0) -> None:
    """One viewer (number ``viewer``): rounds of neuron clicks, cell clicks, an upload and page changes until ``until``
    (and at least ``rounds`` rounds), pausing ``think`` seconds (uniform 0.5x to 1.5x) after each action,
    the opening of the app and every page change included, as a person looks at the result. The viewer arrives ``delay`` seconds after the run starts and stays
    until ``until + delay``. With ``opened``, it starts its rounds once every viewer has the app open
    (the time each took to open it is recorded in ``stats["open_s"]``). Each click is recorded as
    (kind, seconds, end time); every click, page change and upload in ``stats["actions"]`` as (viewer,
    kind, start, end), and the page's JavaScript errors in ``stats["page_errors"]``."""

    async def pause():
        if think > 0:
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))

    async def go(name: str, ready: str) -> None:
        """Change page through the navigation link of :data:`NAV` ``name``, wait for the text ``ready``
        and a drawn chart, and look at the page (:func:`pause`)."""
        t0 = time.time()
        await page.get_by_role("link", name=NAV[name]).first.click()
        await page.get_by_text(ready).first.wait_for()
        await page.locator(browser_clicks.CHART_READY).first.wait_for()
        stats["actions"].append((viewer, f"to {name}", t0, time.time()))
        await pause()

    await asyncio.sleep(delay)
    until += delay
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1800})
    page = await ctx.new_page()
    page.set_default_timeout(180_000)
    page.on("pageerror", lambda exc: stats["page_errors"].append(f"viewer {viewer}: {str(exc)[:300]}"))
    rows, cols = model.grid_
    h, w = model.feature_shape_
    s = model.image_size
    held = 0
    try:
        t_open = time.perf_counter()
        await page.goto(f"{url}/som_explorer")
        await page.get_by_text("Nearest training patches of neuron").first.wait_for()
        await page.locator(browser_clicks.CHART_READY).first.wait_for()
        stats["open_s"].append(time.perf_counter() - t_open)
        if opened is not None:
            await opened.wait()
            opened = None
        await pause()  # the opened page is looked at too, like every other result
        done = 0
        while done < rounds or time.time() < until:
            done += 1
            await go("som", "Nearest training patches of neuron")
            for _ in range(2):
                r, c = rng.randrange(rows), rng.randrange(cols)
                await timed_click(page, stats, "neuron", "Nearest training patches of neuron",
                                  f"Nearest training patches of neuron ({r}, {c})", c, r, viewer)
                await pause()
            stats["exceptions"] += await count_exceptions(page)
            # the heatmap's title, not the "Click a pixel" hint: from the second round on, the session's
            # last clicked cell is still selected and its panel replaces the hint
            await go("inspector", "heatmap: click a pixel")
            for _ in range(2):
                r, c = rng.randrange(h), rng.randrange(w)
                await timed_click(page, stats, "cell", "Cell (", f"Cell ({r}, {c}): BMU",
                                  (c + 0.5) * s / w, (r + 0.5) * s / h, viewer)
                await pause()
            stats["exceptions"] += await count_exceptions(page)
            if held < max_uploads and time.time() < until:
                await page.get_by_role("link", name=NAV["try"]).first.click()
                chooser = page.locator("[data-testid='stFileUploaderDropzoneInput']")
                await chooser.wait_for(state="attached")
                before = rss_mb(pid) if pid else None
                t0 = time.perf_counter()
                jpeg = jpegs[held % len(jpegs)]
                await chooser.set_input_files(str(jpeg))
                held += 1
                # its own result heading: the uploader forgets earlier files when the page is left (Streamlit
                # drops a widget's value when a run does not draw it), so counting headings would wait forever
                await page.get_by_text(f"{jpeg.name}: score").first.wait_for()
                stats["uploads"].append(time.perf_counter() - t0)
                stats["actions"].append((viewer, "upload", time.time() - stats["uploads"][-1], time.time()))
                if pid:
                    await asyncio.sleep(1)
                    stats["upload_rss_mb"].append(rss_mb(pid) - before)
                stats["held"] += 1
                await pause()
                stats["exceptions"] += await count_exceptions(page)
                # move on to the other pages (which releases this upload: the uploader is not drawn there)
    except Exception as exc:  # a timeout or a crash of the page counts as an exception of the run
        stats["errors"].append(f"{type(exc).__name__}: {str(exc)[:300]}")
        if opened is not None:  # failed before the app was open: the others must not wait for it
            await opened.abort()
        await screenshot(page, f"error-{len(stats['errors'])}.png")
    finally:
        await ctx.close()


async def run_viewers(url: str, n: int, seconds: float, model, jpegs, max_uploads: int, sampler, pid,
                      think: float = 0.0, chromium: str = CHROMIUM, rounds: int = 0, stagger: float = 0.0) -> dict:
    from playwright.async_api import async_playwright

    stats = {"clicks": [], "uploads": [], "upload_rss_mb": [], "exceptions": 0, "errors": [], "held": 0,
             "lost": 0, "lost_detail": [], "elsewhere": 0, "open_s": [], "actions": [], "page_errors": []}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        until = time.time() + seconds
        # arriving together, the viewers start their rounds once all have the app open: opening it costs each
        # Chromium ~3 s of CPU (Streamlit's and plotly's JavaScript), which here runs on the server's cores
        opened = asyncio.Barrier(n) if stagger == 0 else None
        await asyncio.gather(*(session(browser, url, model, jpegs, until, stats, random.Random(i), max_uploads, pid,
                                       think, rounds, i * stagger, opened, i)
                               for i in range(n)))
        await browser.close()
    return stats


def percentile(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad")
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    ap.add_argument("--viewers", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--seconds", type=float, default=120, help="how long the sessions of one run click")
    ap.add_argument("--uploads", type=int, default=5, help="large JPEGs each session uploads and holds (at most)")
    ap.add_argument("--image-px", type=int, default=2500)
    ap.add_argument("--settle", type=float, default=150,
                    help="seconds to wait after the sessions closed before the end RSS (Streamlit keeps a "
                         "disconnected session 120 s)")
    ap.add_argument("--think", type=float, default=0.0,
                    help="seconds a viewer looks at each result before the next action (uniform 0.5x to 1.5x); "
                         "0 = back-to-back clicks, a stress test rather than people")
    ap.add_argument("--browser-nice", type=int, default=0,
                    help="run Chromium at this nice level: the viewers' browsers share the server's cores here, "
                         "while a real viewer's browser runs on their own machine")
    ap.add_argument("--stagger", type=float, default=0.0,
                    help="viewer i arrives i x this many seconds after the first (each then stays --seconds); "
                         "0 = all at once (each looks at the opened app for its own think time before the "
                         "first click; with --think 0 their first rounds run in lockstep)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from somad import store
    from somad.persistence import load_model

    model_dir = store.default_model(args.models_dir, args.category)
    if model_dir is None:
        raise SystemExit(f"no model of {args.category} in {args.models_dir}: run `python -m somad fit --data-dir "
                         f"{args.data_dir} --category {args.category}` first.")
    model = load_model(model_dir)
    results = {"command": " ".join(sys.argv), "model": str(model_dir), "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = make_jpegs(args.data_dir, args.category, Path(tmp), max(4, args.uploads), args.image_px)
        chromium = CHROMIUM
        if args.browser_nice:
            chromium = str(Path(tmp) / "chromium-niced")
            Path(chromium).write_text(f'#!/bin/sh\nexec nice -n {args.browser_nice} {CHROMIUM} "$@"\n')
            os.chmod(chromium, 0o755)
        results["jpeg_mb"] = round(float(np.mean([p.stat().st_size for p in jpegs])) / 1e6, 2)
        for n in args.viewers:
            log = Path(tmp) / f"server-{n}.log"
            proc, url = start_server(args.models_dir, args.data_dir, log)
            try:
                # warm-up: one session goes once through every page and click (no upload, so the start
                # RSS holds none): the model, the test split's scores, the regions, the mean training
                # image and the other per-model caches are in memory before the timed sessions start
                warm = asyncio.run(run_viewers(url, 1, 0, model, jpegs, 0, None, proc.pid, rounds=1))
                time.sleep(5)
                start = rss_mb(proc.pid)
                sampler = RssSampler(proc.pid)
                sampler.start()
                load0 = os.getloadavg()
                t0 = time.time()
                stats = asyncio.run(run_viewers(url, n, args.seconds, model, jpegs, args.uploads, sampler, proc.pid,
                                                args.think, chromium, stagger=args.stagger))
                wall = time.time() - t0
                load1 = os.getloadavg()
                peak_held = sampler.peak
                time.sleep(args.settle)
                end = rss_mb(proc.pid)
                sampler.stop_flag = True
                logged = len(re.findall(r"Traceback \(most recent call last\)", log.read_text(errors="replace")))
            finally:
                proc.terminate()
                proc.wait(20)
            clicks = [t for _, t, _ in stats["clicks"]]
            by_kind = {kind: [t for k, t, _ in stats["clicks"] if k == kind] for kind in ("neuron", "cell")}
            run = {"viewers": n, "think_s": args.think, "stagger_s": args.stagger, "browser_nice": args.browser_nice, "seconds": round(wall, 1), "clicks": len(clicks),
                   "click_p50_s": percentile(clicks, 50), "click_p95_s": percentile(clicks, 95),
                   "neuron_p50_s": percentile(by_kind["neuron"], 50), "cell_p50_s": percentile(by_kind["cell"], 50),
                   "neuron_p95_s": percentile(by_kind["neuron"], 95), "cell_p95_s": percentile(by_kind["cell"], 95),
                   # every timed click: kind, seconds, when it ended (seconds after the sessions started)
                   "click_log": [(k, round(t, 3), round(end - t0, 1)) for k, t, end in stats["clicks"]],
                   "open_app_s": [round(t, 2) for t in stats["open_s"]],
                   "uploads": stats["held"], "upload_p50_s": percentile(stats["uploads"], 50),
                   "rss_start_mb": round(start, 1), "rss_peak_mb": round(peak_held, 1), "rss_end_mb": round(end, 1),
                   "rss_growth_to_peak_per_upload_mb": round((peak_held - start) / stats["held"], 1) if stats["held"] else None,
                   # RSS just after an upload was scored and shown minus just before it (other sessions
                   # work meanwhile, so this is an upper bound of what one held upload costs)
                   "rss_growth_per_upload_mb": percentile(stats["upload_rss_mb"], 50),
                   "clicks_elsewhere": stats["elsewhere"], "clicks_lost": stats["lost"],
                   "lost_clicks": [{**d, "at": round(d["at"] - t0, 1)} for d in stats["lost_detail"]],
                   # every click, page change and upload: viewer, kind, start, end (seconds after the sessions started)
                   "action_log": [(v, k, round(a - t0, 2), round(b - t0, 2)) for v, k, a, b in sorted(
                       stats["actions"], key=lambda r: r[2])],
                   "page_errors": stats["page_errors"],
                   "exceptions_in_pages": stats["exceptions"], "exceptions_logged": logged,
                   # the warm-up session's (no think time: it clicks as soon as a chart is drawn)
                   "warmup_clicks_lost": warm["lost"], "warmup_errors": warm["errors"] + warm["page_errors"],
                   "session_errors": stats["errors"], "loadavg_before": load0, "loadavg_after": load1}
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    print("\n| viewers | app opened in (slowest) | clicks (elsewhere / lost) | click p50 / p95 s | uploads | "
          "RSS start / peak / end MB | growth per upload MB (median) | exceptions | load average (1 min) before / after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        growth = r["rss_growth_per_upload_mb"]
        print(f"| {r['viewers']} | {max(r['open_app_s'], default=float('nan')):.1f} s | "
              f"{r['clicks']} ({r['clicks_elsewhere']} / {r['clicks_lost']}) | "
              f"{r['click_p50_s'] or float('nan'):.2f} / "
              f"{r['click_p95_s'] or float('nan'):.2f} | {r['uploads']} | {r['rss_start_mb']:.0f} / "
              f"{r['rss_peak_mb']:.0f} / {r['rss_end_mb']:.0f} | {'n/a' if growth is None else f'{growth:.0f}'} | "
              f"{r['exceptions_in_pages'] + r['exceptions_logged'] + len(r['session_errors']) + len(r['page_errors'])} | "
              f"{r['loadavg_before'][0]:.1f} / {r['loadavg_after'][0]:.1f} |")
    for r in results["runs"]:
        if r["warmup_clicks_lost"] or r["warmup_errors"] or r["page_errors"]:
            print(f"{r['viewers']} viewers: warm-up session {r['warmup_clicks_lost']} lost clicks, errors "
                  f"{r['warmup_errors']}; JavaScript errors in the timed sessions {r['page_errors']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
