"""Per-neuron Gaussians of the patch vectors each neuron wins (SOMAD step 3, Li et al. 2021, Eq. 3).

For neuron ``j`` with ``n_j`` won vectors, mean ``mu_j`` and scatter matrix
``S_j = sum (x - mu_j)(x - mu_j)^T``, the covariance is shrunk toward the
pooled within-neuron covariance ``C_pool`` and regularised as in the paper::

    C_j = (S_j + m * C_pool) / (n_j - 1 + m) + eps * I

``m`` (``shrinkage``, in pseudo-samples) matters for neurons with few vectors;
neurons that win nothing take ``C_pool`` and the SOM weight as their mean, never
a zero mean. Statistics are additive (:class:`NeuronStats`), so Gaussians that
leave out a fold of training images cost one subtraction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from .segments import padded_blocks

GRAM_SEGMENT_ROWS = 256
"""Longest segment of one neuron's rows in a Gram product; longer runs are summed over segments."""
GRAM_ROW_FLOATS = 2
"""Floats per feature of one padded row in the Gram product: the gathered row and its masked copy."""


@dataclass
class NeuronStats:
    """Sufficient statistics per neuron, shifted by a fixed reference vector per neuron.

    Vectors are accumulated as ``x - shift_j`` (``shift`` = the SOM weights), which keeps
    float32 sums accurate; statistics with the same shift add and subtract exactly.

    Attributes:
        counts: float32 ``(M,)`` vectors won.
        sums: float32 ``(M, d)`` sum of ``x - shift_j``.
        outer: float32 ``(M, d, d)`` sum of outer products of ``x - shift_j``.
        shift: float32 ``(M, d)``.
    """

    counts: torch.Tensor
    sums: torch.Tensor
    outer: torch.Tensor
    shift: torch.Tensor

    def __sub__(self, other: "NeuronStats") -> "NeuronStats":
        return NeuronStats(self.counts - other.counts, self.sums - other.sums, self.outer - other.outer, self.shift)

    def add_(self, other: "NeuronStats") -> "NeuronStats":
        """Add ``other`` in place (no second ``(M, d, d)`` buffer); returns self."""
        self.counts += other.counts
        self.sums += other.sums
        self.outer += other.outer
        return self


def segment_gram(xs: torch.Tensor, counts: torch.Tensor, max_len: int = GRAM_SEGMENT_ROWS) -> torch.Tensor:
    """``X_j^T X_j`` for consecutive row runs of ``xs`` ``(N, d)`` with lengths ``counts`` ``(M,)``.

    Runs are cut into padded segments (:func:`somad.segments.padded_blocks`), each block of
    segments is one ``bmm``, and the partial Gram matrices are summed per run. Returns ``(M, d, d)``.
    """
    m, d = len(counts), xs.shape[1]
    out = torch.zeros((m, d, d), dtype=xs.dtype, device=xs.device)
    size = xs.element_size()
    # a segment also costs its d x d partial Gram
    for key, pos, valid in padded_blocks(counts, max_len, GRAM_ROW_FLOATS * d * size, d * d * size):
        blk = xs[pos] * valid[..., None]
        out.index_add_(0, key, blk.transpose(1, 2) @ blk)
    return out


def accumulate(x: torch.Tensor, bmu: torch.Tensor, shift: torch.Tensor) -> NeuronStats:
    """Statistics of vectors ``x`` float32 ``(N, d)`` grouped by their BMU int64 ``(N,)``.

    Args:
        shift: float32 ``(M, d)`` reference vector per neuron (the SOM weights).
    """
    m = len(shift)
    counts = torch.bincount(bmu, minlength=m)
    order = torch.argsort(bmu)
    sorted_bmu = bmu[order]
    xs = x[order] - shift[sorted_bmu]
    sums = torch.zeros_like(shift).index_add_(0, sorted_bmu, xs)
    return NeuronStats(counts.float(), sums, segment_gram(xs, counts), shift)


def accumulate_chunks(chunks: Iterable[tuple[int, torch.Tensor]], bmu: torch.Tensor,
                      shift: torch.Tensor) -> NeuronStats:
    """:func:`accumulate` over ``(first row, float32 (c, d))`` chunks of the vectors whose BMUs are
    ``bmu`` int64 ``(N,)``; memory is one chunk's. One chunk gives exactly :func:`accumulate`."""
    total = None
    for start, xc in chunks:
        part = accumulate(xc, bmu[start:start + len(xc)], shift)
        total = part if total is None else total.add_(part)
    if total is None:
        raise ValueError("accumulate_chunks got no vectors.")
    return total


