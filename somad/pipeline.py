"""End-to-end workflows on MVTec-layout data: fit a category, evaluate it, predict files.

The CLI and the dashboard both call these functions; they take plain paths and
return plain data, and report progress through an optional callback
``progress(stage, done, total)``.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from . import data, store
from .atomic import (
    atomic_dir,
    atomic_path,
    check_output_dir,
    check_output_file,
    make_dir,
    output_errors,
    write_json,
    write_text,
)
from .decision import is_anomalous
from .errors import DataError, ParameterError
from .metrics import evaluate_groups
from .model import SOMAD
from .persistence import load_model, save_model
from .progress import Progress, Stage
from .store import DEFAULT_MODEL_NAME, list_models, model_path  # noqa: F401 (the folder layout, re-exported)
from .words import plural, word


def check_writable(out_dir: str | Path, force: bool = False) -> None:
    """Refuse to overwrite an existing model unless ``force``; check the folder can be written.

    Raises:
        ModelFileError: ``out_dir`` exists and ``force`` is False.
        OutputError: ``out_dir`` cannot be created (a file on its path, or no write permission).
    """
    from .errors import ModelFileError

    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise ModelFileError(f"{out_dir} already exists: pass --force to overwrite it, or choose another --name.")
    check_output_dir(out_dir, "--models-dir")  # fail before the fit, not after it


def fit_category(data_dir: str | Path, category: str, out_dir: str | Path, params: dict | None = None,
                 max_train_images: int | None = None, force: bool = False,
                 progress: Progress | None = None, replay: bool = False) -> SOMAD:
    """Fit a model on ``train/good`` of a category and save it to ``out_dir``; with ``replay``, keep
    a snapshot of the SOM per epoch (:mod:`somad.replay`).

    Checks ``out_dir`` before any work, so an existing model is never lost. The images are read
    batch by batch during the features stage (its timing includes decoding them).

    Raises:
        DataError, BackboneError, ModelFileError: see :mod:`somad.errors`.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir, force)
    if max_train_images is not None and max_train_images < 1:
        raise ParameterError(f"max_train_images must be >= 1 (or left out for all), got {max_train_images}.")
    model = SOMAD(**(params or {}))
    model._validate_params()  # every hyperparameter checked before any work
    model.extractor.calibrate()  # resolve backbone and weights, run the localisation check: fail fast
    samples = data.train_samples(data_dir, category)
    if max_train_images:
        samples = samples[:max_train_images]
    paths = [s.path for s in samples]
    rule = data.intensity_rule(paths)
    # streamed: one batch of images in memory at a time, decoded as the features stage reads it
    model.fit(data.ImageFiles(paths, model.image_size, rule), [str(p) for p in paths], progress=progress,
              intensity=rule, replay=replay)
    model.extra_ = {"data_dir": str(Path(data_dir).resolve()), "category": category}
    if out_dir.parent.name == category:  # the store's layout: a new fit never takes the default over
        store.pin_default(out_dir.parent.parent, category)
    save_model(model, out_dir, force=force, extra=model.extra_)
    model.model_dir_ = str(out_dir)
    return model


def _load(samples, image_size: int, progress: Progress | None, stage: Stage,
          rule: data.IntensityRule) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(N, S, S, 3)`` and masks bool ``(N, S, S)`` of ``samples`` read with the
    category's intensity ``rule``, reporting ``stage``."""
    images, masks = [], []
    done = 0
    for img, mask in data.iter_batches(samples, image_size, rule=rule):
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
        pixel_images: bool ``(N,)`` the images whose pixels count in the pixel metrics (all but
            defective images with an empty mask, unless kept); None = all.
    """

    samples: list
    labels: np.ndarray
    scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray
    images: np.ndarray
    metrics: dict = field(default_factory=dict)
    patches: object = None
    pixel_images: np.ndarray | None = None

    def pixel_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(masks, maps)`` of the images the pixel metrics count (:attr:`pixel_images`), for pixel
        curves that must match ``metrics`` (the PRO curve of the Metrics page and the report)."""
        if self.pixel_images is None or self.pixel_images.all():
            return self.masks, self.maps
        return self.masks[self.pixel_images], self.maps[self.pixel_images]


