"""Scale benchmark (issue #10): fit memory and time against the training-set size, evaluate time
split into scoring and metrics (the old per-curve scikit-learn code and the one-sort code side by
side, in one run), and ``predict`` throughput on a folder.

    python benchmarks/scale.py --data-dir ../shared/data/magnetic_tile_defects --category magnetic_tile \\
        --sizes 100 400 1600 --predict-images 1000 --out benchmarks/results/scale-cpu-2core.json

* fit: the larger training sets are built from the category's ``train/good`` images by flips and
  crops, in a temporary folder (removed afterwards). Each fit (``pipeline.fit_category``, the CLI's
  path, default parameters) runs in its own child process, which reports its peak resident memory
  (``VmHWM``) and stage timings.
* evaluate: ``pipeline.evaluate_model`` on the category's test split with the 100-image model (load,
  features and scoring, metrics), then the metrics of the code before the one-sort change
  (``somad/metrics.py`` at commit :data:`OLD_METRICS_COMMIT`, read with ``git show``; overall plus
  one call per defect type, as the old ``evaluate_model`` did) on the same arrays; the largest
  difference between the two sets of metrics is recorded.
* predict: ``python -m somad predict --model-dir M FOLDER --no-overlays`` (and with overlays) in a
  child process on ``--predict-images`` images: images/s and peak resident memory.

Timings on a shared machine are noisy; the JSON says so, with the load average at the start.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench import peak_rss_mb  # noqa: E402
from somad import data  # noqa: E402

OLD_METRICS_COMMIT = "89ed071"
"""Last commit whose ``somad/metrics.py`` sorted the pixels once per curve (scikit-learn curves)."""
CROP = 0.9
"""Side kept by the crop variants of the synthetic training images (fraction of the original)."""
CHILD = "BENCH_CHILD "
STAGES = ("fit", "evaluate", "predict")


# --------------------------------------------------------------------------- data
def variant(img: Image.Image, k: int) -> Image.Image:
    """The ``k``-th flip/crop variant of an image: identity, mirror, flip, then the same three on
    a centred crop of :data:`CROP` of each side, cycling."""
    if k % 6 >= 3:
        w, h = img.size
        cw, ch = int(w * CROP), int(h * CROP)
        img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    return [lambda i: i, ImageOps.mirror, ImageOps.flip][k % 3](img)


def build_training_set(src_root: str, category: str, n: int, dest: Path) -> Path:
    """Write ``n`` training images (originals first, then variants) to ``dest/<category>/train/good``."""
    sources = [s.path for s in data.train_samples(src_root, category)]
    folder = dest / category / "train" / "good"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = sources[i % len(sources)]
        dest_file = folder / f"{i:05d}_{src.stem}.png"
        if not dest_file.exists():  # never rewrite a file another stage (or its hard link) may be reading
            variant(Image.open(src), i // len(sources)).save(dest_file)
    return dest


# --------------------------------------------------------------------------- children
def child_fit(data_dir: str, category: str, out_dir: str, n: int, params: dict) -> dict:
    from somad.pipeline import fit_category

    t0 = time.perf_counter()
    model = fit_category(data_dir, category, out_dir, params, max_train_images=n, force=True)
    return {"n_train": model.n_train_, "fit_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
            "timings": model.timings_, "threshold": model.threshold_}


def old_metrics_module() -> types.ModuleType:
    """``somad/metrics.py`` as it was at :data:`OLD_METRICS_COMMIT` (the "before" code)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_METRICS_COMMIT}:somad/metrics.py"],
                         capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("old_metrics")
    exec(compile(src, "old_metrics.py", "exec"), module.__dict__)
    return module


def old_evaluation_metrics(ev) -> dict:
    """Overall and per-defect metrics the way the old ``evaluate_model`` computed them."""
    old = old_metrics_module()
    out = old.evaluate_scores(ev.labels, ev.scores, ev.masks, ev.maps)
    good = ev.labels == 0
    defects = np.array([s.defect for s in ev.samples])
    out["per_defect"] = {}
    for defect in sorted(set(defects) - {data.GOOD}):
        sel = good | (defects == defect)
        out["per_defect"][defect] = old.evaluate_scores(ev.labels[sel], ev.scores[sel], ev.masks[sel], ev.maps[sel])
    return out


def largest_difference(new: dict, old: dict) -> float:
    """Largest absolute difference over the metric values both dicts hold (NaN equal to NaN)."""
    keys = [k for k, v in old.items() if isinstance(v, float)]
    diffs = [abs(new[k] - old[k]) for k in keys if not (np.isnan(new[k]) and np.isnan(old[k]))]
    for defect, metrics in old.get("per_defect", {}).items():
        diffs.append(largest_difference(new["per_defect"][defect], metrics))
    return float(max(diffs, default=0.0))


def child_evaluate(model_dir: str, data_dir: str, category: str) -> dict:
    from somad.persistence import load_model
    from somad.pipeline import evaluate_model

    model = load_model(model_dir)
    model.extractor  # built before timing, as a server would have it
    ev = evaluate_model(model, data_dir, category)
    t0 = time.perf_counter()
    old = old_evaluation_metrics(ev)
    old_s = time.perf_counter() - t0
    t = ev.metrics["timings"]
    return {"n_test": len(ev.samples), "n_pixels": int(ev.maps.size), "load_s": t["load"],
            "scoring_s": t["score"], "metrics_s_after": t["metrics"], "metrics_s_before": old_s,
            "evaluate_s_after": t["total"], "evaluate_s_before": t["total"] - t["metrics"] + old_s,
            "metrics_max_abs_difference": largest_difference(ev.metrics, old),
            "image_auroc": ev.metrics["image_auroc"], "pixel_auroc": ev.metrics["pixel_auroc"],
            "aupro": ev.metrics["aupro"], "peak_rss_mb": peak_rss_mb()}


