"""A self-contained HTML report of a model and its evaluation, to hand out.

One file that opens offline in any browser: the model card and metrics, the ROC and PRO curves and
the score histogram (interactive plotly; plotly.js is embedded once, no CDN), the U-matrix and hit
map, the map's regions (:mod:`somad.regions`) with their typical patches and shares, the training replay
when the model kept one (:mod:`somad.replay`), the failing images with their heatmaps (embedded PNGs) and the per-defect table.
Written by the dashboard (Model and Metrics pages) and by ``python -m somad report``.
"""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import data, explain, figures, metrics, regions, viz
from .atomic import write_text
from .decision import DECISION_RULE
from .explain import failing_order, outcome_counts
from .replay import caption as replay_caption

MAX_FAILING = 8
"""Failing images shown (worst first)."""

METRIC_LABELS = {"image_auroc": "Image AUROC", "pixel_auroc": "Pixel AUROC", "aupro": "AUPRO (FPR ≤ 0.3)",
                 "image_f1_max": "Image F1-max", "pixel_f1_max": "Pixel F1-max"}


def per_defect_rows(mt: dict) -> list[dict]:
    """One row per defect type (each against all good test images), rounded to 4 decimals."""
    return [{"defect type": d, "images": v.get("n_images", 0),
             **{label: round(float(v[key]), 4) for key, label in METRIC_LABELS.items() if key in v}}
            for d, v in mt.get("per_defect", {}).items()]


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if not np.isfinite(v) else f"{v:.4g}"
    return str(v)


def _png(image: np.ndarray, alt: str) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


PLOT_WIDTH = 560
"""Width in pixels of the curves (SOM maps keep their own): two fit side by side on a laptop screen."""


def _plot(fig, first: bool) -> str:
    """A plotly figure as a ``<div>`` of fixed width; the first one carries plotly.js (embedded, no CDN)."""
    if fig.layout.width is None:
        fig.update_layout(width=PLOT_WIDTH)
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False, config={"displayModeBar": False})


def _model_card(model, model_dir: str | None) -> list[dict]:
    card = [("model dir", model_dir or "(not saved)"), ("training images", model.n_train_),
            ("SOM grid", f"{model.grid_[0]}x{model.grid_[1]} {model.topology}"),
            ("quantization error", float(model.quantization_error_)),
            ("topographic error", float(model.topographic_error_)),
            ("deployable image threshold", float(model.threshold_)),
            ("decision rule", f"anomalous when {DECISION_RULE}"),
            ("pixel score range of the training images", f"{model.pixel_range_[0]:.3f} – {model.pixel_range_[1]:.3f}"),
            ("fit time (s)", float(sum(model.timings_.values())))]
    card.insert(6, ("threshold rule", model.threshold_rule))
    taught = model.n_train_ - getattr(model, "som_train_images_", model.n_train_)
    if taught > 0:
        from .versions import refit_advice

        card.insert(2, ("taught images (SOM fixed)", taught))
        card.insert(3, ("SOM refit advice", refit_advice(model) or "none: the SOM has neurons for the taught images"))
    card += list(model.params_summary().items())
    return [{"": k, "value": v} for k, v in card]


def _failing(model, ev, pix_thr: float) -> str:
    order = failing_order(ev.labels, ev.scores, model.threshold_)[:MAX_FAILING]
    if not len(order):
        return "<p>No failing image at the deployable threshold.</p>"
    out = []
    for i in order:
        s = ev.samples[i]
        img, mask, amap = viz.as_shown(s.path, ev.images[i], ev.masks[i], ev.maps[i], side=400)  # its own aspect
        heat = viz.overlay(img, amap, viz.heat_scale(model.pixel_range_, ev.metrics))
        region = viz.region_contours(img, mask, amap, pix_thr)
        kind = "false positive" if ev.labels[i] == 0 else "false negative"
        caption = viz.region_caption(ev.maps[i], pix_thr)
        out.append(f"<figure><figcaption>{html.escape(f'{s.defect}/{s.path.name}')}: score {ev.scores[i]:.3f}, "
                   f"{kind}; right: {html.escape(caption)}</figcaption>{_png(img, 'input')}"
                   f"{_png(heat, 'heatmap')}{_png(region, caption)}</figure>")
    return "".join(out)


REPORT_TRAIN_IMAGES = 16
"""Training images averaged for the report's picture of where each region sits."""


def _regions_section(model, ev, reg, map_div: str) -> str:
    """The regions view: the map by region, where each region sits in the mean training image, each
    region's typical training patch and its shares of training patches and of the test split."""
    mass = None
    if getattr(ev, "patches", None) is not None:
        cells = regions.cell_masks(ev.masks, model.feature_shape_) if ev.masks.any() else None
        mass = regions.region_mass(reg, ev.patches.neighbours[:, 0], ev.patches.scores, model.pixel_range_[1], cells)
    rows = regions.summary_rows(reg, mass)
    pics = []
    for r in range(reg.n):
        crop = explain.patch_crops(model, explain.nearest_training_patches(model, *reg.typical[r], n=1), context=2)
        if crop and crop[0] is not None:
            pics.append(f'<figure style="display:inline-block"><figcaption style="color:{figures.region_color(r)}">'
                        f"<b>{regions.Regions.name(r)}</b> {100 * reg.train_share[r]:.0f}%</figcaption>"
                        f'{_png(crop[0], "typical patch")}</figure>')
    mean = _mean_image(model)
    where = ""
    if mean is not None:
        major, agree = regions.region_positions(reg, model.train_bmu_, model.feature_shape_)
        where = (f"<figure>{_png(figures.region_image(mean, major), 'regions in the image')}<figcaption>each "
                 f"feature cell of the mean training image tinted with the region most training images map it to "
                 f"({100 * agree.mean():.0f}% agreement)</figcaption></figure>")
    note = regions.structure_note(reg)
    note = f"<p><b>{html.escape(note)}</b></p>" if note else ""
    return (f"<h2>SOM regions</h2><p>{html.escape(regions.METHOD)}. {html.escape(regions.how_chosen(reg))}</p>{note}"
            f'<div class="plots">{map_div}{where}</div><p>Typical training patch of each region (the nearest '
            f"patch of its typical neuron) and its share of training patches:</p>{''.join(pics)}{_table(rows)}")


