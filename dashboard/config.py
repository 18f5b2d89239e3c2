"""Dashboard settings from the environment (so tests can point the app at temporary folders).

* ``SOMAD_DATA_DIR``: default dataset root (default: the embedded demo data ``data/demo``,
  generated on first use).
* ``SOMAD_MODELS_DIR``: where models live (default ``models``).
* ``SOMAD_DEVICE``: default device for loading and fitting (default ``cpu``).
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


def data_dir() -> Path:
    """Default dataset root."""
    value = os.environ.get("SOMAD_DATA_DIR")
    return Path(value).expanduser() if value else DEMO_DIR


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


def known_roots() -> list[Path]:
    """Dataset roots offered in the picker: the default root, the demo data and the shared data sets found."""
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
