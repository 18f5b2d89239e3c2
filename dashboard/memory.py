"""Giving memory back to the system after large transient buffers (decoded uploads, overlays).

Streamlit runs each script run in a thread, and glibc's allocator serves those threads from
per-thread arenas and raises its mmap threshold after a large buffer is freed (up to 32 MB), so
the 19 MB of a decoded 2500x2500 upload and its resampling temporaries land in arenas that
are rarely returned: resident memory grew with every upload and stayed after the tab closed.
:func:`tune_allocator` fixes the mmap threshold (large buffers are mapped and unmapped on free)
and :func:`release_freed` trims the arenas after the uploads of a run are decoded. Both do
nothing where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc ``mallopt`` parameters (``malloc.h``)."""
MMAP_THRESHOLD = 1 << 20
"""Buffers from this size (bytes) are mapped on their own and returned to the system when freed."""


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` once per process (no dynamic raise);
    returns whether it was applied."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, MMAP_THRESHOLD))


def release_freed() -> None:
    """Return freed heap memory of every arena to the system (glibc ``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def freeze_long_lived() -> None:
    """Take every object alive now out of the cyclic garbage collector's sight (``gc.freeze``), after
    collecting what is already garbage.

    Streamlit runs a full collection after every script run (its ``runner.postScriptGC``), which
    walked every live object: about 540,000 once torch, timm, scipy and a model are loaded, 0.3 s per
    run holding the GIL, while every other session waited. Called when a model or its regions are
    loaded (the imports and the long-lived objects are then in place), the collection after each run
    walks only what the runs create. Frozen objects are still freed by reference counting.
    """
    gc.collect()
    gc.freeze()
