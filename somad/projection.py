"""Images and patches projected onto the SOM, and neurons projected back into the images.

Pure functions behind the dashboard's map views (no Streamlit here):

* a test image's **footprint** on the map: which neurons its patches chose as BMU, how anomalous
  those patches are, and which of them lie in the ground-truth defect (the SOM Toolbox's and
  kohonen's "project a sample onto the map", for every patch of one image);
* **one patch against the whole map**: its Euclidean distance to every neuron (MiniSom's
  ``activate``, Vettigli 2018), with its BMU and ``k`` nearest neurons;
* **where a neuron lives in the images**: the image positions (feature cells) of the training
  patches it wins, and the mean training image to draw them on.

Conventions as in :mod:`somad.explain`: neuron ``j`` sits at grid row ``j // W``, column
``j % W``; patch scores are flat over ``(N, h, w)`` in C order; feature cell ``(r, c)`` of an
``S x S`` image covers pixels ``[r S/h, (r+1) S/h) x [c S/w, (c+1) S/w)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import SomadError
from .explain import bmu_index, neuron_index
from .scoring import PatchScores
from .som import topographic_error

FAR_RATIO = 2.0  # a patch whose BMU distance is over this many times the training median is "far"


# ------------------------------------------------------------------ footprint
def cell_mask(mask: np.ndarray, feature_shape: tuple[int, int]) -> np.ndarray:
    """Feature cells that touch a pixel mask.

    Args:
        mask: bool ``(S, S)`` ground-truth defect pixels (any value > 0 is a defect).
        feature_shape: ``(h, w)`` feature cells.

    Returns:
        bool ``(h, w)``: True where at least one pixel of the cell's box is in the mask (so a thin
        scratch still marks the cells it crosses).
    """
    mask = np.asarray(mask) > 0
    s0, s1 = mask.shape
    h, w = feature_shape
    rows = (np.arange(s0) * h) // s0
    cols = (np.arange(s1) * w) // s1
    out = np.zeros((h, w), bool)
    rr, cc = np.nonzero(mask)
    out[rows[rr], cols[cc]] = True
    return out


@dataclass(frozen=True)
class Footprint:
    """Where the patches of one image land on the SOM.

    Attributes:
        bmu: int64 ``(h, w)`` flat BMU index of every feature cell of the image.
        scores: float32 ``(h, w)`` patch score of every cell (Mahalanobis units, before blur).
        defect: bool ``(h, w)`` cells in the ground-truth defect (all False without a defect mask).
        counts: int64 ``(rows, cols)`` cells of the image whose BMU is each neuron.
        defect_counts: int64 ``(rows, cols)`` of those, the cells inside the defect.
        max_score: float32 ``(rows, cols)`` highest patch score among a neuron's cells (NaN where none).
    """

    bmu: np.ndarray
    scores: np.ndarray
    defect: np.ndarray
    counts: np.ndarray
    defect_counts: np.ndarray
    max_score: np.ndarray

    @property
    def neurons(self) -> np.ndarray:
        """int64 ``(n,)`` flat indices of the neurons chosen by at least one cell, ascending."""
        return np.flatnonzero(self.counts.ravel())

    def cells_of(self, neuron: tuple[int, int]) -> np.ndarray:
        """bool ``(h, w)``: the cells of the image whose BMU is ``neuron`` (row, col)."""
        return self.bmu == neuron_index(*neuron, self.counts.shape)


def image_footprint(patches: PatchScores, image: int, feature_shape: tuple[int, int], grid: tuple[int, int],
                    mask: np.ndarray | None = None) -> Footprint:
    """The footprint of test image ``image`` on the SOM.

    Args:
        patches: patch scores flat over ``(N, h, w)`` (``anomaly_maps(..., return_patches=True)``);
            ``neighbours[:, 0]`` is each patch's BMU.
        image: image index. feature_shape: ``(h, w)``. grid: SOM ``(rows, cols)``.
        mask: optional ``(S, S)`` ground-truth mask of the image (see :func:`cell_mask`).

    Returns:
        :class:`Footprint`; ``counts.sum() == h * w``.

    Raises:
        ValueError: ``image`` outside the scored images.
    """
    h, w = feature_shape
    n = h * w
    total = len(patches.scores) // n
    if not 0 <= image < total:
        raise ValueError(f"image {image} is outside the {total} scored images.")
    sl = slice(image * n, (image + 1) * n)
    bmu = torch.as_tensor(patches.neighbours[sl, 0]).cpu().numpy().astype(np.int64)
    scores = torch.as_tensor(patches.scores[sl]).cpu().numpy().astype(np.float32)
    defect = cell_mask(mask, feature_shape).ravel() if mask is not None else np.zeros(n, bool)
    m = grid[0] * grid[1]
    counts = np.bincount(bmu, minlength=m)
    defect_counts = np.bincount(bmu[defect], minlength=m)
    max_score = np.full(m, -np.inf, np.float32)
    np.maximum.at(max_score, bmu, scores)
    max_score[counts == 0] = np.nan
    return Footprint(bmu.reshape(h, w), scores.reshape(h, w), defect.reshape(h, w), counts.reshape(grid),
                     defect_counts.reshape(grid), max_score.reshape(grid))


def ground_truth_note(label: int, mask: np.ndarray | None) -> str | None:
    """What is missing to mark the defect on the map, in words; None when the defect can be marked.

    Args:
        label: 1 for a defective test image, 0 for a good one. mask: its ``(S, S)`` mask or None.
    """
    if label == 0:
        return "a good image: it has no defect region to mark."
    if mask is None or not np.asarray(mask).any():
        return ("no ground-truth mask for this defective image (ground_truth/<defect>/<name>_mask.png is "
                "missing or empty): its defect cannot be marked on the map.")
    return None


# --------------------------------------------------------------- one patch
def distance_map(weights: torch.Tensor | np.ndarray, x: torch.Tensor | np.ndarray,
                 grid: tuple[int, int]) -> np.ndarray:
    """Euclidean distance of one patch vector to every neuron, as a map (MiniSom's ``activate``).

    Args:
        weights: float ``(M, d)`` SOM weights (``model.som_weights_``). x: float ``(d,)`` the patch.
        grid: ``(rows, cols)`` with ``rows * cols == M``.

    Returns:
        float32 ``(rows, cols)`` in feature units.

    Raises:
        ValueError: ``x`` of another length than the weights, or a grid that does not hold M neurons.
    """
    wt = torch.as_tensor(weights, dtype=torch.float32).cpu()
    xv = torch.as_tensor(x, dtype=torch.float32).cpu().reshape(-1)
    if wt.shape[1] != xv.numel():
        raise ValueError(f"the patch has {xv.numel()} features, the SOM weights {wt.shape[1]}.")
    if grid[0] * grid[1] != wt.shape[0]:
        raise ValueError(f"a {grid[0]}x{grid[1]} grid does not hold the {wt.shape[0]} neurons.")
    d2 = ((wt - xv) ** 2).sum(1)  # exact (no |w|^2 - 2xw + |x|^2 cancellation)
    return d2.sqrt().numpy().reshape(grid).astype(np.float32)


def nearest_neurons(dist: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The ``k`` nearest neurons ``(row, col)`` of a distance map, nearest first (ties by index).

    Args:
        dist: float ``(rows, cols)`` (:func:`distance_map`). k: at most ``rows * cols`` are returned.
    """
    flat = np.asarray(dist, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")[:max(0, int(k))]
    cols = dist.shape[1]
    return [(int(j // cols), int(j % cols)) for j in order]


@dataclass(frozen=True)
class PatchOnMap:
    """One patch against the whole map.

    Attributes:
        dist: float32 ``(rows, cols)`` Euclidean distance to every neuron (feature units).
        nearest: the ``k`` nearest neurons ``(row, col)``, nearest first; ``nearest[0]`` is the BMU.
        median_ratio: BMU distance over the median distance of the training patches to their BMU
            (about 1 for a typical normal patch; far above 1 = far from every known group).
        gap: distance to the 2nd nearest neuron over distance to the BMU (on a SOM usually near 1:
            the BMU's grid neighbours are almost as near).
        adjacent: the two nearest neurons are grid neighbours (this patch's own topographic error
            is 0); False = the patch lies between two parts of the map.
    """

    dist: np.ndarray
    nearest: list[tuple[int, int]]
    median_ratio: float
    gap: float
    adjacent: bool = True

    def where(self) -> str:
        """Where the patch sits relative to the map's groups, in words (for the Test inspector).
        Euclidean distances only: whether it is anomalous is its score's business (the Mahalanobis
        distance to the neuron's Gaussian), so this never says "anomalous"."""
        if np.isfinite(self.median_ratio) and self.median_ratio > FAR_RATIO:
            return (f"its BMU is {self.median_ratio:.1f}x as far as a typical training patch is from its own: "
                    "an appearance the map has few patches like")
        if not self.adjacent:
            return "its two nearest neurons are not neighbours on the map: it lies between two groups"
        return "its two nearest neurons are neighbours on the map: inside one known group"


def patch_on_map(model, feature_map: torch.Tensor | np.ndarray, row: int, col: int, k: int | None = None
                 ) -> PatchOnMap:
    """:func:`distance_map` of feature cell ``(row, col)`` of one image, its ``k`` nearest neurons
    (default the model's ``k``) and how far it is from the training patches' typical BMU distance.

    Args:
        feature_map: float32 ``(d, h, w)`` features of the image (``model.features(img[None])[0]``).

    Raises:
        ValueError: a cell outside the feature map.
    """
    fm = torch.as_tensor(feature_map)
    h, w = fm.shape[1:]
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"cell ({row}, {col}) is outside the {h}x{w} feature map.")
    dist = distance_map(model.som_weights_, fm[:, row, col], model.grid_)
    k = int(k or model.k)
    nearest = nearest_neurons(dist, max(k, 2))
    d0 = float(dist[nearest[0]])
    d1 = float(dist[nearest[1]]) if len(nearest) > 1 else float("nan")
    typical = float(np.median(bmu_index(model).dist)) if len(bmu_index(model).dist) else float("nan")
    cols = dist.shape[1]
    top2 = torch.tensor([[nearest[0][0] * cols + nearest[0][1], nearest[1][0] * cols + nearest[1][1]]]) \
        if len(nearest) > 1 else None
    adjacent = top2 is None or topographic_error(top2, tuple(model.grid_), model.topology) == 0.0
    return PatchOnMap(dist, nearest[:k], d0 / typical if typical > 0 else float("nan"),
                      d1 / d0 if d0 > 0 else float("inf"), adjacent)


# ----------------------------------------------------------- neuron -> images
def neuron_positions(model, neuron: tuple[int, int]) -> np.ndarray:
    """Image positions of the training patches a neuron wins.

    Args:
        neuron: ``(row, col)`` on the grid.

    Returns:
        int64 ``(h, w)``: for every feature cell, how many training images have their patch at that
        cell won by the neuron (sums to the neuron's hit count).
    """
    j = neuron_index(*neuron, model.grid_)
    idx = bmu_index(model)
    h, w = model.feature_shape_
    mine = idx.order[idx.starts[j]:idx.starts[j + 1]]
    return np.bincount(mine % (h * w), minlength=h * w).reshape(h, w).astype(np.int64)


def position_spread(positions: np.ndarray) -> float:
    """How position-bound a neuron is: the standard deviation, in feature cells, of the positions of
    its training patches around their mean (0 = always the same cell; NaN when it wins none).

    Args:
        positions: int ``(h, w)`` as :func:`neuron_positions` returns.
    """
    pos = np.asarray(positions, dtype=np.float64)
    total = pos.sum()
    if total == 0:
        return float("nan")
    r, c = np.indices(pos.shape)
    mr, mc = (pos * r).sum() / total, (pos * c).sum() / total
    return float(np.sqrt((pos * ((r - mr) ** 2 + (c - mc) ** 2)).sum() / total))


def mean_image(paths: Sequence[str], image_size: int, load: Callable[..., np.ndarray], rule=None,
               limit: int = 64) -> np.ndarray | None:
    """Mean of up to ``limit`` training images (evenly spaced over ``paths``).

    Args:
        paths: training image files. load: ``load(path, image_size, rule)`` -> uint8 ``(S, S, 3)``
            (e.g. :func:`somad.data.load_image`, or a cached loader).

    Returns:
        uint8 ``(S, S, 3)``, or None when no image could be read (unreadable files are skipped).
    """
    paths = list(paths)
    if not paths:
        return None
    pick = np.unique(np.linspace(0, len(paths) - 1, min(limit, len(paths))).astype(int))
    acc, n = None, 0
    for i in pick.tolist():
        try:
            img = load(paths[i], image_size, rule)
        except (SomadError, OSError, ValueError):
            continue
        acc = img.astype(np.float64) if acc is None else acc + img
        n += 1
    return None if acc is None else np.round(acc / n).astype(np.uint8)
