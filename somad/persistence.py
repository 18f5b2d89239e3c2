"""Saving and loading fitted models: a directory with ``config.json`` and ``tensors.safetensors``.

No pickle anywhere. ``config.json`` holds the format version, every
hyperparameter, the backbone name, image size, threshold, display range,
SOM quality figures, fit timings and the training image paths;
``tensors.safetensors`` holds the arrays (SOM weights, Gaussians, training
BMU index, channel indices, cross-fitted training scores).

Saving is atomic: everything is written to a temporary sibling directory that
is then renamed into place; an existing model is replaced only with
``force=True`` and is kept if anything fails before the rename.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ModelFileError
from .gaussian import whitening_factors
from .model import HYPERPARAMETERS, SOMAD

FORMAT = "somad-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
TENSORS = "tensors.safetensors"
METRICS = "metrics.json"

_TENSORS = ("som_weights", "means", "covariances", "counts", "train_bmu", "train_bmu_dist",
            "channel_idx", "train_scores", "threshold_indices")


def is_model_dir(path: str | Path) -> bool:
    """True when ``path`` holds a somad config file."""
    return (Path(path) / CONFIG).is_file()


def save_model(model: SOMAD, path: str | Path, force: bool = False, extra: dict | None = None) -> Path:
    """Write a fitted model to directory ``path`` atomically.

    Args:
        force: replace an existing model at ``path``.
        extra: JSON-ready metadata stored under ``"extra"`` (e.g. data root and category).

    Returns:
        ``path`` as a Path.

    Raises:
        ModelFileError: ``path`` exists and ``force`` is False, or it exists and is not a model.
        NotFittedError: the model is not fitted.
    """
    model._check_fitted()
    path = Path(path)
    if path.exists():
        if not force:
            raise ModelFileError(f"{path} already exists: pass --force (force=True) to overwrite it, "
                                 "or choose another --name.")
        if not is_model_dir(path):
            raise ModelFileError(f"{path} exists and is not a somad model: refusing to overwrite it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tensors = {
            "som_weights": model.som_weights_, "means": model.means_, "covariances": model.covariances_,
            "counts": model.counts_, "train_bmu": model.train_bmu_.int(), "train_bmu_dist": model.train_bmu_dist_,
            "channel_idx": torch.as_tensor(model.channel_idx_),
            "train_scores": torch.as_tensor(model.train_scores_),
            "threshold_indices": torch.as_tensor(model.threshold_indices_),
        }
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "hyperparameters": model.get_params(),
            "grid": list(model.grid_), "feature_shape": list(model.feature_shape_),
            "n_train": model.n_train_, "train_paths": model.train_paths_,
            "threshold": model.threshold_,
            "threshold_rule": f"percentile {model.threshold_percentile:g} of {model.cv_folds}-fold cross-fitted "
                              f"scores of {len(model.train_scores_)} training images",
            "pixel_range": list(model.pixel_range_),
            "quantization_error": model.quantization_error_, "topographic_error": model.topographic_error_,
            "timings": model.timings_, "extra": extra or getattr(model, "extra_", {}),
        }
        _write_json(tmp / CONFIG, config)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file in the same directory, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, default=_json_default)
    os.replace(tmp, path)


def write_json(path: str | Path, obj) -> Path:
    """Public atomic JSON writer (results, metrics); creates parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, obj)
    return path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_config(path: str | Path) -> dict:
    """The checked ``config.json`` of a model directory.

    Raises:
        ModelFileError: missing directory or config, unreadable JSON, another format or version.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"model dir {path} does not exist: fit one with `python -m somad fit`.")
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise ModelFileError(f"{path} is not a somad model (no {CONFIG}): pass the directory `fit` wrote.")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{cfg_path} is not valid JSON ({exc}): the model is damaged, fit it again.") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelFileError(f"{cfg_path} is not a somad model config.")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path} has format version {cfg.get('format_version')} but this somad reads "
                             f"version {FORMAT_VERSION}: fit the model again with this version.")
    return cfg


def load_model(path: str | Path, device: str = "cpu", weights: str | None = None) -> SOMAD:
    """Load a model saved by :func:`save_model`.

    Args:
        device: where the tensors and the backbone go.
        weights: local backbone checkpoint, for backbones without offline weights.

    Raises:
        ModelFileError: missing/incomplete directory, other format version, or tensors whose
            shapes disagree with the config (tampered or damaged files); the message names the part.
    """
    path = Path(path)
    cfg = read_config(path)
    tpath = path / TENSORS
    if not tpath.is_file():
        raise ModelFileError(f"{path} is incomplete: {TENSORS} is missing. Fit the model again.")
    try:
        t = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{tpath} cannot be read ({exc}): the model is damaged, fit it again.") from None
    missing = [k for k in _TENSORS if k not in t]
    if missing:
        raise ModelFileError(f"{tpath} lacks tensors {missing}: the model is incomplete, fit it again.")
    try:
        hp = {k: cfg["hyperparameters"][k] for k in HYPERPARAMETERS}
        grid = tuple(cfg["grid"])
        fshape = tuple(cfg["feature_shape"])
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{path / CONFIG} lacks {exc}: the model is incomplete, fit it again.") from None
    m = grid[0] * grid[1]
    d = len(t["channel_idx"])
    n_patches = int(cfg["n_train"]) * fshape[0] * fshape[1]
    expected = {"som_weights": (m, d), "means": (m, d), "covariances": (m, d, d), "counts": (m,),
                "train_bmu": (n_patches,), "train_bmu_dist": (n_patches,),
                "train_scores": tuple(t["threshold_indices"].shape)}
    for name, shape in expected.items():
        if tuple(t[name].shape) != shape:
            raise ModelFileError(f"{tpath}: tensor '{name}' has shape {tuple(t[name].shape)} but the config "
                                 f"implies {shape}: the files disagree (tampered or mixed), fit the model again.")
    model = SOMAD(**hp, weights=weights, device=device)
    model.grid_ = grid
    model.feature_shape_ = fshape
    model.channel_idx_ = t["channel_idx"].numpy().astype(np.int64)
    dev = torch.device(device)
    model.som_weights_ = t["som_weights"].to(dev)
    model.means_ = t["means"].to(dev)
    model.covariances_ = t["covariances"].to(dev)
    model.counts_ = t["counts"].long().to(dev)
    model.train_bmu_ = t["train_bmu"].long().to(dev)
    model.train_bmu_dist_ = t["train_bmu_dist"].to(dev)
    model.train_scores_ = t["train_scores"].numpy()
    model.threshold_indices_ = t["threshold_indices"].numpy().astype(np.int64)
    try:
        model.factors_ = whitening_factors(model.covariances_)
    except torch.linalg.LinAlgError:
        raise ModelFileError(f"{tpath}: a covariance is not positive definite: the model is damaged.") from None
    model.train_paths_ = list(cfg.get("train_paths", []))
    model.n_train_ = int(cfg["n_train"])
    model.threshold_ = float(cfg["threshold"])
    model.pixel_range_ = tuple(cfg["pixel_range"])
    model.quantization_error_ = float(cfg["quantization_error"])
    model.topographic_error_ = float(cfg["topographic_error"])
    model.timings_ = dict(cfg.get("timings", {}))
    model.extra_ = dict(cfg.get("extra", {}))
    model.model_dir_ = str(path)
    return model
