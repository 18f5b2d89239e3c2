"""The training replay (somad.replay): snapshots against U-matrices recomputed by hand from the weights
saved after every epoch, errors against torch.cdist, the optional model file (saved, loaded, absent in
older models, refused when damaged), and the animated figure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from somad import figures
from somad.errors import ModelFileError
from somad.replay import REPLAY_FILE, REPLAY_SAMPLE, Replay, ReplayRecorder
from somad.som import SOM, grid_coordinates


def _umatrix_by_hand(w: np.ndarray, shape: tuple[int, int], topology: str) -> np.ndarray:
    """Mean distance of each neuron to its grid neighbours, neighbours found by their Cartesian distance
    (1 or sqrt 2 on rectangular grids, 1 on hexagonal ones), one neuron at a time."""
    xy = grid_coordinates(shape, topology)
    out = np.zeros(len(w))
    for j in range(len(w)):
        gap = np.linalg.norm(xy - xy[j], axis=1)
        nb = np.flatnonzero((gap > 0.5) & (gap < (1.5 if topology == "rectangular" else 1.1)))
        out[j] = np.mean([np.linalg.norm(w[j] - w[i]) for i in nb])
    return out.reshape(shape)


def _errors_by_hand(x: torch.Tensor, w: torch.Tensor, shape, topology) -> tuple[float, float]:
    d = torch.cdist(x.double(), w.double())
    two = d.topk(2, largest=False).indices
    xy = grid_coordinates(shape, topology)
    gap = np.linalg.norm(xy[two[:, 0].numpy()] - xy[two[:, 1].numpy()], axis=1)
    return float(d.min(1).values.mean()), float(np.mean(gap > (1.5 if topology == "rectangular" else 1.1)))


@pytest.mark.parametrize("backend", ["torch", "minisom"])
@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_snapshots_equal_recomputed_from_saved_weights(topology, backend):
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(400, 6)), dtype=torch.float32)
    shape = (5, 6)
    som = SOM(shape, topology, epochs=4, backend=backend)
    recorder = ReplayRecorder(x, shape, topology, som.schedule())
    saved = []

    def hook(epoch, w):
        saved.append(w.detach().clone())
        recorder(epoch, w)

    som.fit(x, on_epoch=hook)
    rep = recorder.result()
    assert rep.epochs == 4 == len(saved) and rep.sample == 400
    assert not torch.equal(saved[0], saved[-1])  # the map did change between snapshots
    for t, w in enumerate(saved):
        np.testing.assert_allclose(rep.umatrix[t], _umatrix_by_hand(w.numpy(), shape, topology), rtol=1e-5)
        qe, te = _errors_by_hand(x, w, shape, topology)
        assert rep.quantization_error[t] == pytest.approx(qe, rel=1e-5)
        assert rep.topographic_error[t] == pytest.approx(te)
    assert rep.quantization_error[-1] == pytest.approx(som.quantization_error_, rel=1e-6)
    assert rep.topographic_error[-1] == pytest.approx(som.topographic_error_)
    np.testing.assert_allclose(np.c_[rep.sigma, rep.learning_rate], som.schedule())


def test_errors_on_an_even_sample():
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(300, 4)), dtype=torch.float32)
    som = SOM((3, 4), epochs=2)
    rec = ReplayRecorder(x, (3, 4), "rectangular", som.schedule(), sample=50)
    saved = []
    som.fit(x, on_epoch=lambda e, w: (saved.append(w.clone()), rec(e, w)))
    rows = np.linspace(0, 299, 50).round().astype(int)
    assert rec.result().sample == 50
    assert rec.result().quantization_error[0] == pytest.approx(_errors_by_hand(x[rows], saved[0], (3, 4),
                                                                               "rectangular")[0], rel=1e-5)


@pytest.fixture(scope="module")
def replay_model(two_models_env):
    return two_models_env[2], two_models_env[3]


def test_model_keeps_and_reloads_replay(replay_model):
    from somad.persistence import load_model

    out, model = replay_model
    assert (out / REPLAY_FILE).is_file()
    assert model.replay_.epochs == 2 and model.replay_.umatrix.shape == (2, *model.grid_)
    np.testing.assert_allclose(model.replay_.umatrix[-1], model.u_matrix(), rtol=1e-6)
    # the last epoch's error on the fixed subsample = the fitted BMU distances of those same patches
    p = len(model.train_bmu_dist_)
    assert model.replay_.sample == min(p, REPLAY_SAMPLE) < p  # 12 images of 24x24 cells: subsampled
    rows = np.linspace(0, p - 1, model.replay_.sample).round().astype(int)
    assert model.replay_.quantization_error[-1] == pytest.approx(float(model.train_bmu_dist_[rows].mean()), rel=1e-5)
    again = load_model(out)
    np.testing.assert_array_equal(again.replay_.umatrix, model.replay_.umatrix)
    np.testing.assert_array_equal(again.replay_.topographic_error, model.replay_.topographic_error)
    assert (out / REPLAY_FILE).stat().st_size < 3_000_000


def test_model_without_replay_loads_and_damaged_replay_is_named(dash_model_env, replay_model, tmp_path):
    import shutil

    from somad.persistence import load_model

    models, model_dir, _ = dash_model_env
    assert not (model_dir / REPLAY_FILE).exists()
    assert load_model(model_dir).replay_ is None
    bad = tmp_path / "bad"
    shutil.copytree(replay_model[0], bad)
    (bad / REPLAY_FILE).write_bytes(b"not a tensor file")
    with pytest.raises(ModelFileError, match="replay.safetensors.*training replay is damaged"):
        load_model(bad)


def test_replay_shape_checked():
    r = Replay(np.zeros((3, 2, 4), np.float32), *(np.zeros(3) for _ in range(4)))
    with pytest.raises(ValueError, match="grid is 4x2"):
        Replay.from_tensors(r.to_tensors(), (4, 2))


@pytest.mark.parametrize("shape,topology", [((1, 9), "rectangular"), ((1, 9), "hexagonal"),
                                            ((100, 100), "rectangular"), ((100, 100), "hexagonal")])
def test_replay_figure_frames(shape, topology):
    e = 3
    u = np.random.default_rng(0).random((e, *shape)).astype(np.float32)
    rep = Replay(u, np.array([3.0, 2.0, 1.5]), np.array([.3, .2, .1]), np.array([4.0, 2.0, 1.0]), np.ones(3))
    fig = figures.replay_figure(rep, topology)
    assert [f.name for f in fig.frames] == ["1", "2", "3"]
    assert [s.label for s in fig.layout.sliders[0].steps] == ["1", "2", "3"]
    assert fig.layout.updatemenus[0].buttons[0].label.endswith("Play")
    first = fig.frames[0].data[0]
    values = first.z if topology == "rectangular" else first.marker.color
    np.testing.assert_allclose(np.asarray(values, float).ravel(), u[0].ravel(), rtol=1e-6)
    assert list(fig.frames[1].data[1].y) == [2.0]  # the QE marker moves with the epoch


@pytest.mark.parametrize("sample", [None, 500])  # all patches; a subsample read from the patch file
def test_replay_leaves_the_model_unchanged(demo_root, monkeypatch, sample):
    """Keeping snapshots must not change the model: the same fit with and without ``replay`` gives equal
    SOM weights, BMUs, Gaussians and threshold, whether the errors are measured on all patches or a subsample."""
    from conftest import TINY

    from somad import data, replay
    from somad.model import SOMAD

    if sample is not None:
        monkeypatch.setattr(replay, "REPLAY_SAMPLE", sample)
    samples = data.train_samples(demo_root, "tiles")
    images, _ = data.load_split(samples, TINY["image_size"])
    paths = [str(s.path) for s in samples]
    plain = SOMAD(**TINY).fit(images, paths)
    kept = SOMAD(**TINY).fit(images, paths, replay=True)
    assert plain.replay_ is None and kept.replay_.epochs == TINY["epochs"]
    assert kept.replay_.sample == (sample or len(plain.train_bmu_))
    assert torch.equal(plain.som_weights_, kept.som_weights_)
    assert torch.equal(plain.train_bmu_, kept.train_bmu_)
    assert torch.equal(plain.means_, kept.means_)
    assert plain.threshold_ == kept.threshold_
    assert plain.quantization_error_ == kept.quantization_error_


def test_caption_says_what_the_errors_are_measured_on():
    rep = Replay(np.zeros((2, 2, 2), np.float32), np.ones(2), np.array([0.01, 0.3]), np.ones(2), np.ones(2),
                 sample=REPLAY_SAMPLE)
    from somad import replay

    sub = replay.caption(rep, 125440)
    assert f"{REPLAY_SAMPLE:,} of the 125,440 training patches" in sub and "same every epoch" in sub
    assert "all 4,096 training patches" in replay.caption(rep, REPLAY_SAMPLE)
    assert "topographic error often rises" in sub and "Kiviluoto 1996" in sub and "Kohonen" in sub
