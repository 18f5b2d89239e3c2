"""Where a dashboard click's time goes: server, websocket payload, browser (issue 19 item 9).

Drives the same clicks as ``benchmarks/browser_clicks.py`` (neurons on the SOM explorer's
U-matrix, then heatmap cells in the Test inspector) and reports, per kind of click (medians over the
timed clicks, after 2 warm-up clicks):

* ``shown`` / ``settled``: as in ``browser_clicks.py`` (seconds from the mouse click);
* ``server``: from the rerun request leaving the browser to the last message of the run arriving
  (the script's run plus transport);
* the bytes the server sent over the websocket, by element type (decoded ``ForwardMsg``\\ s; a
  ``ref`` is a message the browser already had cached), and the images fetched over HTTP;
* the browser's main-thread time (Chrome's ``Performance.getMetrics``: task, script, layout and
  style time) between the click and the settled page;
* the CPU seconds (``/proc``) of every Chromium process (browser, renderer, GPU, utility) and of the
  server, from the click to :data:`CPU_TAIL_S` after the settled page: what a click costs the machine,
  which in ``dashboard_load.py`` the browsers share with the server;
* with ``--profile``: the server's script run under cProfile (``benchmarks/profiled_streamlit.py``),
  cumulative seconds per click of each ``render_*`` section and of the costly calls inside them
  (profiling slows Python down: read the shares, not the absolute times).

    nice -n 5 python benchmarks/click_breakdown.py --models-dir models --data-dir ../shared/data/mvtec_ad \\
        --category bottle --clicks 6 [--profile]
"""
from __future__ import annotations

import argparse
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import browser_clicks as bc  # noqa: E402

INIT_JS = """
(() => {
  window.__log = [];
  const Orig = window.WebSocket;
  class Logged extends Orig {
    constructor(...a) {
      super(...a);
      this.addEventListener('message', e => {
        const d = e.data; window.__log.push(['in', performance.now(), d.byteLength ?? d.size ?? d.length]);
      });
    }
    send(d) { window.__log.push(['out', performance.now(), d.byteLength ?? d.size ?? d.length]); return super.send(d); }
  }
  window.WebSocket = Logged;
  document.addEventListener('mousedown', () => window.__log.push(['click', performance.now(), 0]), true);
})();
"""
TRACE_CATEGORIES = ["devtools.timeline", "v8.execute", "blink", "disabled-by-default-devtools.timeline"]
METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")
HOT = ("to_json", "_np_array_to_bytes", "_ensure_image_size_and_format", "plotly_chart", "image", "som_map",
       "footprint_map", "image_figure", "distance_map_figure", "positions_figure", "image_source", "patch_crops",
       "nearest_training_patches", "highlight_cells", "at_shape", "contours", "dataframe",
       "return_figure_from_figure_or_data", "_enqueue", "neuron_test_hits", "explain_cell", "image_footprint",
       "patch_on_map", "distance_map", "explain_contributions", "neuron_positions", "markdown", "button",
       "compute_and_register_element_id", "marshall_images")


def _classify(payload: bytes) -> str:
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    msg = ForwardMsg()
    try:
        msg.ParseFromString(payload)
    except Exception:
        return "undecoded"
    kind = msg.WhichOneof("type")
    if kind == "ref_hash":
        return "ref (cached element)"
    if kind == "delta":
        d = msg.delta.WhichOneof("type")
        if d == "new_element":
            return msg.delta.new_element.WhichOneof("type")
        return d
    return kind


def click_once(page, cdp, frames: list, chart: int, x: float, y: float, text: str) -> dict:
    return measured(page, cdp, frames, lambda: bc.timed_click(page, chart, x, y, text))


def page_change_once(page, cdp, frames: list, link: str, ready: str) -> dict:
    """Change page through the navigation link ``link``: seconds to the text ``ready`` and a drawn chart
    (when ``dashboard_load.py`` clicks next) and to the settled page, with the same server, websocket and
    main-thread figures as :func:`click_once`."""
    def change() -> tuple[float, float]:
        t0 = time.perf_counter()
        page.get_by_role("link", name=link).first.click()
        page.get_by_text(ready).first.wait_for(timeout=120_000)
        page.locator(bc.CHART_READY).first.wait_for(timeout=120_000)
        shown = time.perf_counter() - t0
        page.wait_for_timeout(300)
        page.wait_for_function(bc.SETTLED_JS, polling=50, timeout=120_000)
        return shown, time.perf_counter() - t0

    return measured(page, cdp, frames, change)


