"""Static pictures of results: heatmap overlays, contours and comparison figures (matplotlib, Agg).

Anomaly maps are coloured with one :class:`HeatScale` per category (the model's training range and
the pixel threshold), never per image, so colours are comparable across images. The dashboard, the
``predict`` overlays, ``evaluate``'s figures and the HTML report all colour through :func:`overlay`.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.colors  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import binary_dilation  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .data import image_shape, resize_to  # noqa: E402
from .decision import is_anomalous  # noqa: E402

GT_COLOR = (0, 255, 0)  # ground-truth contours
PRED_COLOR = (255, 0, 0)  # predicted-region contours

HEAT_COLORS = (  # (position on the scale, RGB 0-1): blues below the pixel threshold, warm colours above
    (0.0, (0.02, 0.03, 0.35)), (0.3, (0.08, 0.33, 0.90)), (0.4999, (0.55, 0.92, 1.00)),
    (0.5, (1.00, 0.93, 0.15)), (0.66, (1.00, 0.55, 0.00)), (0.82, (0.85, 0.06, 0.03)),
    (1.0, (0.45, 0.00, 0.35)))
"""The colour map: navy -> blue up to the top of the training maps, blue -> light cyan up to the
pixel threshold, then yellow at the threshold (a colour edge where the red outline runs) -> orange
-> red -> purple."""
HEAT_CMAP = matplotlib.colors.LinearSegmentedColormap.from_list("somad_heat", list(HEAT_COLORS), N=1024)
HEAT_COLORSCALE = [[pos, "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * np.asarray(rgb)))] for pos, rgb in HEAT_COLORS]
""":data:`HEAT_COLORS` as a plotly colorscale over positions 0..1 (plotly interpolates linearly in RGB between
the stops, as :data:`HEAT_CMAP` does): a plotly trace coloured by :meth:`HeatScale.normalise` positions with
``cmin=0, cmax=1`` shows a score in the colour :meth:`HeatScale.colorize` gives its heatmap pixel."""
TRAIN_TOP_AT = 0.3
"""Position of the training maps' top on the scale when the pixel threshold lies above it."""
HOT_DECADES = 0.5
"""Scores above the pixel threshold are coloured on a log scale from the threshold to
``threshold * 10**HOT_DECADES`` (3.2x): a defect's hot core keeps its shape inside a large hot area
instead of saturating (MVTec bottle's defects reach 3x its training maps' top, the demo tiles' 5x)."""


