"""Before/after pictures of the heatmap colour scale (docs/heatmaps_*.png).

Scores a category's test images (all, or the first ``--per-defect`` of each defect type), takes the
pixel F1-optimal threshold of those images as the dashboard does, and draws for each named image:
input with its truth (green) | before: jet on the model's training range | after: the category's
:class:`somad.viz.HeatScale` with the predicted region outlined red.

    python benchmarks/heatmap_scales.py --model-dir models/bottle/default --data-dir ../shared/data/mvtec_ad \
        --category bottle --out docs/heatmaps_bottle.png broken_large/003.png contamination/000.png good/000.png
"""
from __future__ import annotations

import argparse

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from somad import data, viz  # noqa: E402
from somad.metrics import evaluate_scores  # noqa: E402
from somad.persistence import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-defect", type=int, default=0, help="score only the first N images of each type (0 = all)")
    ap.add_argument("--dpi", type=int, default=55)
    ap.add_argument("images", nargs="+", help="test images to draw, as <defect>/<file>")
    args = ap.parse_args()
    model = load_model(args.model_dir)
    groups: dict[str, list] = {}
    for s in data.test_samples(args.data_dir, args.category):
        groups.setdefault(s.defect, []).append(s)
    picked = [s for _, ss in sorted(groups.items()) for s in (ss[:args.per_defect] if args.per_defect else ss)]
    loaded = [data.load_sample(s, model.image_size, model.intensity_) for s in picked]
    images, masks = np.stack([a for a, _ in loaded]), np.stack([b for _, b in loaded])
    res = model.anomaly_maps(images)
    labels = np.array([int(s.defect != data.GOOD) for s in picked])
    metrics = evaluate_scores(labels, res.scores, masks, res.maps)
    lo, hi = model.pixel_range_
    pix_thr = viz.pixel_threshold(metrics, model.pixel_range_)
    scale = viz.heat_scale(model.pixel_range_, metrics)
    names = [f"{s.defect}/{s.path.name}" for s in picked]
    fig, axes = plt.subplots(len(args.images), 3, figsize=(7.5, 2.5 * len(args.images)), squeeze=False)
    for row, name in zip(axes, args.images):
        i = names.index(name)
        img, amap, mask = images[i], res.maps[i], masks[i]
        jet = matplotlib.colormaps["jet"](np.clip((amap - lo) / (hi - lo), 0, 1))[..., :3] * 255
        row[0].imshow(viz.region_contours(img, mask))
        row[0].set_title(f"{name} (truth green)", fontsize=7)
        row[1].imshow((img * 0.5 + jet * 0.5).astype(np.uint8))
        row[1].set_title(f"before: jet {lo:.1f}-{hi:.1f}", fontsize=7)
        row[2].imshow(viz.region_contours(viz.overlay(img, amap, scale), None, amap, pix_thr))
        row[2].set_title(f"after: knee {scale.knee:.1f}, log to {scale.top:.1f}; max {amap.max():.0f}", fontsize=7)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=args.dpi)
    Image.open(args.out).convert("RGB").quantize(128).save(args.out, optimize=True)  # small enough for git
    print(args.out, scale, f"{len(picked)} images scored")


if __name__ == "__main__":
    main()
