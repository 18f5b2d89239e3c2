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


def segment_gram(xs: torch.Tensor, counts: torch.Tensor, max_len: int = GRAM_SEGMENT_ROWS, *,
                 out: torch.Tensor | None = None, alpha: float = 1.0) -> torch.Tensor:
    """``X_j^T X_j`` for consecutive row runs of ``xs`` ``(N, d)`` with lengths ``counts`` ``(M,)``.

    Runs are cut into padded segments (:func:`somad.segments.padded_blocks`), each block of
    segments is one ``bmm`` (padding slots read an appended zero row), and the partial Gram
    matrices are summed per run. Returns ``(M, d, d)``: a new tensor, or ``out`` with
    ``alpha * X_j^T X_j`` added to it.
    """
    m, d = len(counts), xs.shape[1]
    if out is None:
        out = torch.zeros((m, d, d), dtype=xs.dtype, device=xs.device)
    padded_rows = torch.cat([xs, xs.new_zeros(1, d)])
    zero_row = torch.tensor(len(xs), device=xs.device)
    size = xs.element_size()
    # a segment also costs its d x d partial Gram
    for key, pos, valid in padded_blocks(counts, max_len, GRAM_ROW_FLOATS * d * size, d * d * size):
        blk = torch.index_select(padded_rows, 0, torch.where(valid, pos, zero_row).reshape(-1)).view(*pos.shape, d)
        out.index_add_(0, key, blk.transpose(1, 2) @ blk, alpha=alpha)
    return out


def _sorted_by_bmu(x: torch.Tensor, bmu: torch.Tensor, shift: torch.Tensor):
    """``(counts int64 (M,), sorted BMUs, x - shift[bmu] sorted by BMU)``."""
    counts = torch.bincount(bmu, minlength=len(shift))
    order = torch.argsort(bmu)
    sorted_bmu = bmu[order]
    return counts, sorted_bmu, torch.index_select(x, 0, order).sub_(torch.index_select(shift, 0, sorted_bmu))


def accumulate(x: torch.Tensor, bmu: torch.Tensor, shift: torch.Tensor) -> NeuronStats:
    """Statistics of vectors ``x`` float32 ``(N, d)`` grouped by their BMU int64 ``(N,)``.

    Args:
        shift: float32 ``(M, d)`` reference vector per neuron (the SOM weights).
    """
    counts, sorted_bmu, xs = _sorted_by_bmu(x, bmu, shift)
    sums = torch.zeros_like(shift).index_add_(0, sorted_bmu, xs)
    return NeuronStats(counts.float(), sums, segment_gram(xs, counts), shift)


def without(stats: NeuronStats, x: torch.Tensor, bmu: torch.Tensor) -> NeuronStats:
    """``stats - accumulate(x, bmu, stats.shift)`` (the statistics without a cross-fitting fold's
    vectors ``x`` float32 ``(N, d)``, BMUs int64 ``(N,)``) in one new ``(M, d, d)`` buffer: the
    fold's Gram matrices are subtracted from a copy of ``stats.outer`` as they are computed."""
    counts, sorted_bmu, xs = _sorted_by_bmu(x, bmu, stats.shift)
    sums = stats.sums.index_add(0, sorted_bmu, xs, alpha=-1.0)
    outer = segment_gram(xs, counts, out=stats.outer.clone(), alpha=-1.0)
    return NeuronStats(stats.counts - counts.float(), sums, outer, stats.shift)


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


