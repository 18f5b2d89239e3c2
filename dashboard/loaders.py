"""Cached loaders (``st.cache_resource``): models, test-split evaluations, per-image features,
training images. Keys include the model directory's mtime, so a refitted model is reloaded."""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import streamlit as st

from somad import data, explain, metrics, pipeline
from somad.persistence import CONFIG, load_model

PRO_PLOT_POINTS = 4000
"""Points of the PRO curve sent to the browser: a smooth line at any zoom the page offers, while
the exact curve has one point per distinct pixel score (millions) and would stall plotly."""


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
    _warm_training_images(model)
    return model


def _warm_training_images(model, limit: int = 256) -> None:
    """Decode the training images into the LRU cache in a background thread, so that the first
    neuron clicks do not pay for decoding large files (e.g. 900x900 PNGs of MVTec bottle)."""
    paths = list(getattr(model, "train_paths_", []) or [])[:limit]

    def work() -> None:
        for p in paths:
            try:
                load_training_image(p, model.image_size)
            except Exception:  # unreadable files are reported when a crop needs them
                pass

    threading.Thread(target=work, name="somad-warm-train-images", daemon=True).start()


def get_model(model_dir: str | Path, device: str = "cpu"):
    """The loaded model (cached). Raises ModelFileError / BackboneError with user-facing messages."""
    return _model(str(model_dir), model_mtime(model_dir), device)


@st.cache_resource(show_spinner=False, max_entries=4)
def _evaluation(model_dir: str, mtime: float, device: str, data_dir: str, category: str):
    model = _model(model_dir, mtime, device)
    return pipeline.evaluate_model(model, data_dir, category, return_patches=True)


def get_evaluation(model_dir: str | Path, data_dir: str | Path, category: str, device: str = "cpu"):
    """:class:`somad.pipeline.Evaluation` (with patch scores) of the model on the category's test split (cached)."""
    return _evaluation(str(model_dir), model_mtime(model_dir), device, str(data_dir), category)


def has_evaluation(model_dir: str | Path, data_dir: str | Path, category: str, device: str = "cpu") -> bool:
    """True when the evaluation is already computed (cheap check used by the model card)."""
    key = (str(model_dir), model_mtime(model_dir), device, str(data_dir), category)
    return key in st.session_state.get("_evaluated", set())


def mark_evaluated(model_dir, data_dir, category, device="cpu") -> None:
    st.session_state.setdefault("_evaluated", set()).add(
        (str(model_dir), model_mtime(model_dir), device, str(data_dir), category))


@st.cache_resource(show_spinner=False, max_entries=64)
def _image_features(model_dir: str, mtime: float, device: str, data_dir: str, category: str, index: int):
    model = _model(model_dir, mtime, device)
    ev = _evaluation(model_dir, mtime, device, data_dir, category)
    return model.features(ev.images[index:index + 1])[0].cpu()


def get_image_features(model_dir, data_dir, category, index: int, device: str = "cpu"):
    """float32 ``(d, h, w)`` features of test image ``index`` (cached per image)."""
    return _image_features(str(model_dir), model_mtime(model_dir), device, str(data_dir), category, int(index))


@st.cache_resource(show_spinner=False, max_entries=4)
def _pro(model_dir: str, mtime: float, device: str, data_dir: str, category: str):
    ev = _evaluation(model_dir, mtime, device, data_dir, category)
    fpr, pro = metrics.pro_curve(ev.masks, ev.maps)
    if len(fpr) > PRO_PLOT_POINTS:  # thin the curve for plotting, keep the ends
        keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, PRO_PLOT_POINTS).astype(int), len(fpr) - 1])
        fpr, pro = fpr[keep], pro[keep]
    return fpr, pro


def get_pro_curve(model_dir, data_dir, category, device: str = "cpu"):
    """``(fpr, pro)`` of the evaluation, thinned to at most ~:data:`PRO_PLOT_POINTS` points for plotting (cached)."""
    return _pro(str(model_dir), model_mtime(model_dir), device, str(data_dir), category)


@lru_cache(maxsize=256)
def load_training_image(path: str, image_size: int) -> np.ndarray:
    """uint8 ``(S, S, 3)`` training image (LRU-cached, shared by all sessions)."""
    return data.load_image(path, image_size)


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
