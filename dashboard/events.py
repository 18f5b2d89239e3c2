"""Plotly selection events (what ``st.plotly_chart(..., on_select="rerun")`` returns) -> neuron / feature cell.

The clickable figures of :mod:`somad.figures` carry one scatter point per neuron or feature cell
in flat C order (point ``j`` = row ``j // W``, column ``j % W``); these functions read a click back.
"""
from __future__ import annotations

from somad.explain import neuron_position


def selected_point(event, curve: int | None = None) -> int | None:
    """The ``point_index`` of the first selected point of a plotly selection event.

    Args:
        event: what ``st.plotly_chart(..., on_select="rerun")`` returns or keeps in session
            state: a dict-like ``{"selection": {"points": [{"curve_number", "point_index", ...}]}}``.
        curve: only accept points of this trace (``curve_number``); None = any trace.

    Returns:
        the point index, or None when nothing (of that trace) is selected.
    """
    if not event:
        return None
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None)
    for p in points or []:
        if curve is not None and p.get("curve_number", curve) != curve:
            continue
        idx = p.get("point_index", p.get("point_number"))
        if idx is None:
            continue
        if isinstance(idx, (list, tuple)):  # heatmap-style [row, col] indices
            continue
        return int(idx)
    return None


def point_to_neuron(event, grid: tuple[int, int], curve: int | None = None) -> tuple[int, int] | None:
    """Neuron ``(row, col)`` clicked on a SOM map whose click trace has one point per neuron
    in flat order (point ``j`` = neuron ``j``); None when nothing is selected or out of range."""
    idx = selected_point(event, curve)
    if idx is None or not 0 <= idx < grid[0] * grid[1]:
        return None
    return neuron_position(idx, grid)


def point_to_cell(event, feature_shape: tuple[int, int], curve: int | None = None) -> tuple[int, int] | None:
    """Feature cell ``(row, col)`` clicked on an image overlaid with one point per cell (flat order)."""
    idx = selected_point(event, curve)
    h, w = feature_shape
    if idx is None or not 0 <= idx < h * w:
        return None
    return int(idx // w), int(idx % w)
