"""Pictures for the dashboard (pure numpy/PIL): overlays, contours, highlighted cells, uploads."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from somad import data
from somad.errors import DataError
from somad.viz import GT_COLOR, PRED_COLOR, draw_contours, heat_scale, overlay, region_contours  # noqa: F401
from somad.viz import at_shape as viz_at_shape

from .config import MAX_UPLOAD_PIXELS

CELL_COLOR = (255, 45, 85)


def heat_overlay(image: np.ndarray, amap: np.ndarray, scale) -> np.ndarray:
    """Heatmap overlay on the category's colour ``scale`` (:func:`somad.viz.heat_scale`, never per
    image): uint8 ``(H, W, 3)`` like ``image``."""
    return overlay(image, amap, scale)


contours = region_contours  # ground truth green, predicted region red (shared with the CLI's figures)


at_shape = viz_at_shape  # square pictures back to their image's aspect ratio (somad.viz.at_shape)


def highlight_cells(image: np.ndarray, cells: np.ndarray, color=CELL_COLOR, alpha: float = 0.55) -> np.ndarray:
    """Tint and outline the feature cells where bool ``cells`` ``(h, w)`` is True.

    Args:
        image: uint8 ``(S, S, 3)``; cells: bool ``(h, w)`` upsampled to pixels by nearest neighbour.
    """
    s = image.shape[0]
    h, w = cells.shape
    rows = (np.arange(s) * h) // s
    cols = (np.arange(s) * w) // s
    mask = cells[rows[:, None], cols[None, :]]
    out = image.astype(np.float32)
    out[mask] = out[mask] * (1 - alpha) + np.asarray(color, np.float32) * alpha
    return draw_contours(out.astype(np.uint8), mask, color)


def to_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB image, at zlib level 1: a 1024 px bottle heatmap overlay in 0.07 s
    instead of 0.32 s at Pillow's default level 6, for a file 21 % larger (1,068 vs 882 kB)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_upload(name: str, payload: bytes, max_pixels: int = MAX_UPLOAD_PIXELS,
                  rule: data.IntensityRule | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode an uploaded image file to uint8 RGB ``(H, W, 3)`` as displayed, with the model's
    intensity rule ``rule`` (``model.intensity_``), through :func:`somad.data.read_image`.

    Returns:
        ``(rgb, notes)``: notes say what was converted (grayscale, 16-bit, alpha).

    Raises:
        DataError: not an image, truncated, larger than ``max_pixels``, or samples ``rule`` cannot read.
    """
    try:
        img = Image.open(io.BytesIO(payload))
    except Image.DecompressionBombError:
        raise DataError(f"{name} is far above the {max_pixels / 1e6:.0f} megapixel limit: downscale it first.") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if data.is_tiff(payload):  # e.g. a float colour TIFF: somad.data reads it with tifffile
            return data.read_image(payload, rule, name), [f"{name}: TIFF read with tifffile."]
        raise DataError(f"{name} is not an image this app can read ({type(exc).__name__}): "
                        "upload a PNG, JPG, BMP or TIFF file.") from None
    w, h = img.size
    if w * h > max_pixels:
        raise DataError(f"{name} is {w}x{h} = {w * h / 1e6:.0f} megapixels, above the "
                        f"{max_pixels / 1e6:.0f} megapixel limit: downscale it first.")
    notes = []  # from the header alone: the pixels are decoded once, by read_image (damaged files named there)
    if img.mode in data.HIGH_BIT_MODES:
        notes.append(f"{name}: {img.mode} (16/32-bit) image scaled to 8 bits and copied to 3 channels.")
    elif img.mode in ("L", "1", "LA"):
        notes.append(f"{name}: 1-channel (grayscale) image copied to 3 channels.")
    if img.mode in ("RGBA", "LA", "PA"):
        notes.append(f"{name}: transparency composited on black.")
    if img.mode == "CMYK":
        notes.append(f"{name}: CMYK image converted to RGB.")
    return data.read_image(payload, rule, name), notes


SCORE_FACTOR = 1.5
"""An upload is "far beyond" the known scores above this multiple of the highest training / test score."""
COLOUR_Z = 4.0
"""An upload's mean colour differs when a channel mean is this many standard deviations (plus
:data:`COLOUR_SLACK` grey levels) from the category's images."""
COLOUR_SLACK = 5.0
ASPECT_TOLERANCE = 0.15
"""Relative difference of width/height ratios above which an upload's shape differs."""


