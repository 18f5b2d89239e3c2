"""Reading datasets in MVTec AD layout.

Layout of one category (``<root>/<category>/``)::

    train/good/<stem>.<ext>             defect-free training images
    test/good/<stem>.<ext>              defect-free test images
    test/<defect>/<stem>.<ext>          defective test images
    ground_truth/<defect>/<stem>_mask.<ext>   pixel masks (value > 0 = anomalous)

Images of any size, aspect ratio and mode (grayscale, RGBA, palette, 16-bit)
become 8-bit RGB. An image and its mask always go through the same geometric
transform: a plain resize of the whole frame to ``image_size x image_size``
(no crop), the image with antialiased bilinear interpolation, the mask with
nearest neighbour.
"""
from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a split.

    Attributes:
        path: the image file.
        defect: ``"good"`` or the defect type (the ``test/<defect>`` folder name).
        mask_path: the ground-truth mask, ``None`` for good images.
    """

    path: Path
    defect: str
    mask_path: Path | None = None

    @property
    def label(self) -> int:
        """0 for a good image, 1 for a defective one."""
        return int(self.defect != GOOD)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def is_category(folder: Path) -> bool:
    """True when ``folder`` holds a ``train/good`` folder (MVTec layout)."""
    return (Path(folder) / "train" / GOOD).is_dir()


def list_categories(root: str | Path) -> list[str]:
    """Names of the categories (sub-folders in MVTec layout) under ``root``, sorted.

    Raises:
        DataError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data dir {root} does not exist: pass --data-dir pointing at a folder of "
                        "MVTec-layout categories (or run `python -m somad demo-data`).")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_category(p))


def category_dir(root: str | Path, category: str) -> Path:
    """Checked path of one category.

    Raises:
        DataError: root or category missing, or the category is not in MVTec layout.
    """
    root = Path(root)
    found = list_categories(root)
    folder = root / category
    if not folder.is_dir():
        hint = f"categories found there: {', '.join(found)}" if found else "no MVTec-layout category was found there"
        raise DataError(f"category '{category}' not found under {root} ({hint}).")
    if not is_category(folder):
        raise DataError(f"{folder} is not in MVTec layout: it needs train/good/ with images "
                        "(and test/<defect>/, ground_truth/<defect>/<stem>_mask.png for evaluation).")
    return folder


def train_samples(root: str | Path, category: str) -> list[Sample]:
    """The defect-free training images of a category, sorted by file name.

    Raises:
        DataError: the category is missing or ``train/good`` holds no image.
    """
    folder = category_dir(root, category) / "train" / GOOD
    samples = [Sample(p, GOOD) for p in _images_in(folder)]
    if not samples:
        raise DataError(f"{folder} holds no image ({', '.join(IMAGE_EXTENSIONS)}): "
                        "put the defect-free training images there.")
    return samples


def find_mask(cat_dir: Path, defect: str, stem: str) -> Path | None:
    """The mask file ``ground_truth/<defect>/<stem>_mask.<ext>`` (any image extension), or None."""
    gt = cat_dir / "ground_truth" / defect
    for ext in IMAGE_EXTENSIONS:
        for cand in (gt / f"{stem}_mask{ext}", gt / f"{stem}_mask{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def test_samples(root: str | Path, category: str) -> list[Sample]:
    """All test images of a category: ``test/good`` first, then each defect type, sorted.

    Raises:
        DataError: no ``test`` folder or no test image, or a defective image has no mask.
    """
    cat = category_dir(root, category)
    test_dir = cat / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir} is missing: evaluation needs test/good/ and test/<defect>/ folders.")
    defects = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    defects.sort(key=lambda d: d != GOOD)
    samples: list[Sample] = []
    for defect in defects:
        for path in _images_in(test_dir / defect):
            mask = None
            if defect != GOOD:
                mask = find_mask(cat, defect, path.stem)
                if mask is None:
                    raise DataError(f"defective test image {path} has no mask: expected "
                                    f"{cat / 'ground_truth' / defect / (path.stem + '_mask.png')}.")
            samples.append(Sample(path, defect, mask))
    if not samples:
        raise DataError(f"{test_dir} holds no image: put test images in test/good/ and test/<defect>/.")
    return samples


def to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any PIL image (L, LA, P, RGBA, I;16, I, F, CMYK, ...) to uint8 RGB ``(H, W, 3)``.

    16-bit and 32-bit images are scaled by their own bit depth (not per image
    min-max): ``I;16`` values divide by 257.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if img.mode.startswith("I;16") or arr.max() > 255 else 1.0
        arr = np.clip(arr / scale, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file.

    Raises:
        DataError: the file is missing, not an image, or truncated.
    """
    path = Path(path)
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}. Replace or remove the file.") from None
    return img


def load_image(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """Read an image as uint8 RGB ``(H, W, 3)``, resized to ``(image_size, image_size)`` if given.

    Raises:
        DataError: unreadable or truncated file (named in the message).
    """
    rgb = to_rgb(open_image(path))
    if image_size is not None:
        rgb = resize_image(rgb, image_size)
    return rgb


def resize_image(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """Resize uint8 ``(H, W, 3)`` to ``(image_size, image_size, 3)`` with antialiased bilinear."""
    if rgb.shape[:2] == (image_size, image_size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((image_size, image_size), Image.BILINEAR))


def load_mask(path: str | Path, image_shape: tuple[int, int], image_size: int | None = None) -> np.ndarray:
    """Read a ground-truth mask as bool ``(H, W)``; any value > 0 is anomalous.

    A mask whose size differs from its image (``image_shape`` = (H, W) of the
    original image) is first resized to it with nearest neighbour, with a
    warning naming the file. Then it follows the image's transform: nearest
    neighbour resize to ``(image_size, image_size)``.
    """
    img = open_image(path)
    arr = np.asarray(img.convert("L") if img.mode not in ("L", "1", "I;16", "I") else img)
    m = Image.fromarray((arr > 0).astype(np.uint8) * 255)
    h, w = image_shape
    if (m.height, m.width) != (h, w):
        warnings.warn(f"mask {path} is {m.width}x{m.height} but its image is {w}x{h}: "
                      "resized with nearest neighbour.", stacklevel=2)
        m = m.resize((w, h), Image.NEAREST)
    if image_size is not None:
        m = m.resize((image_size, image_size), Image.NEAREST)
    return np.asarray(m) > 0


def load_sample(sample: Sample, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image uint8 ``(S, S, 3)`` and mask bool ``(S, S)`` of one sample (all-False for good images)."""
    img = open_image(sample.path)
    rgb = resize_image(to_rgb(img), image_size)
    if sample.mask_path is None:
        return rgb, np.zeros((image_size, image_size), dtype=bool)
    return rgb, load_mask(sample.mask_path, (img.height, img.width), image_size)


def iter_batches(samples: Sequence[Sample], image_size: int, batch_size: int = 32,
                 workers: int = 4) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(images uint8 (B, S, S, 3), masks bool (B, S, S))`` batches, decoding in threads."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            pairs = list(pool.map(lambda s: load_sample(s, image_size), chunk))
            yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def load_split(samples: Sequence[Sample], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All images ``(N, S, S, 3)`` uint8 and masks ``(N, S, S)`` bool of ``samples``."""
    images, masks = zip(*iter_batches(samples, image_size, batch_size=64)) if samples else ((), ())
    return np.concatenate(images), np.concatenate(masks)
