"""Scale-out benchmark (issue 20): ``fit`` over 4 categories and ``predict`` over >= 2,000 images,
in one process against a Dask LocalCluster of 1 and 2 workers.

Every run is the real command line (``python -m somad fit --category all [--workers N]``, ``python -m
somad predict ... [--workers N]``) in a child process, timed from start to exit (imports, cluster start
and shutdown included, as a user sees it). A sampler reads the peak resident memory (``VmHWM``) of
the child and of every process below it (the Dask worker processes) twice a second; ``VmHWM`` only
grows, so the last reading before a process ends is its peak.

Categories (``--categories``): the demo ``tiles`` and ``washers`` (generated here), MVTec AD
``bottle`` and ``magnetic_tile`` from ``--shared-data``, linked into one data root. Fits use
``--fit-args`` (default: 128 px, at most ``--max-train-images`` 60 training images) so that the 12
fits and 3 predicts finish in minutes on 2 cores. Predict images: the magnetic-tile test images,
flipped left-right, up-down and both, copied into a temporary folder until ``--predict-images``.

Run it niced on a shared machine, and read the load averages it records next to the figures::

    nice -n 5 python benchmarks/scale_out.py --out benchmarks/results/scale-out-cpu-2core.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from somad.executor import _cores  # noqa: E402  (the cores Dask counts)

REAL = {"bottle": "mvtec_ad/bottle", "magnetic_tile": "magnetic_tile_defects/magnetic_tile"}


def _vmhwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            out += [int(k) for k in kids]
    except OSError:
        pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run(argv: list[str], env: dict) -> dict:
    """Run ``python -m somad argv`` and sample the peak memory of it and its worker processes."""
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    proc = subprocess.Popen([sys.executable, "-m", "somad", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, tuple[str, int]] = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            todo, seen = [proc.pid], set()
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                hwm = _vmhwm(pid)
                if hwm is not None:
                    cmd = _cmdline(pid)
                    role = "client" if pid == proc.pid else (
                        "tracker" if "resource_tracker" in cmd else "worker")
                    peaks[pid] = (role, max(hwm, peaks.get(pid, ("", 0))[1]))
                todo += _children(pid)
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    table = [line for line in out.splitlines() if line.startswith("| ") or " images in " in line]
    return {"argv": argv, "returncode": proc.returncode, "wall_s": round(wall, 2),
            "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "peak_rss_mb": {"client": round(max((b for r, b in peaks.values() if r == "client"), default=0) / 2**20),
                            "workers": sorted(round(b / 2**20) for r, b in peaks.values() if r == "worker")},
            "table": table, "tail": out.splitlines()[-3:] if proc.returncode else []}


def category_seconds(table: list[str]) -> dict[str, float]:
    """``{category: seconds}`` from the run's final table (category, status, seconds, ...)."""
    out = {}
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("done"):
            out[cells[0]] = float(cells[2])
    return out


def build_data(work: Path, shared: Path, categories: list[str]) -> Path:
    from somad.demo import generate

    root = work / "data"
    if root.is_dir():  # --work of an earlier run: reused
        return root
    root.mkdir(parents=True)
    demo = generate(work / "demo")
    for cat in categories:
        src = shared / REAL[cat] if cat in REAL else demo / cat
        if not src.is_dir():
            raise SystemExit(f"category {cat}: {src} is missing")
        os.symlink(src.resolve(), root / cat)
    return root


def build_predict_set(work: Path, shared: Path, n: int) -> Path:
    from PIL import Image, ImageOps

    src = sorted((shared / REAL["magnetic_tile"] / "test").rglob("*.jpg"))
    out = work / "predict"
    if out.is_dir() and len(list(out.iterdir())) >= n:  # --work of an earlier run: reused
        return out
    out.mkdir()
    flips = [lambda im: im, ImageOps.mirror, ImageOps.flip, lambda im: ImageOps.flip(ImageOps.mirror(im))]
    k = 0
    for i, flip in enumerate(flips):
        for p in src:
            if k >= n:
                return out
            if i == 0:
                shutil.copy(p, out / f"{k:05d}_{p.name}")
            else:
                flip(Image.open(p)).save(out / f"{k:05d}_{p.stem}_f{i}.jpg", quality=95)
            k += 1
    if k < n:
        raise SystemExit(f"only {k} predict images could be built, {n} asked")
    return out


def dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(path).resolve().rglob("*") if f.is_file()) / 2**20, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--categories", default="tiles,washers,bottle,magnetic_tile")
    ap.add_argument("--fit-args", default="--image-size 128",
                    help="extra fit options of every fit (default: --image-size 128)")
    ap.add_argument("--max-train-images", type=int, default=60)
    ap.add_argument("--predict-images", type=int, default=2000)
    ap.add_argument("--predict-args", default="", help="extra predict options, e.g. --no-overlays")
    ap.add_argument("--modes", default="local,1,2", help="local and/or worker counts (default: local,1,2)")
    ap.add_argument("--stages", default="fit,predict")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--append", action="store_true",
                    help="add this run's stages and modes to --out instead of replacing it (with --work of that run)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale-out-cpu-2core.json")
    args = ap.parse_args()

    cats = args.categories.split(",")
    modes = args.modes.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="somad-scale-out-"))
    env = dict(os.environ, PYTHONPATH=str(REPO), SOMAD_SCHEDULER="")
    result = {"command": "python " + " ".join(sys.argv), "predict_args": args.predict_args, "cores": _cores(), "nice": os.nice(0),
              "loadavg_start": [round(x, 2) for x in os.getloadavg()], "categories": cats,
              "fit_args": args.fit_args, "max_train_images": args.max_train_images, "fit": {}, "predict": {}}
    if args.append and args.out.is_file():
        old = json.loads(args.out.read_text())
        old.setdefault("appended", []).append({k: result[k] for k in ("command", "loadavg_start")})
        for stage in ("fit", "predict"):
            old.setdefault(stage, {})
        result = old
    try:
        root = build_data(work, args.shared_data, cats)
        result["train_mb"] = {c: dir_mb(root / c / "train" / "good") for c in cats}
        fit_common = ["fit", "--data-dir", str(root), "--category", "all", "--force",
                      "--max-train-images", str(args.max_train_images), *args.fit_args.split()]
        for mode in modes:
            if "fit" not in args.stages:
                break
            extra = [] if mode == "local" else ["--workers", mode]
            r = run([*fit_common, "--models-dir", str(work / f"models-{mode}"), *extra], env)
            r["category_s"] = category_seconds(r["table"])
            result["fit"][mode] = r
            print(f"fit {mode}: {r['wall_s']} s, rc {r['returncode']}, load {r['loadavg_after']}, "
                  f"peak {r['peak_rss_mb']}", flush=True)
            _save(args.out, result)
        models = next(m for m in [work / "models-local", *(work / f"models-{x}" for x in modes)] if m.is_dir())
        result["model_mb"] = {c: dir_mb(models / c / "default") for c in cats if (models / c / "default").is_dir()}
        if "predict" in args.stages:
            images = build_predict_set(work, args.shared_data, args.predict_images)
            result["predict_images"] = args.predict_images
            result["predict_input_mb"] = dir_mb(images)
            model = models / "magnetic_tile" / "default"
            for mode in modes:
                extra = [] if mode == "local" else ["--workers", mode]
                out = work / f"pred-{mode}"
                r = run(["predict", "--model-dir", str(model), str(images), "--out", str(out),
                         *args.predict_args.split(), *extra], env)
                r["output_mb"] = dir_mb(out) if out.is_dir() else None
                result["predict"][mode] = r
                print(f"predict {mode}: {r['wall_s']} s, rc {r['returncode']}, load {r['loadavg_after']}, "
                      f"peak {r['peak_rss_mb']}", flush=True)
                _save(args.out, result)
            same = [(work / f"pred-{m}" / "predictions.csv").read_bytes() for m in modes
                    if (work / f"pred-{m}" / "predictions.csv").is_file()]
            result["predictions_identical"] = len(same) == len(modes) and all(s == same[0] for s in same)
    finally:
        result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        _save(args.out, result)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    _print(result)


def _save(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def _print(result: dict) -> None:
    print(f"\ncores {result['cores']}, nice {result['nice']}, load average at start {result['loadavg_start']}, "
          f"at end {result['loadavg_end']}")
    print("\n| run | mode | wall s | per category s | peak RSS client / workers MB | load avg before -> after |")
    print("|---|---|---|---|---|---|")
    for stage in ("fit", "predict"):
        for mode, r in result[stage].items():
            per = ", ".join(f"{c} {s:.0f}" for c, s in r.get("category_s", {}).items()) or "-"
            print(f"| {stage} | {mode if mode == 'local' else mode + ' worker(s)'} | {r['wall_s']:.1f} | {per} | "
                  f"{r['peak_rss_mb']['client']} / {r['peak_rss_mb']['workers'] or '-'} | "
                  f"{r['loadavg_before'][0]} -> {r['loadavg_after'][0]} |")
    if "predictions_identical" in result:
        print(f"\npredictions.csv identical across modes: {result['predictions_identical']}")


if __name__ == "__main__":
    main()
