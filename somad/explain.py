"""Explanations of a fitted SOMAD model: pure functions behind the dashboard.

* neuron -> its nearest training patches (a grouped BMU index built once per model,
  from the ``train_bmu_`` / ``train_bmu_dist_`` the model keeps) and crops of them;
* pixel -> feature cell -> BMU and the ``k`` nearest neurons with their Mahalanobis distances;
* per-feature contributions to the Mahalanobis distance at a patch;
* neuron -> the test images where it is the BMU of many cells or of high-scoring cells;
* evaluation of a category's test split that also keeps the patch scores.

Conventions: neuron ``j`` sits at grid row ``j // W``, column ``j % W`` (W = grid columns).
Feature cell ``(r, c)`` of an ``S x S`` image covers pixels
``[r * S/h, (r+1) * S/h) x [c * S/w, (c+1) * S/w)``. No Streamlit here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import data
from .decision import is_anomalous
from .features import STRIDES
from .scoring import PatchScores
from .som import hit_map


# ----------------------------------------------------------------- grid indices
def neuron_index(row: int, col: int, grid: tuple[int, int]) -> int:
    """Flat neuron index ``row * W + col``.

    Raises:
        ValueError: ``(row, col)`` outside the grid.
    """
    rows, cols = grid
    if not (0 <= row < rows and 0 <= col < cols):
        raise ValueError(f"neuron ({row}, {col}) is outside the {rows}x{cols} SOM grid.")
    return int(row) * cols + int(col)


def neuron_position(index: int, grid: tuple[int, int]) -> tuple[int, int]:
    """Grid ``(row, col)`` of flat neuron ``index``."""
    r, c = divmod(int(index), grid[1])
    return int(r), int(c)


def pixel_to_cell(x: float, y: float, image_size: int, feature_shape: tuple[int, int]) -> tuple[int, int]:
    """Feature cell ``(row, col)`` holding pixel ``(x, y)`` (x = column, y = row, in pixels), clipped."""
    h, w = feature_shape
    r = int(np.clip(np.floor(y * h / image_size), 0, h - 1))
    c = int(np.clip(np.floor(x * w / image_size), 0, w - 1))
    return r, c


def cell_box(row: int, col: int, feature_shape: tuple[int, int], image_size: int) -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)`` (end-exclusive) of feature cell ``(row, col)``."""
    h, w = feature_shape
    ch, cw = image_size / h, image_size / w
    return (int(round(col * cw)), int(round(row * ch)), int(round((col + 1) * cw)), int(round((row + 1) * ch)))


# -------------------------------------------------------------- training patches
@dataclass(frozen=True)
class BmuIndex:
    """Training patches grouped by BMU, each group sorted by distance.

    Attributes:
        order: int64 ``(P,)`` patch indices sorted by (BMU, distance).
        starts: int64 ``(M + 1,)``: patches of neuron ``j`` are ``order[starts[j]:starts[j+1]]``.
        dist: float32 ``(P,)`` Euclidean BMU distance of each patch (feature units).
        mean_dist: float32 ``(M,)`` mean distance of each neuron to its patches (NaN if none).
    """

    order: np.ndarray
    starts: np.ndarray
    dist: np.ndarray
    mean_dist: np.ndarray


def build_bmu_index(bmu: np.ndarray | torch.Tensor, dist: np.ndarray | torch.Tensor, n_neurons: int) -> BmuIndex:
    """Group training patches by BMU (one stable sort; O(P log P)).

    Args:
        bmu: int ``(P,)`` BMU of each training patch. dist: float ``(P,)`` distance to it.
        n_neurons: M.
    """
    bmu = torch.as_tensor(bmu).cpu().numpy().astype(np.int64, copy=False)
    dist = torch.as_tensor(dist).cpu().numpy().astype(np.float32, copy=False)
    order = np.lexsort((dist, bmu))
    counts = np.bincount(bmu, minlength=n_neurons)
    starts = np.zeros(n_neurons + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    sums = np.bincount(bmu, weights=dist, minlength=n_neurons)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)
    return BmuIndex(order.astype(np.int64), starts, dist, mean)