EMPTY_MASKS_NAMED = 10
"""Empty masks named in the warning of :func:`evaluate_model` (``metrics.json`` lists them all)."""


def empty_masks(samples: list, masks: np.ndarray) -> list:
    """The defective samples whose mask file marks no pixel (every value 0): almost always a
    labelling mistake. ``masks`` bool ``(N, S, S)`` as loaded; only files whose resized mask is
    empty are read again, to tell an empty file from a defect too small for ``S`` pixels."""
    return [s for s, m in zip(samples, masks)
            if s.label and not m.any() and not (data.read_raw(s.mask_path) > 0).any()]


WITHOUT_TAUGHT = "without_taught"
"""Key in ``metrics.json`` of the metrics on the test split without its taught images (see :func:`evaluate_model`)."""


def taught_test_images(model: SOMAD, samples: Sequence[data.Sample]) -> np.ndarray:
    """bool ``(N,)``: the test images ``model`` has learned from (taught to it or an ancestor, or a
    training file): :func:`somad.versions.leak_mask` with the model's own folder (``model_dir_``)."""
    from .versions import leak_mask

    return leak_mask(model, getattr(model, "model_dir_", None), samples)


def evaluate_model(model: SOMAD, data_dir: str | Path, category: str, progress: Progress | None = None,
                   return_patches: bool = False, keep_empty_masks: bool = False) -> Evaluation:
    """Score every test image of a category and compute all metrics, overall and per defect type.

    A defective image whose mask is empty (:func:`empty_masks`) is named in a warning and counted
    in ``metrics["n_empty_masks"]`` (its masks under ``"empty_masks"``). It stays in the image
    metrics; the pixel metrics leave it out, unless ``keep_empty_masks`` (then all its pixels count
    as normal). ``metrics["empty_masks_in_pixel_metrics"]`` says which.

    Test images the model has learned from (:func:`taught_test_images`: taught as normal to this
    version or an ancestor) make the metrics optimistic (a leak): ``metrics["n_taught_test"]`` counts
    them, ``metrics["taught_test"]`` names them (``"<defect>/<file>"``), and
    ``metrics["without_taught"]`` holds every overall metric on the split without them, with their
    ``n_test``, ``n_anomalous`` and the outcome counts at the model's threshold with (``outcomes_with_taught``)
    and without (``outcomes``) them; None when no test image leaks. The Test inspector applies the same rule.

    Raises:
        DataError: the category has no usable test split.
    """
    samples = data.test_samples(data_dir, category)
    t0 = time.perf_counter()
    images, masks = _load(samples, model.image_size, progress, Stage.LOAD_TEST, model.intensity_)
    t1 = time.perf_counter()
    scored = model.anomaly_maps(images, progress=progress, return_patches=return_patches)
    scores, maps = scored.scores, scored.maps
    t2 = time.perf_counter()
    labels = np.array([s.label for s in samples])
    good = labels == 0
    defects = np.array([s.defect for s in samples])
    # per defect type: the good images plus that type's, all read from one sort of the pixels
    groups = {d: good | (defects == d) for d in sorted(set(defects) - {data.GOOD})}
    empty = empty_masks(samples, masks)
    if empty:
        names = ", ".join(str(s.mask_path) for s in empty[:EMPTY_MASKS_NAMED])
        extra = len(empty) - EMPTY_MASKS_NAMED
        more = f" and {extra} more (all in metrics.json)" if extra > 0 else ""
        one = len(empty) == 1
        warnings.warn(f"{plural(len(empty), 'defective test image')} of '{category}' {word(len(empty), 'has')} an "
                      f"empty mask (no pixel > 0), most likely a labelling mistake: {names}{more}. " + (
                          f"All {'its' if one else 'their'} pixels count as normal in the pixel metrics (kept on "
                          "request)." if keep_empty_masks
                          else f"{'It is' if one else 'They are'} left out of the pixel metrics (keep "
                               f"{word(len(empty), 'it')}, all pixels normal, with --keep-empty-masks); the image "
                               f"metrics count {word(len(empty), 'it')} as defective."), stacklevel=2)
    left_out = set() if keep_empty_masks else set(empty)
    pixel_images = np.array([s not in left_out for s in samples]) if left_out else None
    leak = taught_test_images(model, samples)
    with_clean = dict(groups, **({WITHOUT_TAUGHT: ~leak} if leak.any() else {}))
    overall, per_defect = evaluate_groups(labels, scores, masks, maps, with_clean, pixel_images)
    clean = per_defect.pop(WITHOUT_TAUGHT, None)
    for defect, sel in groups.items():
        per_defect[defect]["n_images"] = int((~good[sel]).sum())
    if clean is not None:
        from .explain import outcome_counts

        every, counts = outcome_counts(labels, scores, model.threshold_), outcome_counts(
            labels[~leak], scores[~leak], model.threshold_)
        clean.update({"n_test": int((~leak).sum()), "n_anomalous": int(labels[~leak].sum()),
                      "outcomes": counts, "outcomes_with_taught": every})
    t3 = time.perf_counter()
    overall.update({
        "n_taught_test": int(leak.sum()),
        "taught_test": [f"{s.defect}/{s.path.name}" for s, hit in zip(samples, leak) if hit],
        "without_taught": clean,
        "n_empty_masks": len(empty), "empty_masks": [str(s.mask_path) for s in empty],
        "empty_masks_in_pixel_metrics": bool(keep_empty_masks),
        "category": category,
        "model_dir": str(Path(model.model_dir_).resolve()) if getattr(model, "model_dir_", None) else None,
        "n_test": len(samples), "n_anomalous": int(labels.sum()),
        "threshold": model.threshold_, "per_defect": per_defect,
        "timings": {"load": t1 - t0, "score": t2 - t1, "metrics": t3 - t2, "total": t3 - t0,
                    "score_ms_per_image": 1000 * (t2 - t1) / max(1, len(samples))},
    })
    return Evaluation(samples, labels, scores, maps, masks, images, overall, scored.patches, pixel_images)


