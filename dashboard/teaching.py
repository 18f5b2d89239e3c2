"""Acting on what the pages show: the slider threshold's rule, marking images as normal (a taught
new version), saving a threshold as a new version, the Test inspector's CSV export. (Leaks, the test
images a model has learned from, are :func:`somad.versions.leak_mask`, shared with ``evaluate``.)

Pure of Streamlit: tests call these without a browser. Every function that writes calls
:func:`dashboard.roles.require_writer` first, so a viewer session is refused on the server.
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from somad import data, operating, store
from somad.atomic import atomic_path
from somad.errors import ModelFileError, SomadError
from somad.persistence import load_model
from somad.words import plural

from . import actions
from .roles import require_writer

UPLOADS_DIR = ".taught-uploads"
"""Folder under ``<models_dir>/<category>/`` that keeps uploads taught to a model (hidden: never a
model); each file is named by its content hash, so provenance paths stay valid."""


# ------------------------------------------------------------------ the slider's rule
def slider_rule(value: float, origin: str | None, by_hand: bool) -> str:
    """The rule in words of the slider's threshold ``value``: the preset it came from (``origin``),
    or :func:`somad.operating.hand_rule` when it was moved by hand since."""
    if by_hand or not origin:
        return operating.hand_rule(value, origin)
    return origin


def deployable_origin(model) -> str:
    """Rule of the model's own threshold: "deployable threshold (percentile 99 of ...)", or for a
    version whose threshold was saved (``threshold_manual_``) "saved threshold: <its rule>"."""
    if getattr(model, "threshold_manual_", None):
        return f"saved threshold: {model.threshold_rule}"
    return f"deployable threshold ({model.threshold_rule})"


def f1_origin(n_test: int) -> str:
    """Rule of the F1-optimal preset: "F1-optimal on 83 test images"."""
    return f"F1-optimal on {n_test} test images"


def curve_origin(far: float, recall: float, source: str) -> str:
    """Rule of a point picked on the trade-off curve."""
    return (f"point picked on the trade-off curve of {source} (false-alarm rate {100 * far:.3g} %, "
            f"recall {100 * recall:.3g} %)")


# ------------------------------------------------------------------ CSV export
CSV_COLUMNS = ("image", "path", "defect type", "ground truth", "score", "threshold", "predicted", "outcome", "note")


def export_table(table: pd.DataFrame, paths: Sequence[str | Path], threshold: float,
                 notes: Sequence[str] | None = None) -> pd.DataFrame:
    """The Test inspector's filtered table for export: its rows and order, with the file path, the
    threshold and a note per image (e.g. "taught to this model").

    Args:
        table: the shown table, with columns ``#`` (index into the test split), ``image``,
            ``defect type``, ``ground truth``, ``score``, ``predicted``, ``outcome``.
        paths: ``(N,)`` the test split's files. threshold: the slider's threshold.
        notes: ``(N,)`` a note per test image ('' for none).
    """
    idx = table["#"].to_numpy(dtype=int)
    out = table.drop(columns=["#"]).copy()
    out.insert(1, "path", [str(paths[i]) for i in idx])
    out.insert(out.columns.get_loc("predicted"), "threshold", float(threshold))
    out["note"] = [notes[i] if notes is not None else "" for i in idx]
    return out[list(CSV_COLUMNS)]


def csv_bytes(table: pd.DataFrame) -> bytes:
    """UTF-8 CSV of a table (no index)."""
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")


# ------------------------------------------------------------------ marking images as normal
@dataclass(frozen=True)
class Marked:
    """Images chosen to be taught as normal.

    Attributes:
        names: what the page calls them (``"<defect>/<file>"`` or an upload's name).
        paths: the image files (uploads stored first, :func:`store_uploads`).
        labels: int ``(n,)`` 1 where the image is labelled defective (needs confirmation), -1 unknown.
        scores_now: float ``(n,)`` their scores under the current model.
    """

    names: list[str]
    paths: list[Path]
    labels: np.ndarray
    scores_now: np.ndarray

    @property
    def defective(self) -> list[Path]:
        """Files labelled defective (marking them normal asks for confirmation, and is recorded)."""
        return [p for p, y in zip(self.paths, self.labels) if y == 1]


def marked_from_split(ev, indices: Sequence[int]) -> Marked:
    """:class:`Marked` of test images ``indices`` of an evaluation (:class:`somad.pipeline.Evaluation`)."""
    idx = [int(i) for i in indices]
    return Marked([f"{ev.samples[i].defect}/{ev.samples[i].path.name}" for i in idx],
                  [Path(ev.samples[i].path) for i in idx], np.asarray(ev.labels)[idx].astype(int),
                  np.asarray(ev.scores, dtype=np.float64)[idx])


@dataclass(frozen=True)
class Preview:
    """What teaching would change, computed on an in-memory copy (nothing written).

    Attributes:
        scores_now, scores_after: float ``(n,)`` the marked images' scores before and after.
        threshold_now, threshold_after: the deployable threshold before and after (it moves too:
            the taught images join the cross-fitted folds).
        n_train_now, n_train_after: training images before and after.
    """

    scores_now: np.ndarray
    scores_after: np.ndarray
    threshold_now: float
    threshold_after: float
    n_train_now: int
    n_train_after: int

    def table(self, names: Sequence[str], threshold: float) -> pd.DataFrame:
        """One row per marked image: score now and after, verdict now and after at ``threshold``
        (the slider's) and at the deployable threshold after."""
        return pd.DataFrame({
            "image": list(names),
            "score now": np.round(self.scores_now, 4),
            "score after": np.round(self.scores_after, 4),
            "verdict now": np.where(self.scores_now >= threshold, "anomalous", "normal"),
            "verdict after": np.where(self.scores_after >= self.threshold_after, "anomalous", "normal"),
        })


def preview_teach(model_dir: str | Path, paths: Sequence[str | Path], device: str = "cpu",
                  progress=None) -> Preview:
    """Teach ``paths`` to an in-memory copy of the model (``SOMAD.partial_fit``) and score them again.

    Writes nothing. Takes a few seconds (the time of ``partial_fit`` plus scoring ``n`` images).

    Raises:
        DataError: an image cannot be read or does not suit the model (same rules as ``fit``).
        ModelFileError: the model cannot be loaded or taught (e.g. fitted before teaching existed).
    """
    model = load_model(model_dir, device=device)
    images = np.stack([data.load_image(p, model.image_size, model.intensity_) for p in paths])
    now = np.asarray(model.score_samples(images), dtype=np.float64)
    thr_now, n_now = float(model.threshold_), int(model.n_train_)
    model.partial_fit(images, [str(p) for p in paths], progress=progress)
    after = np.asarray(model.score_samples(images), dtype=np.float64)
    return Preview(now, after, thr_now, float(model.threshold_), n_now, int(model.n_train_))


def check_confirmed(marked: Marked, confirmed: bool) -> None:
    """Refuse to teach defective-labelled images as normal without the engineer's confirmation.

    Raises:
        SomadError: some marked image is labelled defective and ``confirmed`` is False.
    """
    bad = marked.defective
    if bad and not confirmed:
        raise SomadError(f"{len(bad)} of the marked images are labelled defective (e.g. {bad[0].parent.name}/"
                         f"{bad[0].name}): tick the confirmation to teach them as normal; it is recorded with the "
                         "new version.")


def teach_version(model_dir: str | Path, marked: Marked, *, confirmed: bool = False, note: str | None = None,
                  name: str | None = None, progress=None, device: str = "cpu") -> Path:
    """Teach the marked images as normal: a new version next to ``model_dir`` (the parent is untouched).

    Raises:
        ViewerRefused: a viewer session. SomadError: unconfirmed defective images (:func:`check_confirmed`),
        unreadable images, an unwritable models folder (see ``somad.versions.teach``).
    """
    require_writer("teach the model")
    check_confirmed(marked, confirmed)
    from somad import versions

    return Path(versions.teach(model_dir, [str(p) for p in marked.paths], note=note or None, name=name or None,
                               progress=progress, confirmed_defective=[str(p) for p in marked.defective],
                               device=device))


def jobs_available() -> bool:
    """True when :mod:`somad.jobs` (server-side jobs that survive the tab) is installed."""
    import importlib.util

    return importlib.util.find_spec("somad.jobs") is not None


def free_version_name(model_dir: str | Path) -> str:
    """The first free ``<parent base>-vN`` next to ``model_dir`` (the name :mod:`somad.versions` would
    pick); a job is given it, so the page knows where the version will be."""
    parent = Path(model_dir)
    base = re.sub(r"-v\d+$", "", parent.name)[:58] or "model"
    i = 2
    while (parent.parent / f"{base}-v{i}").exists():
        i += 1
    return f"{base}-v{i}"


def teach_argv(model_dir: str | Path, marked: Marked, *, confirmed: bool, note: str | None, name: str,
               device: str = "cpu") -> list[str]:
    """``python -m somad`` arguments of the job that teaches ``marked`` (absolute paths)."""
    argv = ["teach", "--model-dir", str(Path(model_dir).resolve()), "--name", name, "--device", device]
    if note:
        argv += ["--note", note]
    if confirmed and marked.defective:
        argv.append("--confirm-defective")
    return argv + [str(Path(p).resolve()) for p in marked.paths]


def submit_teach(models_dir: str | Path, model_dir: str | Path, marked: Marked, *, confirmed: bool = False,
                 note: str | None = None, name: str | None = None, device: str = "cpu") -> tuple[str, Path]:
    """Queue the teaching as a server-side job (it goes on when the tab closes); returns the job id
    and the new version's dir (``name``, else :func:`free_version_name`).

    Raises:
        ViewerRefused: a viewer session. SomadError: unconfirmed defective images, a taken or bad name,
        a job the CLI refuses.
    """
    require_writer("teach the model")
    check_confirmed(marked, confirmed)
    from somad import jobs

    name = store.check_name(name) if name else free_version_name(model_dir)
    target = Path(model_dir).parent / name
    if target.exists():
        raise ModelFileError(f"{target} already exists: choose another name (versions never overwrite).")
    argv = teach_argv(model_dir, marked, confirmed=confirmed, note=note, name=name, device=device)
    job_id = jobs.submit(models_dir, argv, kind="teach",
                         title=f"teach {plural(len(marked.paths), 'image')} to {Path(model_dir).name} → {name}")
    return job_id, target


def submit_refit(models_dir: str | Path, model_dir: str | Path, note: str | None = None) -> str:
    """Queue a refit of the SOM itself, on the training and taught images, as a new version (a job).

    Raises:
        ViewerRefused: a viewer session. SomadError: the job cannot be queued.
    """
    require_writer("refit a model")
    from somad import jobs

    argv = ["refit", "--model-dir", str(Path(model_dir).resolve())] + (["--note", note] if note else [])
    return jobs.submit(models_dir, argv, kind="refit", title=f"refit {Path(model_dir).name} (SOM included)")


def save_threshold_version(model_dir: str | Path, value: float, rule: str, *, note: str | None = None,
                           name: str | None = None, make_default: bool = False) -> Path:
    """Save ``value`` as the threshold of a new version next to ``model_dir``, with its rule in words;
    with ``make_default`` it becomes the category's default (what ``predict`` and ``evaluate`` use
    without ``--model-dir`` / ``--name``).

    Raises:
        ViewerRefused: a viewer session. SomadError: a non-finite value, an unwritable models folder.
    """
    require_writer("save a threshold")
    if not np.isfinite(value):
        raise SomadError(f"the threshold {value} is not a number: pick one on the slider.")
    from somad import versions

    new = Path(versions.save_threshold(model_dir, float(value), rule=rule, note=note or None, name=name or None))
    if make_default:
        actions.make_default(new.parent.parent, new.parent.name, new.name)
    return new


def make_default(model_dir: str | Path) -> None:
    """Mark ``model_dir`` as its category's default (``<models_dir>/<category>/<name>``).

    Raises:
        ViewerRefused: a viewer session. ModelFileError: no such saved model.
    """
    p = Path(model_dir)
    actions.make_default(p.parent.parent, p.parent.name, p.name)


def store_uploads(models_dir: str | Path, category: str, files: Sequence[tuple[str, bytes]]) -> list[Path]:
    """Keep uploaded files that are taught to a model, so its provenance names real files.

    Each goes to ``<models_dir>/<category>/.taught-uploads/<sha256[:16]>-<name>`` (written atomically;
    an identical upload is stored once).

    Raises:
        ViewerRefused: a viewer session. ModelFileError: the models folder cannot be written.
    """
    require_writer("teach the model")
    folder = Path(models_dir) / category / UPLOADS_DIR
    out = []
    for name, blob in files:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)[-80:] or "upload.png"
        dest = folder / f"{hashlib.sha256(blob).hexdigest()[:16]}-{safe}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                with atomic_path(dest) as tmp:
                    Path(tmp).write_bytes(blob)
        except OSError as exc:
            raise ModelFileError(f"cannot keep the upload {name} under {folder}: {exc.strerror or exc}. "
                                 "The models folder must be writable to teach a model.") from None
        out.append(dest)
    return out
