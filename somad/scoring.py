"""Patch scores and anomaly maps (SOMAD step 4, Li et al. 2021, Eq. 4-5).

A test patch vector ``x`` is scored by the minimum Mahalanobis distance over
its ``k`` nearest neurons (Euclidean distance to the SOM weights)::

    s(x) = min_{j in kNN(x)} sqrt((x - mu_j)^T C_j^{-1} (x - mu_j))

Batched and exact: one matrix product per chunk finds the ``k`` nearest
neurons (:func:`somad.som.smallest_k`), then the (patch, neuron) pairs are grouped by neuron so each
whitening factor ``A_j`` is read once per chunk (one small matrix product per
neuron that occurs), never gathered per pair. Memory is bounded by ``chunk``.

The patch map (feature cells) is upsampled bilinearly to the input size
(pixels) and blurred with a Gaussian of ``blur_sigma`` pixels. The image score
is one rule of :data:`IMAGE_SCORES` (see :func:`image_scores`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .segments import BLOCK_BYTES, padded_blocks
from .som import exact_bmu

MAX_SEGMENT = 128
"""Longest run of one neuron's (patch, neuron) pairs in one padded product; a test chunk spreads
its pairs over many neurons, so short segments waste little padding."""
PAIR_ROW_FLOATS = 3
"""Floats per feature of one padded pair: its difference to the mean, the whitened product, its square."""
SCORE_CHUNK = 65536
"""Patches per scoring block (21 images at 224 px): the block's (patch, neuron) pairs and their
Mahalanobis distances are held at once (the k-nearest search inside works on 2,048 rows at a time)."""


@dataclass
class PatchScores:
    """Scores of a set of patch vectors.

    Attributes:
        scores: float32 ``(P,)`` minimum Mahalanobis distance.
        neighbours: int64 ``(P, k)`` the k nearest neurons, nearest first (Euclidean).
        mahalanobis: float32 ``(P, k)`` Mahalanobis distance to each of them.
    """

    scores: torch.Tensor
    neighbours: torch.Tensor
    mahalanobis: torch.Tensor

    @property
    def best(self) -> torch.Tensor:
        """int64 ``(P,)`` the neuron that gives the score (argmin of ``mahalanobis``)."""
        return self.neighbours.gather(1, self.mahalanobis.argmin(1, keepdim=True))[:, 0]


def mahalanobis_pairs(x: torch.Tensor, neurons: torch.Tensor, means: torch.Tensor,
                      factors: torch.Tensor, max_segment: int = MAX_SEGMENT,
                      block_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """Mahalanobis distance of each row of ``x`` to each of its neurons.

    The (patch, neuron) pairs are sorted by neuron and cut into segments of at most
    ``max_segment`` pairs of one neuron; segments are padded (:data:`somad.segments.PAD_GRANULE`) and
    every group of equal padded length is one batched matrix product
    (``torch.bmm``), each segment reading its neuron's factor once. No Python loop
    over neurons; memory per product is bounded by ``block_bytes``.

    Args:
        x: float32 ``(P, d)``.
        neurons: int64 ``(P, k)`` neuron per pair.
        means: float32 ``(M, d)``; factors: float32 ``(M, d, d)`` whitening factors.

    Returns:
        float32 ``(P, k)``.
    """
    p, k = neurons.shape
    d = x.shape[1]
    flat = neurons.reshape(-1)
    if flat.numel() == 0:
        return torch.empty((p, k), dtype=x.dtype, device=x.device)
    order = torch.argsort(flat)
    rows = order // k
    counts = torch.bincount(flat, minlength=len(means))
    d2_sorted = torch.empty(flat.numel(), dtype=x.dtype, device=x.device)
    size = x.element_size()
    # a segment also costs its gathered d x d factor
    for nrn, pos, valid in padded_blocks(counts, max_segment, PAIR_ROW_FLOATS * d * size, d * d * size,
                                         block_bytes):
        diff = torch.index_select(x, 0, rows[pos].reshape(-1)).view(*pos.shape, d)
        diff.sub_(torch.index_select(means, 0, nrn)[:, None, :])               # (S, b, d)
        y = torch.bmm(diff, torch.index_select(factors, 0, nrn).transpose(1, 2))  # (S, b, d)
        val = torch.einsum("sbd,sbd->sb", y, y)
        d2_sorted[pos[valid]] = val[valid]
    out = torch.empty_like(d2_sorted)
    out[order] = d2_sorted
    return out.sqrt_().reshape(p, k)


def score_patches(x: torch.Tensor, som_weights: torch.Tensor, means: torch.Tensor, factors: torch.Tensor,
                  k: int = 4, chunk: int = SCORE_CHUNK) -> PatchScores:
    """Score patch vectors ``x`` float32 ``(P, d)`` against a fitted model (all on one device).

    Args:
        som_weights: float32 ``(M, d)`` neuron weights used for the k-nearest search.
        means, factors: per-neuron Gaussians (see :func:`somad.gaussian.whitening_factors`).
        k: nearest neurons considered (the paper's k = 4).
        chunk: patches per block; memory grows with ``chunk * (M + k * d)``.
    """
    k = min(k, len(som_weights))
    scores, neigh, maha = [], [], []
    for s in range(0, len(x), chunk):
        xs = x[s:s + chunk]
        idx, _ = exact_bmu(xs, som_weights, k=k)
        m = mahalanobis_pairs(xs, idx, means, factors)
        scores.append(m.min(1).values)
        neigh.append(idx)
        maha.append(m)
    return PatchScores(torch.cat(scores), torch.cat(neigh), torch.cat(maha))


def gaussian_kernel1d(sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ``round(4 sigma)`` (scipy's default truncation)."""
    radius = max(1, int(4.0 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, H, W)`` maps with reflect padding; ``sigma`` in pixels (0 = none)."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma, maps.device)
    r = len(k) // 2
    x = maps[:, None]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return x[:, 0]


@functools.lru_cache(maxsize=32)
def map_operator(cells: int, image_size: int, blur_sigma: float, device: str = "cpu") -> torch.Tensor:
    """The linear map from one axis of a patch map to one axis of its pixel map: float32
    ``(image_size, cells)``, the bilinear upsampling (``align_corners=False``, as
    ``F.interpolate``) followed by the Gaussian blur with reflect padding (as :func:`gaussian_blur`).
    Both are linear and separable, so ``K_h P K_w^T`` is the blurred upsampled map of ``P``
    ``(h, w)``. Cached; do not modify the result."""
    eye = torch.eye(cells, dtype=torch.float32, device=device)
    up = F.interpolate(eye[None, None], size=(image_size, cells), mode="bilinear", align_corners=False)[0, 0]
    if blur_sigma <= 0:
        return up.contiguous()
    k = gaussian_kernel1d(blur_sigma, device)
    r = len(k) // 2
    cols = F.conv1d(F.pad(up.T[:, None, :], (r, r), mode="reflect"), k.view(1, 1, -1))  # (cells, 1, size)
    return cols[:, 0, :].T.contiguous()


def anomaly_maps(patch_maps: torch.Tensor, image_size: int, blur_sigma: float = 4.0) -> torch.Tensor:
    """Pixel anomaly maps from patch score maps: bilinear upsampling to the input size, then a
    Gaussian blur of ``blur_sigma`` pixels (reflect padding).

    Computed as two matrix products with :func:`map_operator` (``K_h P K_w^T``), equal to
    ``gaussian_blur(F.interpolate(...))`` to float32 rounding (about 5e-7 relative) and about 40x
    cheaper on the CPU than the two padded 1-channel convolutions at 224 px.

    Args:
        patch_maps: float32 ``(B, h, w)`` scores per feature cell.
        image_size: output side in pixels.
        blur_sigma: Gaussian blur sigma in pixels.

    Returns:
        float32 ``(B, image_size, image_size)``.
    """
    dev = str(patch_maps.device)
    k_h = map_operator(patch_maps.shape[1], image_size, float(blur_sigma), dev)
    k_w = map_operator(patch_maps.shape[2], image_size, float(blur_sigma), dev)
    return torch.matmul(torch.matmul(k_h, patch_maps.float()), k_w.T)


TOP_FRACTION = 0.05
"""Share of the pixels averaged by the ``top_mean`` image score (2509 of 224 x 224)."""


def max_score(patch_maps: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Maximum of the blurred pixel map: the SOMAD paper's image score (Li et al. 2021), as in
    PaDiM and PatchCore. One pixel decides, so it follows the noise of the single worst cell."""
    return maps.reshape(len(maps), -1).max(1).values


def top_mean_score(patch_maps: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Mean of the highest :data:`TOP_FRACTION` of the blurred pixel map (at least one pixel): the
    hottest 5 % of the heatmap the user sees. Averaging them keeps a defect that covers them and
    damps a lone noisy cell. Chosen by ``benchmarks/image_score_study.py`` over every category at
    hand (results in ``benchmarks/results/image_score_study.json``): image AUROC rose or held on
    every category and defect type against :func:`max_score`; 2-10 % score alike."""
    flat = maps.reshape(len(maps), -1)
    k = max(1, round(TOP_FRACTION * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(1)


IMAGE_SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "max": max_score,
    "top_mean": top_mean_score,
}
"""Image-score rules by name: ``rule(patch_maps (N, h, w), maps (N, S, S)) -> (N,)``, all float32 in
Mahalanobis units (the model's ``image_score`` hyperparameter picks one; ``max`` was the default before
``top_mean``)."""


def image_scores(rule: str, patch_maps: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Image scores float32 ``(N,)`` by the rule named ``rule`` in :data:`IMAGE_SCORES`.

    Args:
        patch_maps: float32 ``(N, h, w)`` patch scores. maps: float32 ``(N, S, S)`` pixel maps.

    Raises:
        KeyError: an unknown rule (:meth:`SOMAD.fit` checks its ``image_score`` before any work).
    """
    return IMAGE_SCORES[rule](patch_maps, maps)
