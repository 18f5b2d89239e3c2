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
from .model import FITTED_TENSORS, FITTED_VALUES, RUNTIME_PARAMS, SOMAD, param_specs

FORMAT = "somad-model"
FORMAT_VERSION = 2
CONFIG = "config.json"
TENSORS = "tensors.safetensors"
METRICS = "metrics.json"



def _key(attr: str) -> str:
    """File key of a fitted attribute: its name without the trailing underscore."""
    return attr.rstrip("_")


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
        save_file(_tensors_to_save(model), str(tmp / TENSORS))
        _write_json(tmp / CONFIG, _config(model, extra))
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


def _tensors_to_save(model: SOMAD) -> dict[str, torch.Tensor]:
    """Every array of :data:`~somad.model.FITTED_TENSORS`, on CPU, in its stored dtype."""
    out = {}
    for name, spec in FITTED_TENSORS.items():
        t = torch.as_tensor(getattr(model, name)).detach().cpu().to(spec.stored or spec.dtype)
        out[_key(name)] = t.contiguous()
    return out


def _config(model: SOMAD, extra: dict | None) -> dict:
    """The JSON of a fitted model: format, learned hyperparameters, :data:`~somad.model.FITTED_VALUES`."""
    params = {k: v for k, v in model.get_params().items() if k not in RUNTIME_PARAMS}
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "hyperparameters": params}
    config.update({_key(name): getattr(model, name) for name in FITTED_VALUES})
    config["threshold_rule"] = (f"percentile {model.threshold_percentile:g} of {model.cv_folds}-fold cross-fitted "
                                f"scores of {len(model.train_scores_)} training images")
    config["extra"] = extra or getattr(model, "extra_", {})
    return config


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
    tensors = _read_tensors(path / TENSORS)
    model = _model_from_config(cfg, path, weights, device)
    _check_shapes(tensors, model, path / TENSORS)
    dev = torch.device(device)
    for name, spec in FITTED_TENSORS.items():
        t = tensors[_key(name)].to(spec.dtype)
        setattr(model, name, t.to(dev) if spec.on_device else t.numpy())
    try:
        model.factors_ = whitening_factors(model.covariances_)
    except torch.linalg.LinAlgError:
        raise ModelFileError(f"{path / TENSORS}: a covariance is not positive definite: the model is damaged."
                             ) from None
    model.extra_ = dict(cfg.get("extra", {}))
    model.model_dir_ = str(path)
    return model


def _read_tensors(tpath: Path) -> dict[str, torch.Tensor]:
    """Every tensor of :data:`~somad.model.FITTED_TENSORS` from ``tpath``, checked present."""
    if not tpath.is_file():
        raise ModelFileError(f"{tpath.parent} is incomplete: {TENSORS} is missing. Fit the model again.")
    try:
        t = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{tpath} cannot be read ({exc}): the model is damaged, fit it again.") from None
    missing = [_key(k) for k in FITTED_TENSORS if _key(k) not in t]
    if missing:
        raise ModelFileError(f"{tpath} lacks tensors {missing}: the model is incomplete, fit it again.")
    return t


def _model_from_config(cfg: dict, path: Path, weights: str | None, device: str) -> SOMAD:
    """An unfitted-looking SOMAD with the saved hyperparameters and the :data:`FITTED_VALUES` set."""
    saved = [p.name for p in param_specs() if p.name not in RUNTIME_PARAMS]
    try:
        hp = {k: cfg["hyperparameters"][k] for k in saved}
        values = {name: conv(cfg[_key(name)]) for name, conv in FITTED_VALUES.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path / CONFIG} lacks or garbles {exc}: the model is incomplete, fit it again."
                             ) from None
    if hp.get("grid") is not None:
        hp["grid"] = tuple(hp["grid"])
    model = SOMAD(**hp, weights=weights, device=device)
    for name, value in values.items():
        setattr(model, name, value)
    return model


def _check_shapes(t: dict[str, torch.Tensor], model: SOMAD, tpath: Path) -> None:
    """Every tensor's shape against the symbolic shape of :data:`FITTED_TENSORS` and the config."""
    h, w = model.feature_shape_
    dims = {"M": model.grid_[0] * model.grid_[1], "d": len(t["channel_idx"]),
            "P": model.n_train_ * h * w, "T": len(t["threshold_indices"])}
    for name, spec in FITTED_TENSORS.items():
        want = tuple(dims[s] for s in spec.shape)
        got = tuple(t[_key(name)].shape)
        if got != want:
            raise ModelFileError(f"{tpath}: tensor '{_key(name)}' has shape {got} but the config implies {want}: "
                                 "the files disagree (tampered or mixed), fit the model again.")
