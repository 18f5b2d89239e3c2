"""Checking a torch device name before any work (CLI ``--device``, ``SOMAD(device=...)``,
``load_model(device=...)``, the dashboard's ``SOMAD_DEVICE``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ParameterError

if TYPE_CHECKING:
    import torch


def available_devices() -> list[str]:
    """Device names usable here: ``cpu``, then ``cuda`` and ``cuda:<i>`` per GPU, then ``mps`` where present."""
    import torch  # lazily: `python -m somad --help` does not load torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(device: str | torch.device) -> torch.device:
    """The torch device named ``device``, checked to exist on this machine.

    Raises:
        ParameterError: an unknown name (e.g. ``gpu``) or a device this machine lacks (e.g.
            ``cuda`` without a CUDA GPU); the message names it and lists what is available.
    """
    import torch

    available = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    ok = dev is not None and (dev.type == "cpu" or str(dev) in available)
    if not ok:
        why = "is not a torch device name" if dev is None else "is not available on this machine"
        gpu = "" if "cuda" in available else " (no CUDA GPU found)"
        raise ParameterError(f"device '{device}' {why}: use one of {', '.join(available)}{gpu}.")
    return dev
