"""Embedded demo data: a small synthetic dataset in MVTec layout, generated on demand.

Two categories, deterministic for a seed, generated in a few seconds:

* ``tiles`` (texture): a grid of ceramic tiles with grout and grain noise;
* ``washers`` (object): a metal washer on a dark belt, with small pose jitter.

Each has ``n_train`` train/good, ``n_good`` test/good and ``n_defect`` defective
test images spread over the kinds scratch, hole, stain and crack, with exact
masks in ``ground_truth/<defect>/<stem>_mask.png``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .atomic import atomic_dir, check_output_dir

DEFECTS = ("scratch", "hole", "stain", "crack")
CATEGORIES = ("tiles", "washers")
SIZE = 256
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"


def _tiles(rng: np.random.Generator) -> np.ndarray:
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[:] = (92, 84, 78)
    step, grout = 32, 4
    off = rng.integers(0, 3, 2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    tile = ((yy + off[0]) % step >= grout) & ((xx + off[1]) % step >= grout)
    base = np.array([196, 186, 170], np.float32) * rng.uniform(0.95, 1.05)
    img[tile] = base
    img += rng.normal(0, 6, (SIZE, SIZE, 1))
    return img


def _washer(rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float]]:
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[:] = (40, 42, 46)
    c = SIZE / 2 + rng.uniform(-4, 4, 2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - c[0], xx - c[1])
    ring = (r > 38) & (r < 92)
    shade = 150 + 40 * np.cos(np.arctan2(yy - c[0], xx - c[1]) - 0.8)
    img[ring] = np.stack([shade[ring]] * 3, 1) * rng.uniform(0.95, 1.05)
    img += rng.normal(0, 4, (SIZE, SIZE, 1))
    return img, (float(c[0]), float(c[1]))


def _defect(rng: np.random.Generator, kind: str, centre: tuple[float, float], spread: float
            ) -> tuple[Image.Image, np.ndarray]:
    """A defect layer: an RGBA drawing and its exact bool mask."""
    layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    mask = Image.new("L", (SIZE, SIZE), 0)
    dl, dm = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    cy, cx = (np.asarray(centre) + rng.uniform(-spread, spread, 2)).tolist()
    if kind == "scratch":
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(30, 60)
        pts = [(cx - length * np.cos(ang), cy - length * np.sin(ang)), (cx + length * np.cos(ang), cy + length * np.sin(ang))]
        dl.line(pts, fill=(245, 245, 250, 255), width=3)
        dm.line(pts, fill=255, width=3)
    elif kind == "hole":
        r = rng.uniform(6, 12)
        box = (cx - r, cy - r, cx + r, cy + r)
        dl.ellipse(box, fill=(12, 10, 10, 255))
        dm.ellipse(box, fill=255)
    elif kind == "stain":
        r = rng.uniform(12, 22)
        box = (cx - r, cy - r * 0.7, cx + r, cy + r * 0.7)
        dl.ellipse(box, fill=(150, 90, 30, 170))
        dm.ellipse(box, fill=255)
    else:  # crack: a jagged random walk
        pts = [(cx, cy)]
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(10):
            ang += rng.uniform(-0.7, 0.7)
            pts.append((pts[-1][0] + 6 * np.cos(ang), pts[-1][1] + 6 * np.sin(ang)))
        dl.line(pts, fill=(20, 18, 16, 255), width=2)
        dm.line(pts, fill=255, width=2)
    return layer, np.asarray(mask) > 0


def _render(category: str, rng: np.random.Generator, kind: str | None) -> tuple[Image.Image, np.ndarray | None]:
    if category == "tiles":
        arr, centre, spread = _tiles(rng), (SIZE / 2, SIZE / 2), SIZE / 3
    else:
        arr, c = _washer(rng)
        ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(50, 80)
        centre, spread = (c[0] + rad * np.sin(ang), c[1] + rad * np.cos(ang)), 4.0
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    if kind is None:
        return img, None
    layer, mask = _defect(rng, kind, centre, spread)
    img = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
    return img, mask


def generate(root: str | Path = DEFAULT_DIR, seed: int = 0, n_train: int = 40, n_good: int = 10,
             n_defect: int = 16, force: bool = False) -> Path:
    """Write the demo dataset under ``root`` (``root/<category>/...``) and return ``root``.

    Written to a temporary sibling first and renamed into place, so an
    interrupted run leaves no half dataset. An existing ``root`` is kept unless ``force``.
    """
    root = check_output_dir(root, "--out")
    if root.exists() and any(root.iterdir()) and not force:
        return root
    with atomic_dir(root) as tmp:
        for ci, category in enumerate(CATEGORIES):
            rng = np.random.default_rng([seed, ci])
            cat = tmp / category
            jobs = [("train", "good", i, None) for i in range(n_train)]
            jobs += [("test", "good", i, None) for i in range(n_good)]
            jobs += [("test", DEFECTS[i % len(DEFECTS)], i // len(DEFECTS), DEFECTS[i % len(DEFECTS)])
                     for i in range(n_defect)]
            for split, folder, idx, kind in jobs:
                img, mask = _render(category, rng, kind)
                out = cat / split / folder
                out.mkdir(parents=True, exist_ok=True)
                img.save(out / f"{idx:03d}.png")
                if mask is not None:
                    gt = cat / "ground_truth" / folder
                    gt.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(gt / f"{idx:03d}_mask.png")
    return root


def ensure_demo(root: str | Path = DEFAULT_DIR) -> Path:
    """Generate the demo data if ``root`` is missing or empty; return ``root``."""
    return generate(root)
