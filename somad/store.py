"""The saved models of a category: which one is the default, renaming and deleting them.

Layout: ``<models_dir>/<category>/<name>/`` (see :func:`model_path`); the default
model's name is kept in ``<models_dir>/<category>/.default`` (one line of text; hidden, so no model
name can collide with it, on case-insensitive file systems either; a ``DEFAULT`` file written by
earlier versions is still read). Without that file
(or when it names a model that is gone) the default is the model named ``default``, else the oldest.

The default only moves when someone moves it (:func:`set_default`, a rename of it, its deletion): a
new fit is never the default unless it is the category's first model. Before a fit saves into a
category that has models but no marker, :func:`pin_default` writes the marker for the model that is
the default then, so a new model named ``default`` (or a later rule) cannot take over either.
Every change is atomic: a rename is one ``os.replace``; a delete first renames the model to a hidden
folder (so it disappears from every listing at once) and then removes that folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from .atomic import write_text
from .errors import ModelFileError

DEFAULT_MODEL_NAME = "default"


def model_path(models_dir: str | Path, category: str, name: str = DEFAULT_MODEL_NAME) -> Path:
    """Where a category's model lives: ``<models_dir>/<category>/<name>``."""
    return Path(models_dir) / category / name


def list_models(models_dir: str | Path, category: str) -> list[Path]:
    """Saved model directories of a category, newest first by the ``saved_at`` of their config
    (a file touched later in a model folder does not make it newer)."""
    from .persistence import is_model_dir

    folder = Path(models_dir) / category
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_model_dir(p)]
    return sorted(found, key=_saved_at, reverse=True)


def _saved_at(model_dir: Path) -> tuple[str, float]:
    """Sort key: the config's ``saved_at`` (ISO text, to the second), then the config file's mtime."""
    from .persistence import CONFIG

    cfg = model_dir / CONFIG
    try:
        saved = json.loads(cfg.read_text(encoding="utf-8")).get("saved_at", "")
        return (saved if isinstance(saved, str) else "", cfg.stat().st_mtime)
    except (OSError, ValueError, AttributeError):
        return ("", 0.0)


DEFAULT_FILE = ".default"
LEGACY_DEFAULT_FILE = "DEFAULT"
"""The marker's name before it was hidden (a model named ``default`` collides with it where case is ignored)."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""A model name: a plain folder name (letters, digits, '.', '_', '-'; no '/', not starting with '.')."""


def check_name(name: str) -> str:
    """The stripped ``name``.

    Raises:
        ModelFileError: not a plain folder name (see :data:`NAME_PATTERN`).
    """
    name = str(name).strip()
    if not NAME_PATTERN.match(name):
        raise ModelFileError(f"model name '{name}' is not a plain folder name: use letters, digits, '.', '_' "
                             "or '-' (at most 64, not starting with '.').")
    return name


def default_model(models_dir: str | Path, category: str) -> Path | None:
    """The category's default model dir (marked, else named ``default``, else the oldest), or None.

    Never "the newest": what someone fitted last does not become what every new session opens."""
    saved = list_models(models_dir, category)
    if not saved:
        return None
    by_name = {p.name: p for p in saved}
    return by_name.get(marked_name(models_dir, category)) or by_name.get(DEFAULT_MODEL_NAME) or saved[-1]


def pin_default(models_dir: str | Path, category: str) -> str | None:
    """Before a new model of ``category`` is saved: mark the current default when the category has
    saved models but no marker naming one of them, so the new model does not become the default.

    Returns:
        the name now marked, or None when nothing was written (no model yet, or already marked).
    """
    saved = list_models(models_dir, category)
    if not saved or marked_name(models_dir, category) in {p.name for p in saved}:
        return None
    name = default_model(models_dir, category).name
    set_default(models_dir, category, name)
    return name


def set_default(models_dir: str | Path, category: str, name: str) -> None:
    """Mark model ``name`` as the category's default (atomic write of the marker file).

    Raises:
        ModelFileError: no saved model of that name.
    """
    _existing(models_dir, category, name)
    write_text(Path(models_dir) / category / DEFAULT_FILE, name + "\n")
    for marker in _markers(models_dir, category)[1:]:  # the legacy one, if any
        marker.unlink()


def rename_model(models_dir: str | Path, category: str, name: str, new_name: str) -> Path:
    """Rename a saved model (the default mark follows it); returns the new model dir.

    Raises:
        ModelFileError: no model ``name``, ``new_name`` is not a plain name, or it is taken.
    """
    src = _existing(models_dir, category, name)
    new_name = check_name(new_name)
    dst = model_path(models_dir, category, new_name)
    if dst.exists():
        raise ModelFileError(f"{dst} already exists: choose another name or delete that model first.")
    was_default = marked_name(models_dir, category) == name
    os.replace(src, dst)
    if was_default:
        set_default(models_dir, category, new_name)
    return dst


def delete_model(models_dir: str | Path, category: str, name: str) -> None:
    """Delete a saved model: first renamed to a hidden folder (gone from listings at once), then removed.

    Raises:
        ModelFileError: no saved model of that name.
    """
    src = _existing(models_dir, category, name)
    trash = src.with_name(f".deleting-{name}-{os.getpid()}")
    os.replace(src, trash)
    shutil.rmtree(trash, ignore_errors=True)
    if marked_name(models_dir, category) == name:
        for marker in _markers(models_dir, category):
            marker.unlink()


def _markers(models_dir: str | Path, category: str) -> list[Path]:
    """The category's default-model marker files that exist, the current one before the legacy one."""
    folder = Path(models_dir) / category
    return [folder / m for m in (DEFAULT_FILE, LEGACY_DEFAULT_FILE) if (folder / m).is_file()]


def marked_name(models_dir: str | Path, category: str) -> str:
    """The model name the category's marker holds ('' without a marker); it may name a model
    that is gone, which :func:`default_model` then passes over."""
    markers = _markers(models_dir, category)
    if not markers:
        return ""
    try:
        return markers[0].read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _existing(models_dir: str | Path, category: str, name: str) -> Path:
    path = model_path(models_dir, category, name)
    if path not in list_models(models_dir, category):
        raise ModelFileError(f"no saved model '{name}' for category '{category}' in {models_dir}.")
    return path