METRICS_JSON, PER_IMAGE_CSV, RESULT_FIGURES = "metrics.json", "per_image.csv", "figures"
RESULT_FILES = (METRICS_JSON, PER_IMAGE_CSV)
"""What :func:`write_results` writes in a results folder: these files and the folder of PNGs."""


def check_results_dir(results_dir: str | Path) -> Path:
    """Check, before any scoring, that :func:`write_results` can write under ``results_dir``.

    Raises:
        OutputError: the folder, one of :data:`RESULT_FILES` or the figures folder is in the way.
    """
    out = check_output_dir(results_dir, "--results-dir")
    for name in RESULT_FILES:
        check_output_file(out / name, "--results-dir")
    check_output_dir(out / RESULT_FIGURES, "--results-dir")
    return out


def write_results(ev: Evaluation, model: SOMAD, results_dir: str | Path, n_figures: int = 6) -> Path:
    """Write ``metrics.json``, ``per_image.csv`` and a few comparison PNGs under ``results_dir``.

    The figures folder is replaced whole, so figures of an earlier run never mix with these.

    Raises:
        OutputError: ``results_dir`` cannot be made or written.
    """
    from .explain import outcomes
    from .viz import as_shown, comparison_figure, heat_scale, pixel_threshold

    out = make_dir(results_dir, "--results-dir")
    write_json(out / METRICS_JSON, ev.metrics)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "defect", "label", "score", "predicted", "outcome"])
    for s, lab, sc, out_ in zip(ev.samples, ev.labels, ev.scores, outcomes(ev.labels, ev.scores, model.threshold_)):
        writer.writerow([str(s.path), s.defect, int(lab), f"{sc:.6g}", int(is_anomalous(sc, model.threshold_)), out_])
    write_text(out / PER_IMAGE_CSV, buf.getvalue())
    scale = heat_scale(model.pixel_range_, ev.metrics)
    pix_thr = pixel_threshold(ev.metrics, model.pixel_range_)
    # the hardest cases: lowest-scored anomalies and highest-scored normals
    normals = [int(i) for i in np.flatnonzero(ev.labels == 0)[np.argsort(-ev.scores[ev.labels == 0])]]
    anomalies = [int(i) for i in np.flatnonzero(ev.labels == 1)[np.argsort(ev.scores[ev.labels == 1])]]
    picks = anomalies[:n_figures - n_figures // 2] + normals[:n_figures // 2]
    with atomic_dir(out / RESULT_FIGURES) as figures:
        for i in picks:
            s = ev.samples[i]
            comparison_figure(*as_shown(s.path, ev.images[i], ev.masks[i], ev.maps[i]), scale, pix_thr,
                              f"{s.defect}/{s.path.name}  score {ev.scores[i]:.2f}  threshold {model.threshold_:.2f}",
                              figures / f"{s.defect}_{s.path.stem}.png")
    return out


PREDICTIONS_CSV = "predictions.csv"
"""File name of the per-image predictions that ``predict`` writes in its output folder."""
OVERLAY_SUFFIX = "_overlay.png"
"""End of every overlay file name ``predict`` writes (see :func:`overlay_names`)."""
PREDICTION_COLUMNS = ("path", "score", "verdict", "overlay", "error")
"""Columns of :data:`PREDICTIONS_CSV`: ``score`` (empty for an unreadable file), ``verdict`` (one of
:data:`VERDICTS`), ``overlay`` (the overlay's file name in the same folder, or empty) and ``error``
(why the file could not be read, for verdict ``error``; else empty)."""
VERDICTS = ("anomalous", "normal", "error")
"""Verdicts of ``predict``: ``anomalous`` / ``normal`` by :func:`somad.decision.is_anomalous` at the
model's threshold; ``error``: the file could not be read (see :func:`predict_batch`)."""


def expand_images(items: list[str | Path]) -> list[Path]:
    """The image files named by ``items``: a file as given, a folder's image files (recursively,
    sorted), a glob pattern's matches (sorted); duplicates dropped, order kept.

    Raises:
        DataError: an item that names no image file (the item is named).
    """
    found: dict[Path, None] = {}
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in data.IMAGE_EXTENSIONS)
        elif path.exists():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
        if not matches:
            raise data.DataError(f"{item}: no image file there (a file, a folder of {', '.join(data.IMAGE_EXTENSIONS)} "
                                 "images or a glob pattern like 'dir/**/*.png').")
        found.update(dict.fromkeys(matches))
    return list(found)


