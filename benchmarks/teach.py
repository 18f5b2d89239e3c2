"""Teaching a "new normal" (issue 21): SOMAD.partial_fit (SOM fixed) against a full refit.

    python benchmarks/teach.py --data-dir ../shared/data/mvtec_ad --category bottle --scenario light \
        --model-dir models/bottle/default --k 1 3 10 --refit-k 3 --out benchmarks/results/teach-bottle-light.json

A scenario is a fixed image transform that simulates a change on the line (:data:`SCENARIOS`).
The taught images are the first ``k`` of 10 evenly spaced **training** images under the
scenario (the same parts after the change); the held-out images are the whole **test** split,
each defect-free and defective image both as it is and under the scenario, so no taught image
is ever scored. For the parent (k = 0) and every k it reports, at each model's own deployable
threshold: false positives on the held-out new-normal good images, recall on the original
defects and on the defects under the scenario, image AUROC on the new-normal test split (good +
defective under the scenario) and on the original one, and the seconds of ``partial_fit``
(``timings_["partial_fit"]``). ``--refit-k`` also fits a new model (same hyperparameters, SOM
retrained) on the training images plus the taught ones for those k and reports the same
figures with the fit's seconds. Prints a markdown table and ``os.getloadavg()``; writes JSON. Each row
also records ``os.getloadavg()`` when it was done (``loadavg``): its seconds are only comparable at a like load.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from somad import data  # noqa: E402
from somad.decision import is_anomalous  # noqa: E402
from somad.metrics import auroc  # noqa: E402
from somad.model import SOMAD  # noqa: E402
from somad.persistence import load_model  # noqa: E402
from somad.versions import refit_advice  # noqa: E402


def _gain(rgb: tuple[float, float, float]):
    def apply(img: np.ndarray) -> np.ndarray:
        return np.clip(img.astype(np.float32) * np.asarray(rgb, np.float32), 0, 255).astype(np.uint8)
    return apply


def _shift(pixels: int):
    def apply(img: np.ndarray) -> np.ndarray:  # the part moves right and down; the edge is repeated
        out = np.roll(img, (pixels, pixels), axis=(0, 1))
        out[:pixels] = out[pixels:pixels + 1]
        out[:, :pixels] = out[:, pixels:pixels + 1]
        return out
    return apply


def _blur(sigma: float):
    def apply(img: np.ndarray) -> np.ndarray:
        from PIL import Image, ImageFilter
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))
    return apply


SCENARIOS = {
    "light": ("dimmer, warmer light: colour gain R 0.85, G 0.75, B 0.6", _gain((0.85, 0.75, 0.6))),
    "exposure": ("longer exposure: gain 1.35 on every channel, clipped at white", _gain((1.35, 1.35, 1.35))),
    "focus": ("softer focus: Gaussian blur of 2 px at 224 px", _blur(2.0)),
    "shift": ("the fixture moved: the part 8 px (2 feature cells) right and down at 224 px", _shift(8)),
}
"""Scenario name -> (what it simulates, transform of a uint8 (S, S, 3) image at the model's size)."""


def _load(paths, size, rule):
    return np.stack([data.load_image(p, size, rule) for p in paths])


def _figures(model: SOMAD, sets: dict) -> dict:
    s = {k: model.score_samples(v) for k, v in sets.items()}
    thr = model.threshold_
    fp = int(is_anomalous(s["good_new"], thr).sum())
    out = {"loadavg": [round(v, 2) for v in os.getloadavg()], "threshold": thr, "fp_new_good": fp, "n_new_good": len(s["good_new"]),
           "fp_orig_good": int(is_anomalous(s["good"], thr).sum()),
           "recall_defects": float(is_anomalous(s["bad"], thr).mean()),
           "recall_defects_new": float(is_anomalous(s["bad_new"], thr).mean()),
           "auroc_new": float(auroc(np.r_[np.zeros(len(s["good_new"])), np.ones(len(s["bad_new"]))],
                                    np.r_[s["good_new"], s["bad_new"]])),
           "auroc_orig": float(auroc(np.r_[np.zeros(len(s["good"])), np.ones(len(s["bad"]))],
                                     np.r_[s["good"], s["bad"]]))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    ap.add_argument("--model-dir", required=True, help="the parent model (a default fit of the category)")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--refit-k", type=int, nargs="*", default=[], help="also refit for these k (slow)")
    ap.add_argument("--max-test", type=int, default=0, help="at most this many good and defective test images, "
                    "evenly spaced (0 = all)")
    ap.add_argument("--time-only", action="store_true", help="only time partial_fit for each k (no scoring)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    what, transform = SCENARIOS[args.scenario]
    parent = load_model(args.model_dir)
    size, rule = parent.image_size, parent.intensity_
    train = data.train_samples(args.data_dir, args.category)
    test = data.test_samples(args.data_dir, args.category)
    good = [s.path for s in test if not s.label]
    bad = [s.path for s in test if s.label]
    if args.max_test:
        good = [good[i] for i in np.unique(np.linspace(0, len(good) - 1, args.max_test).round().astype(int))]
        bad = [bad[i] for i in np.unique(np.linspace(0, len(bad) - 1, args.max_test).round().astype(int))]
    pick = np.unique(np.linspace(0, len(train) - 1, max(args.k)).round().astype(int))
    teach_paths = [train[i].path for i in pick]
    teach_images = np.stack([transform(im) for im in _load(teach_paths, size, rule)])
    if args.time_only:
        for k in args.k:
            m = copy.deepcopy(parent)
            cpu, load0 = time.process_time(), os.getloadavg()[0]
            m.partial_fit(teach_images[:k])
            print(f"partial_fit k={k}: {m.timings_['partial_fit']:.2f} s wall, {time.process_time() - cpu:.2f} s CPU "
                  f"(torch threads {torch.get_num_threads()}), load average {load0:.1f} -> {os.getloadavg()[0]:.1f}",
                  flush=True)
        return 0
    g, b = _load(good, size, rule), _load(bad, size, rule)
    sets = {"good": g, "bad": b, "good_new": np.stack([transform(x) for x in g]),
            "bad_new": np.stack([transform(x) for x in b])}
    rows = [{"k": 0, "method": "parent (no teaching)", **_figures(parent, sets)}]
    print(json.dumps(rows[-1]), flush=True)
    for k in args.k:
        m = copy.deepcopy(parent)
        cpu = time.process_time()
        m.partial_fit(teach_images[:k], [f"{args.scenario}:{p}" for p in teach_paths[:k]])
        rows.append({"k": k, "method": "partial_fit", "seconds": m.timings_["partial_fit"],
                     "cpu_seconds": time.process_time() - cpu,
                     "refit_advice": refit_advice(m), **_figures(m, sets)})
        print(json.dumps(rows[-1]), flush=True)
        if k in args.refit_k:
            base = _load([s.path for s in train], size, rule)
            t0, cpu = time.perf_counter(), time.process_time()
            params = {**parent.get_params(), "device": parent.device}
            r = SOMAD(**params).fit(np.concatenate([base, teach_images[:k]]), intensity=rule)
            rows.append({"k": k, "method": "full refit", "seconds": time.perf_counter() - t0,
                         "cpu_seconds": time.process_time() - cpu, **_figures(r, sets)})
            print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    print(f"\n{args.category}, scenario {args.scenario}: {what}; load average {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} (1/5/15 min)\n")
    print("| k | method | FP new-normal good | recall defects / under new normal | image AUROC new / original "
          "| threshold | seconds (CPU s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['method']} | {r['fp_new_good']}/{r['n_new_good']} | {r['recall_defects']:.3f} / "
              f"{r['recall_defects_new']:.3f} | {r['auroc_new']:.3f} / {r['auroc_orig']:.3f} | {r['threshold']:.2f} "
              f"| {r.get('seconds', float('nan')):.1f} ({r.get('cpu_seconds', float('nan')):.1f}) |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"category": args.category, "scenario": args.scenario,
                                              "what": what, "model_dir": args.model_dir, "loadavg": load,
                                              "taught": [str(p) for p in teach_paths], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
