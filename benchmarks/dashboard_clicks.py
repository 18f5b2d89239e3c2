"""Server-side work of one dashboard click, timed with the pure functions the pages call (no browser).

* neuron click (SOM explorer): the two SOM maps as plotly JSON (the U-matrix with a test image's
  footprint), the cells of that image that chose the neuron, where the neuron lives in the images,
  the neuron's 16 nearest training patches and their crops, the test images where it is the BMU
  with their outlined cells;
* heatmap-cell click (Test inspector): the clickable heatmap as plotly JSON, the cell's BMU and k
  nearest neurons, its crop beside the nearest training patches of its BMU and score neuron, the
  cell on the image's footprint and its distance map, the per-feature Mahalanobis contributions
  and their bar chart.

Everything a page caches per model or per image (U-matrix, hit map, BMU index, decoded training
images, heat overlays, evaluation, one image's features) is built before the clock starts, as on
a running dashboard after the first click.

    python benchmarks/dashboard_clicks.py --model-dir models/bottle/default \
        --data-dir ../shared/data/mvtec_ad --category bottle --clicks 20
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import lru_cache

import numpy as np

from dashboard import images
from somad import data, explain, figures, pipeline, projection, viz
from somad.persistence import load_model


def neuron_click(model, ev, views, heats, load, neuron, image=0, mean_image=None) -> None:
    fp = projection.image_footprint(ev.patches, image, model.feature_shape_, model.grid_, ev.masks[image])
    figures.footprint_map(views["u"], fp.counts, fp.max_score, fp.defect_counts, model.topology,
                          viz.heat_scale(model.pixel_range_, ev.metrics), neuron).to_json()
    figures.som_map(views["hits"], model.topology, hover={"x": views["mean_dist"]}, selected=neuron).to_json()
    images.highlight_cells(heats[image], fp.cells_of(neuron))
    figures.positions_figure(mean_image, projection.neuron_positions(model, neuron)).to_json()
    patches = explain.nearest_training_patches(model, *neuron, n=16)
    explain.patch_crops(model, patches, load, context=2, out_size=112)
    nh = explain.neuron_test_hits(ev.patches, neuron, model.grid_, len(ev.labels))
    for i in list(dict.fromkeys([*nh.by_score[:3].tolist(), *nh.by_hits[:3].tolist()]))[:6]:
        cells = explain.neuron_cells(ev.patches, neuron, model.grid_, i, model.feature_shape_)
        images.highlight_cells(heats[i], cells)


def cell_click(model, ev, feats, heat, i, cell, load=None, u=None) -> None:
    h, w = model.feature_shape_
    cell_scores = ev.patches.scores[i * h * w:(i + 1) * h * w].numpy().reshape(h, w)
    scale = viz.heat_scale(model.pixel_range_, ev.metrics)
    figures.image_figure(heat, (h, w), "", cell_scores, cell, size=400, scale=scale).to_json()
    ex = explain.explain_cell(ev.patches, i, *cell, (h, w), model.grid_)
    explain.crop_patch(ev.images[i], *cell, (h, w), context=2, out_size=112)
    for neuron in {ex.bmu, ex.best}:
        explain.patch_crops(model, explain.nearest_training_patches(model, *neuron, n=4), load, context=2,
                            out_size=112)
    pm = projection.patch_on_map(model, feats, *cell)
    fp = projection.image_footprint(ev.patches, i, (h, w), model.grid_, ev.masks[i])
    figures.footprint_map(u, fp.counts, fp.max_score, fp.defect_counts, model.topology, scale,
                          ex.bmu, size=400).to_json()
    figures.distance_map_figure(pm.dist, pm.nearest, model.topology, size=400).to_json()
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
        load(p, model.image_size, model.intensity_)  # the call patch_crops makes
    rng = np.random.default_rng(0)
    hits = views["hits"]
    busy = np.flatnonzero(hits.ravel() > 0)
    neurons = [tuple(int(v) for v in np.unravel_index(int(j), hits.shape)) for j in rng.choice(busy, args.clicks)]
    i = int(np.argmax(ev.scores))
    feats = model.features(ev.images[i:i + 1])[0].cpu()
    h, w = model.feature_shape_
    cells = [(int(rng.integers(h)), int(rng.integers(w))) for _ in range(args.clicks)]
    mean = projection.mean_image(model.train_paths_, model.image_size, load, model.intensity_)
    t_neuron = _times(neuron_click, [(model, ev, views, heats, load, n, i, mean) for n in neurons])
    t_cell = _times(cell_click, [(model, ev, feats, heats[i], i, c, load, views["u"]) for c in cells])
    for name, t in (("neuron click (maps with footprint, cells, positions, gallery, test images)", t_neuron),
                    ("cell click (heatmap, BMU panel, crops, cell on the map, distance map, contributions)", t_cell)):
        print(f"{name}: median {statistics.median(t):.3f} s, max {max(t):.3f} s over {len(t)} clicks")
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