def _read_or_error(path: str | Path, rule: data.IntensityRule) -> np.ndarray | DataError:
    """uint8 RGB ``(H, W, 3)`` of one file read with ``rule``, or the DataError that says why it cannot be."""
    try:
        return data.read_image(path, rule)
    except DataError as exc:
        return exc


def predict_batch(model: SOMAD, paths: Sequence[str | Path], overlay_paths: Sequence[str | Path] | None = None,
                  *, strict: bool = False) -> list[dict]:
    """Read and score one batch of image files: one row per file, in order. The per-file logic of
    ``predict`` (:func:`iter_predictions`, :func:`predict_folder`, and any scale-out that shards the
    files: call this on each shard's batches and the rows are the same).

    Each file is read with the model's intensity rule (decoding in threads); the readable ones are
    scored together in one :meth:`SOMAD.anomaly_maps` call, so keep a batch to about
    ``model.batch_size`` files (their images and maps are all in memory). A file that cannot be read
    (missing, truncated, not an image, too large, pixel values the rule cannot read) gets an error
    row instead of stopping the batch, unless ``strict``.

    Args:
        paths: the image files. overlay_paths: where each file's overlay PNG goes (same length as
            ``paths``; :func:`overlay_names` gives distinct names over a whole run), or None for none.
        strict: raise on the first unreadable file (in ``paths`` order) instead.

    Returns:
        one dict per file: ``path`` (str), ``score`` (float, Mahalanobis units; None when unreadable),
        ``anomalous`` (bool, :func:`somad.decision.is_anomalous` at ``model.threshold_``; None when
        unreadable), ``verdict`` (one of :data:`VERDICTS`), ``overlay`` (the overlay written, or None),
        ``error`` (the reason a file could not be read, naming it; None when scored).

    Raises:
        DataError: with ``strict``, a file that cannot be read (named).
        OutputError: an overlay cannot be written.
    """
    if overlay_paths is not None and len(overlay_paths) != len(paths):
        raise ValueError(f"{len(overlay_paths)} overlay paths for {len(paths)} files.")
    originals = data.in_threads(lambda p: _read_or_error(p, model.intensity_), list(paths))
    errors = [o for o in originals if isinstance(o, DataError)]
    if strict and errors:
        raise errors[0]
    rows = [{"path": str(p), "score": None, "anomalous": None, "verdict": "error", "overlay": None,
             "error": str(o) if isinstance(o, DataError) else None} for p, o in zip(paths, originals)]
    ok = [i for i, o in enumerate(originals) if not isinstance(o, DataError)]
    if not ok:
        return rows
    res = model.anomaly_maps(np.stack([data.resize_image(originals[i], model.image_size) for i in ok]))
    for i, score, amap in zip(ok, res.scores, res.maps):
        anomalous = bool(is_anomalous(score, model.threshold_))
        rows[i].update(score=float(score), anomalous=anomalous, verdict=VERDICTS[0] if anomalous else VERDICTS[1])
        if overlay_paths is not None:
            rgb = originals[i]
            shown = data.resize_to(rgb, data.display_shape(rgb.shape[:2]))
            rows[i]["overlay"] = str(write_overlay(model, shown, amap, Path(overlay_paths[i])))
    return rows