def bmu_index(model) -> BmuIndex:
    """The model's :class:`BmuIndex`, built on first use and kept on the model object together with
    the ``train_bmu_`` tensor it was built from: a refit (or :func:`~somad.persistence.load_model`)
    sets a new ``train_bmu_``, which makes the next call rebuild the index."""
    cached = model.__dict__.get("_explain_bmu_index")
    if cached is None or cached[0] is not model.train_bmu_:
        m = model.grid_[0] * model.grid_[1]
        cached = (model.train_bmu_, build_bmu_index(model.train_bmu_, model.train_bmu_dist_, m))
        model.__dict__["_explain_bmu_index"] = cached
    return cached[1]


@dataclass(frozen=True)
class PatchRef:
    """One training patch.

    Attributes:
        patch: flat patch index. image: training image index. path: its file (str, may be '').
        row, col: feature cell. distance: Euclidean distance to the neuron (feature units).
    """

    patch: int
    image: int
    path: str
    row: int
    col: int
    distance: float


def nearest_training_patches(model, row: int, col: int, n: int = 16) -> list[PatchRef]:
    """The ``n`` training patches closest to neuron ``(row, col)`` among those it is the BMU of,
    nearest first (fewer when the neuron won fewer patches; empty for a dead neuron).

    Uses the cached :func:`bmu_index`: after the first call this is a slice, O(n).
    """
    j = neuron_index(row, col, model.grid_)
    idx = bmu_index(model)
    h, w = model.feature_shape_
    sel = idx.order[idx.starts[j]:min(idx.starts[j] + n, idx.starts[j + 1])]
    paths = getattr(model, "train_paths_", []) or []
    out = []
    for p in sel.tolist():
        img = p // (h * w)
        out.append(PatchRef(int(p), int(img), paths[img] if img < len(paths) else "", int((p // w) % h),
                            int(p % w), float(idx.dist[p])))
    return out


PAD_COLORS = ((70, 70, 70), (150, 150, 150))
"""The two greys of the diagonal hatching that marks crop pixels outside the image (never image content)."""
PAD_STRIPE_PX = 4
"""Width of one hatching stripe, in pixels of the returned crop."""


def hatch(shape: tuple[int, int]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` diagonal stripes of :data:`PAD_COLORS`, :data:`PAD_STRIPE_PX` wide."""
    r, c = np.indices(shape)
    stripes = ((r + c) // PAD_STRIPE_PX) % 2
    return np.asarray(PAD_COLORS, np.uint8)[stripes]


def crop_patch(image: np.ndarray, row: int, col: int, feature_shape: tuple[int, int], context: int = 1,
               out_size: int | None = 96, color=(255, 64, 0)) -> np.ndarray:
    """Crop the receptive field of feature cell ``(row, col)`` with the cell's box drawn.

    A cell at the image border keeps the cell in the same place of the crop: the part of the
    crop outside the image is padded with grey diagonal hatching (:func:`hatch`), so it reads as
    "no image here" and never as dark image content (MVTec bottle's own border is black).

    Args:
        image: uint8 ``(S, S, 3)`` at the model's image size.
        context: neighbouring cells shown on each side (1 = a 3x3-cell crop).
        out_size: side of the returned crop in pixels (nearest-neighbour upscale); None = native.

    Returns:
        uint8 ``(out, out, 3)`` crop.
    """
    from PIL import Image

    s = image.shape[0]
    h, w = feature_shape
    x0, y0, x1, y1 = cell_box(row, col, feature_shape, s)
    ch, cw = s / h, s / w
    cx0, cy0 = int(round((col - context) * cw)), int(round((row - context) * ch))
    cx1, cy1 = int(round((col + context + 1) * cw)), int(round((row + context + 1) * ch))
    canvas = np.zeros((cy1 - cy0, cx1 - cx0, 3), np.uint8)
    inside = np.zeros(canvas.shape[:2], bool)
    sx0, sy0, sx1, sy1 = max(cx0, 0), max(cy0, 0), min(cx1, s), min(cy1, s)
    canvas[sy0 - cy0:sy1 - cy0, sx0 - cx0:sx1 - cx0] = image[sy0:sy1, sx0:sx1]
    inside[sy0 - cy0:sy1 - cy0, sx0 - cx0:sx1 - cx0] = True
    if out_size:
        canvas = np.asarray(Image.fromarray(canvas).resize((out_size, out_size), Image.NEAREST))
        inside = np.asarray(Image.fromarray(inside).resize((out_size, out_size), Image.NEAREST))
    out = canvas.copy()
    if not inside.all():
        out[~inside] = hatch(inside.shape)[~inside]
    scale = canvas.shape[0] / (cy1 - cy0)
    bx0, by0 = int((x0 - cx0) * scale), int((y0 - cy0) * scale)
    bx1, by1 = int(np.ceil((x1 - cx0) * scale)) - 1, int(np.ceil((y1 - cy0) * scale)) - 1
    t = max(1, canvas.shape[0] // 48)
    out[by0:by0 + t, bx0:bx1 + 1] = color
    out[by1 - t + 1:by1 + 1, bx0:bx1 + 1] = color
    out[by0:by1 + 1, bx0:bx0 + t] = color
    out[by0:by1 + 1, bx1 - t + 1:bx1 + 1] = color
    return out


def patch_crops(model, patches: Sequence[PatchRef], load: Callable[..., np.ndarray] | None = None,
                context: int = 1, out_size: int = 96) -> list[np.ndarray | None]:
    """Crops of training patches (see :func:`crop_patch`); None for an image that cannot be read.

    Args:
        load: ``load(path, image_size, rule)`` -> uint8 ``(S, S, 3)``, called with the model's
            intensity rule; default :func:`somad.data.load_image` (pass a cached loader for speed).
    """
    load = load or data.load_image
    rule = getattr(model, "intensity_", None)
    out = []
    for p in patches:
        try:
            img = load(p.path, model.image_size, rule)
        except (data.DataError, OSError, ValueError):
            out.append(None)
            continue
        out.append(crop_patch(img, p.row, p.col, model.feature_shape_, context, out_size))
    return out


# ---------------------------------------------------------------------- pixels
@dataclass(frozen=True)
class PixelExplanation:
    """Why one feature cell of a scored image got its score.

    Attributes:
        row, col: feature cell. score: min Mahalanobis distance over the k nearest neurons.
        bmu: (row, col) of the Euclidean nearest neuron.
        neighbours: list of ``(row, col, mahalanobis)`` for the k nearest neurons, nearest first.
        best: (row, col) of the neuron giving the score (smallest Mahalanobis distance).
    """

    row: int
    col: int
    score: float
    bmu: tuple[int, int]
    neighbours: list[tuple[int, int, float]]
    best: tuple[int, int]


def explain_cell(patches: PatchScores, image: int, row: int, col: int, feature_shape: tuple[int, int],
                 grid: tuple[int, int]) -> PixelExplanation:
    """BMU and k nearest neurons of one feature cell.

    Args:
        patches: patch scores flat over (N, h, w) in C order (``anomaly_maps(..., return_patches=True)``).
        image: image index; row, col: feature cell; feature_shape: (h, w); grid: SOM (rows, cols).
    """
    h, w = feature_shape
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"cell ({row}, {col}) is outside the {h}x{w} feature map.")
    p = (image * h + row) * w + col
    neigh = torch.as_tensor(patches.neighbours[p]).cpu().numpy()
    maha = torch.as_tensor(patches.mahalanobis[p]).cpu().numpy()
    nb = [(*neuron_position(j, grid), float(m)) for j, m in zip(neigh.tolist(), maha.tolist())]
    best = int(np.argmin(maha))
    return PixelExplanation(int(row), int(col), float(maha.min()), neuron_position(int(neigh[0]), grid), nb,
                            (nb[best][0], nb[best][1]))


def mahalanobis_contributions(x: np.ndarray | torch.Tensor, mean: np.ndarray | torch.Tensor,
                              factor: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-feature terms of a squared Mahalanobis distance.

    With whitening factor ``A`` (``C^-1 = A^T A``) and ``diff = x - mean``:
    ``term_i = diff_i * (C^-1 diff)_i`` and ``sum(term) = |A diff|^2 = Mahalanobis^2``.
    Terms can be negative (correlated features cancelling out).

    Args:
        x, mean: float ``(d,)``. factor: float ``(d, d)``.

    Returns:
        float64 ``(d,)``.
    """
    x = torch.as_tensor(x, dtype=torch.float64).cpu()
    mean = torch.as_tensor(mean, dtype=torch.float64).cpu()
    a = torch.as_tensor(factor, dtype=torch.float64).cpu()
    diff = x - mean
    return (diff * (a.T @ (a @ diff))).numpy()


def top_contributions(contrib: np.ndarray, channel_idx: Sequence[int] | None = None, n: int = 10
                      ) -> list[tuple[int, int, float, float]]:
    """The ``n`` features contributing most to a squared Mahalanobis distance.

    Returns:
        ``(dim, backbone_channel, term, share)`` sorted by term, largest first; ``share`` is the
        term's fraction of the total (the squared distance).
    """
    contrib = np.asarray(contrib, dtype=np.float64)
    total = contrib.sum()
    order = np.argsort(-contrib)[:n]
    ch = list(channel_idx) if channel_idx is not None else list(range(len(contrib)))
    return [(int(i), int(ch[i]), float(contrib[i]), float(contrib[i] / total) if total else float("nan"))
            for i in order]


def channel_label(model, dim: int) -> str:
    """Where feature dimension ``dim`` comes from, e.g. ``"backbone channel 111 (stride-16 stage, channel 31)"``.

    The kept dimensions index the channels of the backbone's stride-4, -8 and -16 stages
    concatenated in that order (:mod:`somad.features`).
    """
    ch = int(model.channel_idx_[dim])
    start = 0
    for stride, n in zip(STRIDES, model.extractor.body.feature_info.channels()):
        if ch < start + n:
            return f"backbone channel {ch} (stride-{stride} stage, channel {ch - start})"
        start += n
    return f"backbone channel {ch}"


def explain_contributions(model, feature_map: torch.Tensor | np.ndarray, row: int, col: int,
                          neuron: tuple[int, int]) -> np.ndarray:
    """Per-feature terms of the squared Mahalanobis distance of cell ``(row, col)`` to ``neuron``.

    Args:
        feature_map: float32 ``(d, h, w)`` features of one image (``model.features(img[None])[0]``).
        neuron: (row, col) on the grid.

    Returns:
        float64 ``(d,)`` summing to the squared distance.
    """
    j = neuron_index(*neuron, model.grid_)
    x = torch.as_tensor(feature_map)[:, row, col]
    return mahalanobis_contributions(x, model.means_[j], model.factors_[j])


# ------------------------------------------------------------------- test hits
@dataclass(frozen=True)
class NeuronHits:
    """Where one neuron is the BMU in a set of scored images.

    Attributes:
        hits: int64 ``(N,)`` cells of each image whose BMU is the neuron.
        max_score: float32 ``(N,)`` highest patch score among those cells (NaN when no hit).
        by_hits: image indices with hits, most hits first.
        by_score: image indices with hits, highest ``max_score`` first.
    """

    hits: np.ndarray
    max_score: np.ndarray
    by_hits: np.ndarray
    by_score: np.ndarray


def neuron_test_hits(patches: PatchScores, neuron: tuple[int, int], grid: tuple[int, int], n_images: int
                     ) -> NeuronHits:
    """Test images where ``neuron`` is the BMU of many cells, or of high-scoring cells.

    Args:
        patches: patch scores flat over (N, h, w). n_images: N.
    """
    j = neuron_index(*neuron, grid)
    bmu = torch.as_tensor(patches.neighbours[:, 0]).cpu().numpy().reshape(n_images, -1)
    scores = torch.as_tensor(patches.scores).cpu().numpy().reshape(n_images, -1)
    is_j = bmu == j
    hits = is_j.sum(1).astype(np.int64)
    masked = np.where(is_j, scores, -np.inf).max(1)
    max_score = np.where(hits > 0, masked, np.nan).astype(np.float32)
    with_hits = np.flatnonzero(hits > 0)
    by_hits = with_hits[np.argsort(-hits[with_hits], kind="stable")]
    by_score = with_hits[np.argsort(-max_score[with_hits], kind="stable")]
    return NeuronHits(hits, max_score, by_hits, by_score)


def neuron_cells(patches: PatchScores, neuron: tuple[int, int], grid: tuple[int, int], image: int,
                 feature_shape: tuple[int, int]) -> np.ndarray:
    """bool ``(h, w)``: the cells of ``image`` whose BMU is ``neuron``."""
    j = neuron_index(*neuron, grid)
    h, w = feature_shape
    bmu = torch.as_tensor(patches.neighbours[image * h * w:(image + 1) * h * w, 0]).cpu().numpy()
    return (bmu == j).reshape(h, w)


def test_hit_map(patches: PatchScores, grid: tuple[int, int]) -> np.ndarray:
    """Test cells won by each neuron: int64 ``(rows, cols)`` (:func:`somad.som.hit_map` of the test BMUs)."""
    return hit_map(patches.neighbours[:, 0], grid)


# ------------------------------------------------------------------ thresholds
def outcomes(labels: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Outcome strings ``(N,)`` ('TP', 'FP', 'FN', 'TN') with the prediction of
    :func:`somad.decision.is_anomalous`."""
    labels = np.asarray(labels).astype(bool)
    pred = is_anomalous(scores, threshold)
    out = np.empty(len(labels), dtype="<U2")
    out[pred & labels] = "TP"
    out[pred & ~labels] = "FP"
    out[~pred & labels] = "FN"
    out[~pred & ~labels] = "TN"
    return out


def outcome_counts(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts of TP, FP, FN, TN at ``threshold``."""
    o = outcomes(labels, scores, threshold)
    return {k: int((o == k).sum()) for k in ("TP", "FP", "FN", "TN")}


def counts_with_and_without(labels: np.ndarray, scores: np.ndarray, threshold: float,
                            leak: np.ndarray) -> tuple[dict[str, int], dict[str, int] | None]:
    """Outcome counts (:func:`outcome_counts`) on the whole split and, when some images leak (bool
    ``(N,)``, :func:`somad.versions.leak_mask`), on the split without them (else None)."""
    labels, scores, leak = np.asarray(labels), np.asarray(scores), np.asarray(leak, dtype=bool)
    every = outcome_counts(labels, scores, threshold)
    if not leak.any():
        return every, None
    keep = ~leak
    return every, outcome_counts(labels[keep], scores[keep], threshold)


def failing_order(labels: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the misclassified images, worst first: FP by descending score, then FN by
    ascending score (FP before FN when both exist, each sorted by its margin to the threshold)."""
    o = outcomes(labels, scores, threshold)
    scores = np.asarray(scores)
    fp = np.flatnonzero(o == "FP")
    fn = np.flatnonzero(o == "FN")
    return np.r_[fp[np.argsort(-scores[fp], kind="stable")], fn[np.argsort(scores[fn], kind="stable")]].astype(int)
