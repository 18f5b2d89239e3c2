"""Saving and loading fitted models: a directory with ``config.json``, ``tensors.safetensors``
and ``backbone.safetensors``.

No pickle anywhere. ``config.json`` holds the format version, every
hyperparameter, the backbone name, its timm architecture and where its weights
came from, image size, threshold, display range, SOM quality figures, fit
timings and the training image paths; ``tensors.safetensors`` holds the arrays
(SOM weights, Gaussians, training BMU index, channel indices, cross-fitted
training scores); ``backbone.safetensors`` holds the pretrained weights of the
backbone stages the features use (the timm ``features_only`` body, no
classifier head). A model directory is therefore self-contained: loading it
needs no ``--weights`` file, no weights package and no model hub.

Saving is atomic: everything is written to a temporary sibling directory that
is then renamed into place; an existing model is replaced only with
``force=True`` and is kept if anything fails before the rename.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_dir, write_json
from .devices import check_device
from .errors import BackboneError, ModelFileError, ParameterError
from .features import STRIDES, FeatureExtractor, backbone_spec
from .gaussian import whitening_factors
from .replay import REPLAY_FILE, Replay
from .model import FITTED_TENSORS, FITTED_VALUES, PARAM_TYPES, RUNTIME_PARAMS, SOMAD, ParamSpec, param_specs

FORMAT = "somad-model"
FORMAT_VERSION = 5  # 3: backbone weights + timm architecture saved with the model; intensity rule; folds used
#                    4: stage_offsets_px, the backbone's response offsets undone in the features
#                    5: cv_features, cv_neighbours (what partial_fit needs), som_train_images, and the
#                       optional provenance and threshold_manual of a model version (somad.versions)
READ_VERSIONS = (3, 4, 5)
"""Format versions this somad loads: a version-3 model has no stage offsets and is scored with
zero offsets, as it was fitted. Models before version 5 load without the threshold images' patch
vectors (empty ``cv_features_``): they score, evaluate and take a saved threshold as before, and
:meth:`~somad.model.SOMAD.partial_fit` says to refit them. An older somad refuses version 5 rather
than ignore a threshold set by hand."""
SINCE_VERSION_5 = ("cv_features_", "cv_neighbours_", "som_train_images_")
"""Fitted attributes a model saved before format 5 lacks (see :func:`_fill_before_5`)."""
CONFIG = "config.json"
TENSORS = "tensors.safetensors"
BACKBONE = "backbone.safetensors"
METRICS = "metrics.json"
# optional: the training replay (somad.replay.REPLAY_FILE), written when the model has one; a model without
# it loads with replay_ None, and a somad that does not know it ignores it (no format version change)



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
    with atomic_dir(path) as tmp:
        write_model_files(model, tmp, extra)
    return path


def write_model_files(model: SOMAD, folder: Path, extra: dict | None = None) -> None:
    """Write a fitted model's three files into the existing (temporary) folder ``folder``; the caller
    makes the folder appear atomically (:func:`save_model`, :func:`somad.versions.teach`)."""
    save_file(_tensors_to_save(model), str(folder / TENSORS))
    save_file(model.extractor.body_state(), str(folder / BACKBONE))
    if getattr(model, "replay_", None) is not None:
        save_file(model.replay_.to_tensors(), str(folder / REPLAY_FILE))
    write_json(folder / CONFIG, _config(model, extra))


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
    config["threshold_rule"] = model.threshold_rule
    config["backbone_architecture"] = model.extractor.architecture
    config["input_normalisation"] = {"mean": list(model.extractor.mean), "std": list(model.extractor.std)}
    config["stage_offsets_px"] = np.asarray(model.stage_offsets_).tolist()
    config["backbone_weights"] = getattr(model, "backbone_weights_", None) or (
        f"file {Path(model.weights).name}" if model.weights else backbone_spec(model.backbone).weights_source)
    config["extra"] = extra or getattr(model, "extra_", {})
    config["threshold_manual"] = getattr(model, "threshold_manual_", None)
    if getattr(model, "provenance_", None):
        config["provenance"] = model.provenance_
    return config


def read_config(path: str | Path) -> dict:
    """The checked ``config.json`` of a model directory.

    Raises:
        ModelFileError: missing directory or config, unreadable JSON, another format or version.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelFileError(f"model dir {path} is a file: pass the directory `fit` wrote (it holds {CONFIG}).")
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
    if cfg.get("format_version") not in READ_VERSIONS:
        raise ModelFileError(f"{path} has format version {cfg.get('format_version')} but this somad reads "
                             f"versions {', '.join(map(str, READ_VERSIONS))} (models that hold their backbone): fit the model again "
                             "with this version.")
    return cfg


