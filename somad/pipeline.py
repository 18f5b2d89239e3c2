"""End-to-end workflows on MVTec-layout data: fit a category, evaluate it, predict files.

The CLI and the dashboard both call these functions; they take plain paths and
return plain data, and report progress through an optional callback
``progress(stage, done, total)``.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

from . import data
from .decision import is_anomalous
from .metrics import evaluate_groups
from .model import SOMAD
from .persistence import load_model, save_model, write_json
from .progress import Progress, Stage

DEFAULT_MODEL_NAME = "default"


def model_path(models_dir: str | Path, category: str, name: str = DEFAULT_MODEL_NAME) -> Path:
    """Where a category's model lives: ``<models_dir>/<category>/<name>``."""
    return Path(models_dir) / category / name


def list_models(models_dir: str | Path, category: str) -> list[Path]:
    """Saved model directories of a category, newest first."""
    from .persistence import is_model_dir

    folder = Path(models_dir) / category
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_model_dir(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def check_writable(out_dir: str | Path, force: bool = False) -> None:
    """Refuse to overwrite an existing model unless ``force``.

    Raises:
        ModelFileError: ``out_dir`` exists and ``force`` is False.
    """
    from .errors import ModelFileError

    if Path(out_dir).exists() and not force:
        raise ModelFileError(f"{out_dir} already exists: pass --force to overwrite it, or choose another --name.")


def fit_category(data_dir: str | Path, category: str, out_dir: str | Path, params: dict | None = None,
                 max_train_images: int | None = None, force: bool = False,
                 progress: Progress | None = None) -> SOMAD:
    """Fit a model on ``train/good`` of a category and save it to ``out_dir``.

    Checks ``out_dir`` before any work, so an existing model is never lost. The images are read
    batch by batch during the features stage (its timing includes decoding them).

    Raises:
        DataError, BackboneError, ModelFileError: see :mod:`somad.errors`.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir, force)
    model = SOMAD(**(params or {}))
    model._validate_params()  # every hyperparameter checked before any work
    model.extractor  # resolve backbone and weights before loading images: fail fast
    samples = data.train_samples(data_dir, category)
    if max_train_images:
        samples = samples[:max_train_images]
    paths = [s.path for s in samples]
    # streamed: one batch of images in memory at a time, decoded as the features stage reads it
    model.fit(data.ImageFiles(paths, model.image_size), [str(p) for p in paths], progress=progress)
    model.extra_ = {"data_dir": str(Path(data_dir).resolve()), "category": category}
    save_model(model, out_dir, force=force, extra=model.extra_)
    model.model_dir_ = str(out_dir)
    return model


def _load(samples, image_size: int, progress: Progress | None, stage: Stage) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(N, S, S, 3)`` and masks bool ``(N, S, S)`` of ``samples``, reporting ``stage``."""
    images, masks = [], []
    done = 0
    for img, mask in data.iter_batches(samples, image_size):
        images.append(img)
        masks.append(mask)
        done += len(img)
        if progress:
            progress(stage, done, len(samples))
    return np.concatenate(images), np.concatenate(masks)


@dataclass
class Evaluation:
    """Result of evaluating a model on a category's test split.

    Attributes:
        samples: the test samples, in order. labels: int ``(N,)``. scores: float32 ``(N,)``.
        maps: float32 ``(N, S, S)`` anomaly maps. masks: bool ``(N, S, S)``. images: uint8 ``(N, S, S, 3)``.
        metrics: overall metrics (see :func:`somad.metrics.evaluate_groups`) plus ``per_defect``,
            ``threshold`` and ``timings``.
        patches: the :class:`~somad.scoring.PatchScores` of every test patch (flat over N, h, w)
            when asked for with ``return_patches``, else None.
    """

    samples: list
    labels: np.ndarray
    scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray
    images: np.ndarray
    metrics: dict = field(default_factory=dict)
    patches: object = None


def evaluate_model(model: SOMAD, data_dir: str | Path, category: str, progress: Progress | None = None,
                   return_patches: bool = False) -> Evaluation:
    """Score every test image of a category and compute all metrics, overall and per defect type.

    Raises:
        DataError: the category has no usable test split.
    """
    samples = data.test_samples(data_dir, category)
    t0 = time.perf_counter()
    images, masks = _load(samples, model.image_size, progress, Stage.LOAD_TEST)
    t1 = time.perf_counter()
    scored = model.anomaly_maps(images, progress=progress, return_patches=return_patches)
    scores, maps = scored.scores, scored.maps
    t2 = time.perf_counter()
    labels = np.array([s.label for s in samples])
    good = labels == 0
    defects = np.array([s.defect for s in samples])
    # per defect type: the good images plus that type's, all read from one sort of the pixels
    groups = {d: good | (defects == d) for d in sorted(set(defects) - {data.GOOD})}
    overall, per_defect = evaluate_groups(labels, scores, masks, maps, groups)
    for defect, sel in groups.items():
        per_defect[defect]["n_images"] = int((~good[sel]).sum())
    t3 = time.perf_counter()
    overall.update({
        "category": category, "n_test": len(samples), "n_anomalous": int(labels.sum()),
        "threshold": model.threshold_, "per_defect": per_defect,
        "timings": {"load": t1 - t0, "score": t2 - t1, "metrics": t3 - t2, "total": t3 - t0,
                    "score_ms_per_image": 1000 * (t2 - t1) / max(1, len(samples))},
    })
    return Evaluation(samples, labels, scores, maps, masks, images, overall, scored.patches)


def write_results(ev: Evaluation, model: SOMAD, results_dir: str | Path, n_figures: int = 6) -> Path:
    """Write ``metrics.json``, ``per_image.csv`` and a few comparison PNGs under ``results_dir``."""
    from .explain import outcomes
    from .viz import comparison_figure

    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", ev.metrics)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "defect", "label", "score", "predicted", "outcome"])
    for s, lab, sc, out_ in zip(ev.samples, ev.labels, ev.scores, outcomes(ev.labels, ev.scores, model.threshold_)):
        writer.writerow([str(s.path), s.defect, int(lab), f"{sc:.6g}", int(is_anomalous(sc, model.threshold_)), out_])
    _write_text(out / "per_image.csv", buf.getvalue())
    lo, hi = model.pixel_range_
    pix_thr = ev.metrics.get("pixel_f1_threshold", hi)
    # the hardest cases: lowest-scored anomalies and highest-scored normals
    normals = [int(i) for i in np.flatnonzero(ev.labels == 0)[np.argsort(-ev.scores[ev.labels == 0])]]
    anomalies = [int(i) for i in np.flatnonzero(ev.labels == 1)[np.argsort(ev.scores[ev.labels == 1])]]
    picks = anomalies[:n_figures - n_figures // 2] + normals[:n_figures // 2]
    for i in picks:
        s = ev.samples[i]
        comparison_figure(ev.images[i], ev.masks[i], ev.maps[i], lo, hi, pix_thr,
                          f"{s.defect}/{s.path.name}  score {ev.scores[i]:.2f}  threshold {model.threshold_:.2f}",
                          out / "figures" / f"{s.defect}_{s.path.stem}.png")
    return out


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def predict_files(model: SOMAD, paths: list[str | Path], out_dir: str | Path | None = None
                  ) -> list[dict]:
    """Score image files; optionally write heatmap overlays ``<out_dir>/<stem>_overlay.png``.

    Returns:
        one dict per file: ``path``, ``score``, ``anomalous`` (at ``model.threshold_``), ``overlay``.

    Raises:
        DataError: a file is missing or not an image (checked for all before scoring).
    """
    from PIL import Image

    from .viz import overlay

    images = np.stack([data.load_image(p, model.image_size) for p in paths])
    res = model.anomaly_maps(images)
    rows = []
    lo, hi = model.pixel_range_
    names = overlay_names(paths)
    for p, name, img, sc, amap in zip(paths, names, images, res.scores, res.maps):
        row = {"path": str(p), "score": float(sc), "anomalous": bool(is_anomalous(sc, model.threshold_)),
               "overlay": None}
        if out_dir is not None:
            dest = Path(out_dir) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp.png")
            Image.fromarray(overlay(img, amap, lo, hi)).save(tmp)
            tmp.replace(dest)
            row["overlay"] = str(dest)
        rows.append(row)
    return rows


def overlay_names(paths: list[str | Path]) -> list[str]:
    """Distinct overlay file names: ``<stem>_overlay.png``, prefixed by the parent folder (and a
    counter if needed) where stems repeat, e.g. ``crack_000_overlay.png``."""
    stems = [Path(p).stem for p in paths]
    names, used = [], set()
    for p, stem in zip(paths, stems):
        name = stem if stems.count(stem) == 1 else f"{Path(p).parent.name}_{stem}"
        base, i = name, 1
        while name in used:
            i += 1
            name = f"{base}_{i}"
        used.add(name)
        names.append(f"{name}_overlay.png")
    return names


def load_for(models_dir: str | Path, category: str, name: str = DEFAULT_MODEL_NAME, device: str = "cpu") -> SOMAD:
    """Load ``<models_dir>/<category>/<name>``."""
    return load_model(model_path(models_dir, category, name), device=device)
