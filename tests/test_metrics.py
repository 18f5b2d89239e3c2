"""AUROC, F1-max and AUPRO against brute-force definitions."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label

from somad import metrics


def _pro_brute(masks, maps, thresholds):
    """PRO and FPR at each threshold, straight from the definition."""
    regions = []
    for m in masks:
        lab = label(m, connectivity=2)
        regions.append([lab == r for r in range(1, lab.max() + 1)])
    normal = ~masks
    fprs, pros = [], []
    for t in thresholds:
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        overl = [(pred[i] & reg).sum() / reg.sum() for i in range(len(masks)) for reg in regions[i]]
        pros.append(np.mean(overl))
    return np.array(fprs), np.array(pros)


def test_pro_curve_matches_definition():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 12, 12), bool)
    masks[0, 2:5, 2:5] = True
    masks[0, 8:11, 7:9] = True  # two regions in one image
    masks[1, 0:6, 0:2] = True
    maps = rng.random((3, 12, 12)) + masks * rng.random((3, 12, 12))
    maps = np.round(maps, 2)  # ties
    fpr, pro = metrics.pro_curve(masks, maps)
    thr = np.unique(maps)[::-1]
    bf, bp = _pro_brute(masks, maps, thr)
    np.testing.assert_allclose(fpr[1:], bf, atol=1e-12)
    np.testing.assert_allclose(pro[1:], bp, atol=1e-12)


def test_aupro_extremes_and_interpolation():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, :5] = True
    perfect = masks.astype(float)
    assert metrics.aupro(masks, perfect) == pytest.approx(1.0)
    inverted = 1.0 - perfect
    assert metrics.aupro(masks, inverted) == pytest.approx(0.0)
    # a constant map: the curve jumps from (0, 0) to (1, 1); up to 0.3 the area is 0.3 * 0.15
    const = np.ones_like(perfect)
    assert metrics.aupro(masks, const) == pytest.approx(0.15)
    assert np.isnan(metrics.aupro(np.zeros_like(masks), const))


def test_f1_max_and_auroc():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.5, 0.7, 0.9])
    f1, thr = metrics.f1_max(labels, scores)
    # best: threshold 0.5 -> TP 3, FP 1 -> F1 = 6/7
    assert f1 == pytest.approx(6 / 7) and thr == pytest.approx(0.5)
    assert metrics.auroc(labels, scores) == pytest.approx(5 / 6)
    assert np.isnan(metrics.auroc(np.ones(3), np.arange(3)))


def test_evaluate_scores_keys():
    masks = np.zeros((4, 8, 8), bool)
    masks[2:, 2:4, 2:4] = True
    maps = masks + 0.01 * np.arange(4)[:, None, None]
    out = metrics.evaluate_scores(np.array([0, 0, 1, 1]), maps.max((1, 2)), masks, maps)
    assert out["image_auroc"] == 1.0 and out["pixel_auroc"] == 1.0 and out["aupro"] == pytest.approx(1.0)
    assert set(out) >= {"image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max"}
