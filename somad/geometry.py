"""Where a feature cell sits in the image, and how far a backbone's responses sit from their cause.

Convention (the one of bilinear upsampling with ``align_corners=False``): cell ``i`` of a map at
stride ``s`` is centred on pixel ``i * s + (s - 1) / 2``. A pretrained backbone does not honour it
exactly: its response to a small stimulus lands a little off the stimulus, by a per-stage offset
that depends on the padding and the learned kernels. For ``tf_efficientnet_lite0`` the stride-16
stage answers about 1.8 px up and left of its cause, with 0.6 px of scatter over the stimulus's
position within a cell (:func:`dot_offsets` over every phase), which moves every anomaly map by
about as much.

:func:`stage_offsets` measures those offsets with the dot test (a small white square on mid-grey,
at positions covering every phase of the stride-16 grid); :func:`resample_matrix` then reads each
stage at the corrected positions while it is brought to the stride-4 grid, so a feature cell holds
what lies under it. With zero offsets it equals ``F.interpolate(..., mode="bilinear",
align_corners=False)`` exactly.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

DOT_SIDE = 6
"""Side in pixels of the white square of the dot test."""

CALIBRATION_SIZE = 224
"""Side in pixels of the dot-test images that :func:`stage_offsets` measures on. Offsets are a
property of the kernels, in pixels, the same at every image size that is a multiple of 16."""


def cell_centres(n: int, stride: int) -> np.ndarray:
    """Pixel centres float64 ``(n,)`` of ``n`` cells at ``stride``: ``i * stride + (stride - 1) / 2``."""
    return np.arange(n) * stride + (stride - 1) / 2


def resample_matrix(n_out: int, n_in: int, stride_in: int, stride_out: int, offset_px: float = 0.0) -> torch.Tensor:
    """Bilinear weights float32 ``(n_out, n_in)`` that bring one axis of a map at ``stride_in`` to
    ``n_out`` cells at ``stride_out``, reading each output cell's value where its centre lies once
    the input's response offset is undone.

    Args:
        n_out, n_in: cells along the axis. stride_in, stride_out: pixels per cell.
        offset_px: where the input map's responses sit relative to their cause, in pixels (negative:
            up/left). Output cell ``i`` reads the input at pixel ``centre_i + offset_px``.

    Positions are clamped to the first and last input cell (as ``F.interpolate`` does). With
    ``offset_px = 0`` the matrix reproduces ``F.interpolate(mode="bilinear", align_corners=False)``.
    """
    pos = (cell_centres(n_out, stride_out) + offset_px - (stride_in - 1) / 2) / stride_in
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return torch.from_numpy(m.astype(np.float32))


def dot_images(size: int, centres: Sequence[tuple[float, float]]) -> np.ndarray:
    """uint8 ``(1 + len(centres), size, size, 3)``: a mid-grey blank, then one image per centre with a
    :data:`DOT_SIDE` px white square centred on it (centres at half pixels for an even side)."""
    imgs = np.full((1 + len(centres), size, size, 3), 128, np.uint8)
    half = (DOT_SIDE - 1) / 2
    for img, (cy, cx) in zip(imgs[1:], centres):
        y0, x0 = int(round(cy - half)), int(round(cx - half))
        img[y0:y0 + DOT_SIDE, x0:x0 + DOT_SIDE] = 255
    return imgs


def every_phase(size: int = CALIBRATION_SIZE, period: int = 16, step: int = 2) -> list[tuple[float, float]]:
    """Dot centres near the image centre at every ``step``-th phase of a ``period`` px grid in both
    axes (``(period / step) ** 2`` centres), so no position within a cell is favoured."""
    base = size / 2 - period / 2 - 0.5 + (DOT_SIDE % 2) * 0.5
    return [(base + dy, base + dx) for dy in range(0, period, step) for dx in range(0, period, step)]


def dot_offsets(stages_of: Callable[[torch.Tensor], Sequence[torch.Tensor]], strides: Sequence[int], size: int,
                centres: Sequence[tuple[float, float]], offsets: np.ndarray | None = None) -> np.ndarray:
    """The dot test: response centroid minus dot centre, float64 ``(len(centres), len(strides), 2)``
    in pixels (row, col).

    Args:
        stages_of: float ``(B, 3, S, S)`` images in [0, 1] -> one map ``(B, C, h, w)`` per stage
            (e.g. a normalising wrapper around a backbone body).
        strides: pixels per cell of each stage. size: image side in pixels.
        offsets: float ``(len(strides), 2)`` corrections to apply first (the centroid is taken at
            the corrected cell centres), or None for the raw stages.

    The response of a stage is the squared difference from the blank image's map, summed over
    channels; its centroid uses the cell centres of :func:`cell_centres`.
    """
    x = torch.from_numpy(dot_images(size, centres)).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        stages = stages_of(x)
    out = np.zeros((len(centres), len(strides), 2))
    for j, (f, s) in enumerate(zip(stages, strides)):
        resp = (f[1:] - f[:1]).pow(2).sum(1).double()  # (n, h, w)
        shift = (0.0, 0.0) if offsets is None else offsets[j]
        ys = torch.from_numpy(cell_centres(resp.shape[1], s) - shift[0])
        xs = torch.from_numpy(cell_centres(resp.shape[2], s) - shift[1])
        total = resp.sum((1, 2))
        out[:, j, 0] = ((resp.sum(2) * ys).sum(1) / total).numpy()
        out[:, j, 1] = ((resp.sum(1) * xs).sum(1) / total).numpy()
    return out - np.asarray(centres, np.float64)[:, None, :]


def stage_offsets(stages_of: Callable[[torch.Tensor], Sequence[torch.Tensor]], strides: Sequence[int]) -> np.ndarray:
    """Mean dot-test offset float64 ``(len(strides), 2)`` of each stage, in pixels (row, col), over
    16 dots at every 4th phase of the stride-16 grid (:func:`every_phase` with ``step=4``) at
    :data:`CALIBRATION_SIZE` px: what :func:`resample_matrix` undoes. The tests check the residual
    at every 2nd phase, positions the calibration did not see."""
    return dot_offsets(stages_of, strides, CALIBRATION_SIZE, every_phase(step=4)).mean(0)
