"""Choosing the operating point: the image threshold a deployed model decides with.

The deployable threshold of a fit is a percentile of the cross-fitted training scores
(``SOMAD.threshold_``). This module offers the other ways to choose it, each with its
rule in words (saved with the threshold in a new model version):

* :func:`threshold_at_false_alarm_rate` — a target false-alarm rate on the cross-fitted
  normal scores ``SOMAD.train_scores_``: no labels and no defective image needed;
* :func:`threshold_at_recall` — a target recall on a labelled validation folder in MVTec
  layout (:func:`validation_samples`), kept apart from the test split;
* :func:`tradeoff_curve` — false-alarm rate against recall at every threshold, to pick from;
* :func:`hand_rule` — a threshold set by hand, named with where it started from.

Every threshold follows the one decision rule, ``score >= threshold`` is anomalous
(:mod:`somad.decision`). A threshold is placed in the middle of the gap between the two
distinct scores where the counts change (:func:`gap_threshold`), so an image that
scores a hair off a chosen score keeps its verdict. Scores are image scores in
Mahalanobis units. Pure functions of arrays, apart from :func:`validation_samples` and
:func:`leaked`, which read folder listings and files.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import data
from .decision import is_anomalous
from .errors import DataError, ParameterError
from .metrics import rank_counts
from .words import plural


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it does on the scores it was chosen from.

    Attributes:
        threshold: image threshold (Mahalanobis units; ``score >= threshold`` is anomalous).
        rule: how it was chosen, in words (saved as the version's ``threshold_rule``).
        n_normal: normal images it was chosen on. false_alarms: those at or above it.
        n_defective: defective images it was chosen on (0 without labels). found: those at or above it.
    """

    threshold: float
    rule: str
    n_normal: int
    false_alarms: int
    n_defective: int = 0
    found: int = 0

    @property
    def false_alarm_rate(self) -> float:
        """``false_alarms / n_normal`` (NaN without normal images)."""
        return self.false_alarms / self.n_normal if self.n_normal else float("nan")

    @property
    def recall(self) -> float:
        """``found / n_defective`` (NaN without defective images)."""
        return self.found / self.n_defective if self.n_defective else float("nan")


