"""Counts in words (somad/words.py): "1 image", "3 images", never "1 images" or "image(s)"."""
from __future__ import annotations

import re
from pathlib import Path

from somad.words import plural, word

REPO = Path(__file__).resolve().parent.parent


def test_plural_agrees_with_the_count():
    assert plural(1, "image") == "1 image" and plural(0, "image") == "0 images"
    assert plural(2, "test image") == "2 test images" and plural(1, "taught test image") == "1 taught test image"
    assert plural(1200, "image", fmt=",") == "1,200 images" and plural(3, "worker process") == "3 worker processes"
    assert plural(2, "category") == "2 categories" and plural(1.0, "path") == "1 path"
    assert word(1, "was") == "was" and word(2, "was") == "were" and word(2, "it") == "them" and word(1, "it") == "it"
    assert word(2, "looks", "look") == "look"


def test_no_count_is_written_with_an_s_in_brackets():
    """A count placeholder followed by "image(s)" (or any "word(s)") reads "1 image(s)": use plural()."""
    pattern = re.compile(r"\}\s[\w\- ]{0,40}\((s|es)\)")
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
             for folder in ("somad", "dashboard", "pages") for p in sorted((REPO / folder).glob("*.py"))
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []
