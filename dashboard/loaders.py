"""Cached loaders (``st.cache_resource``): models, test-split evaluations (read from the on-disk
cache of :mod:`somad.scorecache`), per-image features, training images. Keys include the model
directory's mtime (and the evaluation's cache key), so a refitted model is reloaded."""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import streamlit as st

from somad import data, explain, figures, metrics, regions, scorecache
from somad.persistence import CONFIG, load_model

from . import images, memory
from .keys import Keys


def model_mtime(model_dir: str | Path) -> float:
    """Modification time of a model's config (0 when missing): part of every cache key."""
    try:
        return (Path(model_dir) / CONFIG).stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(show_spinner=False, max_entries=4)
def _model(model_dir: str, mtime: float, device: str):
    model = load_model(model_dir, device=device)
    explain.bmu_index(model)  # build the neuron -> training patches index once, with the model
    _ = model.extractor  # and the backbone, which the first heatmap-cell click would otherwise build
    _warm_training_images(model)
    memory.freeze_long_lived()  # the post-run collections no longer walk the libraries and the model
    return model


def _warm_training_images(model, limit: int = 256) -> None:
    """Decode the training images into the LRU cache in a background thread, so that the first
    neuron clicks do not pay for decoding large files (e.g. 900x900 PNGs of MVTec bottle)."""
    paths = list(getattr(model, "train_paths_", []) or [])[:limit]

    def work() -> None:
        for p in paths:
            try:
                load_training_image(p, model.image_size, model.intensity_)
            except Exception:  # unreadable files are reported when a crop needs them
                pass

    threading.Thread(target=work, name="somad-warm-train-images", daemon=True).start()


@st.cache_resource(show_spinner=False, max_entries=4)
def _som_views(model_dir: str, mtime: float, device: str) -> dict[str, np.ndarray]:
    model = _model(model_dir, mtime, device)
    return {"u": model.u_matrix(), "hits": model.hit_map(),
            "mean_dist": explain.bmu_index(model).mean_dist.reshape(model.grid_)}


def get_som_views(model_dir: str | Path, device: str = "cpu") -> dict[str, np.ndarray]:
    """Per-neuron maps of the model, computed once (cached): ``u`` (U-matrix), ``hits`` (hit map) and
    ``mean_dist`` (mean distance of each neuron to its training patches; NaN where none), each ``(rows, cols)``."""
    return _som_views(str(model_dir), model_mtime(model_dir), device)


def get_model(model_dir: str | Path, device: str = "cpu"):
    """The loaded model (cached). Raises ModelFileError / BackboneError with user-facing messages."""
    return _model(str(model_dir), model_mtime(model_dir), device)


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_evaluation(model_dir: str, key: str, data_dir: str, category: str):
    return scorecache.load(model_dir, data_dir, category, key)


SCORE_KEY_TTL_S = 10
"""Seconds the server reuses a test split's score-cache key (:func:`somad.scorecache.cache_key`: a
listing and a stat of every test image and mask, 0.1 s on MVTec bottle, twice per page run before):
a test file changed on disk is noticed within this time."""


@st.cache_resource(show_spinner=False, ttl=SCORE_KEY_TTL_S, max_entries=64)
def _score_key(model_dir: str, mtime: float, data_dir: str, category: str) -> str:
    return scorecache.cache_key(model_dir, data_dir, category)


def _evaluation(model_dir: str, mtime: float, device: str, data_dir: str, category: str):
    """The evaluation from the on-disk cache (:mod:`somad.scorecache`), held in memory per cache key,
    so a changed model or test file is read anew (within :data:`SCORE_KEY_TTL_S`). Raises NotCached
    when it was never scored."""
    ev = _cached_evaluation(model_dir, _score_key(model_dir, mtime, data_dir, category), data_dir, category)
    _EVALUATED_METRICS[(model_dir, mtime, data_dir, category)] = ev.metrics
    return ev


_EVALUATED_METRICS: dict[tuple, dict] = {}
"""Metrics of every evaluation this server process read, by (model dir, mtime, data dir, category):
small dicts kept after the evaluation itself leaves the cache, for the Model page's model list."""


def evaluated_metrics(model_dir: str | Path, data_dir: str | Path, category: str) -> dict | None:
    """The metrics of the model's evaluation on the category's test split when this server read one
    (in any session), else None."""
    return _EVALUATED_METRICS.get((str(model_dir), model_mtime(model_dir), str(data_dir), category))


def get_evaluation(model_dir: str | Path, data_dir: str | Path, category: str, device: str = "cpu"):
    """:class:`somad.pipeline.Evaluation` (with patch scores) of the model on the category's test split,
    read from the cache next to the model that a "score" job writes (see
    :func:`dashboard.state.require_evaluation`).

    Raises:
        somad.scorecache.NotCached: not scored yet for this model and these test files.
    """
    return _evaluation(str(model_dir), model_mtime(model_dir), device, str(data_dir), category)


def has_evaluation(model_dir: str | Path, data_dir: str | Path, category: str, device: str = "cpu") -> bool:
    """True when the test split's scores are in the on-disk cache (cheap check used by the model card)."""
    return scorecache.is_cached(model_dir, data_dir, category)


@st.cache_resource(show_spinner=False, max_entries=64)
def _image_features(model_dir: str, mtime: float, device: str, data_dir: str, category: str, index: int):
    model = _model(model_dir, mtime, device)
    ev = _evaluation(model_dir, mtime, device, data_dir, category)
    return model.features(ev.images[index:index + 1])[0].cpu()


def get_image_features(model_dir, data_dir, category, index: int, device: str = "cpu"):
    """float32 ``(d, h, w)`` features of test image ``index`` (cached per image)."""
    return _image_features(str(model_dir), model_mtime(model_dir), device, str(data_dir), category, int(index))


@st.cache_resource(show_spinner=False, max_entries=512)
def _heat_overlay(model_dir: str, mtime: float, device: str, data_dir: str, category: str, index: int):
    model = _model(model_dir, mtime, device)
    ev = _evaluation(model_dir, mtime, device, data_dir, category)
    return images.heat_overlay(ev.images[index], ev.maps[index], images.heat_scale(model.pixel_range_, ev.metrics))


def get_heat_overlay(model_dir, data_dir, category, index: int, device: str = "cpu") -> np.ndarray:
    """uint8 ``(S, S, 3)`` heatmap overlay of test image ``index`` on the model's fixed colour range (cached)."""
    return _heat_overlay(str(model_dir), model_mtime(model_dir), device, str(data_dir), category, int(index))


@st.cache_resource(show_spinner=False, max_entries=4)
def _pro(model_dir: str, mtime: float, device: str, data_dir: str, category: str):
    ev = _evaluation(model_dir, mtime, device, data_dir, category)
    return figures.thin_curve(*metrics.pro_curve(*ev.pixel_arrays()))  # the images the metrics count


def get_pro_curve(model_dir, data_dir, category, device: str = "cpu"):
    """``(fpr, pro)`` of the evaluation, thinned for plotting (:func:`somad.figures.thin_curve`, cached)."""
    return _pro(str(model_dir), model_mtime(model_dir), device, str(data_dir), category)


@lru_cache(maxsize=256)
def load_training_image(path: str, image_size: int, rule: data.IntensityRule | None = None) -> np.ndarray:
    """uint8 ``(S, S, 3)`` training image read with the model's intensity ``rule`` (LRU-cached,
    shared by all sessions)."""
    return data.load_image(path, image_size, rule)


@lru_cache(maxsize=4096)
def image_shape(path: str) -> tuple[int, int]:
    """``(H, W)`` of an image file as displayed (:func:`somad.data.image_shape`; LRU-cached, shared by
    all sessions); ``(1, 1)`` when it cannot be read, so a missing file is shown square."""
    try:
        return data.image_shape(path)
    except Exception:  # noqa: BLE001 (the page that needs the pixels says what is wrong)
        return (1, 1)


def shown_shape(path: str | Path, side: int) -> tuple[int, int]:
    """``(H, W)`` at which a picture of image ``path`` is drawn: its own aspect ratio, longest side ``side`` px."""
    h, w = image_shape(str(path))
    scale = side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