def gaussians(stats: NeuronStats, eps: float = 0.01, shrinkage: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Regularised Gaussians from statistics.

    Args:
        stats: per-neuron statistics; neurons that won nothing take their shift (the SOM weight) as mean.
        eps: ridge added to every covariance (the paper's 0.01 I).
        shrinkage: pseudo-samples of the pooled covariance (``m`` above); 0 disables.

    Returns:
        ``(means float32 (M, d), covariances float32 (M, d, d))``.
    """
    n = stats.counts
    delta = stats.sums / n.clamp_min(1)[:, None]  # mean - shift
    scatter = torch.baddbmm(stats.outer, (n[:, None] * delta)[:, :, None], delta[:, None, :], alpha=-1.0)
    dof = (n - 1).clamp_min(0)
    pooled = scatter.double().sum(0) / max(float(dof.sum()), 1.0)
    pooled = (0.5 * (pooled + pooled.T)).float()
    covs = scatter.add_(pooled, alpha=shrinkage).div_((dof + shrinkage).clamp_min(1e-12)[:, None, None])
    few = n == 0 if shrinkage > 0 else n < 2
    covs[few] = pooled
    covs = 0.5 * (covs + covs.transpose(1, 2))
    covs.diagonal(dim1=1, dim2=2).add_(eps)
    return stats.shift + delta, covs


def whitening_factors(covariances: torch.Tensor) -> torch.Tensor:
    """Inverse Cholesky factors ``A_j = L_j^{-1}`` with ``C_j = L_j L_j^T``: float32 ``(M, d, d)``.

    The Mahalanobis distance is then ``|A_j (x - mu_j)|``. The ridge ``eps * I`` keeps every
    covariance well conditioned, so float32 suffices.

    Raises:
        torch.linalg.LinAlgError: a covariance is not positive definite.
    """
    return lower_triangular_inverse(torch.linalg.cholesky(covariances))


TRIANGULAR_BLOCK = 32
"""Side at or below which :func:`lower_triangular_inverse` calls LAPACK's triangular solve directly."""


def lower_triangular_inverse(chol: torch.Tensor, block: int = TRIANGULAR_BLOCK) -> torch.Tensor:
    """``L^{-1}`` of lower-triangular ``chol`` float32 ``(..., n, n)`` by 2x2 blocks:
    ``[[L11, 0], [L21, L22]]^{-1} = [[L11^{-1}, 0], [-L22^{-1} L21 L11^{-1}, L22^{-1}]]``.

    Same result as ``torch.linalg.solve_triangular(chol, I)`` to float32 rounding, but the
    off-diagonal blocks are batched matrix products: on 2 CPU cores a batch of 3,136 factors of
    side 100 (a 56x56 SOM at d = 100) took 0.6-1.1 s of CPU against 2.3-9.5 s for the batched solve
    (measured on a loaded machine).
    """
    n = chol.shape[-1]
    if n <= block:
        eye = torch.eye(n, dtype=chol.dtype, device=chol.device).expand_as(chol)
        return torch.linalg.solve_triangular(chol.contiguous(), eye, upper=False)
    h = n // 2
    i11 = lower_triangular_inverse(chol[..., :h, :h], block)
    i22 = lower_triangular_inverse(chol[..., h:, h:], block)
    low = -(i22 @ chol[..., h:, :h] @ i11)
    top = torch.cat([i11, i11.new_zeros(*i11.shape[:-1], n - h)], -1)
    return torch.cat([top, torch.cat([low, i22], -1)], -2)


def recover_stats(means: torch.Tensor, covariances: torch.Tensor, counts: torch.Tensor, shift: torch.Tensor,
                  eps: float = 0.01, shrinkage: float = 10.0) -> NeuronStats:
    """The statistics that :func:`gaussians` turned into ``(means, covariances)``, recovered from them.

    :func:`gaussians` is invertible given the counts: with ``dof_j = max(n_j - 1, 0)`` and the
    shrinkage ``m``, a neuron's covariance is ``(S_j + m C_pool) / (dof_j + m) + eps I`` (or
    ``C_pool + eps I`` when it won nothing), and ``C_pool = sum_j S_j / sum_j dof_j``. Summing the
    first equation over those neurons gives ``C_pool = sum_j (C_j - eps I)(dof_j + m) / (sum dof + m K)``
    (K such neurons), then every scatter matrix ``S_j``, then the sums and outer products about
    ``shift``. This is what lets :meth:`somad.model.SOMAD.partial_fit` add vectors to a fitted model
    without keeping the ``(M, d, d)`` statistics on disk. Computed in float64; the result equals the
    accumulated statistics to float32 rounding (about 1e-6 relative).

    Args:
        means: float32 ``(M, d)``; covariances: float32 ``(M, d, d)`` from :func:`gaussians`.
        counts: ``(M,)`` vectors won per neuron. shift: float32 ``(M, d)`` the statistics' shift
            (the SOM weights). eps, shrinkage: the values :func:`gaussians` was called with.

    Returns:
        :class:`NeuronStats` float32 with ``shift``.
    """
    n = counts.double()
    d = means.shape[1]
    eye = torch.eye(d, dtype=torch.float64, device=means.device)
    c0 = covariances.double() - eps * eye
    dof = (n - 1).clamp_min(0)
    few = n == 0 if shrinkage > 0 else n < 2
    weight = torch.where(few, torch.zeros_like(dof), dof + shrinkage)
    if shrinkage > 0:
        total = torch.einsum("m,mij->ij", weight, c0)
        pooled = total / (max(float(dof.sum()), 1.0) + shrinkage * float((~few).sum()))
        scatter = c0 * weight[:, None, None] - shrinkage * pooled * (~few).double()[:, None, None]
    else:
        scatter = c0 * weight[:, None, None]
    delta = means.double() - shift.double()
    outer = scatter + n[:, None, None] * delta[:, :, None] * delta[:, None, :]
    return NeuronStats(counts.float(), (n[:, None] * delta).float(), outer.float(), shift)
