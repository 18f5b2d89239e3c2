"""Which image score holds up? (issue #7, item 6)

    python benchmarks/image_score_study.py cache  [--cache DIR] [--categories ...]
    python benchmarks/image_score_study.py table  [--cache DIR] [--pixel-maps [NAME ...]] [--out FILE.json]

``cache`` fits one model per category with every default (``tf_efficientnet_lite0`` with the
Lite0 package weights; the committed results were made before that default landed, by the same
architecture with ImageNet input normalisation instead of timm's 0.5 / 0.5) and saves to
``DIR/<category>.npz``: the patch score maps float32 ``(N, h, w)`` and best neurons int32 of the
test images, and the same for the cross-fitted training images (each scored by Gaussians
fitted without its fold, exactly as the model's threshold machinery does), plus labels,
defect types and masks. ``table`` computes every candidate image-score rule from the cache
and prints image AUROC overall and per defect type, and pixel AUROC / AUPRO for rules that
change the maps (``--pixel-maps`` names them; none skips them); the JSON holds the same table.
Image AUROC is 1.000 for every rule on three categories, so the table adds the margin (lowest
defective minus highest good score, over the std of the good scores).

Outcome (README "Choosing the image score"): the mean of the hottest 5 % of the blurred map,
``somad.scoring.top_mean_score``, now the default ``image_score``.

Categories: MVTec AD bottle, Magnetic Tile Defects (``--data-root``, default
``/work/shared/data``) and the two synthetic demo categories (written to ``DIR/demo``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from somad import data, demo  # noqa: E402
from somad.metrics import aupro, auroc  # noqa: E402
from somad.model import SOMAD  # noqa: E402
from somad.scoring import anomaly_maps, image_scores  # noqa: E402

CATEGORIES = {"bottle": "mvtec_ad", "magnetic_tile": "magnetic_tile_defects", "tiles": None, "washers": None}


def cache_category(category: str, root: Path, out: Path) -> None:
    model = SOMAD()
    train = data.train_samples(root, category)
    test = data.test_samples(root, category)
    t0 = time.perf_counter()
    x_train, _ = data.load_split(train, model.image_size)
    captured = []
    original = model._maps_from_features

    def capture(feats, means=None, factors=None, return_patches=False):
        res = original(feats, means, factors, return_patches=True)
        captured.append(res.patches)
        return res

    model._maps_from_features = capture
    model.fit(x_train)
    model._maps_from_features = original
    n_thr = len(model.threshold_indices_)
    folds = len(captured)
    fold_of = np.arange(n_thr) % folds
    order = np.concatenate([np.flatnonzero(fold_of == f) for f in range(folds)])
    h, w = model.feature_shape_
    tr_s = np.empty((n_thr, h, w), np.float32)
    tr_b = np.empty((n_thr, h, w), np.int32)
    tr_s[order] = torch.cat([p.scores for p in captured]).cpu().numpy().reshape(-1, h, w)
    tr_b[order] = torch.cat([p.best for p in captured]).cpu().numpy().reshape(-1, h, w)
    t1 = time.perf_counter()
    x_test, masks = data.load_split(test, model.image_size)
    scored = model.anomaly_maps(x_test, return_patches=True)
    te_s, te_b = scored.patches.scores.numpy(), scored.patches.best.numpy()
    t2 = time.perf_counter()
    np.savez_compressed(
        out / f"{category}.npz", test_scores=te_s.reshape(-1, h, w), test_best=te_b.reshape(-1, h, w).astype(np.int32),
        train_scores=tr_s, train_best=tr_b, labels=np.array([s.label for s in test], np.int8),
        defects=np.array([s.defect for s in test]), masks=np.packbits(masks.astype(bool), axis=-1),
        image_size=model.image_size, n_neurons=len(model.som_weights_), n_train=len(train),
        fit_s=t1 - t0, score_s=t2 - t1)
    print(f"{category}: {len(train)} train / {len(test)} test, fit {t1 - t0:.0f} s, score {t2 - t1:.0f} s",
          flush=True)


# ------------------------------------------------------------------ candidate rules
def _pixel_maps(patch_maps: np.ndarray, size: int, blur: float) -> np.ndarray:
    out = []
    for s in range(0, len(patch_maps), 64):
        out.append(anomaly_maps(torch.from_numpy(np.ascontiguousarray(patch_maps[s:s + 64])), size, blur).numpy())
    return np.concatenate(out)


def _top_mean(maps: np.ndarray, frac: float) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(frac * flat.shape[1])))
    return np.sort(flat, axis=1)[:, -k:].mean(1)


def _neuron_stats(scores: np.ndarray, best: np.ndarray, n_neurons: int, prior: float = 10.0):
    """Per-neuron mean and std of cross-fitted training patch scores, shrunk to the pooled ones by
    ``prior`` pseudo-samples."""
    s, b = scores.ravel().astype(np.float64), best.ravel()
    n = np.bincount(b, minlength=n_neurons)
    s1 = np.bincount(b, s, minlength=n_neurons)
    s2 = np.bincount(b, s * s, minlength=n_neurons)
    mu_g, var_g = s.mean(), s.var()
    mu = (s1 + prior * mu_g) / (n + prior)
    var = (s2 + prior * (var_g + mu_g ** 2)) / (n + prior) - mu ** 2
    return mu.astype(np.float32), np.sqrt(np.maximum(var, 1e-12)).astype(np.float32)


def candidate_scores(c: dict) -> tuple[dict, dict]:
    """Image scores per rule, and the pixel maps of rules whose maps differ from today's."""
    size = int(c["image_size"])
    te, tr = c["test_scores"], c["train_scores"]
    rules, maps = {}, {}
    m4 = _pixel_maps(te, size, 4.0)
    maps["blur4 (today)"] = m4
    for blur in (0, 2, 4, 8, 16):
        mb = m4 if blur == 4 else _pixel_maps(te, size, blur)
        rules[f"max blur{blur}" + (" (today)" if blur == 4 else "")] = mb.reshape(len(mb), -1).max(1)
        if blur in (2, 8):
            maps[f"blur{blur}"] = mb
    for frac in (0.001, 0.01, 0.02, 0.05, 0.1):
        rules[f"top{frac:g} pixel mean, blur4"] = _top_mean(m4, frac)
        rules[f"top{frac:g} patch mean"] = _top_mean(te, frac)
    rules["somad top_mean (chosen)"] = image_scores("top_mean", torch.from_numpy(te), torch.from_numpy(m4)).numpy()
    # per-position (PaDiM-like): standardise by the cross-fitted training scores at the same cell
    mu_p, sd_p = tr.mean(0), tr.std(0) + 1e-6
    zp = (te - mu_p) / sd_p
    mzp = _pixel_maps(zp, size, 4.0)
    maps["position z, blur4"] = mzp
    rules["position z: max blur4"] = mzp.reshape(len(mzp), -1).max(1)
    rules["position z: top0.01 patch mean"] = _top_mean(zp, 0.01)
    rules["position divide: max blur4"] = _pixel_maps(te / mu_p, size, 4.0).reshape(len(te), -1).max(1)
    # per-neuron: standardise by the cross-fitted training scores of the same best neuron
    mu_n, sd_n = _neuron_stats(tr, c["train_best"], int(c["n_neurons"]))
    zn = (te - mu_n[c["test_best"]]) / sd_n[c["test_best"]]
    mzn = _pixel_maps(zn, size, 4.0)
    maps["neuron z, blur4"] = mzn
    rules["neuron z: max blur4"] = mzn.reshape(len(mzn), -1).max(1)
    rules["neuron z: top0.01 patch mean"] = _top_mean(zn, 0.01)
    rules["neuron divide: max blur4"] = _pixel_maps(te / mu_n[c["test_best"]], size, 4.0).reshape(len(te), -1).max(1)
    # combinations: today's score standardised by the training images' distribution of the same rule
    tr4 = _pixel_maps(tr, size, 4.0).reshape(len(tr), -1).max(1)
    trz = _z_train(tr, size)
    today, pos = rules["max blur4 (today)"], rules["position z: max blur4"]
    rules["max blur4 + position z max (train-standardised sum)"] = ((today - tr4.mean()) / tr4.std()
                                                                    + (pos - trz.mean()) / trz.std())
    return rules, maps