def gaussians(stats: NeuronStats, eps: float = 0.01, shrinkage: float = 10.0, *, inplace: bool = False,
              symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Regularised Gaussians from statistics.

    Args:
        stats: per-neuron statistics; neurons that won nothing take their shift (the SOM weight) as mean.
        eps: ridge added to every covariance (the paper's 0.01 I).
        shrinkage: pseudo-samples of the pooled covariance (``m`` above); 0 disables.
        inplace: turn ``stats.outer`` itself into the covariances (no second ``(M, d, d)`` buffer), for
            statistics made for this call only, such as ``stats - held`` of a cross-fitting fold.
        symmetric: symmetrise the covariances (``(C + C^T) / 2``, removing float32 rounding asymmetry).
            False skips that pass where only a Cholesky factorisation follows (it reads the lower
            triangle) and the covariances themselves are not kept.

    Returns:
        ``(means float32 (M, d), covariances float32 (M, d, d))``.
    """
    n = stats.counts
    delta = stats.sums / n.clamp_min(1)[:, None]  # mean - shift
    nd = (n[:, None] * delta)[:, :, None]
    if inplace:
        scatter = stats.outer.baddbmm_(nd, delta[:, None, :], alpha=-1.0)
    else:
        scatter = torch.baddbmm(stats.outer, nd, delta[:, None, :], alpha=-1.0)
    dof = (n - 1).clamp_min(0)
    # float32 sum over neurons (cascade summation: about 1e-7 relative), finished in float64
    pooled = scatter.sum(0).double() / max(float(dof.sum()), 1.0)
    pooled = (0.5 * (pooled + pooled.T)).float()
    covs = scatter.add_(pooled, alpha=shrinkage).div_((dof + shrinkage).clamp_min(1e-12)[:, None, None])
    few = n == 0 if shrinkage > 0 else n < 2
    if bool(few.any()):
        covs[few] = pooled
    if symmetric:
        covs = torch.add(covs, covs.transpose(1, 2)).mul_(0.5)
    covs.diagonal(dim1=1, dim2=2).add_(eps)
    return stats.shift + delta, covs


def whitening_factors(covariances: torch.Tensor) -> torch.Tensor:
    """Inverse Cholesky factors ``A_j = L_j^{-1}`` with ``C_j = L_j L_j^T``: float32 ``(M, d, d)``.

    The Mahalanobis distance is then ``|A_j (x - mu_j)|``. The ridge ``eps * I`` keeps every
    covariance well conditioned, so float32 suffices. Only the lower triangle of ``covariances``
    is read.

    Raises:
        torch.linalg.LinAlgError: a covariance is not positive definite.
    """
    chol, info = torch.linalg.cholesky_ex(covariances)
    if bool((info != 0).any()):
        bad = int(torch.nonzero(info.reshape(-1))[0, 0])
        raise torch.linalg.LinAlgError(f"covariance {bad} is not positive definite (Cholesky failed at "
                                       f"minor {int(info.reshape(-1)[bad])}).")
    return lower_triangular_inverse(chol)


TRIANGULAR_BLOCK = 32
"""Side at or below which :func:`lower_triangular_inverse` calls LAPACK's triangular solve directly."""


def lower_triangular_inverse(chol: torch.Tensor, block: int = TRIANGULAR_BLOCK) -> torch.Tensor:
    """``L^{-1}`` of lower-triangular ``chol`` float32 ``(..., n, n)`` by 2x2 blocks:
    ``[[L11, 0], [L21, L22]]^{-1} = [[L11^{-1}, 0], [-L22^{-1} L21 L11^{-1}, L22^{-1}]]``.

    Same result as ``torch.linalg.solve_triangular(chol, I)`` to float32 rounding, but the
    off-diagonal blocks are batched matrix products: on 2 CPU cores a batch of 3,136 factors of
    side 100 (a 56x56 SOM at d = 100) took 0.6-1.1 s of CPU against 2.3-9.5 s for the batched solve
    (measured on a loaded machine). The blocks are written into one preallocated result (no
    concatenation): about 0.3 s of CPU for that batch at load average 6 to 8, against 0.5 s for the
    concatenating version it replaced (``benchmarks/profile_partial_fit.py``).
    """
    out = torch.zeros_like(chol)
    _triangular_inverse_into(chol, out, block)
    return out


def _triangular_inverse_into(chol: torch.Tensor, out: torch.Tensor, block: int) -> None:
    """Write ``chol^{-1}`` into ``out`` (a view, zero above the diagonal); see :func:`lower_triangular_inverse`."""
    n = chol.shape[-1]
    if n <= block:
        eye = torch.eye(n, dtype=chol.dtype, device=chol.device).expand_as(chol)
        out.copy_(torch.linalg.solve_triangular(chol.contiguous(), eye, upper=False))
        return
    h = n // 2
    _triangular_inverse_into(chol[..., :h, :h], out[..., :h, :h], block)
    _triangular_inverse_into(chol[..., h:, h:], out[..., h:, h:], block)
    out[..., h:, :h] = out[..., h:, h:] @ (chol[..., h:, :h] @ out[..., :h, :h])
    out[..., h:, :h].neg_()


RECOVER_BLOCK = 512
"""Neurons per float64 block in :func:`recover_stats` (a block, 512 x 100 x 100 doubles = 41 MB at d = 100,
is converted, transformed and written back before the next, instead of whole-batch float64 copies)."""


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
    m, d = means.shape
    dof = (n - 1).clamp_min(0)
    few = n == 0 if shrinkage > 0 else n < 2
    weight = torch.where(few, torch.zeros_like(dof), dof + shrinkage)
    delta = means.double() - shift.double()
    flat = covariances.reshape(m, d * d)
    if shrinkage > 0:  # sum_j weight_j (C_j - eps I), in float64 one block of neurons at a time
        total = torch.zeros(d * d, dtype=torch.float64, device=means.device)
        for s in range(0, m, RECOVER_BLOCK):
            total += weight[s:s + RECOVER_BLOCK] @ flat[s:s + RECOVER_BLOCK].double()
        total = total.view(d, d) - eps * float(weight.sum()) * torch.eye(d, dtype=torch.float64, device=means.device)
        pooled = total / (max(float(dof.sum()), 1.0) + shrinkage * float((~few).sum()))
    outer = torch.empty_like(covariances)
    for s in range(0, m, RECOVER_BLOCK):
        b = slice(s, s + RECOVER_BLOCK)
        c = covariances[b].double()
        c.diagonal(dim1=1, dim2=2).sub_(eps)
        c.mul_(weight[b, None, None])  # S_j + m C_pool (0 for a neuron that won nothing)
        if shrinkage > 0:
            c.view(len(c), d * d).addr_((~few[b]).double(), pooled.reshape(-1), alpha=-shrinkage)
        outer[b] = c.baddbmm_((n[b, None] * delta[b])[:, :, None], delta[b, None, :])
    return NeuronStats(counts.float(), (n[:, None] * delta).float(), outer, shift)
