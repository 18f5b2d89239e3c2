"""The dashboard URLs the README gives are pages the app serves (dashboard.state.PAGE_SPECS)."""
from __future__ import annotations

import re
from pathlib import Path

from dashboard.state import PAGE_SPECS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_page_urls_are_served():
    served = {spec.url_path for spec in PAGE_SPECS.values()}
    text = README.read_text(encoding="utf-8")
    used = set(re.findall(r"`/([a-z_]*)[?`]", text))
    assert {"som_explorer", "compare", ""} <= used  # the README's links and its page table
    table = set(re.findall(r"^\| [^|]+ \| `/([a-z_]*)`", text, flags=re.M))
    assert table == served  # the page table lists every page, and only those
    assert used - {"model", "models"} <= served, sorted(used - served)  # /model, /models: named as wrong
