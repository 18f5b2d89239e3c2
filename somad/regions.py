"""Regions of a SOM: a few connected groups of neurons, and what lands in each.

Method: **Ward agglomerative clustering of the neuron weights under the grid's connectivity
constraint** (Ward, "Hierarchical grouping to optimize an objective function", JASA 58, 1963;
clustering the SOM's prototypes rather than the data as in Vesanto & Alhoniemi, "Clustering of
the self-organizing map", IEEE Trans. Neural Networks 11(3), 2000; structured Ward as implemented
by scikit-learn's ``AgglomerativeClustering(linkage="ward", connectivity=...)``, Pedregosa et al.,
JMLR 12, 2011). Two clusters may merge only when some neuron of one is a grid neighbour of some
neuron of the other (8 neighbours on rectangular grids, 6 on hexagonal ones, :func:`somad.som.neighbour_pairs`),
so every region is one connected piece of the map, and Ward's criterion (least increase of the
within-region sum of squared weight distances) makes region borders follow the U-matrix's ridges,
where neighbouring weights differ most.

The number of regions is chosen automatically by the mean silhouette of the neuron weights
(Rousseeuw, J. Comput. Appl. Math. 20, 1987; ``sklearn.metrics.silhouette_score``, Euclidean):
the fewest of :data:`AUTO_CANDIDATES` within :data:`SILHOUETTE_TOLERANCE` of the best
(:func:`auto_choice`, which both the count and its caption :func:`how_chosen` read); or the
user gives it. The full merge tree is built once and cut at each candidate. A best silhouette of
0.50 or less is read, after Kaufman & Rousseeuw (1990), as a weak or absent cluster structure
(:func:`structure_note`): the regions are then a convenience partition of a map whose weights
change gradually (the default MVTec bottle model's 56x56 map scores 0.07 to 0.11).

Region ``0`` holds the most training patches, region ``1`` the next, and so on; the dashboard calls
them R1, R2, ... No Streamlit here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .som import hit_map, neighbour_pairs

AUTO_CANDIDATES = tuple(range(3, 9))
"""Region counts the automatic choice tries: a small number a person can name and remember, from 3 (two
regions only split the object from the background, which the hit map already shows)."""
SILHOUETTE_TOLERANCE = 0.01
"""The automatic choice takes the fewest regions whose mean silhouette is within this of the best one
(near-ties are common; fewer regions are easier to name)."""
MAX_REGIONS = 20
"""Most regions a user may ask for."""
SILHOUETTE_SAMPLE = 2000
"""Neurons sampled (fixed seed) for the silhouette of larger maps (exact below this)."""
METHOD = ("Ward agglomerative clustering of the neuron weights with a grid-connectivity constraint "
          "(Ward 1963; Vesanto & Alhoniemi 2000; scikit-learn AgglomerativeClustering)")
"""The method in words, for captions and the report."""


@dataclass(frozen=True)
class Regions:
    """Regions of a fitted SOM.

    Attributes:
        labels: int64 ``(rows, cols)`` region of each neuron, ``0 .. n - 1``, region 0 the one with
            the most training patches.
        n: number of regions. auto: True when ``n`` was chosen automatically.
        silhouette: ``{k: mean silhouette}`` of the candidates tried (empty when ``n`` was given
            or the map is too small to score).
        train_share: float64 ``(n,)`` fraction of training patches whose BMU lies in each region.
        typical: ``(row, col)`` per region: the neuron (with training hits) nearest to the region's
            hit-weighted mean weight; its nearest training patch is the region's typical patch.
        neurons: int64 ``(n,)`` neurons per region.
    """

    labels: np.ndarray
    n: int
    auto: bool
    silhouette: dict
    train_share: np.ndarray
    typical: list
    neurons: np.ndarray

    @staticmethod
    def name(region: int) -> str:
        """Display name of region index ``region``: ``"R1"`` for 0."""
        return f"R{int(region) + 1}"


def connectivity(shape: tuple[int, int], topology: str = "rectangular"):
    """Symmetric sparse ``(M, M)`` adjacency of grid neighbours (scipy CSR, 1 on each neighbour pair)."""
    from scipy.sparse import coo_matrix

    m = shape[0] * shape[1]
    p = neighbour_pairs(shape, topology)
    rows, cols = np.r_[p[:, 0], p[:, 1]], np.r_[p[:, 1], p[:, 0]]
    return coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(m, m)).tocsr()


def merge_tree(weights: np.ndarray | torch.Tensor, shape: tuple[int, int], topology: str = "rectangular"
               ) -> np.ndarray:
    """The full Ward merge tree of the neurons under the grid connectivity: int64 ``(M - 1, 2)``,
    scikit-learn's ``children_`` (row ``j`` merges two nodes into node ``M + j``; nodes below ``M``
    are neurons). Empty ``(0, 2)`` for a single neuron.

    Args:
        weights: float ``(M, d)`` neuron weights, M = rows * cols.
    """
    from sklearn.cluster import AgglomerativeClustering

    x = torch.as_tensor(weights, dtype=torch.float32).cpu().numpy().astype(np.float64)
    m = shape[0] * shape[1]
    if len(x) != m:
        raise ValueError(f"weights have {len(x)} rows but the {shape[0]}x{shape[1]} grid has {m} neurons.")
    if m < 2:
        return np.zeros((0, 2), dtype=np.int64)
    ac = AgglomerativeClustering(n_clusters=1, linkage="ward", connectivity=connectivity(shape, topology),
                                 compute_full_tree=True).fit(x)
    return ac.children_.astype(np.int64)


def cut_tree(children: np.ndarray, m: int, k: int) -> np.ndarray:
    """Cluster of each of ``m`` leaves after the first ``m - k`` merges of ``children``: int64 ``(m,)``
    in ``0 .. k - 1`` (numbered by first leaf)."""
    k = int(np.clip(k, 1, m))
    parent = np.arange(2 * m - 1 if m > 1 else 1)
    merges = children[:m - k]
    if len(merges):
        new = m + np.arange(len(merges))
        parent[merges[:, 0]] = new
        parent[merges[:, 1]] = new
    while True:  # pointer jumping: O(M log depth)
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    _, labels = np.unique(parent[:m], return_inverse=True)
    return labels.astype(np.int64)


def silhouettes(weights: np.ndarray, children: np.ndarray, candidates=AUTO_CANDIDATES, seed: int = 0) -> dict:
    """``{k: mean silhouette of the neuron weights cut into k regions}`` for the candidates that fit the map."""
    from sklearn.metrics import silhouette_score

    x = torch.as_tensor(weights, dtype=torch.float32).cpu().numpy()
    m = len(x)
    out = {}
    sample = SILHOUETTE_SAMPLE if m > SILHOUETTE_SAMPLE else None
    for k in candidates:
        if not 2 <= k <= m - 1:
            continue
        labels = cut_tree(children, m, k)
        out[int(k)] = float(silhouette_score(x, labels, sample_size=sample, random_state=seed))
    return out


@dataclass(frozen=True)
class AutoChoice:
    """The automatic choice of the number of regions, every value of the rule in one place: the count
    (:func:`choose_n`) and its caption (:func:`how_chosen`) both read it, so they cannot disagree.

    Attributes:
        n: the regions chosen (1 when nothing was scored).
        best_k, best: the candidate with the highest mean silhouette, and that silhouette (NaN if none).
        cutoff: ``best - SILHOUETTE_TOLERANCE``: a candidate qualifies when its silhouette is at or above it.
        qualifying: the qualifying candidates, ascending; ``n`` is the first.
    """

    n: int
    best_k: int
    best: float
    cutoff: float
    qualifying: tuple


def auto_choice(scores: dict) -> AutoChoice:
    """The rule: of the candidates in ``scores`` (``{k: mean silhouette}``), the fewest regions whose
    silhouette is within :data:`SILHOUETTE_TOLERANCE` of the best (ties of the best: the fewer regions)."""
    if not scores:
        return AutoChoice(1, 1, float("nan"), float("nan"), ())
    best_k = min(scores, key=lambda k: (-scores[k], k))
    best = float(scores[best_k])
    cutoff = best - SILHOUETTE_TOLERANCE
    qualifying = tuple(sorted(k for k, v in scores.items() if v >= cutoff))
    return AutoChoice(int(qualifying[0]), int(best_k), best, cutoff, qualifying)


def choose_n(scores: dict) -> int:
    """The number of regions :func:`auto_choice` takes; 1 when nothing was scored (maps of fewer than 4 neurons)."""
    return auto_choice(scores).n


def map_regions(weights: np.ndarray | torch.Tensor, shape: tuple[int, int], topology: str,
                train_bmu: np.ndarray | torch.Tensor, n_regions: int | None = None) -> Regions:
    """Split the map into connected regions (see the module docstring for the method and its sources).

    Args:
        weights: float ``(M, d)`` neuron weights. shape: grid (rows, cols). topology: the lattice.
        train_bmu: int ``(P,)`` BMU of every training patch (for the shares and typical neurons).
        n_regions: number of regions, ``1 .. min(M, MAX_REGIONS)``; None = automatic (:func:`choose_n`
            over :data:`AUTO_CANDIDATES`; one region for maps of fewer than 4 neurons).

    Returns:
        :class:`Regions`.

    Raises:
        ValueError: ``n_regions`` out of range (the message gives the range).
    """
    m = shape[0] * shape[1]
    if n_regions is not None and not 1 <= int(n_regions) <= min(m, MAX_REGIONS):
        raise ValueError(f"number of regions must be between 1 and {min(m, MAX_REGIONS)} for a "
                         f"{shape[0]}x{shape[1]} map, got {n_regions}.")
    w = torch.as_tensor(weights, dtype=torch.float32).cpu().numpy()
    children = merge_tree(w, shape, topology)
    scores = {}
    if n_regions is None:
        scores = silhouettes(w, children)
        k = choose_n(scores)
    else:
        k = int(n_regions)
    raw = cut_tree(children, m, k)
    hits = hit_map(train_bmu, shape).ravel().astype(np.float64)
    per = np.bincount(raw, weights=hits, minlength=k)
    order = np.argsort(-per, kind="stable")  # region 0 = most training patches
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    labels = rank[raw]
    total = hits.sum()
    share = (per[order] / total) if total > 0 else np.zeros(k)
    typical = [_typical_neuron(w, hits, labels, r, shape) for r in range(k)]
    return Regions(labels.reshape(shape), int(k), n_regions is None, scores, share, typical,
                   np.bincount(labels, minlength=k).astype(np.int64))


def _typical_neuron(w: np.ndarray, hits: np.ndarray, labels: np.ndarray, region: int,
                    shape: tuple[int, int]) -> tuple[int, int]:
    """The region's neuron with hits nearest its hit-weighted mean weight (any of its neurons if none has hits)."""
    idx = np.flatnonzero(labels == region)
    h = hits[idx]
    if h.sum() > 0:
        centre = (w[idx] * h[:, None]).sum(0) / h.sum()
        idx = idx[h > 0]
    else:
        centre = w[idx].mean(0)
    j = int(idx[np.argmin(((w[idx] - centre) ** 2).sum(1))])
    return divmod(j, shape[1])