def csv_row(row: dict) -> list[str]:
    """The :data:`PREDICTION_COLUMNS` cells of a row of :func:`predict_batch` (overlay as its file name)."""
    return [row["path"], "" if row["score"] is None else f"{row['score']:.6g}", row["verdict"],
            Path(row["overlay"]).name if row["overlay"] else "", row["error"] or ""]


def iter_predictions(model: SOMAD, paths: list[str | Path], overlay_dir: str | Path | None = None,
                     progress: Progress | None = None, *, strict: bool = False,
                     names: list[str] | None = None) -> Iterator[dict]:
    """Score image files in batches of ``model.batch_size`` (:func:`predict_batch`), one batch of
    images and maps in memory.

    ``names``: the overlay file name of each path (default :func:`overlay_names` of ``paths``; a
    shard of a longer list passes its slice of the whole list's names).

    Yields:
        one row per file, in order (see :func:`predict_batch`); ``overlay`` is
        ``<overlay_dir>/<overlay name>`` (:func:`overlay_names`) when ``overlay_dir`` is given.
        An unreadable file gets a row with verdict ``error`` and its reason, unless ``strict``.

    Raises:
        DataError: with ``strict``, a file cannot be read (when its batch is reached).
    """
    if overlay_dir is None:
        names = None
    elif names is None:
        names = overlay_names(paths)
    for s in range(0, len(paths), model.batch_size):
        batch = slice(s, s + model.batch_size)
        dests = [Path(overlay_dir) / n for n in names[batch]] if names is not None else None
        yield from predict_batch(model, paths[batch], dests, strict=strict)
        if progress:
            progress(Stage.PREDICT, min(s + model.batch_size, len(paths)), len(paths))


def write_overlay(model: SOMAD, image: np.ndarray, amap: np.ndarray, dest: Path) -> Path:
    """Write the heatmap overlay of one image atomically: colours on the model's scale
    (:func:`somad.viz.heat_scale` without an evaluation), and the predicted region outlined red at the pixel threshold without an
    evaluation (:func:`somad.viz.pixel_threshold` of no metrics: the top of that range, from training
    data; the dashboard's Try an image page uses the same until the test split is evaluated).
    ``image`` uint8 ``(H, W, 3)`` at any geometry; ``amap`` float ``(S, S)`` is resized to it."""
    from PIL import Image

    from .viz import heat_scale, overlay, pixel_threshold, region_contours

    amap = data.resize_to(amap, image.shape[:2])
    pic = region_contours(overlay(image, amap, heat_scale(model.pixel_range_)), None, amap,
                          pixel_threshold(None, model.pixel_range_))
    with atomic_path(dest) as tmp:
        Image.fromarray(pic).save(tmp)
    return dest


def predict_files(model: SOMAD, paths: list[str | Path], out_dir: str | Path | None = None, *,
                  strict: bool = False) -> list[dict]:
    """:func:`iter_predictions` as a list (for a handful of files)."""
    return list(iter_predictions(model, paths, out_dir, strict=strict))


