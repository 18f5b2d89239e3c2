"""Counts in words, written once: "1 image", "3 images" (never "1 images" or "image(s)").

Used by the CLI's messages, the errors and the dashboard's captions alike.
"""
from __future__ import annotations

IRREGULAR = {"process": "processes", "worker process": "worker processes", "category": "categories",
             "is": "are", "was": "were", "has": "have", "it": "them"}
"""Plurals that are not the noun plus "s"."""


def plural_of(noun: str) -> str:
    """The plural of ``noun`` (``"image"`` -> ``"images"``, ``"category"`` -> ``"categories"``)."""
    return IRREGULAR.get(noun, noun + "s")


def word(n: int, noun: str, many: str | None = None) -> str:
    """``noun`` when ``n`` is 1, else its plural (``many`` when given, else :func:`plural_of`)."""
    return noun if int(n) == 1 else (many or plural_of(noun))


def plural(n: int, noun: str, many: str | None = None, fmt: str = "") -> str:
    """``"<n> <noun>"`` with the noun agreeing with ``n``: ``plural(1, "image")`` -> ``"1 image"``,
    ``plural(3, "test image")`` -> ``"3 test images"``, ``plural(1200, "image", fmt=",")`` -> ``"1,200 images"``.

    Args:
        n: the count (an int, or a float/NumPy integer holding one). noun: singular, last word inflected.
        many: the plural when it is not the noun plus "s" (see :data:`IRREGULAR`). fmt: format spec of ``n``.
    """
    return f"{int(n):{fmt}} {word(n, noun, many)}"
