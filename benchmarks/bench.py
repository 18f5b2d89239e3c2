"""SOMAD speed and memory benchmark (issue #4): one category, side-by-side ratios.

    python benchmarks/bench.py --data-dir ROOT --category NAME [--device cpu|cuda] [--repeat 3] [--out FILE.json]

Prints a markdown table and writes JSON (default ``benchmarks/results/<host>-<device>.json``)
with the median of ``--repeat`` runs of every timing. Stages:

* features: images/s of the extractor at the model's image size, batch 32;
* SOM: torch backend on all training patch vectors (default grid, epochs); and on the same
  random subsample of ``--som-subsample`` vectors, torch vs MiniSom (``train_batch_offline``,
  run once: it loops over samples in Python) with their time ratio, quantization and
  topographic errors;
* Gaussians: accumulate + regularised covariances + whitening factors;
* scoring: somad's scorer vs the plain per-patch numpy reference below (the oracle), on the
  same fitted model and features: ms/image, ratio, maximum relative difference of scores;
* end to end: ``SOMAD.fit`` seconds; evaluate (``pipeline.evaluate_model``: load, features,
  scoring, metrics) seconds and peak resident memory, measured in a child process.

Every stage takes ``--device`` and goes through the same functions as the CPU path.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from somad import data  # noqa: E402
from somad.gaussian import accumulate, gaussians, whitening_factors  # noqa: E402
from somad.model import SOMAD, _position_prior  # noqa: E402
from somad.scoring import score_patches  # noqa: E402
from somad.som import SOM  # noqa: E402


# --------------------------------------------------------------------------- reference scorer (oracle)
def reference_scores(x: np.ndarray, som_weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
                     k: int = 4) -> np.ndarray:
    """The method's description, patch by patch, in float64 numpy.

    For each patch vector: Euclidean distance to every neuron, the ``k`` nearest, the
    Mahalanobis distance ``sqrt((x - mu_j)^T C_j^{-1} (x - mu_j))`` to each of them, the minimum.
    """
    w = som_weights.astype(np.float64)
    mu = means.astype(np.float64)
    prec = np.linalg.inv(covariances.astype(np.float64))
    out = np.empty(len(x), dtype=np.float64)
    for i, v in enumerate(x.astype(np.float64)):
        dist = np.sqrt(((w - v) ** 2).sum(axis=1))
        nearest = np.argsort(dist, kind="stable")[:k]
        best = np.inf
        for j in nearest:
            diff = v - mu[j]
            best = min(best, float(np.sqrt(diff @ prec[j] @ diff)))
        out[i] = best
    return out


# --------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeat: int, device: torch.device):
    """Median seconds of ``repeat`` calls and the last result."""
    times, out = [], None
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def load_images(samples, size: int) -> np.ndarray:
    return np.stack([data.load_image(s.path, size) for s in samples])


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB.

    ``VmHWM`` from /proc is the high-water mark of this process's own address space.
    ``ru_maxrss`` is not used on Linux: a child started by fork/vfork + exec inherits the
    parent's high-water mark at exec time, so it would report the (large) benchmark parent.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_evaluate(model_dir: str, data_dir: str, category: str, device: str) -> None:
    """Run in a child process: load the model, evaluate the category, print JSON with peak RSS."""
    from somad.persistence import load_model
    from somad.pipeline import evaluate_model

    model = load_model(model_dir, device=device)
    model.extractor  # built before timing, as a server would have it
    t0 = time.perf_counter()
    ev = evaluate_model(model, data_dir, category)
    sec = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    out = {"evaluate_s": sec, "eval_peak_rss_mb": rss_mb,
           "image_auroc": ev.metrics.get("image_auroc"), "pixel_auroc": ev.metrics.get("pixel_auroc"),
           "aupro": ev.metrics.get("aupro"), "timings": ev.metrics.get("timings")}
    if device.startswith("cuda"):
        out["eval_peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("BENCH_CHILD " + json.dumps(out))


def run_child(model_dir: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-eval", model_dir,
           "--data-dir", args.data_dir, "--category", args.category, "--device", args.device]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("BENCH_CHILD ")][-1]
    return json.loads(line[len("BENCH_CHILD "):])


# --------------------------------------------------------------------------- benchmark stages
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--max-train", type=int, default=100, help="training images (default 100)")
    ap.add_argument("--som-subsample", type=int, default=20000,
                    help="vectors of the torch vs MiniSom comparison (MiniSom: ~1-7 ms per vector-epoch)")
    ap.add_argument("--ref-images", type=int, default=4, help="test images scored by the numpy reference")
    ap.add_argument("--skip-minisom", action="store_true")
    ap.add_argument("--child-eval", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


class Bench:
    """State shared by the stages: arguments, device, repeats, the default model, images, results."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dev = torch.device(args.device)
        self.rep = max(1, args.repeat)
        self.res: dict = {"device": str(self.dev), "host": socket.gethostname(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                          "category": args.category, "repeat": self.rep}
        if self.dev.type == "cuda":
            self.res["gpu"] = torch.cuda.get_device_name(self.dev)
        self.model = SOMAD(device=str(self.dev))
        size = self.model.image_size
        self.train_images = load_images(data.train_samples(args.data_dir, args.category)[:args.max_train], size)
        self.test_images = load_images(data.test_samples(args.data_dir, args.category), size)
        self.res["n_train"], self.res["n_test"] = len(self.train_images), len(self.test_images)

    def timed(self, fn, repeat: int | None = None):
        return timed(fn, self.rep if repeat is None else repeat, self.dev)

    def som(self, backend: str, grid: tuple[int, int]) -> SOM:
        """An unfitted SOM with the default model's hyperparameters."""
        return SOMAD(**{**self.model.get_params(), "som_backend": backend})._som(grid)


def bench_features(b: Bench) -> torch.Tensor:
    """Feature extraction images/s; returns the training features ``(N, d, h, w)``."""
    ext = b.model.extractor
    ext.extract(b.train_images[:32], 32, b.dev)  # warm-up
    sec, feats = b.timed(lambda: ext.extract(b.train_images, 32, b.dev))
    b.res["features_s"] = sec
    b.res["features_images_per_s"] = len(b.train_images) / sec
    return feats


def som_inputs(b: Bench, feats: torch.Tensor):
    """Training vectors, initial weights and position prior exactly as ``SOMAD.fit`` builds them."""
    n, d, h, w = feats.shape
    x = feats.permute(0, 2, 3, 1).reshape(-1, d).contiguous()
    grid = (h, w)
    init = F.adaptive_avg_pool2d(feats.mean(0, keepdim=True), grid)[0].permute(1, 2, 0).reshape(-1, d)
    b.res["n_train_vectors"], b.res["d"], b.res["grid"] = len(x), d, list(grid)
    return x, grid, init, _position_prior(n, (h, w), grid, x.device)


def bench_som(b: Bench, x, grid, init, prior) -> SOM:
    """The torch SOM on all training vectors."""
    sec, som = b.timed(lambda: b.som("torch", grid).fit(x, init=init, prior_bmu=prior))
    b.res["som_fit_s_torch"] = sec
    b.res["som_epochs"] = b.model.epochs
    b.res["som_qe_full_torch"], b.res["som_te_full_torch"] = som.quantization_error_, som.topographic_error_
    return som


def bench_som_subsample(b: Bench, x, grid, init, prior) -> None:
    """Torch vs MiniSom on the same random subsample, same init, same epochs."""
    g = torch.Generator().manual_seed(0)
    sub = torch.randperm(len(x), generator=g)[:b.args.som_subsample].to(x.device)
    xs, ps = x[sub], prior[sub]
    sec, st = b.timed(lambda: b.som("torch", grid).fit(xs, init=init, prior_bmu=ps))
    b.res["som_subsample_n"] = len(xs)
    b.res["som_subsample_s_torch"] = sec
    b.res["som_qe_torch"], b.res["som_te_torch"] = st.quantization_error_, st.topographic_error_
    keys = ("som_subsample_s_minisom", "som_qe_minisom", "som_te_minisom", "som_speedup_vs_minisom")
    if b.args.skip_minisom:
        b.res.update(dict.fromkeys(keys))
        return
    sec, sm = b.timed(lambda: b.som("minisom", grid).fit(xs, init=init), 1)
    b.res.update(zip(keys, (sec, sm.quantization_error_, sm.topographic_error_, sec / b.res["som_subsample_s_torch"])))


def bench_gaussians(b: Bench, x, som: SOM):
    """Statistics, regularised covariances and whitening factors; returns ``(means, covs, factors)``."""
    def fit_gaussians():
        stats = accumulate(x, som.bmu_, som.weights_)
        means, covs = gaussians(stats, b.model.cov_eps, b.model.shrinkage)
        return means, covs, whitening_factors(covs)

    b.res["gaussian_fit_s"], out = b.timed(fit_gaussians)
    return out


def bench_scoring(b: Bench, som: SOM, means, covs, factors) -> None:
    """somad's scorer vs the numpy reference on the same fitted model and test features."""
    tf = b.model.extractor.extract(b.test_images, 32, b.dev)
    n, d, h, w = tf.shape
    tx = tf.permute(0, 2, 3, 1).reshape(-1, d).contiguous()
    per = h * w

    def somad_scores():
        return torch.cat([score_patches(tx[s * per:(s + 32) * per], som.weights_, means, factors, b.model.k).scores
                          for s in range(0, n, 32)])

    somad_scores()  # warm-up
    sec, ours = b.timed(somad_scores)
    b.res["scoring_ms_per_image"] = 1000 * sec / n
    nref = min(b.args.ref_images, n)
    pick = np.linspace(0, n - 1, nref).round().astype(int)  # good and defective images alike
    rows = (pick[:, None] * per + np.arange(per)).ravel()
    rx = tx[torch.as_tensor(rows, device=tx.device)].cpu().numpy()
    t0 = time.perf_counter()
    ref = reference_scores(rx, som.weights_.cpu().numpy(), means.cpu().numpy(), covs.cpu().numpy(), b.model.k)
    b.res["reference_scoring_ms_per_image"] = 1000 * (time.perf_counter() - t0) / nref
    b.res["reference_images"] = int(nref)
    ours_sel = ours.cpu().numpy().astype(np.float64)[rows]
    b.res["scoring_max_rel_diff"] = float(np.max(np.abs(ours_sel - ref) / np.abs(ref)))
    b.res["scoring_speedup"] = b.res["reference_scoring_ms_per_image"] / b.res["scoring_ms_per_image"]


def bench_end_to_end(b: Bench) -> None:
    """``SOMAD.fit`` in this process, ``evaluate_model`` in a child (its own peak RSS)."""
    from somad.persistence import save_model

    fits, evals = [], []
    with tempfile.TemporaryDirectory(prefix="somad-bench-") as tmp:
        for r in range(b.rep):
            mdl = SOMAD(device=str(b.dev))
            mdl.extractor
            sync(b.dev)
            t0 = time.perf_counter()
            mdl.fit(b.train_images)
            sync(b.dev)
            fits.append(time.perf_counter() - t0)
            b.res["fit_timings"] = mdl.timings_
            if r == 0:
                save_model(mdl, Path(tmp) / "model", force=True)
            del mdl
        evals = [run_child(str(Path(tmp) / "model"), b.args) for _ in range(b.rep)]
    b.res["fit_s"] = statistics.median(fits)
    b.res["evaluate_s"] = statistics.median(e["evaluate_s"] for e in evals)
    b.res["eval_peak_rss_mb"] = statistics.median(e["eval_peak_rss_mb"] for e in evals)
    if "eval_peak_cuda_mb" in evals[0]:
        b.res["eval_peak_cuda_mb"] = max(e["eval_peak_cuda_mb"] for e in evals)
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        b.res[key] = evals[0][key]
    b.res["evaluate_timings"] = evals[0]["timings"]


def write_results(b: Bench) -> Path:
    out = Path(b.args.out) if b.args.out else (ROOT / "benchmarks" / "results" /
                                               f"{socket.gethostname()}-{b.dev.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(b.res, indent=2, default=float) + "\n")
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child_eval:
        child_evaluate(args.child_eval, args.data_dir, args.category, args.device)
        return {}
    b = Bench(args)
    feats = bench_features(b)
    x, grid, init, prior = som_inputs(b, feats)
    feats = None
    som = bench_som(b, x, grid, init, prior)
    bench_som_subsample(b, x, grid, init, prior)
    means, covs, factors = bench_gaussians(b, x, som)
    x = None  # free memory
    bench_scoring(b, som, means, covs, factors)
    bench_end_to_end(b)
    out = write_results(b)
    print(table(b.res))
    print(f"\nwritten {out}")
    return b.res


def _f(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def table(r: dict) -> str:
    rows = [
        ("features", f"{_f(r['features_images_per_s'], '.1f')} images/s", f"batch 32, {r['n_train']} images"),
        ("SOM fit, all vectors (torch)", f"{_f(r['som_fit_s_torch'], '.2f')} s",
         f"{r['n_train_vectors']} x {r['d']}, grid {r['grid']}, {r['som_epochs']} epochs, "
         f"QE {_f(r['som_qe_full_torch'], '.3f')}, TE {_f(r['som_te_full_torch'], '.3f')}"),
        (f"SOM subsample {r['som_subsample_n']}: torch / MiniSom",
         f"{_f(r['som_subsample_s_torch'], '.2f')} s / {_f(r['som_subsample_s_minisom'], '.1f')} s",
         f"speed-up {_f(r['som_speedup_vs_minisom'], '.0f')}x"),
        ("SOM subsample QE: torch / MiniSom", f"{_f(r['som_qe_torch'], '.3f')} / {_f(r['som_qe_minisom'], '.3f')}",
         "quantization error (lower is better)"),
        ("SOM subsample TE: torch / MiniSom", f"{_f(r['som_te_torch'], '.3f')} / {_f(r['som_te_minisom'], '.3f')}",
         "topographic error"),
        ("Gaussian fit", f"{_f(r['gaussian_fit_s'], '.2f')} s", ""),
        ("scoring: somad / reference", f"{_f(r['scoring_ms_per_image'], '.1f')} / "
         f"{_f(r['reference_scoring_ms_per_image'], '.0f')} ms/image",
         f"speed-up {_f(r['scoring_speedup'], '.0f')}x, max rel diff {_f(r['scoring_max_rel_diff'], '.1e')} "
         f"(reference on {r['reference_images']} images)"),
        ("evaluate peak RSS", f"{_f(r['eval_peak_rss_mb'], '.0f')} MB", "child process, VmHWM"),
        ("fit (end to end)", f"{_f(r['fit_s'], '.1f')} s", json.dumps({k: round(v, 1) for k, v in r['fit_timings'].items()})),
        ("evaluate (end to end)", f"{_f(r['evaluate_s'], '.1f')} s", f"{r['n_test']} test images"),
        ("image AUROC / pixel AUROC / AUPRO",
         f"{_f(r['image_auroc'], '.3f')} / {_f(r['pixel_auroc'], '.3f')} / {_f(r['aupro'], '.3f')}", ""),
    ]
    lines = [f"device {r['device']}, {r['threads']} threads, median of {r['repeat']}", "",
             "| stage | value | notes |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