def load_model(path: str | Path, device: str = "cpu") -> SOMAD:
    """Load a model saved by :func:`save_model`, backbone included (no weights file, package or hub).

    Args:
        device: where the tensors and the backbone go.

    Raises:
        ModelFileError: missing/incomplete directory, other format version, tensors whose
            shapes disagree with the config (tampered or damaged files), or backbone weights that
            are missing, unreadable or do not fit the saved architecture; the message names the file.
        ParameterError: ``device`` is unknown or not on this machine (see :func:`somad.devices.check_device`).
    """
    check_device(device)
    path = Path(path)
    cfg = read_config(path)
    old = cfg["format_version"] < 5
    tensors = _read_tensors(path / TENSORS, old)
    model = _model_from_config(cfg, path, device)
    if old:
        _fill_before_5(tensors, model)
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
    model.threshold_manual_ = cfg.get("threshold_manual") if isinstance(cfg.get("threshold_manual"), str) else None
    if isinstance(cfg.get("provenance"), dict):
        model.provenance_ = cfg["provenance"]
    model.replay_ = _load_replay(path / REPLAY_FILE, model.grid_)
    model.model_dir_ = str(path)
    model.backbone_weights_ = cfg.get("backbone_weights")
    model._extractor = _load_backbone(path, cfg.get("backbone_architecture"), model)
    _check_normalisation(cfg.get("input_normalisation"), model._extractor, path)
    # version 3 models were fitted without a correction
    offsets = _config_entry(cfg, path, ("stage_offsets_px",)) if cfg["format_version"] >= 4 else \
        np.zeros((len(STRIDES), 2))
    try:
        model._extractor.set_stage_offsets(offsets)
    except BackboneError as exc:
        raise ModelFileError(f"{path / CONFIG}: {exc} The model is damaged: fit it again.") from None
    model.stage_offsets_ = model._extractor.stage_offsets.copy()
    return model


def _load_replay(rpath: Path, grid: tuple[int, int]) -> Replay | None:
    """The optional training replay (None when the model has none).

    Raises:
        ModelFileError: the file exists but cannot be read or does not fit the SOM grid.
    """
    if not rpath.is_file():
        return None
    try:
        return Replay.from_tensors(load_file(str(rpath)), grid)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{rpath} cannot be read ({exc}): the training replay is damaged; delete that "
                             "file to use the model without a replay, or fit it again.") from None


def _check_normalisation(saved: dict | None, extractor: FeatureExtractor, path: Path) -> None:
    """The input normalisation the model was fitted with must be the one this somad applies.

    Raises:
        ModelFileError: it is missing or differs (the scores would be silently wrong).
    """
    now = {"mean": list(extractor.mean), "std": list(extractor.std)}
    if saved is None or not all(np.allclose(saved.get(k, []), now[k]) for k in now):
        raise ModelFileError(f"{path / CONFIG} was fitted with input normalisation {saved} but this somad "
                             f"normalises backbone '{extractor.architecture}' with {now}: fit the model again.")


