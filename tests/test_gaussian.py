"""Per-neuron Gaussians: sufficient statistics, shrinkage, empty neurons, whitening."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from somad.gaussian import accumulate, gaussians, segment_gram, whitening_factors


def _data(seed=0, n=600, m=6, d=5):
    g = torch.Generator().manual_seed(seed)
    shift = torch.randn(m, d, generator=g) * 10 + 50
    bmu = torch.randint(0, m - 1, (n,), generator=g)  # neuron m-1 wins nothing
    x = shift[bmu] + torch.randn(n, d, generator=g)
    return x, bmu, shift


def test_gaussians_match_direct_formula():
    x, bmu, shift = _data()
    eps, m_shrink = 0.01, 3.0
    means, covs = gaussians(accumulate(x, bmu, shift), eps=eps, shrinkage=m_shrink)
    X, B = x.double().numpy(), bmu.numpy()
    scat, dof = [], []
    for j in range(5):
        xj = X[B == j]
        mu = xj.mean(0)
        scat.append((xj - mu).T @ (xj - mu))
        dof.append(len(xj) - 1)
        np.testing.assert_allclose(means[j].numpy(), mu, rtol=1e-5)
    pooled = sum(scat) / sum(dof)
    for j in range(5):
        want = (scat[j] + m_shrink * pooled) / (dof[j] + m_shrink) + eps * np.eye(5)
        np.testing.assert_allclose(covs[j].numpy(), want, rtol=1e-4, atol=1e-5)
    # a neuron that wins nothing: its SOM weight as mean (never zero), pooled covariance
    np.testing.assert_allclose(means[5].numpy(), shift[5].numpy())
    np.testing.assert_allclose(covs[5].numpy(), pooled + eps * np.eye(5), rtol=1e-4, atol=1e-5)


def test_statistics_subtract_exactly():
    x, bmu, shift = _data(1)
    held = torch.arange(len(x)) % 3 == 0
    full = accumulate(x, bmu, shift)
    rest = full - accumulate(x[held], bmu[held], shift)
    direct = accumulate(x[~held], bmu[~held], shift)
    for a, b in ((rest.counts, direct.counts), (rest.sums, direct.sums), (rest.outer, direct.outer)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_segment_gram_equals_loop():
    g = torch.Generator().manual_seed(2)
    counts = torch.tensor([0, 1, 5, 17, 64, 3])
    xs = torch.randn(int(counts.sum()), 4, generator=g)
    got = segment_gram(xs, counts)
    start = 0
    for j, n in enumerate(counts.tolist()):
        blk = xs[start:start + n]
        torch.testing.assert_close(got[j], blk.T @ blk)
        start += n


def test_whitening_gives_mahalanobis():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 6, 6, generator=g)
    covs = a @ a.transpose(1, 2) + 0.5 * torch.eye(6)
    f = whitening_factors(covs)
    v = torch.randn(4, 6, generator=g)
    got = ((f @ v[..., None])[..., 0] ** 2).sum(1)
    want = torch.einsum("bi,bij,bj->b", v.double(), torch.linalg.inv(covs.double()), v.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_blocked_triangular_inverse_equals_the_solve():
    from somad.gaussian import lower_triangular_inverse

    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 70, 70, generator=g, dtype=torch.float64)
    chol = torch.linalg.cholesky(a @ a.transpose(1, 2) / 70 + 0.05 * torch.eye(70, dtype=torch.float64))
    want = torch.linalg.solve_triangular(chol, torch.eye(70, dtype=torch.float64).expand_as(chol), upper=False)
    got = lower_triangular_inverse(chol.float(), block=16).double()
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5
    assert torch.equal(got.triu(1), torch.zeros_like(got))  # stays lower-triangular


def _stats_case(shrinkage_neurons=6, d=5):
    """Vectors on 6 neurons: neuron 0 wins nothing, neuron 1 one vector, the others several."""
    g = torch.Generator().manual_seed(11)
    bmu = torch.tensor([1] + [2] * 7 + [3] * 4 + [4] * 9 + [5] * 3)
    x = torch.randn(len(bmu), d, generator=g) * 2 + bmu[:, None].float()
    shift = torch.randn(shrinkage_neurons, d, generator=g) + torch.arange(shrinkage_neurons)[:, None].float()
    return x, bmu, shift


@pytest.mark.parametrize("shrinkage", [10.0, 0.0])
def test_recover_stats_inverts_gaussians(shrinkage):
    from somad.gaussian import recover_stats

    x, bmu, shift = _stats_case()
    stats = accumulate(x, bmu, shift)
    means, covs = gaussians(stats, 0.01, shrinkage)
    back = recover_stats(means, covs, stats.counts.long(), shift, 0.01, shrinkage)
    torch.testing.assert_close(back.counts, stats.counts)
    torch.testing.assert_close(back.sums, stats.sums, rtol=1e-5, atol=1e-5)
    use = stats.counts >= (1 if shrinkage > 0 else 2)  # without shrinkage a one-vector neuron has no scatter to recover
    torch.testing.assert_close(back.outer[use], stats.outer[use], rtol=1e-5, atol=1e-4)


def test_without_equals_subtracting_a_fold():
    from somad.gaussian import without

    x, bmu, shift = _stats_case()
    stats = accumulate(x, bmu, shift)
    fold = torch.arange(len(x)) % 3 == 0
    got = without(stats, x[fold], bmu[fold])
    want = stats - accumulate(x[fold], bmu[fold], shift)
    for name in ("counts", "sums", "outer"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-5)
    assert float(got.counts.sum()) == len(x) - int(fold.sum())
    torch.testing.assert_close(stats.outer, accumulate(x, bmu, shift).outer)  # stats left as it was


def test_fold_gaussians_in_place_unsymmetrised_whiten_alike():
    x, bmu, shift = _stats_case()
    stats = accumulate(x, bmu, shift)
    means, covs = gaussians(stats, 0.01, 10.0)
    kept = stats.outer.clone()
    means2, covs2 = gaussians(stats - accumulate(x[:0], bmu[:0], shift), 0.01, 10.0, inplace=True, symmetric=False)
    torch.testing.assert_close(means2, means)
    torch.testing.assert_close(whitening_factors(covs2), whitening_factors(covs), rtol=1e-5, atol=1e-5)
    assert torch.equal(stats.outer, kept)  # only the temporary difference was overwritten
