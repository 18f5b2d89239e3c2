"""The training patch vectors of a fit, in memory or in a temporary file, read in chunks.

A fit passes over all training patch vectors about ``epochs + 3`` times (SOM epochs, the
exact BMU search, the Gaussian statistics). :class:`PatchFile` keeps them on disk, so the
fit's memory does not grow with the number of training images: one chunk of
``CHUNK_ROWS`` rows is in memory at a time, read with plain file reads (the operating
system's page cache holds the file where memory allows, and is not part of the process's
resident memory). Rows are stored as float32, not float16: the BMU of every training patch
must come out exactly as from the in-memory path, and a float16 rounding (relative 5e-4)
moves near-tied patches to another neuron. Disk cost: ``4 * d`` bytes per patch, 1.25 MB per
224 px image at d = 100. Re-extracting the features on every pass instead would cost
about 100x more time (the backbone runs at tens of images/s; a chunk read at GB/s).

:class:`PatchMemory` is the same interface over one tensor (the in-memory path, kept for
small fits and as the reference the streaming path is tested against).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import ResourceError
from .words import plural

CHUNK_ROWS = 64 * 2048
"""Rows per chunk: 52 MB at d = 100; a multiple of :func:`somad.som.exact_bmu`'s 2048-row block,
so the streamed BMU search runs the same products as the in-memory one."""


class PatchMemory:
    """Patch vectors float32 ``(P, d)`` held in one tensor (one chunk)."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.n_rows, self.dim = x.shape
        self.device = x.device

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first row, float32 (c, d))`` covering all rows in order."""
        yield 0, self.x

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """Rows ``rows`` (int, any order) as float32 ``(len(rows), d)``."""
        return self.x[torch.as_tensor(rows, device=self.device)]

    def tensor(self) -> torch.Tensor:
        return self.x

    def close(self) -> None:
        self.x = None


class PatchFile:
    """Patch vectors float32 ``(P, d)`` appended to a file in a temporary folder.

    Use as a context manager (or call :meth:`close`): the folder is removed afterwards.

    Args:
        dim: features per row. device: where chunks are returned.
        folder: parent of the temporary folder (default: the system temporary folder, ``TMPDIR``).
    """

    def __init__(self, dim: int, device: str | torch.device = "cpu", folder: str | None = None):
        self.dim = dim
        self.row_bytes = dim * np.dtype(np.float32).itemsize
        self.device = torch.device(device)
        self.n_rows = 0
        self._dir = tempfile.mkdtemp(prefix="somad-patches-", dir=folder)
        self.path = Path(self._dir) / "patches.f32"
        self._fh = open(self.path, "w+b")

    def __enter__(self) -> "PatchFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close and delete the file and its folder (idempotent)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def append(self, x: torch.Tensor) -> None:
        """Append rows float32 ``(c, d)``."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"PatchFile.append needs (rows, {self.dim}) rows, got {arr.shape}.")
        self._fh.seek(self.n_rows * self.row_bytes)
        self._fh.write(arr.tobytes())
        self.n_rows += len(arr)

    def _read(self, start: int, count: int) -> torch.Tensor:
        buf = np.empty((count, self.dim), dtype=np.float32)
        self._fh.seek(start * self.row_bytes)
        got = self._fh.readinto(memoryview(buf).cast("B"))
        if got != buf.nbytes:
            raise OSError(f"{self.path}: short read ({got} of {buf.nbytes} bytes); was the temporary file removed?")
        return torch.from_numpy(buf).to(self.device)

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first row, float32 (c, d))`` of at most :data:`CHUNK_ROWS` rows, in order."""
        self._fh.flush()
        for start in range(0, self.n_rows, CHUNK_ROWS):
            yield start, self._read(start, min(CHUNK_ROWS, self.n_rows - start))

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """Rows ``rows`` (int, any order) as float32 ``(len(rows), d)``; contiguous runs are read at once."""
        rows = np.asarray(rows, dtype=np.int64)
        self._fh.flush()
        if len(rows) == 0:
            return torch.empty((0, self.dim), dtype=torch.float32, device=self.device)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        parts = [self._read(int(run[0]), len(run)) for run in np.split(rows, breaks)]
        return torch.cat(parts)

    def tensor(self) -> torch.Tensor:
        """All rows in memory (for backends that need them all at once)."""
        return self.take(np.arange(self.n_rows))


PATCH_INDEX_BYTES = 28
"""Memory per training patch whatever the store: its BMU (int64) and BMU distance (float32) kept in
the model, the position prior and one epoch's BMUs (int64 each) while the SOM trains."""
WORKING_BYTES = 1 << 30
"""Memory a fit needs besides the per-patch arrays and the patch store: backbone, one image batch,
chunk buffers, the neuron statistics and Gaussians (well under 1 GB at the defaults)."""


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2 ** 30:.1f} GB" if n_bytes >= 2 ** 30 else f"{n_bytes / 2 ** 20:.1f} MB"


def check_resources(n_images: int, patches_per_image: int, dim: int, store: str = "disk",
                    folder: str | None = None) -> None:
    """Refuse, before any work, a fit that free disk or memory cannot hold.

    Args:
        n_images: training images. patches_per_image: feature cells per image (h * w).
        dim: features per patch. store: ``"disk"`` (patch vectors in a temporary file) or ``"memory"``.
        folder: temporary folder of the patch file (default: ``TMPDIR`` or the system default).

    Raises:
        ResourceError: naming the figure needed, what is free and the largest ``--max-train-images``
            that fits.
    """
    vector = patches_per_image * dim * np.dtype(np.float32).itemsize  # bytes of one image's patch vectors
    index = patches_per_image * PATCH_INDEX_BYTES
    if store == "disk":
        where = folder or tempfile.gettempdir()
        free = shutil.disk_usage(where).free
        if n_images * vector > free:
            raise ResourceError(
                f"fitting {plural(n_images, 'image')} needs {_size(n_images * vector)} of temporary disk in {where} "
                f"({_size(vector)} per image) but {_size(free)} is free: pass --max-train-images "
                f"{free // vector} or fewer, or set TMPDIR to a folder on a larger disk.")
    per_image = index + (vector if store == "memory" else 0)
    free = available_memory()
    if free is not None and n_images * per_image + WORKING_BYTES > free:
        raise ResourceError(
            f"fitting {plural(n_images, 'image')} needs about {_size(n_images * per_image + WORKING_BYTES)} of memory "
            f"({_size(per_image)} per image plus {_size(WORKING_BYTES)}) but {_size(free)} is available: pass "
            f"--max-train-images {max(0, (free - WORKING_BYTES) // per_image)} or fewer.")


def available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes; None where it cannot be read (not Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