def _z_train(tr: np.ndarray, size: int) -> np.ndarray:
    """Leave-one-image-out position-z max of the training images (their own statistics excluded)."""
    n = len(tr)
    s1, s2 = tr.sum(0), (tr.astype(np.float64) ** 2).sum(0)
    out = np.empty(n, np.float32)
    for i in range(n):
        mu = (s1 - tr[i]) / (n - 1)
        sd = np.sqrt(np.maximum((s2 - tr[i].astype(np.float64) ** 2) / (n - 1) - mu ** 2, 0)) + 1e-6
        out[i] = _pixel_maps(((tr[i] - mu) / sd)[None].astype(np.float32), size, 4.0).max()
    return out


def _margin(labels: np.ndarray, scores: np.ndarray) -> float:
    """(lowest defective score - highest good score) / std of good scores: > 0 separates all images,
    and tells rules apart where image AUROC is 1.000 for all of them."""
    good = scores[labels == 0]
    return float((scores[labels == 1].min() - good.max()) / good.std())


def table(cache: Path, categories: list[str], pixel_maps: list[str]) -> dict:
    result = {}
    for cat in categories:
        c = dict(np.load(cache / f"{cat}.npz"))
        size = int(c["image_size"])
        labels = c["labels"].astype(int)
        defects = c["defects"]
        masks = np.unpackbits(c["masks"], axis=-1)[..., :size].astype(bool)
        rules, maps = candidate_scores(c)
        good = labels == 0
        rows = {}
        for name, sc in rules.items():
            row = {"image_auroc": auroc(labels, sc), "margin": _margin(labels, sc)}
            for d in sorted(set(defects) - {"good"}):
                sel = good | (defects == d)
                row[f"image_auroc/{d}"] = auroc(labels[sel], sc[sel])
            rows[name] = row
        pix = {}
        for name, mp in maps.items():
            if name in pixel_maps:
                pix[name] = {"pixel_auroc": auroc(masks, mp), "aupro": aupro(masks, mp)}
                print(f"  {cat} {name}: pixel AUROC {pix[name]['pixel_auroc']:.3f} AUPRO {pix[name]['aupro']:.3f}",
                      flush=True)
        result[cat] = {"n_train": int(c["n_train"]), "n_test": len(labels), "image": rows, "pixel": pix,
                       "fit_s": float(c["fit_s"]), "score_s": float(c["score_s"])}
    return result