@dataclass(frozen=True)
class HeatScale:
    """One category's colour scale for anomaly maps (Mahalanobis units); never chosen per image.

    Three pieces: linear from ``lo`` (navy) to ``mid``, the top of the training maps (blue), so
    defect-free regions stay dark blue; linear from ``mid`` to ``knee``, the pixel threshold (light
    cyan): unusual but not flagged; at ``knee`` the colour jumps to yellow, and above it scores are
    log-scaled up to ``top`` (orange, red, purple), so a large hot area still shows where it is
    hottest. When the threshold is the training top (``predict``), the middle piece is empty.
    Chosen by looking at MVTec bottle, magnetic tile and the demo tiles (``docs/heatmaps_*.png``).

    Attributes:
        lo: score at the bottom (``pixel_range_[0]``). mid: training maps' top (``pixel_range_[1]``,
        at most ``knee``). knee: the pixel threshold. top: ``knee * 10**HOT_DECADES``.
    """

    lo: float
    mid: float
    knee: float
    top: float

    @classmethod
    def for_model(cls, pixel_range: tuple[float, float], pixel_threshold: float | None = None) -> "HeatScale":
        """The scale of a model: ``pixel_range`` = ``model.pixel_range_`` (training maps), knee at
        ``pixel_threshold`` (:func:`pixel_threshold`; default the range's top, as ``predict`` uses)."""
        lo, hi = (float(v) for v in pixel_range)
        knee = float(hi if pixel_threshold is None or not np.isfinite(pixel_threshold) else pixel_threshold)
        knee = max(knee, lo + 1e-6, 1e-6)
        return cls(lo, min(max(hi, lo), knee), knee, knee * 10 ** HOT_DECADES)

    def normalise(self, amap: np.ndarray) -> np.ndarray:
        """Float64 positions in [0, 1] of float ``(H, W)`` scores on this scale (0.5 = the knee)."""
        a = np.asarray(amap, dtype=np.float64)
        split = TRAIN_TOP_AT if self.mid < self.knee else 0.5
        low = split * np.clip((a - self.lo) / max(self.mid - self.lo, 1e-12), 0, 1)
        middle = split + (0.5 - split) * np.clip((a - self.mid) / max(self.knee - self.mid, 1e-12), 0, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            hot = 0.5 + 0.5 * np.clip(np.log(np.maximum(a, 1e-12) / self.knee) / np.log(self.top / self.knee), 0, 1)
        return np.where(a >= self.knee, hot, np.where(a > self.mid, middle, low))

    def colorize(self, amap: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(H, W, 3)`` of float ``(H, W)`` scores."""
        return (HEAT_CMAP(self.normalise(amap))[..., :3] * 255).astype(np.uint8)

    def ticks(self) -> list[tuple[float, float, str]]:
        """The colour bar's ticks: ``(position 0..1, score, label)`` at the bottom, the training maps' top,
        the pixel threshold, the middle of the log piece and the top (the middle one dropped when it is
        the threshold). Every colour bar of anomaly scores uses these (:func:`somad.figures.heat_colorbar`)."""
        values = [self.lo, self.mid, self.knee, self.knee * 10 ** (HOT_DECADES / 2), self.top]
        keep = [v for i, v in enumerate(values) if i == 0 or v > values[i - 1] + 1e-9 * max(1.0, abs(v))]
        pos = self.normalise(np.asarray(keep, dtype=np.float64))
        return [(float(p), float(v), f"{v:.1f}") for p, v in zip(pos, keep)]

    def describe(self) -> str:
        """The scale in words, for captions."""
        middle = (f", light blue up to the pixel threshold {self.knee:.1f}" if self.mid < self.knee
                  else f" = the pixel threshold")
        return (f"One colour scale for the category: dark blue up to {self.mid:.1f} (the top of the training "
                f"images' maps){middle}; from there yellow, orange, red and purple on a log scale up to "
                f"{self.top:.1f} (Mahalanobis units).")


def as_shown(path, *arrays: np.ndarray | None, side: int = 512) -> list[np.ndarray | None]:
    """``arrays`` (square, at the model's size: uint8 RGB, float maps, bool masks) resized to the
    aspect ratio of image file ``path`` (:func:`somad.data.image_shape`), longest side ``side`` px;
    a bool mask stays bool. Unreadable ``path``: returned as they are."""
    try:
        h, w = image_shape(path)
    except Exception:  # noqa: BLE001 (a picture is still shown, square)
        return list(arrays)
    scale = side / max(h, w)
    return [at_shape(a, (max(1, round(h * scale)), max(1, round(w * scale)))) for a in arrays]


def at_shape(arr: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """``arr`` (uint8 RGB, float map or bool mask) resized to ``shape`` (H, W) with
    :func:`somad.data.resize_to`; a bool mask stays bool (cut at 0.5)."""
    if arr is None:
        return None
    if arr.dtype == bool:
        return resize_to(arr.astype(np.float32), shape) >= 0.5
    return resize_to(arr, shape)


def heat_scale(pixel_range: tuple[float, float], metrics: dict | None = None) -> HeatScale:
    """The category's :class:`HeatScale`: the model's ``pixel_range`` (``model.pixel_range_``) with
    the knee at :func:`pixel_threshold` of ``metrics`` (an evaluation's; None without one, as in
    ``predict``). Every heatmap of somad is coloured through this one function."""
    return HeatScale.for_model(pixel_range, pixel_threshold(metrics, pixel_range))


def colorize(amap: np.ndarray, scale: HeatScale) -> np.ndarray:
    """Map float ``(H, W)`` scores to uint8 RGB ``(H, W, 3)`` on the category's ``scale``."""
    return scale.colorize(amap)


def overlay(image: np.ndarray, amap: np.ndarray, scale: HeatScale, alpha: float = 0.5) -> np.ndarray:
    """Blend uint8 RGB ``(H, W, 3)`` with the map coloured on ``scale``; returns uint8 ``(H, W, 3)``.

    A map of another shape (e.g. the model's square ``(S, S)`` map on an image at its own
    geometry, see :func:`somad.data.display_shape`) is first resized to the image with
    :func:`somad.data.resize_to`.
    """
    if amap.shape != image.shape[:2]:
        amap = resize_to(amap, image.shape[:2])
    heat = colorize(amap, scale).astype(np.float32)
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


def comparison_figure(image: np.ndarray, mask: np.ndarray, amap: np.ndarray, scale: HeatScale,
                      threshold: float, title: str, path: str | Path) -> Path:
    """Save input | ground truth | heatmap | contours (predicted red, truth green) as a PNG.

    Args:
        image: uint8 ``(H, W, 3)``; mask: bool ``(H, W)``; amap: float ``(H, W)`` (at the model's
            square size, or back at the input's aspect ratio with :func:`as_shown`).
        scale: the category's colour scale; threshold: pixel threshold for the predicted region.
    """
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    panels = [image, region_contours(image, mask), overlay(image, amap, scale),
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
