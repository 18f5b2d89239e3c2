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

import torch


@dataclass
class NeuronStats:
    """Sufficient statistics per neuron, float64.

    Attributes:
        counts: ``(M,)`` vectors won.
        sums: ``(M, d)`` sum of won vectors.
        outer: ``(M, d, d)`` sum of outer products of won vectors.
    """

    counts: torch.Tensor
    sums: torch.Tensor
    outer: torch.Tensor

    def __sub__(self, other: "NeuronStats") -> "NeuronStats":
        return NeuronStats(self.counts - other.counts, self.sums - other.sums, self.outer - other.outer)


def accumulate(x: torch.Tensor, bmu: torch.Tensor, n_neurons: int) -> NeuronStats:
    """Statistics of vectors ``x`` float ``(N, d)`` grouped by their BMU int64 ``(N,)``."""
    d = x.shape[1]
    dev = x.device
    counts = torch.bincount(bmu, minlength=n_neurons).to(torch.float64)
    order = torch.argsort(bmu)
    xs = x[order].to(torch.float64)
    sums = torch.zeros((n_neurons, d), dtype=torch.float64, device=dev).index_add_(0, bmu[order], xs)
    outer = torch.zeros((n_neurons, d, d), dtype=torch.float64, device=dev)
    start = 0
    for j, n in enumerate(counts.long().tolist()):
        if n:
            blk = xs[start:start + n]
            outer[j] = blk.T @ blk
            start += n
    return NeuronStats(counts, sums, outer)


def gaussians(stats: NeuronStats, fallback_means: torch.Tensor, eps: float = 0.01,
              shrinkage: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Regularised Gaussians from statistics.

    Args:
        stats: per-neuron statistics.
        fallback_means: float ``(M, d)`` means of neurons that won nothing (the SOM weights).
        eps: ridge added to every covariance (the paper's 0.01 I).
        shrinkage: pseudo-samples of the pooled covariance (``m`` above); 0 disables.

    Returns:
        ``(means float32 (M, d), covariances float32 (M, d, d))``.
    """
    n = stats.counts
    d = stats.sums.shape[1]
    means = stats.sums / n.clamp_min(1)[:, None]
    scatter = torch.baddbmm(stats.outer, (n[:, None] * means)[:, :, None], means[:, None, :], alpha=-1.0)
    dof = (n - 1).clamp_min(0)
    pooled = scatter.sum(0) / max(float(dof.sum()), 1.0)
    pooled = 0.5 * (pooled + pooled.T)
    scatter.add_(pooled, alpha=shrinkage).div_((dof + shrinkage).clamp_min(1e-12)[:, None, None])
    covs = scatter.float()
    few = n == 0 if shrinkage > 0 else n < 2
    covs[few] = pooled.float()
    covs = 0.5 * (covs + covs.transpose(1, 2))
    covs.diagonal(dim1=1, dim2=2).add_(eps)
    means[n == 0] = fallback_means[n == 0].to(torch.float64)
    return means.float(), covs


def whitening_factors(covariances: torch.Tensor) -> torch.Tensor:
    """Inverse Cholesky factors ``A_j = L_j^{-1}`` with ``C_j = L_j L_j^T``: float32 ``(M, d, d)``.

    The Mahalanobis distance is then ``|A_j (x - mu_j)|``. The ridge ``eps * I`` keeps every
    covariance well conditioned, so float32 suffices.

    Raises:
        torch.linalg.LinAlgError: a covariance is not positive definite.
    """
    chol = torch.linalg.cholesky(covariances)
    eye = torch.eye(covariances.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
    return torch.linalg.solve_triangular(chol, eye, upper=False)
