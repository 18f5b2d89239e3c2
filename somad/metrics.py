"""Evaluation metrics of anomaly detection.

* image-level and pixel-level AUROC (scikit-learn ``roc_auc_score``);
* F1-max: the best F1 over all thresholds of the precision-recall curve, with that threshold;
* AUPRO (Bergmann et al., "The MVTec anomaly detection dataset", IJCV 2021, Sec. 5.2):
  the area under the per-region-overlap curve, PRO averaged over connected
  ground-truth regions (scikit-image ``label``, 8-connectivity), integrated over
  the false-positive rate up to 0.3 and divided by 0.3. Normal images
  contribute false positives only. The curve is exact: every distinct score is
  a threshold.
"""
from __future__ import annotations

import numpy as np
from skimage.measure import label
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

FPR_LIMIT = 0.3


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when ``labels`` hold a single class."""
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores).ravel()))


def roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` (scikit-learn, intermediate points dropped)."""
    return roc_curve(np.asarray(labels).ravel().astype(bool), np.asarray(scores).ravel())


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over thresholds and the threshold reaching it: applied with
    :func:`somad.decision.is_anomalous` (``score >= threshold``) it gives exactly that F1."""
    labels = np.asarray(labels).ravel().astype(bool)
    if not labels.any():
        return float("nan"), float("nan")
    prec, rec, thr = precision_recall_curve(labels, np.asarray(scores).ravel())
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thr) else 0
    return float(f1[best]), float(thr[best]) if len(thr) else float("nan")


def pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap against false-positive rate, over all thresholds.

    Args:
        masks: bool ``(N, H, W)`` ground truth.
        maps: float ``(N, H, W)`` anomaly maps.

    Returns:
        ``(fpr, pro)`` float64, both rising from 0 to 1.
    """
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps, dtype=np.float64)
    weights = np.zeros(masks.shape, dtype=np.float64)
    n_regions = 0
    for i in range(len(masks)):
        if masks[i].any():
            regions, count = label(masks[i], connectivity=2, return_num=True)
            sizes = np.bincount(regions.ravel())
            w = np.zeros_like(sizes, dtype=np.float64)
            w[1:] = 1.0 / sizes[1:]
            weights[i] = w[regions]
            n_regions += count
    normal = ~masks
    n_normal = int(normal.sum())
    if n_regions == 0 or n_normal == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    flat = maps.ravel()
    order = np.argsort(-flat, kind="stable")
    s = flat[order]
    pro = np.cumsum(weights.ravel()[order]) / n_regions
    fpr = np.cumsum(normal.ravel()[order]) / n_normal
    last = np.r_[s[1:] != s[:-1], True]  # one point per distinct threshold
    return np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = FPR_LIMIT) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (in [0, 1]); NaN without anomalous pixels."""
    masks = np.asarray(masks).astype(bool)
    if not masks.any():
        return float("nan")
    fpr, pro = pro_curve(masks, maps)
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit:
        nxt = np.searchsorted(fpr, fpr_limit)
        if nxt < len(fpr):
            x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], pro[nxt - 1], pro[nxt]
            y_end = y0 + (y1 - y0) * (fpr_limit - x0) / max(x1 - x0, 1e-300)
            x, y = np.r_[x, fpr_limit], np.r_[y, y_end]
    return float(np.trapezoid(y, x) / fpr_limit)


def evaluate_scores(labels: np.ndarray, image_scores: np.ndarray, masks: np.ndarray,
                    maps: np.ndarray) -> dict[str, float]:
    """All metrics for one set of images.

    Args:
        labels: int ``(N,)`` 1 = defective. image_scores: float ``(N,)``.
        masks: bool ``(N, H, W)``. maps: float ``(N, H, W)``.

    Returns:
        dict with ``image_auroc``, ``pixel_auroc``, ``aupro``, ``image_f1_max``,
        ``image_f1_threshold``, ``pixel_f1_max``, ``pixel_f1_threshold``.
    """
    img_f1, img_thr = f1_max(labels, image_scores)
    pix_f1, pix_thr = f1_max(masks, maps)
    return {
        "image_auroc": auroc(labels, image_scores),
        "pixel_auroc": auroc(masks, maps),
        "aupro": aupro(masks, maps),
        "image_f1_max": img_f1,
        "image_f1_threshold": img_thr,
        "pixel_f1_max": pix_f1,
        "pixel_f1_threshold": pix_thr,
    }