def child_predict(model_dir: str, folder: str, out_dir: str, overlays: bool) -> dict:
    from somad.cli import main as cli_main

    args = ["predict", "--model-dir", model_dir, folder, "--out", out_dir] + ([] if overlays else ["--no-overlays"])
    t0 = time.perf_counter()
    status = cli_main(args)
    sec = time.perf_counter() - t0
    n = len(list(Path(folder).iterdir()))
    return {"status": status, "n_images": n, "predict_s": sec, "images_per_s": n / sec,
            "peak_rss_mb": peak_rss_mb()}


CHILDREN = {"fit": child_fit, "evaluate": child_evaluate, "predict": child_predict}


def run_child(kind: str, *args) -> dict:
    """Run ``CHILDREN[kind](*args)`` in a fresh Python process; its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(args)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{res.stderr[-3000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith(CHILD)][-1]
    return json.loads(line[len(CHILD):])


# --------------------------------------------------------------------------- stages
def bench_fit(args, tmp: Path, saved) -> tuple[list[dict], dict[int, Path]]:
    """Fit at each size (largest training set built once; smaller fits take its first images);
    ``saved(rows)`` is called after each fit."""
    root = build_training_set(args.data_dir, args.category, max(args.sizes), tmp / "data")
    rows, models = [], {}
    for n in args.sizes:
        models[n] = tmp / "models" / f"n{n}"
        rows.append(run_child("fit", str(root), args.category, str(models[n]), n, json.loads(args.fit_params)))
        print(f"fit {n} images: {rows[-1]['fit_s']:.1f} s, peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
        saved(rows)
    return rows, models


def bench_predict(args, tmp: Path, model_dir: Path) -> dict:
    """``predict`` on the first ``--predict-images`` images of the built training set, without and with overlays."""
    good = tmp / "data" / args.category / "train" / "good"
    folder = tmp / "predict_in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for p in sorted(good.iterdir())[:args.predict_images]:
        os.link(p, folder / p.name)
    out = {}
    for overlays in (False, True):
        res = run_child("predict", str(model_dir), str(folder), str(tmp / f"predict_out_{overlays}"), overlays)
        if res["status"] != 0:
            raise RuntimeError(f"predict exited with status {res['status']}")
        out["with_overlays" if overlays else "no_overlays"] = res
        print(f"predict {res['n_images']} images, overlays {overlays}: {res['images_per_s']:.1f} images/s", flush=True)
    return out


def summary(res: dict) -> dict:
    """Targets of issue #10 checked against the figures."""
    fits = {r["n_train"]: r for r in res["fit"]}
    lo, hi = min(fits), max(fits)
    ev = res["evaluate"]
    return {
        "fit_peak_rss_largest_mb": fits[hi]["peak_rss_mb"],
        "fit_peak_rss_growth": fits[hi]["peak_rss_mb"] / fits[lo]["peak_rss_mb"] - 1,
        "fit_seconds_per_image": {n: r["fit_s"] / n for n, r in sorted(fits.items())},
        "evaluate_time_ratio_after_before": ev["evaluate_s_after"] / ev["evaluate_s_before"],
        "metrics_speedup": ev["metrics_s_before"] / ev["metrics_s_after"],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=False)
    ap.add_argument("--category", default="magnetic_tile")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1600])
    ap.add_argument("--predict-images", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale-cpu.json"))
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES,
                    help="stages to run; results add to --out (default: all)")
    ap.add_argument("--work", default=None,
                    help="keep the built images and models here (lets stages run in separate calls)")
    ap.add_argument("--fit-params", default="{}", help='SOMAD hyperparameters of the fits as JSON, e.g. \'{"epochs": 2}\'')
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(CHILD + json.dumps(CHILDREN[args.child](*json.loads(args.child_args)), default=float))
        return {}
    res = {"host": platform.node(), "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
           "note": "shared machine (several agents on 2 cores): timings are noisy, memory figures are not",
           "category": args.category, "sizes": args.sizes, "fit_params": json.loads(args.fit_params)}
    out = Path(args.out)
    if out.exists():  # stages run separately add to one file
        res = {**json.loads(out.read_text()), **res}
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="somad-scale-"))
    models = {n: tmp / "models" / f"n{n}" for n in args.sizes}
    smallest = models[min(args.sizes)]
    try:
        if "fit" in args.stages:
            res["fit"], models = bench_fit(args, tmp, lambda rows: save(out, {**res, "fit": rows}))
            save(out, res)
        if "evaluate" in args.stages:
            res["evaluate"] = run_child("evaluate", str(smallest), args.data_dir, args.category)
            save(out, res)
            print(f"evaluate: {json.dumps(res['evaluate'])}", flush=True)
        if "predict" in args.stages:
            res["predict"] = bench_predict(args, tmp, smallest)
            save(out, res)
    finally:
        if not args.work:
            shutil.rmtree(tmp, ignore_errors=True)
    if all(k in res for k in ("fit", "evaluate")):
        res["summary"] = summary(res)
        save(out, res)
        print(json.dumps(res["summary"], indent=2, default=float))
    return res


def save(out: Path, res: dict) -> None:
    """Write the results so far (a stage that outlives a time limit leaves the earlier ones)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
