"""The one decision rule: when is a score anomalous.

A score at or above the threshold is anomalous (``score >= threshold``). This is
scikit-learn's convention for ``precision_recall_curve`` and ``roc_curve``
thresholds, so the F1-optimal threshold reported by :func:`somad.metrics.f1_max`
reproduces F1-max exactly when applied with :func:`is_anomalous`. Image verdicts
(``SOMAD.predict``, the CLI, the dashboard), outcome counts and pixel regions all
use this function.
"""
from __future__ import annotations

import numpy as np

DECISION_RULE = "score >= threshold"


def is_anomalous(scores, threshold: float) -> np.ndarray:
    """Verdicts bool, same shape as ``scores``: True where ``score >= threshold``.

    Args:
        scores: array-like of image, patch or pixel scores (Mahalanobis units).
        threshold: the decision threshold, same units.
    """
    return np.asarray(scores) >= threshold
