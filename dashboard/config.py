"""Dashboard settings from the environment (so tests can point the app at temporary folders).

* ``SOMAD_DATA_DIR``: default dataset root (default: the embedded demo data ``data/demo``,
  generated on first use).
* ``SOMAD_MODELS_DIR``: where models live (default ``models``).
* ``SOMAD_DEVICE``: default device for loading and fitting (default ``cpu``).
* ``SOMAD_DATA_ROOTS``: the only dataset roots the dashboard shows, separated by ``os.pathsep``
  (``:`` on Linux and macOS, ``;`` on Windows). Set, the free-text root box is hidden and a link's
  ``root=`` outside them is refused (:data:`ROOT_REFUSED`). Unset, the known roots are offered and
  an editor may type any folder; a viewer (:mod:`dashboard.roles`) is held to the known roots.
"""
from __future__ import annotations

import os
from pathlib import Path

from somad.devices import check_device
from somad.errors import ParameterError

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / "data" / "demo"
MAX_UPLOAD_PIXELS = 50_000_000

# One-click demo model: small and fast (about 10-30 s on two CPU cores).
DEMO_PARAMS = {"image_size": 128, "d": 64, "epochs": 5, "cv_folds": 3}


ROOTS_ENV = "SOMAD_DATA_ROOTS"
ROOT_REFUSED = ("The link's data root is not one of the data sets this dashboard shows, so it was not opened: "
                "the default data set is shown instead.")
"""The one message for a refused root: the same whether the folder exists or not, and without its path."""


def allowed_roots() -> list[Path] | None:
    """The roots of ``SOMAD_DATA_ROOTS`` (absolute, in the given order), or None when it is unset or blank."""
    value = os.environ.get(ROOTS_ENV, "")
    roots = [Path(p.strip()).expanduser().absolute() for p in value.split(os.pathsep) if p.strip()]
    return roots or None


def data_dir() -> Path:
    """Default dataset root: ``SOMAD_DATA_DIR``, else the demo data; with ``SOMAD_DATA_ROOTS`` set and
    that root not among them, the first allowed root."""
    value = os.environ.get("SOMAD_DATA_DIR")
    root = Path(value).expanduser() if value else DEMO_DIR
    allowed = allowed_roots()
    if allowed and not root_allowed(root, allowed):
        return allowed[0]
    return root


def _key(path: str | Path) -> str:
    """A root's identity: its resolved absolute path (symlinks followed), as text."""
    return str(Path(path).expanduser().resolve())


def root_allowed(root: str | Path, roots: list[Path]) -> bool:
    """True when ``root`` is one of ``roots`` (compared resolved, so ``a/../b`` or a symlink cannot
    reach another folder). Looks at no file: the answer is the same for a folder that does not exist."""
    try:
        return bool(str(root).strip()) and _key(root) in {_key(r) for r in roots}
    except (OSError, RuntimeError, ValueError):
        return False


def models_dir() -> Path:
    """Root of saved models (``<models_dir>/<category>/<name>``)."""
    value = os.environ.get("SOMAD_MODELS_DIR")
    return Path(value).expanduser() if value else REPO / "models"


def device() -> str:
    """Default torch device: ``SOMAD_DEVICE``, else cpu.

    Raises:
        ParameterError: ``SOMAD_DEVICE`` names no device of this machine; the message names the variable.
    """
    value = os.environ.get("SOMAD_DEVICE", "cpu")
    try:
        check_device(value)
    except ParameterError as exc:
        raise ParameterError(f"SOMAD_DEVICE={value!r}: {exc} Start the dashboard with another SOMAD_DEVICE, or "
                             "without it for cpu.") from None
    return value


def offered_roots() -> list[Path]:
    """Dataset roots offered in the picker: ``SOMAD_DATA_ROOTS`` when set, else :func:`known_roots`."""
    return allowed_roots() or known_roots()


def known_roots() -> list[Path]:
    """Dataset roots offered without ``SOMAD_DATA_ROOTS``: the default root, the demo data and the shared data sets found."""
    roots = [data_dir(), DEMO_DIR]
    shared = REPO.parent / "shared" / "data"
    for name in ("mvtec_ad", "magnetic_tile_defects"):
        if (shared / name).is_dir():
            roots.append(shared / name)
    out, seen = [], set()
    for r in roots:
        key = str(r.resolve()) if r.exists() else str(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out
