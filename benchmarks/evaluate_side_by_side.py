"""`python -m somad evaluate` of today's code against the code an issue was measured on, side by
side in one run (issue #10: "magnetic tile evaluate at most a third of today's time on the same
machine, measured side by side in one run").

    python benchmarks/evaluate_side_by_side.py --data-dir ../shared/data/magnetic_tile_defects \\
        --category magnetic_tile --work /tmp/sbs --repeat 2

* The old code is ``git archive`` of ``--old`` (default :data:`OLD_COMMIT`, the main branch when
  issue #10 was filed) unpacked under ``--work``; each side fits its own default model once with its
  own ``python -m somad fit`` (the old code cannot read the new model format, nor the new code the
  old), kept under ``--work`` for later runs.
* Then the two ``evaluate`` commands run alternately (old, new, old, new, ...) ``--repeat`` times,
  each in a fresh process, and the table gives the median wall time of each (process start to exit:
  imports, model load, image reading, scoring, metrics and the result files) with the ratio, and
  each side's own split of load / score / metrics from its ``metrics.json``.

Timings on a shared machine are noisy: the JSON records the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "89ed071"
"""``main`` when issue #10 was filed: pixel metrics with scikit-learn, one sort per curve."""
METRICS = ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_max")


def export(commit: str, dest: Path) -> Path:
    """The tree of ``commit`` unpacked at ``dest`` (once)."""
    if not (dest / "somad").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def somad(code: Path, *args: str) -> float:
    """Run ``python -m somad ARGS`` with the package at ``code``; wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "somad", *args], cwd=code, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--work", type=Path, required=True, help="old tree, both models and results live here")
    ap.add_argument("--old", default=OLD_COMMIT, help=f"commit of the old code (default {OLD_COMMIT})")
    ap.add_argument("--repeat", type=int, default=2, help="evaluate runs of each side (0: only fit the models)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "evaluate-side-by-side.json")
    args = ap.parse_args(argv)
    data_dir, work = args.data_dir.resolve(), args.work.resolve()
    sides = {"old": export(args.old, work / f"code-{args.old}"), "new": ROOT}
    common = ["--data-dir", str(data_dir), "--category", args.category]
    for name, code in sides.items():
        models = work / f"models-{name}"
        if not (models / args.category / "default" / "config.json").is_file():
            print(f"fitting the {name} model ...", flush=True)
            somad(code, "fit", *common, "--models-dir", str(models), "--force")
    if args.repeat < 1:
        return {}
    load_before = os.getloadavg()
    walls = {name: [] for name in sides}
    for _ in range(args.repeat):
        for name, code in sides.items():
            wall = somad(code, "evaluate", *common, "--models-dir", str(work / f"models-{name}"),
                         "--results-dir", str(work / f"results-{name}"))
            walls[name].append(wall)
            print(f"{name}: {wall:.1f} s", flush=True)
    out = {"host": platform.node(), "cpus": os.cpu_count(), "category": args.category, "old_commit": args.old,
           "new_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True).stdout.strip(),
           "load_average_before": load_before, "load_average_after": os.getloadavg(), "sides": {}}
    for name in sides:
        found = sorted((work / f"results-{name}").rglob("metrics.json"))
        metrics = json.loads(found[-1].read_text()) if found else {}
        out["sides"][name] = {"evaluate_wall_s": walls[name], "median_s": statistics.median(walls[name]),
                              "timings": metrics.get("timings", {}),
                              **{k: metrics.get(k) for k in METRICS}}
    add_ratios(out)
    print_table(out, args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten {args.out}")
    return out


def add_ratios(out: dict) -> None:
    """New/old ratios of the median wall time and of the time ``evaluate`` reports (load + score +
    metrics, the figure issue #10 quoted: "166 s, of which 110 s go to pixel metrics")."""
    for side in out["sides"].values():
        side["reported_s"] = sum(side["timings"].get(k, 0.0) for k in ("load", "score", "metrics"))
    o, n = out["sides"]["old"], out["sides"]["new"]
    out["ratio_new_to_old"] = n["median_s"] / o["median_s"]
    out["ratio_reported_new_to_old"] = n["reported_s"] / o["reported_s"]


def print_table(out: dict, repeat: int) -> None:
    o, n = out["sides"]["old"], out["sides"]["new"]
    print(f"\n| `evaluate`, {out['category']} | old ({out['old_commit']}) | new ({out['new_commit']}) |\n|---|---|---|")
    print(f"| process wall time, median of {repeat} | {o['median_s']:.1f} s | {n['median_s']:.1f} s "
          f"(**{out['ratio_new_to_old']:.2f}** of old) |")
    print(f"| evaluate's own time (load + score + metrics, last run) | {o['reported_s']:.1f} s | "
          f"{n['reported_s']:.1f} s (**{out['ratio_reported_new_to_old']:.2f}** of old) |")
    for part in ("load", "score", "metrics"):
        print(f"| {part} | {o['timings'].get(part, float('nan')):.1f} s | {n['timings'].get(part, float('nan')):.1f} s |")
    for k in METRICS:
        print(f"| {k} | {o.get(k) or float('nan'):.3f} | {n.get(k) or float('nan'):.3f} |")


if __name__ == "__main__":
    main()
