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


def test_streamed_fit_equals_in_memory_fit(monkeypatch, demo_root):
    """Same seed and data: the disk-streamed fit (several chunks) gives the in-memory model:
    the BMU of every training patch exactly, everything else within float tolerance."""
    from conftest import TINY
    from somad import data
    from somad.model import SOMAD

    monkeypatch.setattr(patches, "CHUNK_ROWS", 2048)  # 12 images x 256 patches = 2 chunks
    files = data.ImageFiles([s.path for s in data.train_samples(demo_root, "tiles")], TINY["image_size"])
    ref = SOMAD(**TINY).fit(files[0:len(files)], patch_store="memory")
    got = SOMAD(**TINY).fit(files)
    assert torch.equal(got.train_bmu_, ref.train_bmu_)
    np.testing.assert_array_equal(got.threshold_indices_, ref.threshold_indices_)
    for name in ("som_weights_", "means_", "covariances_", "train_bmu_dist_"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.train_scores_, ref.train_scores_, rtol=1e-4)
    assert got.threshold_ == pytest.approx(ref.threshold_, rel=1e-4)
    assert got.pixel_range_ == pytest.approx(ref.pixel_range_, rel=1e-4)
    assert got.quantization_error_ == pytest.approx(ref.quantization_error_, rel=1e-5)
    assert got.topographic_error_ == ref.topographic_error_


def test_fit_refuses_what_disk_or_memory_cannot_hold(monkeypatch):
    from somad.errors import ResourceError

    Usage = type("Usage", (), {"free": 10 << 20})
    monkeypatch.setattr(patches.shutil, "disk_usage", lambda _: Usage)
    # 3136 patches x 100 features x 4 bytes = 1.2 MB an image on disk: 10 MB hold 8 images;
    # in memory 1.28 MB an image (vectors + 28 bytes of BMU arrays a patch): 100 MB hold 78
    with pytest.raises(ResourceError, match=r"needs 2\.3 GB of temporary disk .* --max-train-images 8 or fewer"):
        patches.check_resources(2000, 3136, 100)
    monkeypatch.setattr(patches, "available_memory", lambda: patches.WORKING_BYTES + (100 << 20))
    with pytest.raises(ResourceError, match=r"of memory .* --max-train-images 78 or fewer"):
        patches.check_resources(2000, 3136, 100, store="memory")
    patches.check_resources(5, 3136, 100)  # fits
