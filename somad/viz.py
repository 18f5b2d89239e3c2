"""Static pictures of results: heatmap overlays, contours and comparison figures (matplotlib, Agg).

Anomaly maps are coloured on one fixed range per model (``model.pixel_range_``,
from training data), never per image, so colours are comparable across images.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import binary_dilation  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .data import resize_to  # noqa: E402
from .decision import is_anomalous  # noqa: E402

CMAP = "jet"
GT_COLOR = (0, 255, 0)  # ground-truth contours
PRED_COLOR = (255, 0, 0)  # predicted-region contours


def colorize(amap: np.ndarray, vmin: float, vmax: float, cmap: str = CMAP) -> np.ndarray:
    """Map float ``(H, W)`` scores to uint8 RGB ``(H, W, 3)`` on the fixed range [vmin, vmax]."""
    norm = np.clip((np.asarray(amap, dtype=np.float64) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    return (matplotlib.colormaps[cmap](norm)[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5) -> np.ndarray:
    """Blend uint8 RGB ``(H, W, 3)`` with the colourised map; returns uint8 ``(H, W, 3)``.

    A map of another shape (e.g. the model's square ``(S, S)`` map on an image at its own
    geometry, see :func:`somad.data.display_shape`) is first resized to the image with
    :func:`somad.data.resize_to`.
    """
    if amap.shape != image.shape[:2]:
        amap = resize_to(amap, image.shape[:2])
    heat = colorize(amap, vmin, vmax).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + heat * alpha).astype(np.uint8)


def pixel_threshold(metrics: dict | None, pixel_range: tuple[float, float]) -> float:
    """The **pixel threshold**: the anomaly-map value whose contour is the predicted region.

    It is the pixel F1-optimal threshold of an evaluation (``metrics["pixel_f1_threshold"]``, chosen
    with the test masks) when there is one, else the top of the model's pixel colour range
    (``pixel_range[1]``, from training data). The CLI's comparison figures and the dashboard both
    use this function. The image threshold (``model.threshold_``) is a different quantity: it cuts
    the image score (``somad.scoring.IMAGE_SCORES``, e.g. the mean of the map's hottest 5 %), not
    the map, so an image can be flagged while no pixel of its map reaches the pixel threshold
    (see :func:`region_caption`).
    """
    value = (metrics or {}).get("pixel_f1_threshold")
    return float(value) if value is not None and np.isfinite(value) else float(pixel_range[1])


CONTOUR_PX_PER_SIDE = 200
"""Outline thickness: one pixel per this many pixels of the image's longer side, at least 2."""


def contour_width(shape: tuple[int, ...]) -> int:
    """Outline thickness in pixels for an image of ``shape`` (H, W[, C]): 2 up to 500 px, 5 at 1024 px."""
    return max(2, round(max(shape[:2]) / CONTOUR_PX_PER_SIDE))


def draw_contours(image: np.ndarray, mask: np.ndarray, color=(255, 0, 0)) -> np.ndarray:
    """Copy of uint8 RGB ``image`` with the outline of bool ``mask`` ``(H, W)`` drawn in ``color``.

    The outline runs inside the region, :func:`contour_width` pixels thick, and is closed: where the
    region reaches the image's edge, the edge is part of it (a region covering the whole image is
    framed)."""
    out = image.copy()
    if mask.any():
        line = find_boundaries(np.pad(mask, 1), mode="inner")[1:-1, 1:-1]
        width = contour_width(mask.shape)
        if width > 1:  # scipy reads iterations=0 as "until nothing changes"
            line = binary_dilation(line, iterations=width - 1, mask=mask)
        out[line] = color
    return out


def region_contours(image: np.ndarray, mask: np.ndarray | None = None, amap: np.ndarray | None = None,
                    threshold: float | None = None) -> np.ndarray:
    """Image with the predicted region (:func:`somad.decision.is_anomalous` of ``amap`` at the pixel
    ``threshold``, see :func:`pixel_threshold`) outlined red and the truth ``mask`` green."""
    out = image
    if amap is not None and threshold is not None:
        out = draw_contours(out, is_anomalous(amap, threshold), PRED_COLOR)
    if mask is not None:
        out = draw_contours(out, np.asarray(mask, dtype=bool), GT_COLOR)
    return out


def region_caption(amap: np.ndarray, threshold: float) -> str:
    """What the predicted-region panel of ``amap`` (float ``(H, W)``) shows at the pixel ``threshold``:
    the rule, or, when no pixel reaches it, that nothing is outlined and how far the map's top is."""
    top = float(np.max(amap))
    if is_anomalous(top, threshold):
        return f"predicted region: map ≥ pixel threshold {threshold:.3f} (red); truth (green)"
    return (f"no pixel reaches the pixel threshold {threshold:.3f} (map top {top:.3f}): nothing outlined; "
            "truth (green)")


def comparison_figure(image: np.ndarray, mask: np.ndarray, amap: np.ndarray, vmin: float, vmax: float,
                      threshold: float, title: str, path: str | Path) -> Path:
    """Save input | ground truth | heatmap | contours (predicted red, truth green) as a PNG.

    Args:
        image: uint8 ``(S, S, 3)``; mask: bool ``(S, S)``; amap: float ``(S, S)``.
        vmin, vmax: the model's fixed colour range; threshold: pixel threshold for the predicted region.
    """
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    panels = [image, region_contours(image, mask), overlay(image, amap, vmin, vmax),
              region_contours(image, mask, amap, threshold)]
    names = ["input", "ground truth", "heatmap", textwrap.fill(region_caption(amap, threshold), 42)]
    for ax, pic, name in zip(axes, panels, names):
        ax.imshow(pic)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return Path(path)