@dataclass(frozen=True)
class Reference:
    """What the category's images look like, for :func:`unlike_training`.

    Attributes:
        max_score: highest known image score (training threshold and every test score).
        channel_means: float ``(N, 3)`` mean R, G, B (0-255) of the category's good images.
        aspect: typical width / height of the category's image files.
    """

    max_score: float
    channel_means: np.ndarray
    aspect: float


def unlike_training(score: float, rgb: np.ndarray, ref: Reference) -> list[str]:
    """Reasons why an uploaded image looks unlike the category's images (empty when none).

    Args:
        score: its image score. rgb: uint8 ``(H, W, 3)`` the decoded upload at its own size.
    """
    reasons = []
    if score > SCORE_FACTOR * ref.max_score:
        reasons.append(f"its score {score:.1f} is far beyond every training and test score (max {ref.max_score:.1f})")
    mean = rgb.reshape(-1, 3).mean(0)
    mu, sd = ref.channel_means.mean(0), ref.channel_means.std(0)
    z = np.abs(mean - mu) / (sd + COLOUR_SLACK)
    if (z > COLOUR_Z).any():
        reasons.append("its colours differ from the category's images (mean RGB "
                       f"{', '.join(f'{v:.0f}' for v in mean)} vs {', '.join(f'{v:.0f}' for v in mu)})")
    aspect = rgb.shape[1] / rgb.shape[0]
    if abs(aspect - ref.aspect) > ASPECT_TOLERANCE * ref.aspect:
        reasons.append(f"its shape ({rgb.shape[1]}x{rgb.shape[0]}) differs from the category's images "
                       f"(width/height {ref.aspect:.2f})")
    return reasons


@dataclass
class Upload:
    """One uploaded image as the Try an image page holds it: at the size it is shown, never the
    decoded original (a 2500x2500 JPEG is 19 MB decoded; its shown form is a few hundred KB).

    Attributes:
        name: file name. original_shape: (H, W) of the upload as displayed.
        shown: uint8 ``(h, w, 3)`` the upload at :func:`somad.data.display_shape` (longest side <= 1024 px).
        model_input: uint8 ``(S, S, 3)`` what the model scores. notes: what was converted.
        score, amap: image score and float32 ``(S, S)`` anomaly map, None until scored.
        overlay_png: PNG bytes of the heatmap overlay at the shown size, None until drawn.
        map_top: the highest value of the map at the shown size; caption: the overlay's caption
            (both set when the overlay is drawn).
    """

    name: str
    original_shape: tuple[int, int]
    shown: np.ndarray
    model_input: np.ndarray
    notes: list[str]
    score: float | None = None
    amap: np.ndarray | None = None
    overlay_png: bytes | None = None
    map_top: float | None = None
    caption: str = ""


def prepare_upload(name: str, payload: bytes, image_size: int, rule: data.IntensityRule | None = None) -> Upload:
    """Decode an upload (:func:`decode_upload`) and keep only its shown and model-sized forms; the
    full-size decode is dropped before this returns.

    Raises:
        DataError: see :func:`decode_upload`.
    """
    rgb, notes = decode_upload(name, payload, rule=rule)
    shape = rgb.shape[:2]
    shown = data.resize_to(rgb, data.display_shape(shape))
    model_input = data.resize_image(rgb, image_size)
    del rgb
    return Upload(name, shape, np.ascontiguousarray(shown), model_input, notes)


class UploadStore:
    """The uploads a session holds, keyed by Streamlit's file id, for one model: what the uploader
    dropped is released at the next run (:meth:`keep_only`), a new model starts empty, and the
    session's end drops the store with the session state."""

    def __init__(self, model_key: tuple):
        self.model_key = model_key
        self.items: dict[str, Upload] = {}

    def keep_only(self, file_ids: list[str]) -> None:
        """Forget the uploads whose id is not in ``file_ids`` (the uploader's current files)."""
        for fid in set(self.items) - set(file_ids):
            del self.items[fid]

    def held_bytes(self) -> int:
        """Bytes held by the stored arrays and PNGs."""
        return sum(u.shown.nbytes + u.model_input.nbytes + (u.amap.nbytes if u.amap is not None else 0)
                   + len(u.overlay_png or b"") for u in self.items.values())