def print_table(result: dict) -> None:
    cats = list(result)
    names = list(next(iter(result.values()))["image"])
    print("image AUROC (margin: (min defective - max good) / std good)")
    print("| rule | " + " | ".join(cats) + " | min Δ AUROC vs today, any category or defect type |")
    print("| --- |" + " --- |" * (len(cats) + 1))
    for name in names:
        r = [result[c]["image"][name] for c in cats]
        deltas = [result[c]["image"][name][k] - result[c]["image"]["max blur4 (today)"][k]
                  for c in cats for k in result[c]["image"][name] if k.startswith("image_auroc")]
        print(f"| {name} | " + " | ".join(f"{x['image_auroc']:.3f} ({x['margin']:+.2f})" for x in r)
              + f" | {min(deltas):+.3f} |")
    for c in cats:
        print(f"\n{c} per defect type (image AUROC):")
        keys = [k for k in result[c]["image"]["max blur4 (today)"] if "/" in k]
        print("| rule | " + " | ".join(k.split("/")[1] for k in keys) + " |")
        print("| --- |" + " --- |" * len(keys))
        for name in names:
            print(f"| {name} | " + " | ".join(f"{result[c]['image'][name][k]:.3f}" for k in keys) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("cache", "table"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/somad_image_score"))
    ap.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    ap.add_argument("--pixel-maps", nargs="*", default=["blur4 (today)", "blur2", "blur8", "position z, blur4",
                                                          "neuron z, blur4"],
                    help="maps whose pixel AUROC / AUPRO are computed (none: skip)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    if args.what == "cache":
        demo_root = demo.generate(args.cache / "demo")
        for cat in args.categories:
            root = args.data_root / CATEGORIES[cat] if CATEGORIES[cat] else demo_root
            cache_category(cat, root, args.cache)
        return 0
    result = table(args.cache, args.categories, args.pixel_maps)
    print_table(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
