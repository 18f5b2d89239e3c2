"""Model versions: teaching a model new normal images, saving a threshold, and listing the versions.

A model is never changed in place. :func:`teach` (images added with
:meth:`somad.model.SOMAD.partial_fit`) and :func:`save_threshold` each save a **new** model
directory next to its parent, and record in its ``config.json`` under ``"provenance"``::

    {"kind": "teach" | "threshold" | "refit",
     "parent": {"name", "path", "config_sha256", "format_version"},
     "added": [{"path", "sha256", "confirmed_defective"}],      # images taught ([] for a threshold)
     "time": ISO 8601 UTC, "note": text or None,
     "threshold_before", "threshold_after", "rule",               # rule: how threshold_after was set
     "n_train_before", "n_train_after", "refit_advice": text or None}

The parent is never touched and stays loadable, so undo means opening the parent. A new version
never becomes the category's default by itself: before it appears, :func:`somad.store.pin_default`
marks the current default when none was marked (as a fit does); :func:`somad.store.set_default`
marks another.

Names: ``name`` when given (refused if taken), else ``<base>-v2``, ``<base>-v3``, ... where
``<base>`` is the parent's name without a trailing ``-vN``. The version is written into a hidden
temporary folder and then renamed to the first free name; a rename onto a name another process
took meanwhile fails and the next name is tried, so two users teaching the same parent at once get
two complete versions, never a mixed one.

This module implements the interface of ``INTERFACES.md`` ("somad/versions.py + SOMAD.partial_fit")
without deviation. Additions: ``teach(..., device=)``, ``VersionInfo.threshold_before`` and ``VersionInfo.refit_advice``;
``teach`` refuses an image from an MVTec ``test/<defect>/`` folder unless its path is in
``confirmed_defective`` (it is then recorded with ``"confirmed_defective": true``).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from . import data
from .atomic import output_errors
from .errors import ModelFileError, OutputError, ParameterError
from .progress import Progress
from .store import NAME_PATTERN, check_name, list_models, pin_default
from .words import plural, word

KINDS = ("teach", "threshold", "refit")
"""What made a version (``provenance["kind"]``); a plain fit has no provenance (kind "fit" in listings)."""

REFIT_FAR_SHARE = 0.25
"""Refit advice: share of the taught patches farther from their BMU than :data:`REFIT_FAR_PERCENTILE`
percent of the SOM's own training patches. A SOM that already stands for the taught images leaves
about 1 % of them there. Measured (``benchmarks/teach.py``, bottle): a dimmer, warmer light put 17 %
there and teaching with the SOM fixed removed its false alarms, a shift of 2 feature cells under
10 %; a quarter means most of the new appearance has no neuron of its own."""
REFIT_FAR_PERCENTILE = 99.0
"""Percentile of the SOM's training patches' BMU distances (quantization errors) the share compares with."""
REFIT_ADDED_FRACTION = 0.5
"""Refit advice: taught images at or above this fraction of the images the SOM was trained on."""


@dataclass(frozen=True)
class VersionInfo:
    """One saved model of a category, as the Model page lists it.

    Attributes:
        name: folder name. path: the model dir. parent: the parent's folder name (None for a fit).
        kind: "fit", "teach", "threshold" or "refit". time: ISO 8601 (UTC for versions; a fit's
            ``saved_at``). note: the engineer's note or None. n_added: images taught in this version.
        threshold: the model's image threshold (Mahalanobis units). threshold_before: the parent's
            (None for a fit). refit_advice: why the SOM should be refitted, or None.
    """

    name: str
    path: Path
    parent: str | None
    kind: str
    time: str
    note: str | None
    n_added: int
    threshold: float | None
    threshold_before: float | None = None
    refit_advice: str | None = None


def provenance(model_dir: str | Path) -> dict | None:
    """The ``provenance`` of a model dir's ``config.json`` (see the module docstring), None for a plain fit.

    Raises:
        ModelFileError: not a readable somad model dir.
    """
    from .persistence import read_config

    prov = read_config(model_dir).get("provenance")
    return prov if isinstance(prov, dict) else None


def versions(models_dir: str | Path, category: str) -> list[VersionInfo]:
    """Every saved model of ``category`` under ``models_dir`` with what made it, newest first
    (the order of :func:`somad.store.list_models`); unreadable configs are skipped."""
    out = []
    for path in list_models(models_dir, category):
        try:
            cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        prov = cfg.get("provenance") if isinstance(cfg.get("provenance"), dict) else {}
        parent = prov.get("parent") or {}
        thr = cfg.get("threshold")
        out.append(VersionInfo(
            name=path.name, path=path, parent=parent.get("name"), kind=prov.get("kind", "fit"),
            time=prov.get("time") or cfg.get("saved_at", ""), note=prov.get("note"),
            n_added=len(prov.get("added") or []), threshold=float(thr) if isinstance(thr, (int, float)) else None,
            threshold_before=prov.get("threshold_before"), refit_advice=prov.get("refit_advice")))
    return out


def refit_advice(model) -> str | None:
    """Why and when the SOM itself should be refitted, in words for the model card; None when not.

    The SOM was trained on the first ``som_train_images_`` training images; images taught since
    (:meth:`~somad.model.SOMAD.partial_fit`) only joined the Gaussians. Their patches' distance to
    their BMU (quantization error) against the SOM's own training patches tells whether the SOM has
    neurons for their appearance: advice is given when more than :data:`REFIT_FAR_SHARE` of the
    taught patches lie beyond the :data:`REFIT_FAR_PERCENTILE` percentile of the training patches'
    distances (a shifted or rotated part, a new texture), or when the taught images reach
    :data:`REFIT_ADDED_FRACTION` of the SOM's training images.

    Args:
        model: a fitted :class:`~somad.model.SOMAD`.
    """
    model._check_fitted()
    n_som = getattr(model, "som_train_images_", model.n_train_)
    added = model.n_train_ - n_som
    if added <= 0:
        return None
    hw = model.feature_shape_[0] * model.feature_shape_[1]
    dist = torch.as_tensor(model.train_bmu_dist_).float().cpu()
    base, new = dist[:n_som * hw], dist[n_som * hw:]
    limit = float(torch.quantile(base[torch.linspace(0, len(base) - 1, min(len(base), 1_000_000)).long()],
                                 REFIT_FAR_PERCENTILE / 100))
    share = float((new > limit).float().mean())
    qe_ratio = float(new.mean() / base.mean().clamp_min(1e-12))
    why = []
    if share > REFIT_FAR_SHARE:
        why.append(f"{share:.0%} of the patches of the {plural(added, 'taught image')} lie farther from their best-matching neuron "
                   f"than {REFIT_FAR_PERCENTILE:g} % of the SOM's training patches (quantization error "
                   f"{qe_ratio:.2f}x the training images'): the SOM has no neurons for much of their appearance")
    if added >= REFIT_ADDED_FRACTION * n_som:
        why.append(f"{plural(added, 'taught image')} {word(added, 'is')} {added / n_som:.0%} of the {n_som} the SOM "
                   "was trained on")
    if not why:
        return None
    return ("Refit the SOM: " + "; ".join(why) + ". A full fit on the enlarged training set (the taught images "
            "in train/good) places neurons for them; save it as a new version.")


def teach(model_dir: str | Path, image_paths: Iterable[str | Path], *, note: str | None = None,
          name: str | None = None, progress: Progress | None = None,
          confirmed_defective: Iterable[str | Path] = (), device: str = "cpu") -> Path:
    """Teach a saved model defect-free images: a new sibling version with them added
    (:meth:`~somad.model.SOMAD.partial_fit`, SOM fixed) and its provenance; the parent is untouched.

    Images follow ``fit``'s rules (:mod:`somad.data`): any size and aspect (whole-frame resize to the
    model's ``image_size``), read with the model's intensity rule (pixel types it refuses are refused
    with their name).

    Args:
        model_dir: the parent model dir. image_paths: image files (expand folders and globs with
            :func:`somad.pipeline.expand_images`). note: the engineer's note. name: the new version's
            folder name (default ``<parent base>-vN``, see the module docstring).
        progress: ``progress(stage, done, total)`` callback.
        confirmed_defective: paths among ``image_paths`` from an MVTec ``test/<defect>/`` folder that
            the user confirmed to teach as normal anyway (recorded in the provenance).
        device: where the work runs (cpu, cuda).

    Returns:
        The new version's directory.

    Raises:
        ModelFileError: the parent cannot be loaded, was saved before teaching existed (one line
            saying to refit), or ``name`` is taken. DataError: an image cannot be read.
        ParameterError: no images, or a defective-labelled image not in ``confirmed_defective``.
        OutputError: the models folder cannot be written (checked before any work).
    """
    from .persistence import load_model

    parent = Path(model_dir)
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise ParameterError("teach needs at least one image: give image files, folders or glob patterns.")
    confirmed = {_norm(p) for p in confirmed_defective}
    for p in paths:
        data.check_image_file(p)
        label = _defect_label(p)
        if label and _norm(p) not in confirmed:
            raise ParameterError(f"{p} is labelled defective ({label}): confirm that it is normal to teach it "
                                 "(--confirm-defective on the command line).")
    folder = _writable_folder(parent, name)
    model = load_model(parent, device=device)
    if len(model.cv_features_) == 0:
        raise ModelFileError(f"{parent} was saved before teaching existed (format older than 5, it lacks the "
                             "threshold images' patch vectors): fit it again with `python -m somad fit` to teach it.")
    images = np.stack([data.load_image(p, model.image_size, model.intensity_) for p in paths])
    before, n_before = model.threshold_, model.n_train_
    model.partial_fit(images, [str(p) for p in paths], progress)
    model.provenance_ = _provenance(
        parent, "teach", note, before, model,
        added=[{"path": str(p), "sha256": _sha256(p), "confirmed_defective": bool(_defect_label(p))}
               for p in paths],
        n_train_before=n_before, n_train_after=model.n_train_, refit_advice=refit_advice(model),
        partial_fit_seconds=round(model.timings_.get("partial_fit", 0.0), 3))
    return _save_version(model, parent, folder, name)


def save_threshold(model_dir: str | Path, value: float, *, rule: str, note: str | None = None,
                   name: str | None = None) -> Path:
    """Save a model with image threshold ``value`` as a new sibling version (``predict``, ``evaluate``
    and the dashboard then use it); the parent is untouched.

    Args:
        value: the threshold in Mahalanobis units (an image is anomalous at score >= value).
        rule: how it was chosen, in words (e.g. "set by hand at 31.2 from the F1-optimal on 83 test
            images"); it becomes the model's ``threshold_rule``. Teaching the new version later keeps this
            threshold (the cross-fitted one is still recomputed into ``train_scores_``).
        note, name: as in :func:`teach`.

    Raises:
        ParameterError: ``value`` is not a finite number >= 0 or ``rule`` is empty. ModelFileError: the parent
            cannot be loaded or ``name`` is taken. OutputError: the models folder cannot be written.
    """
    from .persistence import load_model

    try:
        ok = not isinstance(value, bool) and np.isfinite(float(value)) and float(value) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"threshold must be a finite number >= 0 (image scores are Mahalanobis distances, "
                             f"never negative), got {value!r}.")
    value = float(value)
    if not str(rule or "").strip():
        raise ParameterError("save_threshold needs the rule that chose the threshold, in words.")
    parent = Path(model_dir)
    folder = _writable_folder(parent, name)
    model = load_model(parent)
    before = model.threshold_
    model.threshold_ = value
    model.threshold_manual_ = str(rule).strip()
    model.provenance_ = _provenance(parent, "threshold", note, before, model, added=[],
                                    n_train_before=model.n_train_, n_train_after=model.n_train_,
                                    refit_advice=refit_advice(model))
    return _save_version(model, parent, folder, name)


def refit(model_dir: str | Path, *, note: str | None = None, name: str | None = None,
          progress: Progress | None = None, device: str = "cpu") -> Path:
    """Refit a model, SOM included, on all its training images (those it was fitted on and those taught
    since), with the same hyperparameters and intensity rule, as a new sibling version (kind "refit").

    This is the step :func:`refit_advice` points to. A threshold set by hand is not carried over: the
    refit sets the cross-fitted one (the provenance shows both).

    Raises:
        ModelFileError: the parent cannot be loaded, or one of its training images is no longer on
            disk (named). OutputError: the models folder cannot be written (checked before any work).
    """
    from .model import SOMAD
    from .persistence import load_model

    parent = Path(model_dir)
    folder = _writable_folder(parent, name)
    old = load_model(parent, device=device)
    paths = [Path(p) for p in old.train_paths_]
    gone = next((p for p in paths if not p.is_file()), None) if len(paths) == old.n_train_ else parent
    if gone is not None:
        raise ModelFileError(f"cannot refit {parent}: its training image {gone} is not on disk any more. Fit a new "
                             "model with `python -m somad fit` on a folder that holds the images.")
    params = {**old.get_params(), "device": device}
    model = SOMAD(**params).fit(data.ImageFiles(paths, old.image_size, old.intensity_), [str(p) for p in paths],
                                progress, intensity=old.intensity_)
    taught = paths[old.som_train_images_:]
    model.provenance_ = _provenance(
        parent, "refit", note, old.threshold_, model,
        added=[{"path": str(p), "sha256": _sha256(p), "confirmed_defective": bool(_defect_label(p))} for p in taught],
        n_train_before=old.n_train_, n_train_after=model.n_train_, refit_advice=None)
    model.extra_ = getattr(old, "extra_", {})
    return _save_version(model, parent, folder, name)


# ----------------------------------------------------------------------------- leaks
def parent_dir(model_dir: str | Path, prov: dict) -> Path | None:
    """The parent model dir a ``provenance`` record names (``parent: {name, path}`` as this module
    writes it; a plain path or name also works), or None for a fit. A parent that moved is looked
    for by name next to ``model_dir``."""
    parent = prov.get("parent")
    if isinstance(parent, dict):
        path, name = parent.get("path"), parent.get("name")
    else:
        path, name = parent, Path(str(parent)).name if parent else None
    if path and Path(str(path)).is_dir():
        return Path(str(path))
    return Path(model_dir).parent / str(name) if name else None


def provenance_chain(model_dir: str | Path, limit: int = 1000) -> list[dict]:
    """The ``provenance`` records of a model and its ancestors, the model's own first (empty for a
    plain fit). A missing or unreadable ancestor ends the chain."""
    from .errors import SomadError
    from .persistence import read_config

    chain, seen = [], set()
    here: Path | None = Path(model_dir)
    while here is not None and len(chain) < limit:
        try:
            prov = read_config(here).get("provenance")
        except (SomadError, OSError):
            break
        if not isinstance(prov, dict) or str(here.resolve()) in seen:
            break
        seen.add(str(here.resolve()))
        chain.append(prov)
        here = parent_dir(here, prov)
    return chain


def taught_files(model_dir: str | Path) -> list[dict]:
    """Every file taught to the model or its ancestors: provenance ``added`` entries ``{path, sha256}``."""
    return [a for prov in provenance_chain(model_dir) for a in (prov.get("added") or []) if isinstance(a, dict)]


def leak_mask(model, model_dir: str | Path | None, paths: Iterable) -> np.ndarray:
    """Which of ``paths`` (e.g. a test split) the model has learned from: a training file, a file
    taught to it or an ancestor, or another file with a taught file's content (SHA-256). Such test
    images make that split's metrics optimistic; the dashboard's Test inspector and ``evaluate``
    both report the metrics with and without them (:func:`somad.operating.leaked`).

    Args:
        model: a fitted SOMAD (its ``train_paths_``). model_dir: its folder, whose provenance chain
            names the taught files (None: the training files only). paths: ``(N,)`` image files, or
            :class:`somad.data.Sample` (their ``.path``).

    Returns:
        bool ``(N,)``.
    """
    from .operating import leaked

    files = [getattr(p, "path", p) for p in paths]
    taught = taught_files(model_dir) if model_dir else []
    return leaked(files, list(getattr(model, "train_paths_", []) or []) + [a.get("path", "") for a in taught],
                  [a["sha256"] for a in taught if a.get("sha256")])


# ----------------------------------------------------------------------------- helpers
def _norm(p) -> str:
    return os.path.normpath(os.path.abspath(str(p)))


def _defect_label(path: Path) -> str | None:
    """``test/<defect>`` when ``path`` lies in an MVTec test folder of a defect type, else None."""
    parts = Path(os.path.abspath(path)).parts
    if len(parts) >= 3 and parts[-3] == "test" and parts[-2] != "good":
        return f"test/{parts[-2]}"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _writable_folder(parent: Path, name: str | None) -> Path:
    """The folder the new version goes to (the parent's), checked before any work.

    Raises:
        ModelFileError: ``name`` is not a plain name or is taken; the parent is not a model dir.
        OutputError: the folder is not writable.
    """
    from .persistence import read_config

    read_config(parent)
    folder = parent.resolve().parent
    if name is not None and (folder / check_name(name)).exists():
        raise ModelFileError(f"{folder / name} already exists: choose another --name (versions never overwrite).")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot save a new version: the models folder {folder} is not writable ({parent.name} "
                          "is unchanged). Make it writable, or copy the model to a writable folder.")
    return folder


def _provenance(parent: Path, kind: str, note: str | None, before: float, model, **more) -> dict:
    cfg_path = parent / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    return {"kind": kind,
            "parent": {"name": parent.resolve().name, "path": str(parent),
                       "config_sha256": hashlib.sha256(cfg_path.read_bytes()).hexdigest(),
                       "format_version": cfg.get("format_version")},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": (note or "").strip() or None,
            "threshold_before": float(before), "threshold_after": float(model.threshold_),
            "rule": model.threshold_rule, **more}


def _candidates(parent: Path, folder: Path) -> Iterable[str]:
    base = re.sub(r"-v\d+$", "", parent.resolve().name)[:58] or "model"
    i = 2
    while True:
        cand = f"{base}-v{i}"
        if NAME_PATTERN.match(cand):
            yield cand
        i += 1


def _save_version(model, parent: Path, folder: Path, name: str | None) -> Path:
    """Write ``model`` into a hidden temporary folder in ``folder`` and rename it to ``name`` or the
    first free ``<base>-vN``; a name taken meanwhile (the rename fails) moves on to the next."""
    from .persistence import write_model_files

    with output_errors(folder):
        tmp = Path(tempfile.mkdtemp(prefix=".new-version.", dir=folder))
    try:
        with output_errors(folder):
            write_model_files(model, tmp, getattr(model, "extra_", None))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
            for f in tmp.iterdir():
                os.chmod(f, 0o666 & ~umask)
        with output_errors(folder):  # the current default stays the default (marked if it was implicit)
            pin_default(folder.parent, folder.name)
        names = [check_name(name)] if name is not None else _candidates(parent, folder)
        for cand in names:
            target = folder / cand
            if target.exists():
                if name is not None:
                    raise ModelFileError(f"{target} already exists: choose another --name (versions never "
                                         "overwrite).")
                continue
            try:
                os.rename(tmp, target)  # fails when another process put a version there meanwhile
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and name is None:
                    continue
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise ModelFileError(f"{target} already exists: choose another --name.") from None
                raise OutputError(f"cannot save the new version as {target}: {exc.strerror or exc}.") from None
            return target
        raise ModelFileError(f"no free version name next to {parent}.")  # pragma: no cover - names never run out
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