def _check_rate(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ParameterError(f"{name} must be a fraction between 0 and 1 (e.g. 0.01 for 1 %), got {value}.")
    return value


def _scores(scores, what: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise DataError(f"no {what} to choose a threshold from.")
    if not np.isfinite(scores).all():
        raise DataError(f"the {what} hold NaN or infinite values: refit or re-score the model.")
    return scores


def gap_threshold(distinct_desc: np.ndarray, i: int) -> float:
    """The threshold that flags exactly the scores ``>= distinct_desc[i]``, placed mid-gap.

    Args:
        distinct_desc: float ``(K,)`` the distinct scores, strictly descending.
        i: ``-1`` flags none (above the highest score); ``0..K-1`` flags the ``i + 1`` highest
            distinct scores.

    Returns:
        The midpoint between ``distinct_desc[i]`` and the next lower distinct score; at the lowest
        score, that score itself; for ``i = -1``, half the top gap above the highest score (1e-6
        relative, at least 1e-9, above it when all scores are equal).
    """
    d = np.asarray(distinct_desc, dtype=np.float64)
    if i < 0:
        top = float(d[0])
        gap = float(d[0] - d[1]) if len(d) > 1 else max(abs(top) * 2e-6, 2e-9)
        return top + gap / 2
    if i + 1 < len(d):
        return float((d[i] + d[i + 1]) / 2)
    return float(d[i])


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def threshold_at_false_alarm_rate(normal_scores, target: float,
                                  source: str = "cross-fitted training scores") -> OperatingPoint:
    """The lowest threshold at which at most ``target`` of the normal scores raise a false alarm.

    Meant for ``SOMAD.train_scores_``: each training image scored by Gaussians fitted without its
    fold, so these are scores of unseen defect-free images and no label is needed. With ``T``
    scores the rate moves in steps of ``1 / T``; a target below ``1 / T`` allows no false alarm and
    the threshold sits above the highest score (the rule says so).

    Args:
        normal_scores: float ``(T,)`` image scores of defect-free images (Mahalanobis units).
        target: the false-alarm rate allowed, a fraction in [0, 1].
        source: what the scores are, in words, for the rule.

    Returns:
        :class:`OperatingPoint` with ``n_normal = T`` and the false alarms it leaves on them.

    Raises:
        ParameterError: ``target`` outside [0, 1]. DataError: no scores, or non-finite ones.
    """
    target = _check_rate(target, "the target false-alarm rate")
    s = _scores(normal_scores, source)
    counts = rank_counts(np.zeros(len(s), bool), s)  # distinct scores descending, images at or above each
    d = counts.thresholds
    allowed = math.floor(target * len(s) + 1e-9)  # false alarms allowed on these T scores
    ok = np.flatnonzero(counts.fp <= allowed)
    i = int(ok[-1]) if len(ok) else -1
    thr = gap_threshold(d, i)
    alarms = int(is_anomalous(s, thr).sum())
    rule = (f"false-alarm rate at most {_pct(target)} on {len(s)} {source} "
            f"({alarms} of {len(s)} at or above it)")
    if allowed == 0 and target > 0:
        rule += f"; {len(s)} scores resolve rates of {_pct(1 / len(s))} at best, so none may alarm"
    return OperatingPoint(thr, rule, len(s), alarms)


def threshold_at_recall(labels, scores, target: float, source: str = "a validation folder") -> OperatingPoint:
    """The highest threshold that finds at least ``target`` of the defective images.

    Args:
        labels: int/bool ``(N,)``, 1 = defective. scores: float ``(N,)`` their image scores.
        target: the recall wanted, a fraction in [0, 1] (``ceil(target * P)`` of the ``P`` defective
            images must score at or above the threshold).
        source: where the images come from, in words, for the rule.

    Returns:
        :class:`OperatingPoint` with the false alarms and defects found on these images.

    Raises:
        ParameterError: ``target`` outside [0, 1]. DataError: no defective image among them, or
        non-finite scores.
    """
    target = _check_rate(target, "the target recall")
    s = _scores(scores, f"scores of {source}")
    y = np.asarray(labels).ravel().astype(bool)
    if y.shape != s.shape:
        raise ParameterError(f"labels ({y.size}) and scores ({s.size}) of {source} differ in length.")
    if not y.any():
        raise DataError(f"{source} holds no defective image: a recall needs defective images (test/<defect>/).")
    need = math.ceil(target * y.sum() - 1e-9)
    d = np.unique(s)[::-1]
    if need == 0:
        i = -1
    else:
        kth = np.sort(s[y])[::-1][need - 1]  # the need-th highest defective score
        i = int(np.flatnonzero(d == kth)[0])
    thr = gap_threshold(d, i)
    pred = is_anomalous(s, thr)
    found, alarms = int((pred & y).sum()), int((pred & ~y).sum())
    rule = (f"recall at least {_pct(target)} on {source} ({found} of {int(y.sum())} defective images found, "
            f"{alarms} of {int((~y).sum())} good images flagged)")
    return OperatingPoint(thr, rule, int((~y).sum()), alarms, int(y.sum()), found)


@dataclass(frozen=True)
class TradeOff:
    """False-alarm rate against recall at every threshold that changes them.

    Attributes:
        thresholds: float64 ``(K + 1,)`` descending: first above every score (nothing flagged),
            then one mid-gap threshold per distinct score (:func:`gap_threshold`).
        false_alarm_rate: float64 ``(K + 1,)`` good images flagged / good images (NaN without good).
        recall: float64 ``(K + 1,)`` defective images flagged / defective images (NaN without defective).
        n_normal, n_defective: the image counts behind the rates.
    """

    thresholds: np.ndarray
    false_alarm_rate: np.ndarray
    recall: np.ndarray
    n_normal: int
    n_defective: int


def tradeoff_curve(labels, scores) -> TradeOff:
    """The trade-off of every threshold on labelled scores (a test split or a validation folder).

    Args:
        labels: int/bool ``(N,)``, 1 = defective. scores: float ``(N,)`` image scores.

    Raises:
        DataError: no scores, or non-finite ones.
    """
    s = _scores(scores, "image scores")
    y = np.asarray(labels).ravel().astype(bool)
    if y.shape != s.shape:
        raise ParameterError(f"labels ({y.size}) and scores ({s.size}) differ in length.")
    counts = rank_counts(y, s)  # one sort: images at or above each distinct score, highest first
    d = counts.thresholds
    d64 = d.astype(np.float64)
    thr = np.r_[gap_threshold(d64, -1), (d64[:-1] + d64[1:]) / 2, d64[-1:]]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    far = np.r_[0, counts.fp] / n_neg if n_neg else np.full(len(thr), np.nan)
    rec = np.r_[0, counts.tp] / n_pos if n_pos else np.full(len(thr), np.nan)
    return TradeOff(thr, far.astype(np.float64), rec.astype(np.float64), n_neg, n_pos)


def point_at(labels, scores, threshold: float) -> tuple[float, float]:
    """``(false-alarm rate, recall)`` of ``threshold`` on labelled scores (NaN for a missing class)."""
    y = np.asarray(labels).ravel().astype(bool)
    pred = is_anomalous(np.asarray(scores).ravel(), threshold)
    far = (pred & ~y).sum() / (~y).sum() if (~y).any() else float("nan")
    rec = (pred & y).sum() / y.sum() if y.any() else float("nan")
    return float(far), float(rec)


def hand_rule(value: float, origin: str | None) -> str:
    """The rule of a threshold moved by hand, e.g. "set by hand at 31.2 from the F1-optimal on 83 test images".

    Args:
        value: the threshold (Mahalanobis units). origin: where the slider started, in words
            (a preset's rule), or None.
    """
    text = f"set by hand at {value:.4g}"
    return f"{text} from the {origin}" if origin else text


# ------------------------------------------------------------------ validation folder
def validation_samples(folder: str | Path, test_split: str | Path | None = None) -> list[data.Sample]:
    """The labelled images of a validation folder in MVTec layout, kept apart from the test split.

    ``folder`` is either a split (sub-folders ``good/`` and one per defect type) or a category
    folder holding such a split in ``test/`` (or ``validation/``). No mask is needed: only the image
    labels (the folder names) are read.

    Args:
        folder: the validation folder. test_split: the model's test split (``<category>/test``),
            which must not be the same folder nor share image files with it.

    Returns:
        Samples, ``good`` first, then each defect type, each sorted by file name.

    Raises:
        DataError: the folder is missing, has no ``good/`` or no defect folder with images, or it is
        (or overlaps) the test split.
    """
    folder = Path(str(folder).strip()).expanduser()
    if not folder.is_dir():
        raise DataError(f"validation folder {folder} does not exist: give a folder with good/ and <defect>/ "
                        "sub-folders (MVTec layout), kept apart from the test split.")
    split = next((folder / s for s in ("test", "validation") if (folder / s / data.GOOD).is_dir()), folder)
    subdirs = sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))
    subdirs.sort(key=lambda p: p.name != data.GOOD)
    samples = [data.Sample(p, d.name) for d in subdirs for p in sorted(q for q in d.iterdir() if data.is_image_file(q))]
    if not any(s.defect == data.GOOD for s in samples):
        raise DataError(f"validation folder {split} has no good/ folder with images: the false-alarm rate "
                        "needs defect-free images there.")
    if not any(s.label for s in samples):
        raise DataError(f"validation folder {split} has no defect folder with images (e.g. {split / 'crack'}): "
                        "a recall needs defective images.")
    if test_split is not None and Path(test_split).is_dir():
        test = Path(test_split).resolve()
        if split.resolve() == test:
            raise DataError(f"{split} is the test split itself: a threshold chosen on it is judged on the same "
                            "images. Give a separate validation folder.")
        shared = {p.resolve() for p in test.rglob("*") if p.is_file()} & {s.path.resolve() for s in samples}
        if shared:
            raise DataError(f"validation folder {split} shares {plural(len(shared), 'image file')} with the test split "
                            f"{test} (e.g. {sorted(shared)[0]}): keep the two apart.")
    return samples


