"""Streamlit widgets shared by the pages: the one plotly chart call and the "new click" filter."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from somad import report

from . import loaders
from .keys import Keys

PLOTLY_CONFIG = {"displayModeBar": False}
"""``st.plotly_chart(config=...)``: no plotly toolbar over the titles (clicks and hover stay)."""


def chart(fig, key: str | None = None, *, clickable: bool = False, width: str = "stretch"):
    """Show a plotly figure; ``clickable`` charts rerun the page on a click and return the selection
    event (read it with :mod:`dashboard.events`).

    ``width="stretch"``: the figure's own width is dropped. Streamlit draws a changed figure first at
    the width in its spec and then at the container's, so a clicked chart that changes with each click
    (a moved outline) jumped under the cursor, and a click in that moment landed elsewhere (the Test
    inspector's heatmap, 400 px in a 368 px column). ``"content"``: drawn at the figure's width, which
    must fit the column for the same reason."""
    if width == "stretch":
        fig.layout.width = None
    if clickable:
        return st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key, on_select="rerun", selection_mode="points",
                               width=width)
    return st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key, width=width)


def new_click(source: str, value):
    """``value`` when it differs from what ``source`` (a chart or table key) reported last run, else None.

    A selection stays in a chart's state after the click, so without this filter an old click on
    one chart would override a newer choice made elsewhere (another chart, a typed row, a link).
    """
    last = st.session_state.setdefault(Keys.LAST_CLICK, {})
    fresh = value is not None and value != last.get(source)
    last[source] = value
    return value if fresh else None


def selection_drawing(source: str, value, markers_drawn: bool = True):
    """How clickable chart ``source`` shows its selected point ``value``: ``(marker, preselected)``,
    the figure's ``selected`` (a drawn marker) and ``preselected`` (a point plotly shows selected).

    Where the chart draws its click markers (``markers_drawn``: :func:`somad.figures.click_markers_drawn`),
    a clicked point is shown by plotly itself (the click trace's ``selected`` style), so after a
    click on this chart the figure is drawn exactly as before: Streamlit then sends it as a cached
    reference and the browser neither rebuilds nor redraws its thousands of markers. A selection
    made elsewhere (a link, the URL, a typed value) is drawn as a marker; the first click after
    that changes the figure once, and bakes the clicked point in as ``preselected``. Where the
    markers are not drawn, the selection is always a drawn marker (a redraw is cheap there).
    """
    ss = st.session_state
    if not markers_drawn:
        ss.setdefault(Keys.DRAWN_SELECTION, {}).pop(source, None)
        return value, None
    drawn = ss.setdefault(Keys.DRAWN_SELECTION, {})
    before = drawn.get(source)
    if value is not None and ss.get(Keys.LAST_CLICK, {}).get(source) == value:
        now = before if before is not None and before[0] is None else (None, value)
    else:
        now = (value, None)
    drawn[source] = now
    return now


def report_button(cur) -> None:
    """One click: build the model's self-contained HTML report (:mod:`somad.report`) and download it.

    The report is built only when clicked (Streamlit's deferred download data), from the cached evaluation.
    """
    def build() -> str:
        ev = loaders.get_evaluation(cur.model_dir, cur.data_dir, cur.category, cur.device)
        return report.build_report(cur.model, ev, cur.model_dir)

    st.download_button("Download HTML report", data=build, mime="text/html", on_click="ignore",
                       file_name=f"somad_report_{cur.category}_{Path(cur.model_dir).name}.html",
                       icon=":material/description:", key="w_report",
                       help="one self-contained file (plotly embedded, no internet needed): model card, metrics, "
                            "curves, U-matrix and hit map, failing images, per-defect table")
