"""CPU seconds per stage of ``SOMAD.partial_fit`` (issue 21's speed target), by cProfile with the
process-time clock (CPU seconds of all threads, robust to other load) and the wall clock.

    nice -n 5 python benchmarks/profile_partial_fit.py --data-dir ../shared/data/mvtec_ad --category bottle \
        --model-dir models/bottle/default --k 3

The taught images are those of ``benchmarks/teach.py`` (the first k of 10 evenly spaced training
images under the scenario, default ``light``). Prints, for each stage function, its cumulative CPU
seconds (a function called inside another counts in both), the total wall and CPU seconds of the
call, the torch thread count and ``os.getloadavg()`` before and after.
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from somad import data  # noqa: E402
from somad.persistence import load_model  # noqa: E402
from teach import SCENARIOS, _load  # noqa: E402

STAGES = {
    "features": ("features.py", "extract"),
    "BMUs (exact_bmu)": ("som.py", "exact_bmu"),
    "recover_stats": ("gaussian.py", "recover_stats"),
    "accumulate (new images)": ("gaussian.py", "accumulate"),
    "without (held-out fold statistics)": ("gaussian.py", "without"),
    "gaussians": ("gaussian.py", "gaussians"),
    "whitening_factors": ("gaussian.py", "whitening_factors"),
    "triangular inverse": ("gaussian.py", "lower_triangular_inverse"),
    "_cross_fitted_scores (folds)": ("model.py", "_cross_fitted_scores"),
    "mahalanobis_pairs": ("scoring.py", "mahalanobis_pairs"),
    "anomaly_maps (upsample + blur)": ("scoring.py", "anomaly_maps"),
    "image_scores": ("scoring.py", "image_scores"),
    "_set_threshold (percentiles)": ("model.py", "_set_threshold"),
    "partial_fit": ("model.py", "partial_fit"),
}
"""Stage label -> (file name suffix, function name) looked up in the profile."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="light")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1, help="time this many partial_fits (each on a fresh copy)")
    ap.add_argument("--top", type=int, default=0, help="also print the top N functions by own CPU time")
    args = ap.parse_args(argv)
    parent = load_model(args.model_dir)
    train = data.train_samples(args.data_dir, args.category)
    pick = np.unique(np.linspace(0, len(train) - 1, 10).round().astype(int))[:args.k]
    images = np.stack([SCENARIOS[args.scenario][1](im)
                       for im in _load([train[i].path for i in pick], parent.image_size, parent.intensity_)])
    for r in range(args.repeat):
        m = copy.deepcopy(parent)
        prof = cProfile.Profile(time.process_time)
        load0 = os.getloadavg()
        wall, cpu = time.perf_counter(), time.process_time()
        prof.enable()
        m.partial_fit(images)
        prof.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        st = pstats.Stats(prof)
        print(f"partial_fit k={args.k} ({args.category}, {args.scenario}): {wall:.2f} s wall, {cpu:.2f} s CPU "
              f"(torch threads {torch.get_num_threads()}), load average {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}")
        for label, (fname, func) in STAGES.items():
            hits = [(v[1], v[3]) for (f, _, fn), v in st.stats.items() if f.endswith(fname) and fn == func]
            if hits:
                print(f"  {label:36s} {sum(h[1] for h in hits):6.2f} s CPU in {sum(h[0] for h in hits)} calls")
        if args.top:
            st.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