# ------------------------------------------------------------------ leaks
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content (the hash provenance records for added files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def leaked(paths: Sequence[str | Path], train_paths: Iterable[str | Path] = (),
           taught_hashes: Iterable[str] = ()) -> np.ndarray:
    """Which images a model has learned from: a taught test image is a leak in that split's metrics.

    Args:
        paths: ``(N,)`` image files, e.g. the test split. train_paths: the model's training files
            (``SOMAD.train_paths_``, taught ones included). taught_hashes: SHA-256 of the files taught
            to the model or its ancestors (provenance ``added``), which catches copies under other names.

    Returns:
        bool ``(N,)``: True where the file is a training file or has a taught file's content.
    """
    known = {_real(p) for p in train_paths}
    hashes = set(taught_hashes)
    out = np.array([_real(p) in known for p in paths], dtype=bool)
    if hashes:
        for i, p in enumerate(paths):
            if not out[i]:
                try:
                    out[i] = sha256_file(p) in hashes
                except OSError:
                    pass
    return out


def _real(p: str | Path) -> str:
    try:
        return str(Path(p).resolve())
    except OSError:
        return str(p)


def score_files(model, paths: Sequence[str | Path], progress=None) -> np.ndarray:
    """Image scores float64 ``(N,)`` of image files under ``model`` (e.g. a validation folder), read
    with the model's intensity rule in batches of ``model.batch_size`` (memory bounded).

    Args:
        progress: optional ``progress(stage, done, total)`` callback (stage ``"validation"``).

    Raises:
        DataError: a file cannot be read or does not suit the model (named).
    """
    files = data.ImageFiles(paths, model.image_size, model.intensity_)
    out = []
    for s in range(0, len(files), model.batch_size):
        out.append(np.asarray(model.score_samples(files[s:s + model.batch_size]), dtype=np.float64))
        if progress:
            progress("validation", min(s + model.batch_size, len(files)), len(files))
    return np.concatenate(out) if out else np.zeros(0)
