"""Server-side work of one dashboard click, timed with the pure functions the pages call (no browser).

* neuron click (SOM explorer): the two SOM maps as plotly JSON, the neuron's 16 nearest training
  patches and their crops, the test images where it is the BMU with their outlined cells;
* heatmap-cell click (Test inspector): the clickable heatmap as plotly JSON, the cell's BMU and k
  nearest neurons, the per-feature Mahalanobis contributions and their bar chart.

Everything a page caches per model or per image (U-matrix, hit map, BMU index, decoded training
images, heat overlays, evaluation, one image's features) is built before the clock starts, as on
a running dashboard after the first click.

    python benchmarks/dashboard_clicks.py --model-dir models/bottle/default \
        --data-dir ../shared/data/mvtec_ad --category bottle --clicks 20
"""
from __future__ import annotations

import argparse
import statistics
import time
from functools import lru_cache

import numpy as np

from dashboard import images
from somad import data, explain, figures, pipeline, viz
from somad.persistence import load_model


def neuron_click(model, ev, views, heats, load, neuron) -> None:
    for values in (views["u"], views["hits"]):
        figures.som_map(values, model.topology, hover={"x": views["mean_dist"]}, selected=neuron).to_json()
    patches = explain.nearest_training_patches(model, *neuron, n=16)
    explain.patch_crops(model, patches, load, context=2, out_size=112)
    nh = explain.neuron_test_hits(ev.patches, neuron, model.grid_, len(ev.labels))
    for i in list(dict.fromkeys([*nh.by_score[:3].tolist(), *nh.by_hits[:3].tolist()]))[:6]:
        cells = explain.neuron_cells(ev.patches, neuron, model.grid_, i, model.feature_shape_)
        images.highlight_cells(heats[i], cells)


def cell_click(model, ev, feats, heat, i, cell) -> None:
    h, w = model.feature_shape_
    cell_scores = ev.patches.scores[i * h * w:(i + 1) * h * w].numpy().reshape(h, w)
    figures.image_figure(heat, (h, w), "", cell_scores, cell, size=400).to_json()
    ex = explain.explain_cell(ev.patches, i, *cell, (h, w), model.grid_)
    contrib = explain.explain_contributions(model, feats, *cell, ex.best)
    top = explain.top_contributions(contrib, model.channel_idx_, n=10)
    labels = [explain.channel_label(model, d) for d, _, _, _ in top]
    figures.contributions_figure(top, "", labels).to_json()


def _times(fn, args_list) -> list[float]:
    out = []
    for args in args_list:
        t0 = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--clicks", type=int, default=20)
    args = ap.parse_args()
    model = load_model(args.model_dir)
    ev = pipeline.evaluate_model(model, args.data_dir, args.category, return_patches=True)
    views = {"u": model.u_matrix(), "hits": model.hit_map(),
             "mean_dist": explain.bmu_index(model).mean_dist.reshape(model.grid_)}
    scale = viz.heat_scale(model.pixel_range_, ev.metrics)
    heats = [images.heat_overlay(img, amap, scale) for img, amap in zip(ev.images, ev.maps)]
    load = lru_cache(maxsize=None)(data.load_image)
    for p in model.train_paths_:
        load(p, model.image_size)
    rng = np.random.default_rng(0)
    hits = views["hits"]
    busy = np.flatnonzero(hits.ravel() > 0)
    neurons = [tuple(int(v) for v in np.unravel_index(int(j), hits.shape)) for j in rng.choice(busy, args.clicks)]
    i = int(np.argmax(ev.scores))
    feats = model.features(ev.images[i:i + 1])[0].cpu()
    h, w = model.feature_shape_
    cells = [(int(rng.integers(h)), int(rng.integers(w))) for _ in range(args.clicks)]
    t_neuron = _times(neuron_click, [(model, ev, views, heats, load, n) for n in neurons])
    t_cell = _times(cell_click, [(model, ev, feats, heats[i], i, c) for c in cells])
    for name, t in (("neuron click (maps, gallery, test images)", t_neuron),
                    ("cell click (heatmap, BMU panel, contributions)", t_cell)):
        print(f"{name}: median {statistics.median(t):.3f} s, max {max(t):.3f} s over {len(t)} clicks")


if __name__ == "__main__":
    main()
