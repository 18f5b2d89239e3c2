"""Streaming fit building blocks: the patch file, the chunked SOM epochs and Gaussian statistics
equal the in-memory path."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from somad import patches
from somad.gaussian import accumulate, accumulate_chunks
from somad.som import SOM


def _blobs(n=6000, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, d, generator=g) * 4
    return centres[torch.randint(12, (n,), generator=g)] + torch.randn(n, d, generator=g)


def test_patch_file_round_trip_and_cleanup(monkeypatch):
    monkeypatch.setattr(patches, "CHUNK_ROWS", 1000)
    x = _blobs(2500)
    with patches.PatchFile(x.shape[1]) as store:
        store.append(x[:1200])
        store.append(x[1200:])
        folder = store.path.parent
        assert store.n_rows == 2500 and os.path.getsize(store.path) == 2500 * 8 * 4
        starts = [(s, len(c)) for s, c in store.chunks()]
        assert starts == [(0, 1000), (1000, 1000), (2000, 500)]
        assert torch.equal(torch.cat([c for _, c in store.chunks()]), x)
        rows = np.r_[5, 6, 7, 2400, 3]
        assert torch.equal(store.take(rows), x[rows])
        with pytest.raises(ValueError, match=r"needs \(rows, 8\) rows"):
            store.append(x[:, :3])
    assert not folder.exists()


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_streamed_som_equals_in_memory(monkeypatch, topology):
    monkeypatch.setattr(patches, "CHUNK_ROWS", 2048)
    x = _blobs()
    init = x[:48].clone()
    prior = torch.arange(len(x)) % 48
    kw = dict(shape=(6, 8), topology=topology, epochs=5, search_radius=2, seed=0)
    ref = SOM(**kw).fit(x, init=init, prior_bmu=prior)
    with patches.PatchFile(x.shape[1]) as store:
        store.append(x)
        got = SOM(**kw).fit(store, init=init, prior_bmu=prior)
    assert torch.equal(got.bmu_, ref.bmu_)  # the BMU of every training vector, exactly
    torch.testing.assert_close(got.weights_, ref.weights_, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.bmu_dist_, ref.bmu_dist_, rtol=1e-5, atol=1e-5)
    assert got.quantization_error_ == pytest.approx(ref.quantization_error_, rel=1e-6)
    assert got.topographic_error_ == pytest.approx(ref.topographic_error_, abs=1e-9)
    assert 0 < ref.topographic_error_ < 1


def test_chunked_statistics_equal_one_pass():
    x = _blobs(3000)
    shift = x[:10].clone()
    bmu = torch.cdist(x, shift).argmin(1)
    one = accumulate(x, bmu, shift)
    chunks = [(s, x[s:s + 700]) for s in range(0, len(x), 700)]
    many = accumulate_chunks(chunks, bmu, shift)
    assert torch.equal(many.counts, one.counts)
    torch.testing.assert_close(many.sums, one.sums, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(many.outer, one.outer, rtol=1e-5, atol=1e-3)
    single = accumulate_chunks([(0, x)], bmu, shift)
    assert torch.equal(single.outer, one.outer)
    with pytest.raises(ValueError, match="got no vectors"):
        accumulate_chunks([], bmu, shift)