@st.cache_data(show_spinner=False, ttl=30)
def category_counts(root: str, category: str) -> dict[str, int]:
    """Image counts of a category: ``train``, ``test``, ``defect types`` (0 where a split is unusable)."""
    out = {"train": 0, "test": 0, "defect types": 0}
    try:
        out["train"] = len(data.train_samples(root, category))
    except data.DataError:
        pass
    try:
        test = data.test_samples(root, category)
        out["test"] = len(test)
        out["defect types"] = len({s.defect for s in test} - {data.GOOD})
    except data.DataError:
        pass
    return out


@st.cache_resource(show_spinner=False, max_entries=4)
def _reference(model_dir: str, mtime: float, device: str, data_dir: str, category: str) -> images.Reference:
    model = _model(model_dir, mtime, device)
    ev = _evaluation(model_dir, mtime, device, data_dir, category)
    good = ev.labels == 0
    sample = ev.images[good] if good.any() else ev.images
    height, width = data.read_raw(ev.samples[0].path).shape[:2]  # as displayed (orientation applied)
    aspect = width / height
    return images.Reference(max(float(ev.scores.max()), float(model.threshold_)),
                            sample.reshape(len(sample), -1, 3).mean(1), aspect)


def get_reference(model_dir, data_dir, category, device: str = "cpu") -> images.Reference:
    """:class:`dashboard.images.Reference` of the category, from the cached evaluation (cached)."""
    return _reference(str(model_dir), model_mtime(model_dir), device, str(data_dir), category)


@st.cache_resource(show_spinner=False, max_entries=8)
def _leak(model_dir: str, mtime: float, device: str, data_dir: str, category: str) -> np.ndarray:
    from somad.versions import leak_mask

    model = _model(model_dir, mtime, device)
    ev = _evaluation(model_dir, mtime, device, data_dir, category)
    return leak_mask(model, model_dir, ev.samples)


def get_leak(model_dir, data_dir, category, device: str = "cpu") -> np.ndarray:
    """bool ``(N,)``: test images the model has learned from (:func:`somad.versions.leak_mask`, cached)."""
    return _leak(str(model_dir), model_mtime(model_dir), device, str(data_dir), category)


# ------------------------------------------------------------------ regions and the training replay
@st.cache_resource(show_spinner=False, max_entries=16)
def _regions(model_dir: str, mtime: float, device: str, n_regions: int | None):
    reg = regions.model_regions(_model(model_dir, mtime, device), n_regions)
    memory.freeze_long_lived()  # and not the modules the regions imported
    return reg


def get_regions(model_dir: str | Path, n_regions: int | None = None, device: str = "cpu") -> regions.Regions:
    """:func:`somad.regions.model_regions` of the model (cached per number of regions; None = automatic).

    Raises:
        ValueError: ``n_regions`` out of range for the map (the message gives the range).
    """
    return _regions(str(model_dir), model_mtime(model_dir), device, None if n_regions is None else int(n_regions))


@st.cache_resource(show_spinner=False, max_entries=4)
def _mean_training_image(model_dir: str, mtime: float, device: str, limit: int) -> np.ndarray | None:
    model = _model(model_dir, mtime, device)
    paths = list(getattr(model, "train_paths_", []) or [])
    picks = [paths[int(i)] for i in np.unique(np.linspace(0, len(paths) - 1, min(limit, len(paths))).round())] \
        if paths else []
    total, n = None, 0
    for p in picks:
        try:
            img = load_training_image(p, model.image_size, model.intensity_).astype(np.float64)
        except Exception:  # unreadable files: the mean of the others
            continue
        total = img if total is None else total + img
        n += 1
    return None if total is None else (total / n).round().astype(np.uint8)


def get_mean_training_image(model_dir: str | Path, device: str = "cpu", limit: int = 32) -> np.ndarray | None:
    """uint8 ``(S, S, 3)`` mean of up to ``limit`` evenly spaced training images at the model's size
    (cached); None when none can be read (moved or deleted since fitting)."""
    return _mean_training_image(str(model_dir), model_mtime(model_dir), device, int(limit))
