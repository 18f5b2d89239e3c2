"""Streamlit widgets shared by the pages: the one plotly chart call and the "new click" filter."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from somad import figures, report

from . import loaders
from .keys import Keys

PLOTLY_CONFIG = {"displayModeBar": False, "doubleClick": False}
"""``st.plotly_chart(config=...)``: no plotly toolbar over the titles (clicks and hover stay), and no
zoom reset on a double-click: it autoscaled a map's or heatmap's axes, so the outline drawn over the
chart (:func:`chart`) no longer sat on its cell (found by a new-user helper)."""


OUTLINE_PX = 3
"""Line width (pixels) of a selection outline drawn over a chart (:func:`chart`'s ``outline``)."""


def chart(fig, key: str | None = None, *, clickable: bool = False, width: str = "stretch",
          outline: dict[str, str] | None = None, outline_color: str = figures.SELECT_COLOR):
    """Show a plotly figure; ``clickable`` charts rerun the page on a click and return the selection
    event (read it with :mod:`dashboard.events`).

    ``outline``: where to outline, as CSS (:func:`map_outline`, :func:`somad.figures.image_cell_css`): a
    box drawn in ``outline_color`` (the selection colour; white over a heatmap overlay) over the chart
    by a CSS rule on the chart's key (Streamlit gives a keyed element the class ``st-key-<key>``), not
    in the figure. Streamlit replaces a plotly chart whose figure changed by a new one, which cost the
    browser about 0.15 s of CPU per neuron click on a 56x56 U-matrix (``benchmarks/click_breakdown.py``);
    a figure that stays the same is not sent again, and a moved outline is one changed style rule. The
    box follows the width the chart is drawn at (Streamlit shrinks a ``"content"`` figure to a narrower
    column, and draws a ``"stretch"`` one at the column's width; either way at the figure's height).

    ``width="stretch"``: the figure's own width is dropped. Streamlit draws a changed figure first at
    the width in its spec and then at the container's, so a clicked chart whose figure changed with
    each click (an outline drawn in the figure) jumped under the cursor, and a click in that moment
    landed elsewhere (the Test inspector's heatmap, 400 px in a 368 px column); a new figure (another
    image, the page opened) still would. ``"content"``: drawn at the figure's width, or narrower in a
    narrower column."""
    if width == "stretch":
        fig.layout.width = None
    if outline is not None and key is None:
        raise ValueError("an outline needs a keyed chart (its CSS rule is on the chart's key)")
    if clickable:
        event = st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key, on_select="rerun", selection_mode="points",
                                width=width)
    else:
        event = st.plotly_chart(fig, config=PLOTLY_CONFIG, key=key, width=width)
    if outline is not None:
        st.html(outline_css(key, outline, outline_color))
    return event


def outline_css(key: str, box: dict[str, str], color: str = figures.SELECT_COLOR) -> str:
    """A ``<style>`` that draws the box ``box`` (CSS properties: :func:`somad.figures.map_cell_css`)
    with a border of :data:`OUTLINE_PX` in ``color`` over the plotly chart keyed ``key`` (not
    clickable, so hover and clicks reach the chart)."""
    props = "".join(f"{k}:{v};" for k, v in box.items())
    return (f"<style>.st-key-{key} .svg-container::after{{content:'';position:absolute;pointer-events:none;"
            f"box-sizing:border-box;border:{OUTLINE_PX}px solid {color};top:0;{props}}}</style>")


def map_selection(source: str, value, topology: str, *, clickable: bool = True):
    """How a SOM map figure of ``topology`` shows its selected neuron ``value``: ``(selected,
    preselected)`` for the figure (:func:`somad.figures.som_map`).

    Rectangular grids: neither; :func:`chart` outlines the neuron over the unchanged figure
    (``outline=map_outline(...)``). Hexagonal grids, whose markers are drawn: a clicked map as
    :func:`selection_drawing`, a map only looked at with the neuron ringed in the figure."""
    if not figures.click_markers_drawn(topology):
        st.session_state.setdefault(Keys.DRAWN_SELECTION, {}).pop(source, None)
        return None, None
    return selection_drawing(source, value) if clickable else (value, None)


def map_outline(fig, shape: tuple[int, int], topology: str, cell):
    """The box :func:`chart` outlines around neuron ``cell`` of SOM map ``fig``, as CSS that follows the
    width the chart is drawn at (:func:`somad.figures.map_cell_css`, the line just outside the cell's
    edges): None where the figure shows the selection itself (hexagonal grids, :func:`map_selection`)
    or nothing is selected."""
    if cell is None or figures.click_markers_drawn(topology):
        return None
    return figures.map_cell_css(shape, topology, fig.layout.width, cell, OUTLINE_PX)


def new_click(source: str, value):
    """``value`` when it differs from what ``source`` (a chart or table key) reported last run, else None.

    A selection stays in a chart's state after the click, so without this filter an old click on
    one chart would override a newer choice made elsewhere (another chart, a typed row, a link).
    """
    last = st.session_state.setdefault(Keys.LAST_CLICK, {})
    fresh = value is not None and value != last.get(source)
    last[source] = value
    return value if fresh else None


def selection_drawing(source: str, value):
    """How a clickable chart ``source`` that draws its click markers (hexagonal maps,
    :func:`somad.figures.click_markers_drawn`) shows its selected point ``value``: ``(marker,
    preselected)``, the figure's ``selected`` (a drawn marker) and ``preselected`` (a point plotly
    shows selected).

    A clicked point is shown by plotly itself (the click trace's ``selected`` style), so after a
    click on this chart the figure is drawn exactly as before: Streamlit then sends it as a cached
    reference and the browser neither rebuilds nor redraws its thousands of markers. A selection
    made elsewhere (a link, the URL, a typed value) is drawn as a marker; the first click after
    that changes the figure once, and bakes the clicked point in as ``preselected``. Charts that do
    not draw their markers go through :func:`map_selection` (an outline over the chart).
    """
    ss = st.session_state
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
