"""The test split's scores and maps of a model, cached on disk next to the model.

Scoring a test split takes about a minute on 2 CPU cores (magnetic tile: 538 images), so it is
done once per model and data: by ``python -m somad score`` (the dashboard runs it as a "score"
job, :mod:`somad.jobs`) into ``<models_dir>/<category>/.scores/<model name>-<key>/``, which any
session, a restarted server or a second server reads back in a second.

The key (:func:`cache_key`) is a SHA-256 of the model's ``config.json`` (it holds the save time,
so a refit into the same folder is a new key), the size of its tensors file, the data root and
category, and every test image and mask file with its size and modification time: a changed
model or test split is a new key, and the stale entry of that model is removed when the new one
is written. Files: ``meta.json`` (key, model, data, metrics; strict JSON where the metrics allow,
NaN kept as NaN) and ``arrays.npz`` (plain numeric arrays, read with ``allow_pickle=False``).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from . import data
from .atomic import atomic_dir
from .errors import SomadError
from .persistence import CONFIG, TENSORS

CACHE_DIR = ".scores"
CACHE_VERSION = 2  # 2: evaluations with pixel_images (empty masks left out of the pixel metrics)
ARRAYS, META = "arrays.npz", "meta.json"


class NotCached(SomadError):
    """The test split of this model and data has not been scored into the cache yet."""


def cache_key(model_dir: str | Path, data_dir: str | Path, category: str) -> str:
    """SHA-256 hex of the model (config bytes, tensors size) and the test split (every image and
    mask path relative to the category, with size and mtime in ns).

    Raises:
        DataError: the category has no usable test split. ModelFileError: no model config.
    """
    model_dir = Path(model_dir)
    h = hashlib.sha256(f"somad-scores-{CACHE_VERSION}\n".encode())
    try:
        h.update((model_dir / CONFIG).read_bytes())
        h.update(str((model_dir / TENSORS).stat().st_size).encode())
    except OSError as exc:
        from .errors import ModelFileError

        raise ModelFileError(f"{model_dir} is not a readable model ({exc.strerror}).") from None
    cat = data.category_dir(data_dir, category)
    h.update(f"\n{cat.resolve()}\n".encode())
    for s in data.test_samples(data_dir, category):
        for p in (s.path, s.mask_path):
            if p is None:
                continue
            st = Path(p).stat()
            h.update(f"{Path(p).relative_to(cat)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_folder(model_dir: str | Path) -> Path:
    """``<models_dir>/<category>/.scores``: the cache entries of a category's models."""
    return Path(model_dir).parent / CACHE_DIR


def entry_path(model_dir: str | Path, key: str) -> Path:
    """The cache entry of ``model_dir`` for ``key``."""
    return cache_folder(model_dir) / f"{Path(model_dir).name}-{key[:20]}"


def is_cached(model_dir: str | Path, data_dir: str | Path, category: str, key: str | None = None) -> bool:
    """True when the entry for the current key exists (cheap: file stats and one hash)."""
    try:
        key = key or cache_key(model_dir, data_dir, category)
    except SomadError:
        return False
    return (entry_path(model_dir, key) / META).is_file()


def save(ev, model_dir: str | Path, data_dir: str | Path, category: str, key: str) -> Path:
    """Write the :class:`somad.pipeline.Evaluation` ``ev`` (with patches) as the entry for ``key``
    atomically, and remove the model's other (stale) entries and entries of models that are gone.

    Returns:
        the entry folder.
    """
    dest = entry_path(model_dir, key)
    arrays = {"labels": ev.labels.astype(np.int64), "scores": ev.scores, "maps": ev.maps, "masks": ev.masks,
              "images": ev.images}
    if ev.pixel_images is not None:
        arrays["pixel_images"] = np.asarray(ev.pixel_images, bool)
    if ev.patches is not None:
        arrays.update(patch_scores=ev.patches.scores.cpu().numpy(),
                      patch_neighbours=ev.patches.neighbours.cpu().numpy(),
                      patch_mahalanobis=ev.patches.mahalanobis.cpu().numpy())
    with atomic_dir(dest) as tmp:
        np.savez(tmp / ARRAYS, **arrays)
        meta = {"cache_version": CACHE_VERSION, "key": key, "model_dir": str(Path(model_dir).resolve()),
                "model": Path(model_dir).name, "data_dir": str(Path(data_dir).resolve()), "category": category,
                "paths": [str(Path(s.path).resolve()) for s in ev.samples], "metrics": ev.metrics}
        (tmp / META).write_text(json.dumps(meta, default=_json_default), encoding="utf-8")
    _prune(model_dir, dest)
    return dest


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _prune(model_dir: str | Path, keep: Path) -> None:
    """Remove the model's other entries, and entries whose model folder is gone."""
    name = Path(model_dir).name
    for entry in cache_folder(model_dir).iterdir():
        if entry == keep or entry.name.startswith("."):
            continue
        owner = entry.name[: -21] if len(entry.name) > 21 else ""
        if owner == name or not (Path(model_dir).parent / owner).is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def load(model_dir: str | Path, data_dir: str | Path, category: str, key: str | None = None):
    """The cached :class:`somad.pipeline.Evaluation` of the model on the test split.

    Raises:
        NotCached: no entry for the current key (never scored, or the model or test files changed).
    """
    import torch

    from .pipeline import Evaluation
    from .scoring import PatchScores

    key = key or cache_key(model_dir, data_dir, category)
    entry = entry_path(model_dir, key)
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
        with np.load(entry / ARRAYS, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise NotCached(f"the test split of {Path(model_dir).name} has not been scored yet ({type(exc).__name__}).") from None
    samples = data.test_samples(data_dir, category)
    if meta.get("key") != key or [str(Path(s.path).resolve()) for s in samples] != meta.get("paths"):
        raise NotCached(f"the cached scores of {Path(model_dir).name} are for other files.")
    patches = None
    if "patch_scores" in arrays:
        patches = PatchScores(torch.from_numpy(arrays["patch_scores"]), torch.from_numpy(arrays["patch_neighbours"]),
                              torch.from_numpy(arrays["patch_mahalanobis"]))
    return Evaluation(samples, arrays["labels"], arrays["scores"], arrays["maps"], arrays["masks"], arrays["images"],
                      meta["metrics"], patches, arrays.get("pixel_images"))


def score_into_cache(model_dir: str | Path, data_dir: str | Path, category: str, device: str = "cpu",
                     progress=None, force: bool = False) -> Path:
    """Score the test split with the saved model and write the cache entry (nothing when it is
    there already, unless ``force``). Returns the entry folder.

    Raises:
        DataError, ModelFileError: see :func:`cache_key` and :func:`somad.persistence.load_model`.
    """
    from .persistence import load_model
    from .pipeline import evaluate_model

    key = cache_key(model_dir, data_dir, category)
    if not force and is_cached(model_dir, data_dir, category, key):
        return entry_path(model_dir, key)
    model = load_model(model_dir, device=device)
    ev = evaluate_model(model, data_dir, category, progress, return_patches=True)
    if cache_key(model_dir, data_dir, category) != key:
        raise SomadError(f"the model or the test files of '{category}' changed while they were scored: score again.")
    return save(ev, model_dir, data_dir, category, key)
