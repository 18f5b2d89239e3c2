"""Operating points on a real category: what each way of choosing the threshold gives on the test split.

* the deployable threshold (percentile of the cross-fitted training scores);
* a target false-alarm rate on the cross-fitted training scores (no labels), for several targets;
* a target recall on a validation folder: every other test image (good and each defect type) is
  linked into a temporary MVTec-layout folder and the threshold chosen there; it is judged on the
  other half only (the two halves share no file);
* the F1-optimal threshold of the whole test split (chosen with the test labels: optimistic).

Usage::

    python benchmarks/operating_point.py --model-dir models/magnetic_tile/default \\
        --data-dir ../shared/data/magnetic_tile_defects --category magnetic_tile \\
        --out benchmarks/results/operating-point-magnetic_tile.json

Prints one table row per threshold (false alarms and defects found on the held-out half, and on the
whole split) and the load average; writes the same as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from somad import metrics, operating, pipeline  # noqa: E402
from somad.persistence import load_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--far", type=float, nargs="+", default=[0.01, 0.05, 0.10, 0.20])
    p.add_argument("--recall", type=float, nargs="+", default=[0.80, 0.90, 0.95])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    model = load_model(args.model_dir)
    ev = pipeline.evaluate_model(model, args.data_dir, args.category)
    labels, scores = ev.labels, ev.scores.astype(np.float64)
    # halves: every other image of each folder (good and each defect type), so both hold every type
    order = {d: np.flatnonzero(np.array([s.defect for s in ev.samples]) == d) for d in {s.defect for s in ev.samples}}
    val = np.zeros(len(labels), bool)
    for idx in order.values():
        val[idx[::2]] = True
    held = ~val

    def judge(thr: float) -> dict:
        out = {}
        for name, sel in (("held_out_half", held), ("whole_split", np.ones_like(held))):
            far, rec = operating.point_at(labels[sel], scores[sel], thr)
            out[name] = {"false_alarm_rate": far, "recall": rec,
                         "false_alarms": int(((scores >= thr) & (labels == 0) & sel).sum()),
                         "good": int(((labels == 0) & sel).sum()),
                         "found": int(((scores >= thr) & (labels == 1) & sel).sum()),
                         "defective": int(((labels == 1) & sel).sum())}
        return out

    rows = [{"how": "deployable", "threshold": float(model.threshold_), "rule": model.threshold_rule}]
    for target in args.far:
        op = operating.threshold_at_false_alarm_rate(model.train_scores_, target)
        rows.append({"how": f"false-alarm target {target:g}", "threshold": op.threshold, "rule": op.rule})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "validation"
        for i in np.flatnonzero(val):
            s = ev.samples[i]
            (folder / s.defect).mkdir(parents=True, exist_ok=True)
            os.symlink(Path(s.path).resolve(), folder / s.defect / s.path.name)
        samples = operating.validation_samples(folder)
        val_scores = operating.score_files(model, [s.path for s in samples])
        val_labels = np.array([s.label for s in samples])
        for target in args.recall:
            op = operating.threshold_at_recall(val_labels, val_scores, target,
                                               source=f"half of the test split ({len(samples)} images)")
            rows.append({"how": f"recall target {target:g} on the validation half", "threshold": op.threshold,
                         "rule": op.rule})
    f1, f1_thr = metrics.f1_max(labels, scores)
    rows.append({"how": "F1-optimal on the whole test split", "threshold": f1_thr, "rule": f"F1-max {f1:.3f}"})
    for r in rows:
        r.update(judge(r["threshold"]))
    load = os.getloadavg()
    print(f"{args.category}: {len(labels)} test images ({int(labels.sum())} defective), "
          f"{len(model.train_scores_)} cross-fitted training scores; load average {load[0]:.1f}")
    print("| threshold from | value | held-out half: false alarms | found | whole split: false alarms | found |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        h, w = r["held_out_half"], r["whole_split"]
        print(f"| {r['how']} | {r['threshold']:.3f} | {h['false_alarms']}/{h['good']} | {h['found']}/{h['defective']} "
              f"| {w['false_alarms']}/{w['good']} | {w['found']}/{w['defective']} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model_dir": str(args.model_dir), "category": args.category,
                                              "load_average": load, "seconds": time.perf_counter() - t0,
                                              "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
