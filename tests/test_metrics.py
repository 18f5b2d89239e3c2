"""AUROC, F1-max and AUPRO against scikit-learn (the oracle) and brute-force definitions."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label
from sklearn.metrics import precision_recall_curve, roc_auc_score

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


def _random_set(seed, n=6, size=16, decimals=2):
    """Random masks (blobs, several regions per image, some normal images) and tied maps."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n, size, size)) > 0.85
    masks[: n // 3] = False  # normal images
    maps = np.round(rng.random(masks.shape) + 0.7 * masks * rng.random(masks.shape), decimals)
    labels = masks.any((1, 2)).astype(int)
    return labels, maps.max((1, 2)), masks, maps.astype(np.float32)


def _sklearn_f1_max(y, s):
    prec, rec, thr = precision_recall_curve(y, s)
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    best = int(np.argmax(f1[:-1]))
    return f1[best], thr[best]


@pytest.mark.parametrize("seed", range(5))
def test_counts_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.3
    s = np.round(rng.random(500) + 0.3 * y, 1)  # heavy ties, some across classes
    assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    f1, thr = metrics.f1_max(y, s)
    ref_f1, ref_thr = _sklearn_f1_max(y, s)
    assert f1 == pytest.approx(ref_f1, abs=1e-9) and thr == ref_thr


@pytest.mark.parametrize("seed", range(3))
def test_one_sort_per_group_equals_sklearn_and_exact_pro(seed):
    labels, scores, masks, maps = _random_set(seed)
    groups = {"first": np.arange(6) % 2 == 0, "second": np.arange(6) < 5}
    overall, per = metrics.evaluate_groups(labels, scores, masks, maps, groups)
    for name, sel in [("all", np.ones(6, bool)), *groups.items()]:
        got = overall if name == "all" else per[name]
        y, s = masks[sel].ravel(), maps[sel].ravel()
        assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        ref_f1, ref_thr = _sklearn_f1_max(y, s)
        assert got["pixel_f1_max"] == pytest.approx(ref_f1, abs=1e-9)
        assert got["pixel_f1_threshold"] == pytest.approx(ref_thr, abs=1e-9)
        assert got["image_auroc"] == pytest.approx(roc_auc_score(labels[sel], scores[sel]), abs=1e-9)
        _, fpr, pro = metrics.PixelRanking(masks, maps).curves(sel)
        bf, bp = _pro_brute(masks[sel], maps[sel], np.unique(maps[sel])[::-1])
        np.testing.assert_allclose(fpr[1:], bf, atol=1e-12)
        np.testing.assert_allclose(pro[1:], bp, atol=1e-12)


def _mvtec_trapezoid(x, y, x_max):
    """The MVTec AD reference ``trapezoid`` (IJCV 2021 evaluation code): cut at ``x_max``,
    interpolating linearly when ``x_max`` is not a curve point."""
    x, y = np.asarray(x), np.asarray(y)
    correction = 0.0
    if x_max not in x:
        ins = int(np.searchsorted(x, x_max, side="right"))
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    return float(np.sum(0.5 * (y[mask][1:] + y[mask][:-1]) * (x[mask][1:] - x[mask][:-1])) + correction)


def _mvtec_aupro(masks, maps, limit=0.3):
    """Independent AUPRO: threshold loop, per-region overlap, FPR from normal pixels only,
    area up to ``limit`` normalised by ``limit``."""
    thresholds = np.r_[np.inf, np.unique(maps)[::-1]]
    fprs, pros = _pro_brute(masks, maps, thresholds)
    return _mvtec_trapezoid(fprs, pros, limit) / limit


@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_mvtec_reference(seed):
    rng = np.random.default_rng(100 + seed)
    masks = np.zeros((5, 24, 24), bool)
    for i in range(1, 5):
        for _ in range(rng.integers(1, 4)):  # 1-3 rectangles, touching ones merge into one region
            r, c = rng.integers(0, 20, 2)
            masks[i, r:r + rng.integers(1, 6), c:c + rng.integers(1, 6)] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks * rng.random(masks.shape)
    assert metrics.aupro(masks, maps) == pytest.approx(_mvtec_aupro(masks, maps), abs=1e-6)
    assert metrics.aupro(masks, maps, 0.05) == pytest.approx(_mvtec_aupro(masks, maps, 0.05), abs=1e-6)


def test_pixel_ranking_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="masks and maps must both be"):
        metrics.PixelRanking(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5)))


def test_descending_order_sorts_signed_floats_with_ties():
    rng = np.random.default_rng(3)
    v = np.round(rng.normal(size=1000), 1).astype(np.float32)
    v[:3] = [0.0, -0.0, np.float32(-1e-30)]
    s, order = metrics.descending_order(v)
    np.testing.assert_array_equal(s, np.sort(v)[::-1])
    np.testing.assert_array_equal(v[order], s)
    assert order.dtype == np.int64 and len(np.unique(order)) == len(v)
