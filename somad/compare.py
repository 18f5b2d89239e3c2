"""Two models of a category side by side: metrics with their difference, the test images whose
verdict differs, heatmaps of one test image at the image's own size. Pure functions over two
:class:`~somad.pipeline.Evaluation` results (or their ``metrics`` dicts); no Streamlit here.

Models of different image sizes or SOM grids compare on everything: metrics and verdicts are per
test image, matched by name (``<defect>/<file>``), and each model's heatmap is resized to the test
image's own display size (:func:`somad.data.display_shape`), each on its own model's colour scale (:func:`somad.viz.heat_scale`).
"""
from __future__ import annotations

import math

import numpy as np

from . import data
from .decision import is_anomalous
from .viz import heat_scale, overlay

HEADLINE = {"image_auroc": "Image AUROC", "pixel_auroc": "Pixel AUROC", "aupro": "AUPRO",
            "image_f1_max": "Image F1-max", "pixel_f1_max": "Pixel F1-max"}
"""The metrics a comparison and the model list show, by key of ``metrics.json``, with their labels."""


def headline(metrics: dict | None) -> dict[str, float]:
    """``{label: value}`` of the :data:`HEADLINE` metrics (NaN for one that is missing or undefined)."""
    metrics = metrics or {}
    return {label: _num(metrics.get(key)) for key, label in HEADLINE.items()}


def _num(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def metrics_table(a: dict, b: dict, names: tuple[str, str] = ("A", "B")) -> list[dict]:
    """One row per :data:`HEADLINE` metric plus the image threshold and the test-image count:
    ``{"metric", names[0], names[1], "difference"}`` with difference = second - first (NaN where either is)."""
    rows = []
    extra = {"threshold": "Image threshold", "n_test": "Test images"}
    for key, label in {**HEADLINE, **extra}.items():
        va, vb = _num(a.get(key)), _num(b.get(key))
        rows.append({"metric": label, names[0]: va, names[1]: vb, "difference": vb - va})
    return rows


def image_key(sample) -> str:
    """``"<defect>/<file name>"`` of a test :class:`~somad.data.Sample`: how two evaluations are matched."""
    return f"{sample.defect}/{sample.path.name}"


def verdict_differences(ev_a, ev_b, thr_a: float, thr_b: float, names: tuple[str, str] = ("A", "B")
                        ) -> tuple[list[dict], dict]:
    """The test images whose verdict (:func:`somad.decision.is_anomalous` at each model's threshold) differs.

    Args:
        ev_a, ev_b: evaluations (``samples``, ``labels``, ``scores``) of the two models on the same category.
        thr_a, thr_b: each model's image threshold.

    Returns:
        ``(rows, counts)``: one row per differing image, ``{"image", "truth", "score <A>", "verdict <A>",
        "score <B>", "verdict <B>", "right"}`` (which model's verdict matches the truth), sorted by image;
        ``counts`` = ``{"common", "differ", "only_a", "only_b", "right_a", "right_b"}``.
    """
    ka = {image_key(s): i for i, s in enumerate(ev_a.samples)}
    kb = {image_key(s): i for i, s in enumerate(ev_b.samples)}
    common = sorted(set(ka) & set(kb))
    rows = []
    right = {names[0]: 0, names[1]: 0}
    for key in common:
        i, j = ka[key], kb[key]
        va, vb = bool(is_anomalous(ev_a.scores[i], thr_a)), bool(is_anomalous(ev_b.scores[j], thr_b))
        if va == vb:
            continue
        truth = bool(ev_a.labels[i])
        who = names[0] if va == truth else names[1]
        right[who] += 1
        rows.append({"image": key, "truth": "defective" if truth else "good",
                     f"score {names[0]}": float(ev_a.scores[i]), f"verdict {names[0]}": _word(va),
                     f"score {names[1]}": float(ev_b.scores[j]), f"verdict {names[1]}": _word(vb), "right": who})
    counts = {"common": len(common), "differ": len(rows), "only_a": len(set(ka) - set(kb)),
              "only_b": len(set(kb) - set(ka)), "right_a": right[names[0]], "right_b": right[names[1]]}
    return rows, counts


def _word(anomalous: bool) -> str:
    return "anomalous" if anomalous else "normal"


def heat_at_own_size(original: np.ndarray, amap: np.ndarray, pixel_range: tuple[float, float],
                     metrics: dict | None = None) -> np.ndarray:
    """A model's heatmap over a test image at the image's own display size.

    Args:
        original: uint8 ``(H, W, 3)`` the test image as read (any size).
        amap: float ``(S, S)`` the model's anomaly map at its own image size ``S``.
        pixel_range: the model's fixed colour range ``pixel_range_``.
        metrics: the model's evaluation metrics (the colour scale's knee at its pixel threshold,
            :func:`somad.viz.heat_scale`); None = the top of ``pixel_range``.

    Returns:
        uint8 ``(H', W', 3)`` with ``(H', W') = display_shape((H, W))``, the map resized to it.
    """
    shape = data.display_shape(original.shape[:2])
    shown = data.resize_to(original, shape)
    return overlay(shown, data.resize_to(np.asarray(amap, np.float32), shape), heat_scale(pixel_range, metrics))


def curve_pairs(named: list[tuple[str, object]]) -> dict[str, list]:
    """ROC and PRO curves of several evaluations for :func:`somad.figures.roc_overlay` / ``pro_overlay``:
    ``{"roc": [(name, fpr, tpr, auroc)], "pro": [(name, fpr, pro, aupro)]}``; a curve that is undefined
    (one class only, no ground-truth pixel) is left out."""
    from .figures import thin_curve
    from .metrics import pro_curve, roc

    out = {"roc": [], "pro": []}
    for name, ev in named:
        if ev.labels.min() != ev.labels.max():
            fpr, tpr, _ = roc(ev.labels, ev.scores)
            out["roc"].append((name, fpr, tpr, _num(ev.metrics.get("image_auroc"))))
        if ev.masks.any():
            out["pro"].append((name, *thin_curve(*pro_curve(ev.masks, ev.maps)), _num(ev.metrics.get("aupro"))))
    return out