def model_regions(model, n_regions: int | None = None) -> Regions:
    """:func:`map_regions` of a fitted :class:`~somad.model.SOMAD`."""
    return map_regions(model.som_weights_, model.grid_, model.topology, model.train_bmu_, n_regions)


# ------------------------------------------------------------------ positions
def region_positions(regions: Regions, train_bmu: np.ndarray | torch.Tensor, feature_shape: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Where each region's training patches sit in the images.

    Args:
        train_bmu: int ``(N * h * w,)`` BMU of every training patch (image, row, col order).
        feature_shape: (h, w) feature cells.

    Returns:
        ``(majority int64 (h, w), agreement float64 (h, w))``: the region that most training images
        map each feature cell to, and the fraction of images that agree (1 = position-bound).
    """
    h, w = feature_shape
    lab = regions.labels.ravel()[torch.as_tensor(train_bmu).cpu().numpy()].reshape(-1, h * w)
    counts = np.stack([(lab == r).sum(0) for r in range(regions.n)])  # (n, h*w)
    major = counts.argmax(0)
    agree = counts.max(0) / max(len(lab), 1)
    return major.reshape(h, w).astype(np.int64), agree.reshape(h, w)


# ------------------------------------------------------------------ test mass
def cell_masks(masks: np.ndarray, feature_shape: tuple[int, int]) -> np.ndarray:
    """bool ``(N, h, w)``: feature cells that hold any ground-truth defect pixel of masks bool ``(N, S, S)``
    (``S`` a multiple of ``h`` and ``w``, as at the model's image size)."""
    n, s, _ = masks.shape
    h, w = feature_shape
    return np.asarray(masks, dtype=bool).reshape(n, h, s // h, w, s // w).any(axis=(2, 4))


def anomaly_mass(patch_scores: np.ndarray | torch.Tensor, reference: float) -> np.ndarray:
    """float64 anomaly mass of each patch: its score's excess over ``reference`` (0 at or below it).

    ``reference`` is the model's top of the training colour range (``pixel_range_[1]``, percentile
    99.99 of held-out training pixel scores), so normal patches carry (almost) no mass.
    """
    s = torch.as_tensor(patch_scores).cpu().numpy().astype(np.float64)
    return np.clip(s - float(reference), 0.0, None)


@dataclass(frozen=True)
class RegionMass:
    """What of a scored test split lands in each region.

    Attributes:
        mass_share: float64 ``(n,)`` share of the test anomaly mass (patch score above the reference,
            summed over all test patches) whose BMU lies in each region; NaN when no patch has mass.
        defect_share: float64 ``(n,)`` share of the ground-truth defect cells whose BMU lies in each
            region; None without ground truth.
        test_share: float64 ``(n,)`` share of all test patches.
        total_mass: the summed mass. n_defect_cells: ground-truth defect cells (0 without ground truth).
    """

    mass_share: np.ndarray
    defect_share: np.ndarray | None
    test_share: np.ndarray
    total_mass: float
    n_defect_cells: int


def region_mass(regions: Regions, test_bmu: np.ndarray | torch.Tensor, patch_scores: np.ndarray | torch.Tensor,
                reference: float, defect_cells: np.ndarray | None = None) -> RegionMass:
    """Shares of test anomaly mass, ground-truth defect cells and test patches per region.

    Args:
        test_bmu: int ``(N * h * w,)`` BMU of each test patch (``PatchScores.neighbours[:, 0]``).
        patch_scores: float ``(N * h * w,)`` patch scores. reference: see :func:`anomaly_mass`.
        defect_cells: bool ``(N, h, w)`` (:func:`cell_masks`), or None when the split has no ground truth.
    """
    n = regions.n
    lab = regions.labels.ravel()[torch.as_tensor(test_bmu).cpu().numpy().astype(np.int64)]
    mass = anomaly_mass(patch_scores, reference)
    per = np.bincount(lab, weights=mass, minlength=n)
    total = float(mass.sum())
    mass_share = per / total if total > 0 else np.full(n, np.nan)
    test_share = np.bincount(lab, minlength=n) / max(len(lab), 1)
    defect_share, nd = None, 0
    if defect_cells is not None and np.asarray(defect_cells).any():
        sel = np.asarray(defect_cells, dtype=bool).ravel()
        nd = int(sel.sum())
        defect_share = np.bincount(lab[sel], minlength=n) / nd
    return RegionMass(mass_share, defect_share, test_share, total, nd)


@dataclass(frozen=True)
class RegionBreakdown:
    """One test image's score broken down by region.

    Attributes:
        cells: int64 ``(n,)`` feature cells of the image whose BMU lies in each region.
        max_score: float64 ``(n,)`` highest patch score among them (NaN where none).
        mass_share: float64 ``(n,)`` share of the image's anomaly mass (NaN everywhere when it has none).
        defect_cells: int64 ``(n,)`` ground-truth defect cells per region (None without ground truth).
        hottest: region of the image's highest-scoring cell.
    """

    cells: np.ndarray
    max_score: np.ndarray
    mass_share: np.ndarray
    defect_cells: np.ndarray | None
    hottest: int


def image_breakdown(regions: Regions, test_bmu: np.ndarray | torch.Tensor, patch_scores: np.ndarray | torch.Tensor,
                    image: int, feature_shape: tuple[int, int], reference: float,
                    defect_cells: np.ndarray | None = None) -> RegionBreakdown:
    """Test image ``image``'s cells, highest patch score, anomaly mass and defect cells per region.

    Args: as :func:`region_mass`; ``defect_cells`` bool ``(h, w)`` of this image or None.
    """
    h, w = feature_shape
    sl = slice(image * h * w, (image + 1) * h * w)
    bmu = torch.as_tensor(test_bmu).cpu().numpy().astype(np.int64)[sl]
    scores = torch.as_tensor(patch_scores).cpu().numpy().astype(np.float64)[sl]
    lab = regions.labels.ravel()[bmu]
    n = regions.n
    cells = np.bincount(lab, minlength=n).astype(np.int64)
    best = np.full(n, -np.inf)
    np.maximum.at(best, lab, scores)
    best[cells == 0] = np.nan
    mass = anomaly_mass(scores, reference)
    per = np.bincount(lab, weights=mass, minlength=n)
    share = per / per.sum() if per.sum() > 0 else np.full(n, np.nan)
    dc = None
    if defect_cells is not None:
        dc = np.bincount(lab[np.asarray(defect_cells, dtype=bool).ravel()], minlength=n).astype(np.int64)
    return RegionBreakdown(cells, best, share, dc, int(lab[int(np.argmax(scores))]))


def cells_on_map(test_bmu: np.ndarray | torch.Tensor, image: int, feature_shape: tuple[int, int],
                 cells: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """int64 ``(rows, cols)``: how many of the selected cells (bool ``(h, w)``) of test image ``image``
    have each neuron as BMU (e.g. its ground-truth defect cells, to mark them on the region map)."""
    h, w = feature_shape
    bmu = torch.as_tensor(test_bmu).cpu().numpy().astype(np.int64)[image * h * w:(image + 1) * h * w]
    return np.bincount(bmu[np.asarray(cells, dtype=bool).ravel()], minlength=grid[0] * grid[1]).reshape(grid)


# ------------------------------------------------------------------ words and tables
def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.0f}%"


SILHOUETTE_READING = ((0.70, "strong"), (0.50, "reasonable"), (0.25, "weak"), (-1.0, "none"))
"""Kaufman & Rousseeuw's reading of the best mean silhouette over the numbers of clusters tried (the
*silhouette coefficient*; "Finding Groups in Data", Wiley 1990, ch. 2, Table 4; silhouettes from Rousseeuw,
J. Comput. Appl. Math. 20, 1987): above 0.70 a strong structure, 0.51-0.70 a reasonable one, 0.26-0.50 a weak
one that could be artificial, 0.25 or less no substantial structure. ``(lower bound, name)``, highest first."""
STRUCTURE_WORDS = {
    "strong": "a strong cluster structure",
    "reasonable": "a reasonable cluster structure",
    "weak": "a weak cluster structure that could be artificial",
    "none": "no substantial cluster structure"}


def structure(best: float) -> str:
    """Kaufman & Rousseeuw's word for a best mean silhouette (:data:`SILHOUETTE_READING`)."""
    return next(name for low, name in SILHOUETTE_READING if best > low)


def _decimals(values, cutoff: float) -> int:
    """Fewest decimals (3 to 6) at which every rounded value compares with the rounded cutoff as the exact
    value does, so the numbers printed agree with the candidates said to qualify."""
    for dec in range(3, 7):
        c = round(cutoff, dec)
        if all((round(v, dec) >= c) == (v >= cutoff) for v in values):
            return dec
    return 6


def how_chosen(regions: Regions) -> str:
    """How the number of regions was set, in words, written from the same :func:`auto_choice` that set it."""
    if not regions.auto:
        return f"{regions.n} regions, as chosen by the user."
    if not regions.silhouette:
        return f"{regions.n} region (the map is too small to split)."
    ch = auto_choice(regions.silhouette)
    dec = _decimals(regions.silhouette.values(), ch.cutoff)
    tried = ", ".join(f"{k}: {v:.{dec}f}" for k, v in sorted(regions.silhouette.items()))
    others = [k for k in ch.qualifying if k != ch.n]
    also = (f" ({', '.join(map(str, others))} also qualif{'ies' if len(others) == 1 else 'y'})" if others
            else " (the only one that does)")
    return (f"{ch.n} regions, chosen automatically. Mean silhouette of the neuron weights for "
            f"{min(regions.silhouette)} to {max(regions.silhouette)} regions: {tried}. The best is "
            f"{ch.best:.{dec}f} ({ch.best_k} regions); the rule takes the fewest regions whose silhouette is at least "
            f"{ch.cutoff:.{dec}f} (the best minus {SILHOUETTE_TOLERANCE:g}): {ch.n}{also}.")


def structure_note(regions: Regions) -> str | None:
    """What the best silhouette says about the map, in words, when it is weak (0.50 or less, Kaufman &
    Rousseeuw 1990): the regions are then a convenience partition, not natural groups. None when the
    structure is reasonable or strong, or when no silhouette was computed (a number given by the user)."""
    if not regions.silhouette:
        return None
    best = auto_choice(regions.silhouette).best
    word = structure(best)
    if word in ("strong", "reasonable"):
        return None
    text = (f"The best mean silhouette is {best:.3f}: by the usual reading (Kaufman & Rousseeuw 1990: 0.25 or "
            f"less, no substantial structure; 0.26-0.50, weak and possibly artificial) the map has "
            f"{STRUCTURE_WORDS[word]}. ")
    if word == "none":
        return text + ("Its neurons change gradually rather than forming separate groups, so these regions are a "
                       "convenience partition (borders where the weights change fastest), not natural groups; "
                       "another count would split the map about as well.")
    return text + "Read the regions as a rough partition: their borders may not mark real groups of patches."


def summary_rows(regions: Regions, mass: RegionMass | None = None) -> list[dict]:
    """One row per region: name, neurons, share of training patches, and with ``mass`` the shares of test
    patches, test anomaly mass and ground-truth defect cells (percent strings)."""
    rows = []
    for r in range(regions.n):
        row = {"region": Regions.name(r), "neurons": int(regions.neurons[r]),
               "training patches": _pct(regions.train_share[r]),
               "typical neuron": f"({regions.typical[r][0]}, {regions.typical[r][1]})"}
        if mass is not None:
            row["test patches"] = _pct(mass.test_share[r])
            row["test anomaly mass"] = _pct(mass.mass_share[r])
            row["ground-truth defect cells"] = _pct(mass.defect_share[r]) if mass.defect_share is not None \
                else "no ground truth"
        rows.append(row)
    return rows


def breakdown_rows(regions: Regions, b: RegionBreakdown) -> list[dict]:
    """One row per region the image's cells reach: cells, highest patch score, share of the image's
    anomaly mass, ground-truth defect cells."""
    rows = []
    for r in np.flatnonzero(b.cells > 0):
        row = {"region": Regions.name(r), "cells": int(b.cells[r]), "highest patch score": float(b.max_score[r]),
               "share of the image's anomaly mass": _pct(b.mass_share[r])}
        row["ground-truth defect cells"] = int(b.defect_cells[r]) if b.defect_cells is not None else "n/a"
        rows.append(row)
    return rows


def breakdown_sentence(regions: Regions, b: RegionBreakdown, image_name: str) -> str:
    """One sentence: where the image's anomaly lands on the map."""
    hot = Regions.name(b.hottest)
    if not np.isfinite(b.mass_share).any():
        return (f"{image_name}: no patch scores above the training colour range, so it carries no anomaly mass; "
                f"its highest-scoring cell maps to {hot}.")
    top = int(np.nanargmax(b.mass_share))
    text = (f"{image_name}: {_pct(b.mass_share[top])} of its anomaly mass lands in {Regions.name(top)}; "
            f"its highest-scoring cell maps to {hot}.")
    if b.defect_cells is not None and b.defect_cells.sum() > 0:
        d = int(np.argmax(b.defect_cells))
        text += (f" {b.defect_cells[d]} of its {int(b.defect_cells.sum())} ground-truth defect cells map to "
                 f"{Regions.name(d)}.")
    return text