def predict_folder(model: SOMAD, paths: list[str | Path], out_dir: str | Path, overlays: bool = True,
                   progress: Progress | None = None, *, strict: bool = False,
                   on_error: Callable[[dict], None] | None = None, score=None) -> dict:
    """Score any number of image files with bounded memory; write ``<out_dir>/predictions.csv``
    (:data:`PREDICTION_COLUMNS`: path, score, verdict, overlay file name or empty, error) and, with
    ``overlays``, one overlay PNG per scored image.

    A file that cannot be read gets a row with verdict ``error`` and the reason, and ``on_error(row)``
    is called as it is met; every other file is scored. With ``strict``, the first unreadable file
    stops the run instead and nothing is written.

    Rows and overlays go to a hidden staging folder in ``out_dir`` and move into place only when
    the run ends, so a failed run (``strict``, an output error, an interrupt) leaves ``out_dir`` as
    it was. A finished run replaces the previous one: the overlays the earlier ``predictions.csv``
    listed are removed, so the folder never mixes two runs.

    ``score``: what yields the rows, with :func:`iter_predictions`'s arguments and rows in input
    order (default: :func:`iter_predictions` in this process; a Dask executor passes its sharded
    :meth:`somad.executor.DaskExecutor.iter_predictions`, whose workers write the overlays).

    Returns:
        ``{"n_images", "n_scored", "n_errors", "n_anomalous", "seconds", "images_per_s" (files per
        second, unreadable ones included), "csv", "overlays" (folder or None)}``.

    Raises:
        DataError: with ``strict``, a file cannot be read (named).
        OutputError: ``out_dir`` cannot be made or written.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    make_dir(out_dir, "--out")
    with output_errors(out_dir):
        stage = Path(tempfile.mkdtemp(prefix=".somad-predict-", dir=out_dir))
    t0 = time.perf_counter()
    counts = Counter()
    done = False
    try:
        with output_errors(out_dir):
            with open(stage / PREDICTIONS_CSV, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(PREDICTION_COLUMNS)
                for row in (score or iter_predictions)(model, paths, stage if overlays else None, progress,
                                                       strict=strict):
                    counts[row["verdict"]] += 1
                    writer.writerow(csv_row(row))
                    if row["error"] and on_error:
                        on_error(row)
            for name in _listed_overlays(out_dir / PREDICTIONS_CSV):
                (out_dir / name).unlink(missing_ok=True)
            for f in stage.iterdir():
                os.replace(f, out_dir / f.name)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not done and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a folder this call made for nothing goes too
    sec = time.perf_counter() - t0
    n_errors = counts[VERDICTS[2]]
    return {"n_images": len(paths), "n_scored": len(paths) - n_errors, "n_errors": n_errors,
            "n_anomalous": counts[VERDICTS[0]], "seconds": sec, "images_per_s": len(paths) / max(sec, 1e-9),
            "csv": str(out_dir / PREDICTIONS_CSV), "overlays": str(out_dir) if overlays else None}


def _listed_overlays(csv_path: Path) -> list[str]:
    """Overlay file names an earlier ``predictions.csv`` lists (plain names in its folder only)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    names = {r.get("overlay") or "" for r in rows}
    return sorted(n for n in names if n and Path(n).name == n and n.endswith(OVERLAY_SUFFIX))


def overlay_names(paths: list[str | Path]) -> list[str]:
    """Distinct overlay file names: ``<stem>_overlay.png``, prefixed by the parent folder (and a
    counter if needed) where stems repeat, e.g. ``crack_000_overlay.png``."""
    stems = [Path(p).stem for p in paths]
    repeats = Counter(stems)
    names, used = [], set()
    for p, stem in zip(paths, stems):
        name = stem if repeats[stem] == 1 else f"{Path(p).parent.name}_{stem}"
        base, i = name, 1
        while name in used:
            i += 1
            name = f"{base}_{i}"
        used.add(name)
        names.append(f"{name}{OVERLAY_SUFFIX}")
    return names


def load_for(models_dir: str | Path, category: str, name: str = DEFAULT_MODEL_NAME, device: str = "cpu") -> SOMAD:
    """Load ``<models_dir>/<category>/<name>``."""
    return load_model(model_path(models_dir, category, name), device=device)