def _load_backbone(path: Path, architecture: str | None, model: SOMAD) -> FeatureExtractor:
    """The feature extractor rebuilt from ``backbone.safetensors`` (on the model's device).

    Raises:
        ModelFileError: the file is missing or unreadable, the saved architecture is not the one
            ``model.backbone`` names, or the tensors do not fit it (named in the message).
    """
    bpath = path / BACKBONE
    if not bpath.is_file():
        raise ModelFileError(f"{path} is incomplete: {BACKBONE} (the backbone's weights) is missing. "
                             "Fit the model again.")
    try:
        state = load_file(str(bpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{bpath} cannot be read ({exc}): the model is damaged, fit it again.") from None
    try:
        expected = backbone_spec(model.backbone).architecture
        if architecture != expected:
            raise BackboneError(f"it was saved for architecture '{architecture}' but backbone "
                                f"'{model.backbone}' is '{expected}'.")
        fe = FeatureExtractor(model.backbone, channel_idx=model.channel_idx_, body_state=state,
                              body_source=f"in {bpath}")
    except BackboneError as exc:
        raise ModelFileError(f"{bpath}: {exc} The model is damaged or from another somad: fit it again."
                             ) from None
    return fe.to(model.torch_device)


def _fill_before_5(tensors: dict[str, torch.Tensor], model: SOMAD) -> None:
    """What a model saved before format 5 lacks: empty threshold patch vectors and neighbours (so it
    cannot be taught, see :meth:`~somad.model.SOMAD.partial_fit`), and ``som_train_images_`` = all."""
    d = len(tensors["channel_idx"])
    k = min(model.k, model.grid_[0] * model.grid_[1])
    tensors.setdefault("cv_features", torch.zeros((0, d), dtype=torch.float32))
    tensors.setdefault("cv_neighbours", torch.zeros((0, k), dtype=torch.int32))
    model.som_train_images_ = model.n_train_


def _read_tensors(tpath: Path, before_5: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of :data:`~somad.model.FITTED_TENSORS` from ``tpath``, checked present (those
    added in format 5 may be missing when ``before_5``)."""
    if not tpath.is_file():
        raise ModelFileError(f"{tpath.parent} is incomplete: {TENSORS} is missing. Fit the model again.")
    try:
        t = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{tpath} cannot be read ({exc}): the model is damaged, fit it again.") from None
    missing = [_key(k) for k in FITTED_TENSORS if _key(k) not in t and not (before_5 and k in SINCE_VERSION_5)]
    if missing:
        raise ModelFileError(f"{tpath} lacks tensors {missing}: the model is incomplete, fit it again.")
    return t


def _model_from_config(cfg: dict, path: Path, device: str) -> SOMAD:
    """An unfitted-looking SOMAD with the saved hyperparameters and the :data:`FITTED_VALUES` set."""
    hp = {spec.name: _config_entry(cfg, path, ("hyperparameters", spec.name), _param_reader(spec))
          for spec in param_specs() if spec.name not in RUNTIME_PARAMS}
    values = {name: _config_entry(cfg, path, (_key(name),), conv) for name, conv in FITTED_VALUES.items()
              if not (cfg["format_version"] < 5 and name in SINCE_VERSION_5)}
    model = SOMAD(**hp, device=device)
    try:
        model._validate_params()
    except ParameterError as exc:
        raise ModelFileError(f"{path / CONFIG}: its hyperparameters cannot work: {exc} The model is damaged, "
                             "fit it again.") from None
    for name, value in values.items():
        setattr(model, name, value)
    return model


def _param_reader(spec: ParamSpec):
    """A reader of hyperparameter ``spec`` from JSON: the value when it has the spec's type (None where
    None is allowed, :data:`~somad.model.PARAM_TYPES`; a list of ints for a tuple), else TypeError
    (for :func:`_config_entry`)."""
    def read(value):
        if value is None and (spec.default is None or spec.name in PARAM_TYPES):
            return None
        if spec.type is tuple and isinstance(value, list) and all(type(v) is int for v in value):
            return tuple(value)
        ok = {bool: lambda v: type(v) is bool, int: lambda v: type(v) is int,
              float: lambda v: type(v) in (int, float), str: lambda v: type(v) is str}.get(spec.type)
        if ok is None or not ok(value):
            raise TypeError(f"{value!r} is not of type {spec.type.__name__}")
        return value
    return read


def _config_entry(cfg: dict, path: Path, keys: tuple[str, ...], conv=lambda v: v):
    """``conv(cfg[keys[0]][keys[1]]...)``.

    Raises:
        ModelFileError: the entry is missing or ``conv`` cannot read it; the message names it.
    """
    name, value = ".".join(keys), cfg
    try:
        for k in keys:
            value = value[k]
    except (KeyError, TypeError):
        raise ModelFileError(f"{path / CONFIG} lacks '{name}': the model is incomplete, fit it again.") from None
    try:
        return conv(value)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path / CONFIG}: '{name}' cannot be read ({exc}): the model is damaged, "
                             "fit it again.") from None


def _check_shapes(t: dict[str, torch.Tensor], model: SOMAD, tpath: Path) -> None:
    """Every tensor's shape against the symbolic shape of :data:`FITTED_TENSORS` and the config."""
    h, w = model.feature_shape_
    m = model.grid_[0] * model.grid_[1]
    dims = {"M": m, "d": len(t["channel_idx"]), "P": model.n_train_ * h * w, "T": len(t["threshold_indices"]),
            "k": min(model.k, m)}
    # the threshold images' patch vectors, or none (a model saved before format 5 whose threshold was saved)
    dims["Q"] = 0 if len(t["cv_features"]) == 0 else dims["T"] * h * w
    if model.d is not None and model.d != dims["d"]:
        raise ModelFileError(f"{tpath}: the config's d is {model.d} but the model keeps {dims['d']} channels "
                             "(tensor 'channel_idx'): the files disagree (tampered or mixed), fit the model again.")
    for name, spec in FITTED_TENSORS.items():
        want = tuple(dims[s] for s in spec.shape)
        got = tuple(t[_key(name)].shape)
        if got != want:
            raise ModelFileError(f"{tpath}: tensor '{_key(name)}' has shape {got} but the config implies {want}: "
                                 "the files disagree (tampered or mixed), fit the model again.")