def _mean_image(model) -> np.ndarray | None:
    """Mean of up to :data:`REPORT_TRAIN_IMAGES` readable training images at the model's size, or None."""
    paths = list(getattr(model, "train_paths_", []) or [])
    picks = [paths[int(i)] for i in np.unique(np.linspace(0, len(paths) - 1,
                                                          min(REPORT_TRAIN_IMAGES, len(paths))).round())] if paths else []
    imgs = []
    for p in picks:
        try:
            imgs.append(data.load_image(p, model.image_size, getattr(model, "intensity_", None)).astype(np.float64))
        except (data.DataError, OSError, ValueError):
            continue
    return np.mean(imgs, 0).round().astype(np.uint8) if imgs else None


def build_report(model, ev, model_dir: str | None = None, title: str | None = None) -> str:
    """The HTML text of the report.

    Args:
        model: a fitted :class:`~somad.model.SOMAD`.
        ev: its :class:`~somad.pipeline.Evaluation` on the category's test split.
        model_dir: shown in the model card.
    """
    mt = ev.metrics
    category = mt.get("category", "")
    title = title or f"somad report: {category}"
    counts = outcome_counts(ev.labels, ev.scores, model.threshold_)
    pix_thr = viz.pixel_threshold(mt, model.pixel_range_)
    plots = []
    if ev.labels.min() != ev.labels.max():
        fpr, tpr, _ = metrics.roc(ev.labels, ev.scores)
        plots.append(figures.roc_figure(fpr, tpr, mt["image_auroc"]))
    pixel_masks, pixel_maps = ev.pixel_arrays()  # the images the pixel metrics count
    if pixel_masks.any():
        plots.append(figures.pro_figure(*figures.thin_curve(*metrics.pro_curve(pixel_masks, pixel_maps)), mt["aupro"]))
    plots.append(figures.score_histogram(ev.scores, ev.labels, model.threshold_, mt.get("image_f1_threshold")))
    maps = [figures.som_map(model.u_matrix(), model.topology, "U-matrix", "Viridis", colorbar_title="U", clickable=False),
            figures.som_map(model.hit_map(), model.topology, "Hit map", "Blues", colorbar_title="hits", clickable=False)]
    reg = regions.model_regions(model)
    extra = [figures.region_map(reg.labels, model.topology, "Regions", typical=reg.typical, clickable=False)]
    replay = getattr(model, "replay_", None)
    if replay is not None:
        extra.append(figures.replay_figure(replay, model.topology))
    divs = [_plot(f, first=(n == 0)) for n, f in enumerate(plots + maps + extra)]
    region_html = _regions_section(model, ev, reg, divs[len(plots) + len(maps)])
    som_patches = model.som_train_images_ * model.feature_shape_[0] * model.feature_shape_[1]
    replay_html = (f"<h2>Training replayed</h2><p>{replay.epochs} epochs: press Play or drag the slider. "
                   f"{html.escape(replay_caption(replay, som_patches))}</p>{divs[-1]}" if replay is not None else
                   "<h2>Training replayed</h2><p>This model was fitted without a training replay "
                   "(<code>python -m somad fit --replay</code> keeps one).</p>")
    summary = [{"": METRIC_LABELS[k], "value": float(mt[k])} for k in METRIC_LABELS if k in mt]
    summary += [{"": f"{k} at the deployable threshold", "value": v} for k, v in counts.items()]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}figure{{margin:1em 0}}img{{width:224px;margin-right:6px}}
.plots{{display:flex;flex-wrap:wrap;gap:1em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Written {time.strftime("%Y-%m-%d %H:%M")} by somad. {mt.get("n_test", len(ev.labels))} test images,
{mt.get("n_anomalous", int(ev.labels.sum()))} defective. An image is anomalous when {DECISION_RULE}; the predicted
region is the heatmap at or above the pixel threshold {pix_thr:.3f}.</p>
<h2>Metrics</h2>{_table(summary)}
<h2>Model card</h2>{_table(_model_card(model, model_dir))}
<h2>Curves and scores</h2><div class="plots">{"".join(divs[:len(plots)])}</div>
<h2>SOM: U-matrix and hit map</h2><div class="plots">{"".join(divs[len(plots):len(plots) + len(maps)])}</div>
{region_html}
{replay_html}
<h2>Failing images at the deployable threshold</h2>
<p>input · heatmap (fixed colour range) · predicted region (red) and ground truth (green)</p>{_failing(model, ev, pix_thr)}
<h2>Per defect type</h2>{_table(per_defect_rows(mt))}
</body></html>
"""


def write_report(model, ev, path: str | Path, model_dir: str | None = None) -> Path:
    """Write :func:`build_report` to ``path`` atomically; returns the path."""
    return write_text(Path(path), build_report(model, ev, model_dir))
