"""Atomic writes: a file or a directory appears whole or not at all.

Everything is written to a temporary sibling (same directory, so the final
rename is atomic on one filesystem) and renamed into place; on any error the
temporary is removed and an existing target is left untouched.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import OutputError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success it replaces ``path``.

    The temporary keeps ``path``'s suffix, so writers that pick a format by suffix
    (PIL, matplotlib) work. Parent directories are created.
    """
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
    try:
        yield Path(tmp)
        with output_errors(path):
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` (an existing
    directory is moved aside first and removed only after the new one is in place).

    Raises:
        OutputError: ``path`` or a folder above it is a file, or the folder cannot be written.
    """
    path = Path(path)
    check_output_dir(path, "output path")
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        umask = _umask()
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
        for f in tmp.rglob("*"):  # some writers (safetensors) make 0600 files: give what open() would
            if f.is_file() and not f.is_symlink():
                os.chmod(f, 0o666 & ~umask)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Turn an OS error while writing under ``path`` into one :class:`OutputError` line naming it.

    Raises:
        OutputError: in place of any ``OSError`` raised inside the block.
    """
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}{where}. Choose another output "
                          "path.") from None


def check_output_dir(path: str | Path, option: str) -> Path:
    """Check, before any work, that folder ``path`` exists or can be made, and can be written.

    Args:
        path: the output folder. option: the flag or field that named it, for the message.

    Returns:
        ``path`` as a Path.

    Raises:
        OutputError: ``path`` or a folder above it is a file, or the nearest existing folder is
            not writable.
    """
    path = Path(path)
    above = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not above.is_dir():
        raise OutputError(f"cannot write {path}: {above} is a file, not a folder. Choose another {option}.")
    if not os.access(above, os.W_OK):
        raise OutputError(f"cannot write {path}: {above} is not writable. Choose another {option}.")
    return path


def check_output_file(path: str | Path, option: str) -> Path:
    """Check, before any work, that file ``path`` can be written (see :func:`check_output_dir`).

    Raises:
        OutputError: ``path`` is a folder, or its folder cannot be made or written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder, not a file. Choose another {option}.")
    check_output_dir(path.parent, option)
    return path


def make_dir(path: str | Path, option: str) -> Path:
    """Create output folder ``path`` (and its parents) if missing; returns it.

    Raises:
        OutputError: it cannot be made or written (see :func:`check_output_dir`).
    """
    path = check_output_dir(path, option)
    with output_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented, strict JSON atomically (numpy scalars/arrays, paths and objects
    with ``to_dict`` converted). Undefined numbers (NaN, infinity) become ``null``, never the
    bare ``NaN`` that strict parsers reject."""
    return write_text(path, json.dumps(_strict(obj), indent=2, default=_json_default, allow_nan=False))


def _strict(obj):
    """``obj`` with every non-finite float (also numpy scalars and arrays) replaced by None."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_strict(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):  # e.g. somad.data.IntensityRule
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