CPU_TAIL_S = 0.5
"""Seconds waited after a settled page before the CPU counters are read again (raster and image
decoding end after the last message)."""
SERVER_PID: list[int] = []
"""The Streamlit server's process id (set by :func:`main`), for its CPU seconds per click."""
BROWSER_NAME = ["chromium"]
"""File name of the browser's executable (set by :func:`main` from ``--chromium``): its processes are
those whose command starts with it (Debian's ``/usr/bin/chromium`` runs ``/usr/lib/chromium/chromium``)."""


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system, from /proc) used so far by every process of the browser (browser,
    renderers, GPU and utility processes; :data:`BROWSER_NAME`) and by the server (:data:`SERVER_PID`)."""
    tick = os.sysconf("SC_CLK_TCK")
    browser = server = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) in SERVER_PID:
            server += used
        elif Path(cmd.split(" ")[0]).name == BROWSER_NAME[0]:
            browser += used
    return browser, server


def measured(page, cdp, frames: list, act) -> dict:
    """Run ``act()`` (returns seconds to shown and to settled) between two readings of the browser's
    metrics and of the CPU counters (:func:`cpu_seconds`), with the websocket log and the resource
    timings cleared: the figures of :func:`_figures`."""
    page.evaluate("() => { window.__log = []; performance.clearResourceTimings(); }")
    frames.clear()
    before = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    cpu0 = cpu_seconds()
    shown, settled = act()
    after = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    time.sleep(CPU_TAIL_S)
    cpu1 = cpu_seconds()
    return {**_figures(page, frames, shown, settled, before, after),
            "browser_cpu": cpu1[0] - cpu0[0], "server_cpu": cpu1[1] - cpu0[1]}


def _figures(page, frames: list, shown: float, settled: float, before: dict, after: dict) -> dict:
    log = page.evaluate("() => window.__log")
    media = page.evaluate("() => performance.getEntriesByType('resource').filter(e => e.name.includes('/media/'))"
                          ".map(e => [e.transferSize, e.encodedBodySize])")
    tc = next((t for k, t, _ in log if k == "click"), log[0][1] if log else 0.0)
    outs = [t for k, t, _ in log if k == "out" and t >= tc]
    ins = [(t, n) for k, t, n in log if k == "in" and t >= tc]
    by_type: dict[str, int] = defaultdict(int)
    for payload in list(frames):
        by_type[_classify(payload)] += len(payload)
    return {"shown": shown, "settled": settled,
            "server": (ins[-1][0] - outs[0]) / 1000 if outs and ins else float("nan"),
            "first_msg": (ins[0][0] - tc) / 1000 if ins else float("nan"),
            "last_msg": (ins[-1][0] - tc) / 1000 if ins else float("nan"),
            "ws_bytes": sum(n for _, n in ins), "ws_msgs": len(ins), "by_type": dict(by_type),
            "media_n": len(media), "media_bytes": sum(m[1] for m in media),
            **{m: after.get(m, 0) - before.get(m, 0) for m in METRICS}}


def trace_summary(trace: bytes, top: int = 25) -> None:
    """Self time per trace event name on the renderer's main thread (Chrome tracing)."""
    import json

    events = json.loads(trace)
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    main = {k for k, v in names.items() if v == "CrRendererMain"}
    spans = sorted((e for e in events if e.get("ph") == "X" and (e["pid"], e["tid"]) in main and "dur" in e),
                   key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
    self_t: dict[str, float] = defaultdict(float)
    stack: list[list] = []  # [end, name, child time]
    for e in spans:
        while stack and stack[-1][0] <= e["ts"]:
            end, name, child, dur = stack.pop()
            self_t[name] += dur - child
        if stack:
            stack[-1][2] += e["dur"]
        label = e["name"]
        if label in ("FunctionCall", "EvaluateScript", "v8.callFunction", "V8.Execute") and e.get("args", {}).get("data"):
            d = e["args"]["data"]
            label += f" {d.get('functionName', '')} {Path(d.get('url', '') or '').name}"
        stack.append([e["ts"] + e["dur"], label, 0.0, e["dur"]])
    while stack:
        end, name, child, dur = stack.pop()
        self_t[name] += dur - child
    total = sum(self_t.values())
    print(f"   renderer main thread: {total / 1e6:.3f} s of trace events; self time by event:")
    for k, v in sorted(self_t.items(), key=lambda kv: -kv[1])[:top]:
        print(f"   {v / 1e6:7.3f} s  {k}")


def js_profile_summary(profile: dict, top: int = 20) -> None:
    """Self time of the JS CPU profile (CDP ``Profiler``) by script file and by function."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    self_t: dict[int, float] = defaultdict(float)
    for sid, dt in zip(profile["samples"], profile["timeDeltas"]):
        self_t[sid] += dt / 1e6
    by_file: dict[str, float] = defaultdict(float)
    by_fn: dict[str, float] = defaultdict(float)
    for nid, t in self_t.items():
        cf = nodes[nid]["callFrame"]
        f = Path(cf["url"]).name or "(" + (cf["functionName"] or "native") + ")"
        by_file[f] += t
        by_fn[f"{cf['functionName'] or '(anonymous)'} {f}:{cf['lineNumber']}:{cf['columnNumber']}"] += t
    print("   JS CPU profile, self time by script:")
    for k, v in sorted(by_file.items(), key=lambda kv: -kv[1])[:8]:
        print(f"   {v:7.3f} s  {k}")
    print("   by function:")
    for k, v in sorted(by_fn.items(), key=lambda kv: -kv[1])[:top]:
        print(f"   {v:7.3f} s  {k}")


def summarize(label: str, rows: list[dict]) -> None:
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    print(f"\n== {label}: {len(rows)} times (medians)")
    print(f"shown {med('shown'):.3f} s, settled {med('settled'):.3f} s; first message {med('first_msg'):.3f} s, "
          f"last message {med('last_msg'):.3f} s after the click; server (request -> last message) "
          f"{med('server'):.3f} s")
    print(f"CPU from the click to {CPU_TAIL_S} s after the settled page: Chromium (all its processes) "
          f"{med('browser_cpu'):.2f} s, server {med('server_cpu'):.2f} s")
    print(f"browser main thread between click and settled: task {med('TaskDuration'):.3f} s, script "
          f"{med('ScriptDuration'):.3f} s, layout {med('LayoutDuration'):.3f} s, style {med('RecalcStyleDuration'):.3f} s")
    print(f"websocket: {med('ws_bytes') / 1024:.0f} kB in {med('ws_msgs'):.0f} messages; media fetched: "
          f"{med('media_n'):.0f} files, {med('media_bytes') / 1024:.0f} kB")
    types = sorted({t for r in rows for t in r["by_type"]}, key=lambda t: -statistics.median(
        r["by_type"].get(t, 0) for r in rows))
    for t in types:
        print(f"   {t:24s} {statistics.median(r['by_type'].get(t, 0) for r in rows) / 1024:8.1f} kB")


def profile_report(prof_dir: Path, warmup: int = 2) -> None:
    files = sorted(prof_dir.glob("*-fragment.prof"))
    groups: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        st = pstats.Stats(str(f))
        names = {fn for (_, _, fn) in st.stats}
        page = "neuron click (render_explorer)" if "render_explorer" in names else (
            "cell click (render_selected_image)" if "render_selected_image" in names else "other")
        groups[page].append(f)
    for page, fs in groups.items():
        fs = fs[warmup:]
        if not fs:
            continue
        st = pstats.Stats(*[str(f) for f in fs])
        n = len(fs)
        rows = defaultdict(float)
        for (path, line, fn), (_cc, _nc, _tt, ct, _callers) in st.stats.items():
            if fn.startswith("render_") or fn in ("_gallery", "pick_neuron", "pick_cell") or fn in HOT:
                rows[f"{fn} ({Path(path).parent.name}/{Path(path).name}:{line})"] += ct
        total = max(rows.get(k, 0) for k in rows if k.startswith(("render_explorer", "render_selected_image"))) \
            if any(k.startswith(("render_explorer", "render_selected_image")) for k in rows) else 1
        print(f"\n== server profile, {page}: {n} fragment runs, cumulative s per click (cProfile)")
        for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
            if v / n >= 0.005:
                print(f"   {v / n:7.3f} s {100 * v / total:5.1f}%  {k}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--app-dir", default=str(HERE.parent))
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--clicks", type=int, default=6, help="timed clicks of each kind (0: none, e.g. with --pages)")
    ap.add_argument("--profile", action="store_true", help="profile the server's script runs (cProfile)")
    ap.add_argument("--trace", action="store_true", help="Chrome trace of the 3rd click of each kind: self time "
                    "per event on the renderer's main thread")
    ap.add_argument("--js-profile", action="store_true", help="JS CPU profile of the 3rd click of each kind")
    ap.add_argument("--pages", type=int, default=0, help="then this many page changes of each kind, SOM explorer "
                    "<-> Test inspector through the navigation (as dashboard_load.py does), after 2 warm-up ones")
    ap.add_argument("--chromium", default=os.environ.get("SOMAD_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from somad.persistence import load_model

    model = load_model(Path(args.models_dir) / args.category / args.model)
    rows_, cols = model.grid_
    h, w = model.feature_shape_
    s = model.image_size
    rng = np.random.default_rng(0)
    busy = np.flatnonzero(model.hit_map().ravel() > 0)
    neurons = [divmod(int(j), cols) for j in rng.choice(busy, args.clicks + 2, replace=False)]
    cells = [(int(rng.integers(2, h - 2)), int(rng.integers(2, w - 2))) for _ in range(args.clicks + 2)]
    prof_dir = Path(tempfile.mkdtemp(prefix="somad-prof-")) if args.profile else None
    launcher = (str(HERE / "profiled_streamlit.py"),) if args.profile else ("-m", "streamlit")
    env = {"SOMAD_PROFILE_DIR": str(prof_dir)} if args.profile else {}
    query = f"?model={args.model}&category={args.category}"
    proc, url = bc.start_server(Path(args.app_dir), Path(args.models_dir).resolve(), Path(args.data_dir).resolve(),
                                launcher, env)
    SERVER_PID[:] = [proc.pid]
    BROWSER_NAME[0] = Path(os.path.realpath(args.chromium)).name
    results: dict[str, list[dict]] = {"neuron": [], "cell": [], "to SOM explorer": [], "to Test inspector": []}
    traces: dict[str, bytes] = {}
    profiles: dict[str, dict] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=bc.ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.set_default_timeout(600_000)
            page.add_init_script(INIT_JS)
            frames: list[bytes] = []
            page.on("websocket", lambda ws: ws.on(
                "framereceived", lambda payload: frames.append(payload if isinstance(payload, bytes) else b"")))
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(f"{url}/som_explorer{query}")
            page.get_by_text("Test images where this neuron is the BMU").first.wait_for()
            page.get_by_role("button", name="Inspect").first.wait_for()
            bc.settle(page)

            def timed(kind, n, label, x, y, heading, act=None):
                """One click (or ``act()``), traced / JS-profiled on the third of its kind; kept from the third on."""
                if args.trace and n == 2:
                    browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
                if args.js_profile and n == 2:
                    cdp.send("Profiler.enable")
                    cdp.send("Profiler.setSamplingInterval", {"interval": 500})
                    cdp.send("Profiler.start")
                res = act() if act else click_once(page, cdp, frames, 0, x, y, heading)
                if args.trace and n == 2:
                    traces[kind] = browser.stop_tracing()
                if args.js_profile and n == 2:
                    profiles[kind] = cdp.send("Profiler.stop")["profile"]
                if n >= 2:
                    results[kind].append(res)
                print(f"{label}: shown {res['shown']:.2f} s, settled {res['settled']:.2f} s, "
                      f"server {res['server']:.2f} s", flush=True)
                page.wait_for_timeout(300)

            for n, (r, c) in enumerate(neurons if args.clicks else []):
                x, y = (c + 0.5 * (r % 2), r * 3 ** 0.5 / 2) if model.topology == "hexagonal" else (c, r)
                timed("neuron", n, f"neuron ({r}, {c})", x, y, f"Nearest training patches of neuron ({r}, {c})")
            page.goto(f"{url}/test_inspector{query}")
            page.get_by_text("Click a pixel of the heatmap").first.wait_for()
            bc.settle(page)
            for n, (r, c) in enumerate(cells if args.clicks else []):
                timed("cell", n, f"cell ({r}, {c})", (c + 0.5) * s / w, (r + 0.5) * s / h, f"Cell ({r}, {c}): BMU")
            for n in range(args.pages + 2 if args.pages else 0):
                for kind, link, ready in (("to SOM explorer", "SOM explorer", "Nearest training patches of neuron"),
                                          ("to Test inspector", "Test inspector", "heatmap: click a pixel")):
                    timed(kind, n, f"page change {kind}", 0, 0, "",
                          lambda: page_change_once(page, cdp, frames, link, ready))
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except Exception:
            proc.kill()
    time.sleep(0.5)
    if args.clicks:
        summarize("neuron click, SOM explorer", results["neuron"])
        summarize("heatmap-cell click, Test inspector", results["cell"])
    if args.pages:
        summarize("page change to the SOM explorer ('shown': ready to click)", results["to SOM explorer"])
        summarize("page change to the Test inspector ('shown': ready to click)", results["to Test inspector"])
    for kind, trace in traces.items():
        print(f"\n== Chrome trace of one {kind} click")
        trace_summary(trace)
    for kind, prof in profiles.items():
        print(f"\n== JS profile of one {kind} click")
        js_profile_summary(prof)
    if prof_dir is not None:
        profile_report(prof_dir)
    load = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
