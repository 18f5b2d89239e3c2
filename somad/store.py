"""The saved models of a category: which one is the default, renaming and deleting them.

Layout: ``<models_dir>/<category>/<name>/`` (see :func:`model_path`); the default
model's name is kept in ``<models_dir>/<category>/DEFAULT`` (one line of text). Without that file
(or when it names a model that is gone) the default is the model named ``default``, else the newest.
Every change is atomic: a rename is one ``os.replace``; a delete first renames the model to a hidden
folder (so it disappears from every listing at once) and then removes that folder.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .errors import ModelFileError

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


DEFAULT_FILE = "DEFAULT"
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
    """The category's default model dir (marked, else named ``default``, else the newest), or None."""
    saved = list_models(models_dir, category)
    if not saved:
        return None
    by_name = {p.name: p for p in saved}
    return by_name.get(_marked(models_dir, category)) or by_name.get(DEFAULT_MODEL_NAME) or saved[0]


def set_default(models_dir: str | Path, category: str, name: str) -> None:
    """Mark model ``name`` as the category's default (atomic write of the marker file).

    Raises:
        ModelFileError: no saved model of that name.
    """
    _existing(models_dir, category, name)
    marker = Path(models_dir) / category / DEFAULT_FILE
    tmp = marker.with_name(f".{DEFAULT_FILE}.{os.getpid()}.tmp")
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, marker)


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
    was_default = _marked(models_dir, category) == name
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
    if _marked(models_dir, category) == name:
        (Path(models_dir) / category / DEFAULT_FILE).unlink(missing_ok=True)


def _marked(models_dir: str | Path, category: str) -> str:
    try:
        return (Path(models_dir) / category / DEFAULT_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _existing(models_dir: str | Path, category: str, name: str) -> Path:
    path = model_path(models_dir, category, name)
    if path not in list_models(models_dir, category):
        raise ModelFileError(f"no saved model '{name}' for category '{category}' in {models_dir}.")
    return path
