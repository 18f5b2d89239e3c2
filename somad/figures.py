"""Plotly figures of the dashboard and the HTML report (pure: arrays in, ``go.Figure`` out).

Clickable maps: Streamlit cannot select cells of a heatmap trace, so every map
that can be clicked carries one scatter point per cell, in flat C order (point
``j`` = row ``j // W``, column ``j % W``): on rectangular grids and images an
invisible trace that is hovered and clicked but not drawn (:func:`click_marker`),
over a heatmap that carries the colours; on hexagonal grids coloured hexagons,
which are the drawing. That click trace is always trace :data:`CLICK_TRACE`; read
a click with :func:`dashboard.events.point_to_neuron`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go

from .som import grid_coordinates
from .viz import HEAT_COLORSCALE

CLICK_TRACE = 1
"""Index of the clickable scatter trace in SOM maps and image figures."""

SELECT_COLOR = "#ff2d55"


COLORBAR_PX = 100
"""Room (pixels) an image figure keeps on its right for a colour bar, its tick labels and its title. Its
margins are fixed (``autoexpand=False``), so where the picture sits does not depend on the labels; that
it does not jump on a click is :func:`dashboard.widgets.chart`'s business (no width of its own)."""
MIN_PLOT_PX = 150
"""Smallest plot height of a SOM map in pixels (a 1xN grid keeps a readable colour bar)."""
MAX_ASPECT = 1.6
"""Tallest SOM map plot, as a multiple of its width (an Nx1 grid stays on screen)."""
MAX_TICKS = 8
"""At most this many integer row / column ticks per SOM map axis."""
HEX_RADIUS = 1 / math.sqrt(3)
"""Circumradius of a hexagonal cell in grid units (neighbouring centres are 1 apart)."""


def _hover(values: np.ndarray, hover: dict[str, np.ndarray], label: str = "") -> tuple[np.ndarray, str]:
    """``customdata`` ``(rows*cols, 3 + len(hover))`` (row, col, value, extras) and its hover template;
    the value is labelled ``label`` (the colour bar's title, e.g. "U"; "value" when empty)."""
    rows, cols = values.shape
    r, c = np.divmod(np.arange(rows * cols), cols)
    extra = [np.asarray(v, dtype=float).ravel() for v in hover.values()]
    custom = _points(np.stack([r, c, values.ravel(), *extra], axis=1))
    tmpl = f"neuron (row %{{customdata[0]}}, col %{{customdata[1]}})<br>{label or 'value'} %{{customdata[2]:.4~g}}"
    for i, label in enumerate(hover, start=3):
        tmpl += f"<br>{label} %{{customdata[{i}]:.4~g}}"
    return custom, tmpl + "<extra></extra>"


def _extent(shape: tuple[int, int], topology: str) -> tuple[float, float]:
    """Width and height of the drawn grid in cell units (centres plus half a cell on each side)."""
    rows, cols = shape
    if topology == "hexagonal":
        return cols + (0.5 if rows > 1 else 0), (rows - 1) * math.sqrt(3) / 2 + 1
    return float(cols), float(rows)


MAP_MARGIN = dict(l=40, r=80, t=40, b=30)
"""Margins (pixels) of every SOM map figure, fixed (``autoexpand=False``): where its plot sits does not
depend on its labels, so :func:`map_cell_box` can say where a neuron is drawn."""


def _plot_px(shape: tuple[int, int], topology: str, size: int) -> tuple[float, float]:
    """Plot area ``(width, height)`` in pixels of a map figure ``size`` wide (:data:`MAP_MARGIN`)."""
    wc, hc = _extent(shape, topology)
    plot_w = size - MAP_MARGIN["l"] - MAP_MARGIN["r"]
    return plot_w, float(np.clip(plot_w * hc / wc, MIN_PLOT_PX, MAX_ASPECT * plot_w))


def _range(values: np.ndarray) -> tuple[float, float]:
    """Colour range of the finite values ((0, 1) when none is finite)."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def _colorbar(title: str) -> dict:
    return dict(title=title, thickness=12, len=1.0, nticks=5)


def _value_trace(values: np.ndarray, xy: np.ndarray, topology: str, colorscale: str, colorbar_title: str,
                 cell_px: float) -> go.BaseTraceType:
    """Trace 0: the coloured map (a heatmap; or, for hexagonal grids, an invisible placeholder,
    since the hexagon markers of the click trace carry the colours)."""
    if topology == "hexagonal":
        return go.Scatter(x=xy[:1, 0], y=xy[:1, 1], mode="markers", marker=dict(opacity=0), hoverinfo="skip",
                          showlegend=False)
    vmin, vmax = _range(values)
    return go.Heatmap(z=values, x0=0, dx=1, y0=0, dy=1, colorscale=colorscale, hoverinfo="skip", zmin=vmin,
                      zmax=vmax, colorbar=_colorbar(colorbar_title))


def click_marker(cell_px: float) -> dict:
    """Marker of a click trace over a heatmap or an image: one square per cell that plotly hovers and
    clicks (hover and click select work on the trace's data) but of which it draws only one
    (``maxdisplayed``), nearly transparent. In plotly.js alone a 56x56 map drew in ~130 ms with all of
    them and ~14 ms so; a page change's browser main thread fell from ~0.8 to ~0.45 s
    (``benchmarks/click_breakdown.py --pages``). Since a clicked point is not drawn either, a selection
    is shown by an outline: the dashboard draws it over the unchanged chart (:func:`map_cell_box`,
    ``dashboard.widgets.chart``), the report and the image figures as a trace (``selected``)."""
    return dict(symbol="square", size=max(cell_px * 0.95, 3), color="rgba(255,255,255,0.01)", line=dict(width=0),
                maxdisplayed=1)


def click_markers_drawn(topology: str) -> bool:
    """Whether a clickable map of this topology draws its click markers (hexagonal: they are the map;
    rectangular: see :func:`click_marker`). Only then can plotly show a clicked neuron itself (the
    ``preselected`` of :func:`som_map`) and spare the browser a redraw of the markers."""
    return topology == "hexagonal"


def _click_trace(values: np.ndarray, xy: np.ndarray, topology: str, colorscale: str, colorbar_title: str,
                 cell_px: float, hover: dict[str, np.ndarray]) -> go.Scatter:
    """Trace :data:`CLICK_TRACE`: one marker per neuron in flat order (coloured hexagons, shown
    filled in the selection colour once clicked; or :func:`click_marker` over the heatmap)."""
    custom, tmpl = _hover(values, hover, colorbar_title)
    if topology != "hexagonal":
        return go.Scatter(x=_points(xy[:, 0]), y=_points(xy[:, 1]), mode="markers", customdata=custom,
                          hovertemplate=tmpl, showlegend=False, marker=click_marker(cell_px))
    vmin, vmax = _range(values)
    marker = dict(symbol="hexagon", size=cell_px * 1.12, color=values.ravel(), colorscale=colorscale,
                  cmin=vmin, cmax=vmax, line=dict(width=0), colorbar=_colorbar(colorbar_title))
    return go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=custom, hovertemplate=tmpl,
                      showlegend=False, marker=marker, selected=dict(marker=dict(color=SELECT_COLOR, opacity=1)),
                      unselected=dict(marker=dict(opacity=1)))


def cell_outline(x: float, y: float, topology: str) -> tuple[list[float], list[float]]:
    """Closed outline of the cell centred at ``(x, y)`` in data units: a unit square, or the pointy-top
    hexagon of the offset-row lattice of :func:`somad.som.grid_coordinates`."""
    if topology == "hexagonal":
        angles = np.deg2rad(np.arange(30, 391, 60))
        return (x + HEX_RADIUS * np.cos(angles)).tolist(), (y + HEX_RADIUS * np.sin(angles)).tolist()
    return [x - .5, x + .5, x + .5, x - .5, x - .5], [y - .5, y - .5, y + .5, y + .5, y - .5]


def _selection_trace(xy: np.ndarray, j: int, topology: str) -> go.Scatter:
    """The selected neuron's outline, drawn in data units so it scales with the map."""
    ox, oy = cell_outline(xy[j, 0], xy[j, 1], topology)
    return go.Scatter(x=ox, y=oy, mode="lines", hoverinfo="skip", showlegend=False,
                      line=dict(color=SELECT_COLOR, width=3))


def _grid_ticks(n: int) -> list[int]:
    """At most :data:`MAX_TICKS` integer positions in ``[0, n)``."""
    return list(range(0, n, max(1, math.ceil(n / MAX_TICKS))))


def _axes(shape: tuple[int, int], topology: str) -> dict:
    """Layout of the equal-aspect axes over the grid, with integer row / column ticks (rows labelled by
    index on hexagonal grids)."""
    rows, cols = shape
    wc, hc = _extent(shape, topology)
    row_step = math.sqrt(3) / 2 if topology == "hexagonal" else 1.0
    xt, yt = _grid_ticks(cols), _grid_ticks(rows)
    common = dict(showgrid=False, zeroline=False, title=None, tickmode="array")
    return dict(xaxis=dict(range=[-0.6, wc - 0.4], constrain="domain", tickvals=xt, ticktext=[str(t) for t in xt],
                           **common),
                yaxis=dict(range=[hc - 0.4, -0.6], scaleanchor="x", scaleratio=1, tickvals=[t * row_step for t in yt],
                           ticktext=[str(t) for t in yt], **common))


def _map_px(shape: tuple[int, int], topology: str, size: int) -> tuple[float, float, float]:
    """``(plot width, plot height, cell size)`` in screen pixels of a map drawn ``size`` px wide."""
    plot_w, plot_h = _plot_px(shape, topology, size)
    return plot_w, plot_h, min(plot_w / _extent(shape, topology)[0], plot_h / _extent(shape, topology)[1])


def _map_figure(traces: list, xy: np.ndarray, shape: tuple[int, int], topology: str, title: str, size: int,
                plot_h: float, selected: tuple[int, int] | None) -> go.Figure:
    """A clickable map figure: ``traces`` plus the ring of the ``selected`` neuron, in the layout every
    map of the dashboard shares (one constructor: ``update_layout`` calls cost ~10 ms each)."""
    if selected is not None:
        traces = [*traces, _selection_trace(xy, selected[0] * shape[1] + selected[1], topology)]
    layout = dict(title=dict(text=title, x=0.02, font=dict(size=14)), width=size,
                  height=int(plot_h) + MAP_MARGIN["t"] + MAP_MARGIN["b"],
                  margin=dict(**MAP_MARGIN, autoexpand=False), clickmode="event+select", dragmode=False,
                  plot_bgcolor="white", hovermode="closest", **_axes(shape, topology))
    return go.Figure(traces, layout)


class _Frame(NamedTuple):
    """How plotly lays out an equal-aspect figure with fixed margins: the margins ``left``, ``right``,
    ``top`` and the plot area's height ``plot_h`` (pixels; the plot area's width is the drawn width less
    the side margins), the axis spans ``span_x``, ``span_y`` (data units) and ``ratio``, the pixels of a
    y data unit per pixel of an x one (the y axis's ``scaleratio``). Both axes take the largest scale at
    which both spans fit, and plotly centres an axis with room to spare (``constrain="domain"``: it
    shrinks that axis's domain about its middle)."""

    left: float
    right: float
    top: float
    plot_h: float
    span_x: float
    span_y: float
    ratio: float = 1.0


def _box_px(frame: _Frame, width: float, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Where plotly draws ``box`` ``(x, y, w, h)`` (data units from the left and the top of the axis
    ranges) of a figure laid out as ``frame`` and drawn ``width`` pixels wide: ``(left, top, width,
    height)`` in CSS pixels from the figure's top-left corner."""
    plot_w = width - frame.left - frame.right
    px = min(plot_w / frame.span_x, frame.plot_h / (frame.span_y * frame.ratio))
    py = px * frame.ratio
    x0 = frame.left + (plot_w - px * frame.span_x) / 2
    y0 = frame.top + (frame.plot_h - py * frame.span_y) / 2
    x, y, w, h = box
    return float(x0 + x * px), float(y0 + y * py), float(w * px), float(h * py)


def _box_css(frame: _Frame, size: float, box: tuple[float, float, float, float], line_px: float) -> dict[str, str]:
    """:func:`_box_px` as CSS for a box positioned absolutely over the figure, for whatever width the
    figure is drawn at: Streamlit draws a figure ``size`` wide narrower in a narrower column, or at the
    column's width when stretched, and keeps its height; plotly then fits the plot into that area.
    ``100%`` is the drawn width; the box's top is a ``margin-top`` (a margin's percentage is of the
    width) and its height follows from ``aspect-ratio``. ``line_px``: the box grows by that much on every
    side, so that a border of that width lies just outside the box and leaves it visible (a 56x56 map's
    cells are 4 to 6 px wide). Drawn at ``size`` with no line, the box is :func:`_box_px`'s."""
    plot_w = f"(100% - {frame.left + frame.right:.6g}px)"  # the drawn plot width
    px = f"min({plot_w} / {frame.span_x:.6g}, {frame.plot_h / (frame.span_y * frame.ratio):.6g}px)"
    x, y, w, _ = box
    _, _, w_px, h_px = _box_px(frame, size, box)
    return {"left": f"calc({frame.left - line_px:.6g}px + ({plot_w} - {px} * {frame.span_x:.6g}) / 2 + "
                    f"{px} * {x:.6g})",
            "margin-top": f"calc({frame.top - line_px:.6g}px + ({frame.plot_h:.6g}px - {px} * "
                          f"{frame.span_y * frame.ratio:.6g}) / 2 + {px} * {y * frame.ratio:.6g})",
            "width": f"calc({px} * {w:.6g} + {2 * line_px:.6g}px)",
            "aspect-ratio": f"{w_px + 2 * line_px:.6g} / {h_px + 2 * line_px:.6g}"}


def _map_cell(shape: tuple[int, int], topology: str, size: int, cell: tuple[int, int]
              ) -> tuple[_Frame, tuple[float, float, float, float]]:
    """The frame of a map figure ``size`` wide (:data:`MAP_MARGIN`, the ranges of :func:`_axes`) and the
    box of ``cell`` in data units from the axes' starts (value -0.6).

    Raises:
        ValueError: ``cell`` outside the grid.
    """
    rows, cols = shape
    if not (0 <= cell[0] < rows and 0 <= cell[1] < cols):
        raise ValueError(f"cell {cell} is outside the {rows}x{cols} grid")
    _, plot_h = _plot_px(shape, topology, size)
    wc, hc = _extent(shape, topology)
    x, y = grid_coordinates(shape, topology)[cell[0] * cols + cell[1]]
    half_w, half_h = (math.sqrt(3) / 2 * HEX_RADIUS, HEX_RADIUS) if topology == "hexagonal" else (0.5, 0.5)
    # the figure's height is a whole number of pixels (_map_figure)
    frame = _Frame(MAP_MARGIN["l"], MAP_MARGIN["r"], MAP_MARGIN["t"], int(plot_h), wc + 0.2, hc + 0.2)
    return frame, (x - half_w + 0.6, y - half_h + 0.6, 2 * half_w, 2 * half_h)


def map_cell_box(shape: tuple[int, int], topology: str, size: int, cell: tuple[int, int]
                 ) -> tuple[float, float, float, float]:
    """Where plotly draws neuron ``cell`` of a map figure of this module (:func:`som_map`,
    :func:`footprint_map`, :func:`distance_map_figure`) drawn at its own width ``size``: its bounding
    box ``(left, top, width, height)`` in CSS pixels from the figure's top-left corner.

    The plot area is the figure less :data:`MAP_MARGIN`; both axes have one scale (equal aspect), the
    largest at which the axis ranges of :func:`_axes` fit, and plotly centres the axis with room to
    spare (it shrinks the x domain or widens the y range about its middle). ``tests/test_browser.py``
    checks the box against plotly's own pixel positions in Chromium.

    Raises:
        ValueError: ``cell`` outside the grid.
    """
    frame, box = _map_cell(shape, topology, size, cell)
    return _box_px(frame, size, box)


def map_cell_css(shape: tuple[int, int], topology: str, size: int, cell: tuple[int, int], line_px: float = 0.0
                 ) -> dict[str, str]:
    """:func:`map_cell_box` as CSS for a box over the figure that follows the width the figure is drawn
    at (:func:`_box_css`); ``line_px``: the width of a border just outside the cell's edges.

    Raises:
        ValueError: ``cell`` outside the grid.
    """
    frame, box = _map_cell(shape, topology, size, cell)
    return _box_css(frame, size, box, line_px)


def _hover_heatmap(values: np.ndarray, colorscale, colorbar_title: str, hover: dict[str, np.ndarray],
                   value_label: str | None = "value", **kw) -> go.Heatmap:
    """A rectangular map as one heatmap that carries its own hover (no per-neuron markers): what a map
    that is not clicked draws, about 10x cheaper in the browser than :data:`CLICK_TRACE`'s markers.
    ``value_label`` None: the hover shows the ``hover`` arrays only."""
    vmin, vmax = _range(values)
    tmpl = "neuron (row %{y}, col %{x})" + ("" if value_label is None else f"<br>{value_label} %{{z:.4~g}}")
    for i, label in enumerate(hover):
        tmpl += f"<br>{label} %{{customdata[{i}]:.4~g}}"
    custom = _points(np.stack([np.asarray(v, dtype=float) for v in hover.values()], -1)) if hover else None
    args = dict(z=values, x0=0, dx=1, y0=0, dy=1, colorscale=colorscale, zmin=vmin, zmax=vmax,
                colorbar=_colorbar(colorbar_title), customdata=custom, hovertemplate=tmpl + "<extra></extra>")
    return go.Heatmap(**{**args, **kw})


def som_map(values: np.ndarray, topology: str = "rectangular", title: str = "", colorscale: str = "Viridis",
            hover: dict[str, np.ndarray] | None = None, selected: tuple[int, int] | None = None,
            size: int = 420, colorbar_title: str = "", clickable: bool = True,
            preselected: tuple[int, int] | None = None) -> go.Figure:
    """A SOM map (U-matrix, hit map, component plane) as a clickable figure, for grids from 1x1 to
    100x100, rectangular or hexagonal (positions from :func:`somad.som.grid_coordinates`).

    Args:
        values: float ``(rows, cols)`` one value per neuron (NaN allowed).
        topology: ``"rectangular"`` (heatmap + transparent square markers) or ``"hexagonal"``
            (hexagon markers coloured by value).
        hover: extra per-neuron arrays ``(rows, cols)`` shown on hover, by label.
        selected: neuron (row, col) outlined in the selection colour.
        preselected: neuron (row, col) plotly shows selected (filled in the selection colour, as a
            clicked neuron) without an outline, where :func:`click_markers_drawn`: a figure that stays
            the same from click to click is not redrawn (:func:`dashboard.widgets.selection_drawing`).
            Elsewhere it is outlined, as ``selected``.
        size: figure width in pixels (height follows the grid's aspect, within
            [:data:`MIN_PLOT_PX`, :data:`MAX_ASPECT` x width]).
        clickable: False for a map that is only looked at: a rectangular grid is then one heatmap
            with its own hover and no :data:`CLICK_TRACE` (one SVG marker per neuron costs the
            browser about 0.1 s per redraw on a 56x56 grid); hexagonal grids keep their markers.

    Returns:
        figure whose trace :data:`CLICK_TRACE` has point ``j`` = neuron ``j`` (when clickable or
        hexagonal).

    Raises:
        ValueError: unknown topology.
    """
    values = np.asarray(values, dtype=float)
    shape = values.shape
    xy = grid_coordinates(shape, topology)
    plot_w, plot_h, cell_px = _map_px(shape, topology, size)
    if not clickable and topology != "hexagonal":
        trace = _hover_heatmap(values, colorscale, colorbar_title, hover or {}, colorbar_title or "value")
        return _map_figure([trace], xy, shape, topology, title, size, plot_h, selected)
    traces = [_value_trace(values, xy, topology, colorscale, colorbar_title, cell_px),
              _click_trace(values, xy, topology, colorscale, colorbar_title, cell_px, hover or {})]
    selected = _preselect(traces[CLICK_TRACE], preselected, selected, shape, topology)
    return _map_figure(traces, xy, shape, topology, title, size, plot_h, selected)


def _preselect(click: go.Scatter, preselected, selected, shape: tuple[int, int], topology: str):
    """Mark ``preselected`` as plotly's selected point of the ``click`` trace where its markers are drawn;
    returns the neuron to outline (``preselected`` where they are not, else ``selected``)."""
    if preselected is None:
        return selected
    if not click_markers_drawn(topology):
        return preselected if selected is None else selected
    click.selectedpoints = [preselected[0] * shape[1] + preselected[1]]
    return selected


def image_source(image: np.ndarray) -> str:
    """A uint8 RGB image ``(H, W, 3)`` as a JPEG data URI (quality 90), for ``go.Image(source=...)``:
    the figure carries one compressed string instead of ``H*W*3`` numbers in its JSON. A figure is
    re-sent with every click that moves its outline, so the size counts: a 520 px heatmap overlay is
    about 45 kB as JPEG against about 120 kB as a fast PNG (and about 1.5 MB as numbers), and is
    encoded in about 1 ms."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _points(a: np.ndarray) -> np.ndarray:
    """A map's per-point array (click coordinates, hover data) as float32: half the bytes of float64 in
    the figure's JSON, which is re-sent with every click; exact for grid indices, 7 digits for values
    (hovers show 4)."""
    return np.asarray(a, dtype=np.float32)


IMAGE_MARGIN = dict(l=10, r=10, t=40, b=10)
"""Margins (pixels) of :func:`image_figure`, fixed; the colour bar, when there is one, widens the right one
by :data:`COLORBAR_PX`."""


def _image_frame(image_shape: tuple[int, int], size: int, colorbar: bool) -> _Frame:
    """The frame (:class:`_Frame`) of an :func:`image_figure` of an image ``(H, W)`` pixels, ``size``
    wide: its plot area has the image's aspect ratio at that width (a whole number of pixels high); both
    axes span the model's size S, here the unit (span 1), and a y unit is ``H / W`` of an x unit's pixels
    (``scaleratio``)."""
    ih, iw = image_shape
    m = IMAGE_MARGIN
    right = m["r"] + (COLORBAR_PX if colorbar else 0)
    plot_h = round((size - m["l"] - right) * ih / iw)
    return _Frame(m["l"], right, m["t"], plot_h, 1.0, 1.0, ih / iw)


def image_cell_css(image_shape: tuple[int, int], feature_shape: tuple[int, int], size: int, cell: tuple[int, int],
                   line_px: float = 0.0, colorbar: bool = False) -> dict[str, str]:
    """Where :func:`image_figure` (an image ``(H, W)`` pixels, ``feature_shape`` (h, w) cells, ``size``
    wide, with a colour bar or not) draws feature cell ``cell``, as CSS for a box over the figure that
    follows the width the figure is drawn at (:func:`_box_css`); ``line_px``: the width of a border
    just outside the cell's edges. Drawn at ``size``, its box is :func:`image_cell_box`'s.

    Raises:
        ValueError: ``cell`` outside the feature grid.
    """
    return _box_css(_image_frame(image_shape, size, colorbar), size, _image_cell(feature_shape, cell), line_px)


def image_cell_box(image_shape: tuple[int, int], feature_shape: tuple[int, int], size: int, cell: tuple[int, int],
                   colorbar: bool = False) -> tuple[float, float, float, float]:
    """Where :func:`image_figure` drawn at its own width ``size`` draws feature cell ``cell``: ``(left,
    top, width, height)`` in CSS pixels from the figure's top-left corner (see :func:`image_cell_css`).

    Raises:
        ValueError: ``cell`` outside the feature grid.
    """
    return _box_px(_image_frame(image_shape, size, colorbar), size, _image_cell(feature_shape, cell))


def _image_cell(feature_shape: tuple[int, int], cell: tuple[int, int]) -> tuple[float, float, float, float]:
    """Feature cell ``cell``'s box in units of the image's width and height (the axes' spans)."""
    h, w = feature_shape
    if not (0 <= cell[0] < h and 0 <= cell[1] < w):
        raise ValueError(f"cell {cell} is outside the {h}x{w} feature grid")
    return cell[1] / w, cell[0] / h, 1 / w, 1 / h


def image_figure(image: np.ndarray, feature_shape: tuple[int, int], title: str = "",
                 cell_values: np.ndarray | None = None, selected: tuple[int, int] | None = None,
                 size: int = 420, value_label: str = "patch score", model_size: int | None = None,
                 scale=None) -> go.Figure:
    """An RGB image with one clickable, not drawn square per feature cell (:func:`click_marker`).

    Args:
        image: uint8 ``(H, W, 3)`` (e.g. a heatmap overlay), square at the model's size or at the
            input's own aspect ratio: it is drawn at that aspect ratio.
        feature_shape: (h, w) feature cells; point ``j`` of trace :data:`CLICK_TRACE` is cell
            ``(j // w, j % w)``.
        cell_values: optional float ``(h, w)`` shown on hover.
        selected: cell (row, col) outlined (a clicked cell is not shown otherwise).
        size: figure width in pixels (the height follows the image's aspect ratio).
        model_size: the model's image size S: data coordinates are model pixels, ``[0, S]`` on both
            axes, whatever ``image``'s shape (default: the image's height, for a square image).
        scale: the category's :class:`somad.viz.HeatScale` when ``image`` is a heatmap overlay: adds its
            colour bar (:func:`heat_colorbar`, the footprint map's ticks) as the last trace.
    """
    ih, iw = image.shape[:2]
    s = model_size or ih
    h, w = feature_shape
    ch, cw = s / h, s / w
    r, c = np.divmod(np.arange(h * w), w)
    xs, ys = (c + 0.5) * cw, (r + 0.5) * ch
    vals = np.zeros(h * w) if cell_values is None else np.asarray(cell_values, dtype=float).ravel()
    frame = _image_frame((ih, iw), size, scale is not None)
    plot_w = size - frame.left - frame.right
    cell_px = min(plot_w / w, frame.plot_h / h)
    traces = [go.Image(source=image_source(image), hoverinfo="skip", x0=s / iw / 2, dx=s / iw, y0=s / ih / 2, dy=s / ih), go.Scatter(
        x=_points(xs), y=_points(ys), mode="markers", customdata=_points(np.stack([r, c, vals], 1)), showlegend=False,
        hovertemplate="cell (row %{customdata[0]}, col %{customdata[1]})"
                      + (f"<br>{value_label} %{{customdata[2]:.3f}}" if cell_values is not None else "")
                      + "<extra></extra>",
        marker=click_marker(cell_px))]
    if selected is not None:
        traces.append(go.Scatter(x=[(selected[1] + 0.5) * cw], y=[(selected[0] + 0.5) * ch], mode="markers",
                                 hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="square-open", size=max(cell_px * 1.2, 10), color="white",
                                             line=dict(width=3))))
    if scale is not None:  # one invisible point that carries the colour bar
        traces.append(go.Scatter(x=xs[:1], y=ys[:1], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(opacity=0, color=[0.0], colorscale=HEAT_COLORSCALE, cmin=0.0, cmax=1.0,
                                             showscale=True, colorbar=heat_colorbar(scale, "map score"))))
    return go.Figure(traces, dict(title=dict(text=title, x=0.02, font=dict(size=13)), width=size,
                                  height=frame.plot_h + IMAGE_MARGIN["t"] + IMAGE_MARGIN["b"],
                                  margin=dict(l=frame.left, r=frame.right, t=frame.top, b=IMAGE_MARGIN["b"],
                                              autoexpand=False),
                                  clickmode="event+select", dragmode=False,
                                  xaxis=dict(visible=False, range=[0, s], constrain="domain"),
                                  yaxis=dict(visible=False, range=[s, 0], scaleanchor="x", scaleratio=ih / iw,
                                             constrain="domain")))


PLOT_POINTS = 4000
"""Curves are thinned to about this many points for plotting (a PRO curve has one per pixel threshold)."""


def thin_curve(x: np.ndarray, y: np.ndarray, n: int = PLOT_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``n`` evenly spaced points of a curve, both ends kept."""
    if len(x) <= n:
        return x, y
    keep = np.unique(np.r_[np.linspace(0, len(x) - 1, n).astype(int), len(x) - 1])
    return x[keep], y[keep]


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str = "Image ROC") -> go.Figure:
    """ROC curve with the chance diagonal."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"AUROC {auc:.3f}", line=dict(width=2)))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             showlegend=False, hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title="false positive rate", yaxis_title="true positive rate",
                      height=360, margin=dict(l=40, r=10, t=40, b=40), legend=dict(x=0.45, y=0.1))
    return fig


def pro_figure(fpr: np.ndarray, pro: np.ndarray, aupro: float, limit: float = 0.3) -> go.Figure:
    """PRO curve (per-region overlap against pixel false-positive rate) with the integration limit."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=fpr, y=pro, mode="lines", name=f"AUPRO@{limit:g} {aupro:.3f}"))
    fig.add_vline(x=limit, line=dict(dash="dash", color="grey"))
    fig.update_layout(title="PRO curve", xaxis_title="pixel false positive rate", yaxis_title="per-region overlap",
                      height=360, margin=dict(l=40, r=10, t=40, b=40), legend=dict(x=0.45, y=0.1),
                      xaxis_range=[0, 1])
    return fig


def score_histogram(scores: np.ndarray, labels: np.ndarray, threshold: float,
                    f1_threshold: float | None = None) -> go.Figure:
    """Histograms of normal vs anomalous image scores with the threshold line(s)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(bool)
    fig = go.Figure()
    edges = np.histogram_bin_edges(scores, bins=min(40, max(10, len(scores) // 3)))
    for name, sel, color in (("normal", ~labels, "#2a9d8f"), ("anomalous", labels, "#e76f51")):
        fig.add_trace(go.Histogram(x=scores[sel], name=f"{name} ({int(sel.sum())})", opacity=0.7,
                                   marker_color=color, xbins=dict(start=edges[0], end=edges[-1],
                                                                  size=edges[1] - edges[0])))
    fig.add_vline(x=threshold, line=dict(color="black", width=2), annotation_text="threshold",
                  annotation_position="top")
    if f1_threshold is not None and np.isfinite(f1_threshold):
        fig.add_vline(x=f1_threshold, line=dict(color="grey", dash="dash"), annotation_text="F1-optimal",
                      annotation_position="bottom right")
    fig.update_layout(barmode="overlay", title="Image scores", xaxis_title="image score (Mahalanobis)",
                      yaxis_title="images", height=360, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def contributions_figure(top: list[tuple[int, int, float, float]], title: str = "",
                         labels: list[str] | None = None) -> go.Figure:
    """Horizontal bars of the features contributing most to a squared Mahalanobis distance.

    Args:
        top: ``(dim, backbone_channel, term, share)`` as :func:`somad.explain.top_contributions` returns.
        labels: one bar label per entry of ``top`` (default ``"dim D (ch C)"``), e.g. with the backbone
            stage from :func:`somad.explain.channel_label`.
    """
    labels = (labels or [f"dim {d} (ch {c})" for d, c, _, _ in top])[::-1]
    terms = [t for _, _, t, _ in top][::-1]
    shares = [s for _, _, _, s in top][::-1]
    fig = go.Figure(go.Bar(x=terms, y=labels, orientation="h", customdata=np.array(shares) * 100,
                           hovertemplate="%{y}: %{x:.3f} (%{customdata:.1f}% of distance²)<extra></extra>",
                           marker_color="#e76f51"))
    fig.update_layout(title=title, xaxis_title="contribution to Mahalanobis distance²", height=60 + 24 * len(top),
                      margin=dict(l=10, r=10, t=40, b=40))
    return fig


def tradeoff_figure(false_alarm_rate: np.ndarray, recall: np.ndarray, thresholds: np.ndarray,
                    current: tuple[float, float] | None = None, title: str = "Trade-off: false alarms against recall",
                    marks: dict[str, tuple[float, float]] | None = None) -> go.Figure:
    """False-alarm rate (x) against recall (y) at every threshold, to pick an operating point from.

    Trace :data:`CLICK_TRACE` holds one point per threshold, its value in ``customdata`` (read a click
    with the point's index into ``thresholds``); the current threshold is a marked point.

    Args:
        false_alarm_rate, recall, thresholds: float ``(K,)`` as :func:`somad.operating.tradeoff_curve`
            returns them (rates in [0, 1]; thresholds in Mahalanobis units).
        current: ``(false-alarm rate, recall)`` of the current threshold, drawn as a red star.
        marks: other named points ``{label: (false-alarm rate, recall)}`` (e.g. deployable, F1-optimal).
    """
    far, rec, thr = (np.asarray(a, dtype=float) for a in (false_alarm_rate, recall, thresholds))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=far, y=rec, mode="lines", line=dict(shape="hv", color="#457b9d", width=2),
                             hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=far, y=rec, mode="markers", customdata=thr, name="thresholds",
                             marker=dict(size=9, color="#457b9d", opacity=0.35), showlegend=False,
                             hovertemplate="threshold %{customdata:.4g}<br>false-alarm rate %{x:.1%}"
                                           "<br>recall %{y:.1%}<extra>click to pick</extra>"))
    for name, (x, y) in (marks or {}).items():
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=name, hoverinfo="name",
                                 marker=dict(size=11, symbol="diamond-open", line=dict(width=2))))
    if current is not None:
        fig.add_trace(go.Scatter(x=[current[0]], y=[current[1]], mode="markers", name="current threshold",
                                 hoverinfo="name", marker=dict(size=16, symbol="star", color=SELECT_COLOR)))
    fig.update_layout(title=title, xaxis_title="false-alarm rate (good images flagged)",
                      yaxis_title="recall (defective images found)", height=380, clickmode="event+select",
                      dragmode=False, margin=dict(l=50, r=10, t=40, b=40), legend=dict(x=0.55, y=0.08),
                      xaxis=dict(range=[-0.02, 1.02], tickformat=".0%"),
                      yaxis=dict(range=[-0.02, 1.05], tickformat=".0%"))
    return fig


# ------------------------------------------------------------------ regions
REGION_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                 "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
"""One colour per region (plotly's D3 palette, then its light tones): R1 is the first."""


def region_color(region: int) -> str:
    """The colour of region index ``region`` (cycled past :data:`REGION_COLORS`)."""
    return REGION_COLORS[int(region) % len(REGION_COLORS)]


def _discrete_scale(n: int) -> list:
    """A colorscale with one flat band per region ``0 .. n - 1`` (for ``zmin=-0.5, zmax=n-0.5``)."""
    scale = []
    for i in range(n):
        scale += [[i / n, region_color(i)], [(i + 1) / n, region_color(i)]]
    return scale


def region_map(labels: np.ndarray, topology: str = "rectangular", title: str = "",
               hover: dict[str, np.ndarray] | None = None, typical: list | None = None,
               marks: np.ndarray | None = None, marks_label: str = "cells", selected: tuple[int, int] | None = None,
               size: int = 420, clickable: bool = True) -> go.Figure:
    """The map coloured by region (:mod:`somad.regions`), each region named (R1, R2, ...) at its typical
    neuron, for grids from 1x1 to 100x100, rectangular or hexagonal.

    Args:
        labels: int ``(rows, cols)`` region of each neuron, ``0 .. n - 1``.
        hover: extra per-neuron arrays ``(rows, cols)`` shown on hover, by label.
        typical: ``(row, col)`` per region where its name is written (default: none written).
        marks: optional int ``(rows, cols)`` counts (e.g. one test image's defect cells per BMU): neurons
            with a count get a black ring sized by it, labelled ``marks_label`` on hover.
        selected: neuron (row, col) outlined in the selection colour.
        clickable: False for a map that is only looked at: a rectangular grid is then one heatmap
            with its own hover, as :func:`som_map` (no per-neuron markers to draw).

    Returns:
        figure whose trace :data:`CLICK_TRACE` has point ``j`` = neuron ``j`` (when clickable or hexagonal).
    """
    labels = np.asarray(labels, dtype=np.int64)
    shape = labels.shape
    n = int(labels.max()) + 1 if labels.size else 1
    xy = grid_coordinates(shape, topology)
    plot_w, plot_h, cell_px = _map_px(shape, topology, size)
    scale = _discrete_scale(n)
    cbar = dict(title="region", thickness=12, len=1.0, tickvals=list(range(n)),
                ticktext=[f"R{i + 1}" for i in range(n)])
    if not clickable and topology != "hexagonal":
        heat = _hover_heatmap(labels.astype(float), scale, "region", {"region": labels + 1.0, **(hover or {})}, None,
                              zmin=-0.5, zmax=n - 0.5, colorbar=cbar)
        heat.hovertemplate = heat.hovertemplate.replace("region %{customdata[0]:.4~g}", "region R%{customdata[0]:.0f}")
        traces = [heat]
    else:
        custom, tmpl = _hover(labels.astype(float) + 1, hover or {})
        tmpl = tmpl.replace("value %{customdata[2]:.4~g}", "region R%{customdata[2]:.0f}")
        if topology == "hexagonal":
            base = go.Scatter(x=xy[:1, 0], y=xy[:1, 1], mode="markers", marker=dict(opacity=0), hoverinfo="skip",
                              showlegend=False)
            marker = dict(symbol="hexagon", size=cell_px * 1.12, color=labels.ravel(), colorscale=scale, cmin=-0.5,
                          cmax=n - 0.5, line=dict(width=0), colorbar=cbar)
        else:
            base = go.Heatmap(z=labels, x0=0, dx=1, y0=0, dy=1, colorscale=scale, zmin=-0.5, zmax=n - 0.5,
                              hoverinfo="skip", colorbar=cbar)
            marker = click_marker(cell_px)
        traces = [base, go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=custom, hovertemplate=tmpl,
                                   showlegend=False, marker=marker)]
    if marks is not None:
        counts = np.asarray(marks, dtype=float).ravel()
        on = np.flatnonzero(counts > 0)
        if len(on):
            sizes = np.clip(cell_px * (0.5 + 0.5 * np.sqrt(counts[on] / counts[on].max())), 5, 40)
            traces.append(go.Scatter(
                x=xy[on, 0], y=xy[on, 1], mode="markers", showlegend=False, customdata=counts[on],
                hovertemplate=f"%{{customdata:.0f}} {marks_label}<extra></extra>",
                marker=dict(symbol="circle-open", size=sizes, color="black", line=dict(width=2))))
    if typical:
        tx = [xy[r * shape[1] + c, 0] for r, c in typical]
        ty = [xy[r * shape[1] + c, 1] for r, c in typical]
        traces.append(go.Scatter(x=tx, y=ty, mode="text", text=[f"<b>R{i + 1}</b>" for i in range(len(typical))],
                                 textfont=dict(color="white", size=14), hoverinfo="skip", showlegend=False))
    return _map_figure(traces, xy, shape, topology, title, size, plot_h, selected)


def region_image(image: np.ndarray, majority: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 ``(S, S, 3)``: ``image`` tinted, feature cell by cell, with the colour of the region its
    training patches map to (``majority`` int ``(h, w)`` from :func:`somad.regions.region_positions`)."""
    s = image.shape[0]
    h, w = majority.shape
    rgb = np.array([[int(region_color(r)[i:i + 2], 16) for i in (1, 3, 5)] for r in range(int(majority.max()) + 1)],
                   dtype=np.float64)
    tint = rgb[majority]  # (h, w, 3)
    rows = (np.arange(s) * h) // s
    cols = (np.arange(s) * w) // s
    tint = tint[rows][:, cols]
    return np.clip((1 - alpha) * image.astype(np.float64) + alpha * tint, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ replay
def replay_figure(replay, topology: str = "rectangular", size: int = 900) -> go.Figure:
    """The SOM's training replayed (:class:`somad.replay.Replay`): the U-matrix after each epoch,
    animated (plotly frames, a slider and a play button), next to the quantization and topographic
    error curves with the shown epoch marked. The colour range is fixed over all epochs."""
    from plotly.subplots import make_subplots

    u = np.asarray(replay.umatrix, dtype=float)
    e, rows, cols = u.shape
    shape = (rows, cols)
    epochs = np.arange(1, e + 1)
    vmin, vmax = _range(u)
    xy = grid_coordinates(shape, topology)
    map_w = size * 0.5
    plot_w, plot_h, cell_px = _map_px(shape, topology, int(map_w))
    cbar = dict(title="U", thickness=12, len=0.8, x=0.41, xanchor="left")

    def map_trace(t: int):
        if topology == "hexagonal":
            return go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", hoverinfo="skip", showlegend=False,
                              marker=dict(symbol="hexagon", size=cell_px * 1.12, color=u[t].ravel(),
                                          colorscale="Viridis", cmin=vmin, cmax=vmax, line=dict(width=0),
                                          colorbar=cbar))
        return go.Heatmap(z=u[t], x0=0, dx=1, y0=0, dy=1, colorscale="Viridis", zmin=vmin, zmax=vmax,
                          colorbar=cbar, hovertemplate="row %{y}, col %{x}<br>U %{z:.4~g}<extra></extra>")

    def markers(t: int):
        return [go.Scatter(x=[t + 1], y=[replay.quantization_error[t]], mode="markers", showlegend=False,
                           marker=dict(size=11, color="#1f77b4"), hoverinfo="skip"),
                go.Scatter(x=[t + 1], y=[replay.topographic_error[t]], mode="markers", showlegend=False,
                           marker=dict(size=11, color="#d62728"), hoverinfo="skip", yaxis="y3", xaxis="x2")]

    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.22,
                        specs=[[{}, {"secondary_y": True}]],
                        subplot_titles=("U-matrix after the epoch", "quantization and topographic error"))
    fig.add_trace(map_trace(e - 1), 1, 1)
    fig.add_trace(go.Scatter(x=epochs, y=replay.quantization_error, mode="lines+markers",
                             name="quantization error", line=dict(color="#1f77b4")), 1, 2, secondary_y=False)
    fig.add_trace(go.Scatter(x=epochs, y=replay.topographic_error, mode="lines+markers",
                             name="topographic error", line=dict(color="#d62728", dash="dot")), 1, 2, secondary_y=True)
    m = markers(e - 1)
    fig.add_trace(m[0], 1, 2, secondary_y=False)
    fig.add_trace(m[1], 1, 2, secondary_y=True)
    frames = []
    for t in range(e):
        mk = markers(t)
        mk[1].update(yaxis="y3", xaxis="x2")
        mk[0].update(yaxis="y2", xaxis="x2")
        frames.append(go.Frame(data=[map_trace(t), mk[0], mk[1]], traces=[0, 3, 4], name=str(t + 1),
                               layout=dict(title_text=f"Training replay: epoch {t + 1} of {e}, "
                                                      f"sigma {replay.sigma[t]:.2g}, QE "
                                                      f"{replay.quantization_error[t]:.3f}, TE "
                                                      f"{replay.topographic_error[t]:.3f}")))
    fig.frames = frames
    step = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    fig.update_layout(
        title=dict(text=f"Training replay: epoch {e} of {e}", x=0.02, font=dict(size=14)),
        width=size, height=int(max(plot_h, 260) + 150), margin=dict(l=40, r=40, t=60, b=90),
        plot_bgcolor="white", legend=dict(orientation="h", x=0.55, y=-0.25),
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.12, xanchor="left", yanchor="top",
                          buttons=[dict(label="▶ Play", method="animate",
                                        args=[None, dict(frame=dict(duration=700, redraw=True), fromcurrent=True,
                                                         transition=dict(duration=0), mode="immediate")]),
                                   dict(label="❚❚ Pause", method="animate", args=[[None], step])])],
        sliders=[dict(active=e - 1, x=0.2, y=-0.08, len=0.3, currentvalue=dict(prefix="epoch "),
                      steps=[dict(label=str(t + 1), method="animate", args=[[str(t + 1)], step]) for t in range(e)])])
    wc, hc = _extent(shape, topology)
    fig.update_xaxes(range=[-0.6, wc - 0.4], showgrid=False, zeroline=False, constrain="domain", row=1, col=1)
    fig.update_yaxes(range=[hc - 0.4, -0.6], showgrid=False, zeroline=False, scaleanchor="x", scaleratio=1,
                     row=1, col=1)
    fig.update_xaxes(title_text="epoch", dtick=max(1, e // 10), row=1, col=2)
    fig.update_yaxes(title_text="quantization error", row=1, col=2, secondary_y=False)
    fig.update_yaxes(title_text="topographic error", row=1, col=2, secondary_y=True, rangemode="tozero")
    return fig


# ------------------------------------------------------------------ two models
def roc_overlay(curves: list[tuple[str, np.ndarray, np.ndarray, float]], title: str = "Image ROC") -> go.Figure:
    """Several ROC curves on one plot: ``(name, fpr, tpr, auroc)`` each, with the chance diagonal."""
    fig = go.Figure()
    for i, (name, fpr, tpr, auc) in enumerate(curves):
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name}: AUROC {auc:.3f}",
                                 line=dict(width=2, color=REGION_COLORS[i], dash="solid" if i == 0 else "dash")))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             showlegend=False, hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title="false positive rate", yaxis_title="true positive rate",
                      height=360, margin=dict(l=40, r=10, t=40, b=40), legend=dict(x=0.3, y=0.1))
    return fig


def pro_overlay(curves: list[tuple[str, np.ndarray, np.ndarray, float]], limit: float = 0.3) -> go.Figure:
    """Several PRO curves on one plot: ``(name, fpr, pro, aupro)`` each, with the integration limit."""
    fig = go.Figure()
    for i, (name, fpr, pro, aupro) in enumerate(curves):
        fig.add_trace(go.Scatter(x=fpr, y=pro, mode="lines", name=f"{name}: AUPRO@{limit:g} {aupro:.3f}",
                                 line=dict(width=2, color=REGION_COLORS[i], dash="solid" if i == 0 else "dash")))
    fig.add_vline(x=limit, line=dict(dash="dash", color="grey"))
    fig.update_layout(title="PRO curve", xaxis_title="pixel false positive rate", yaxis_title="per-region overlap",
                      height=360, margin=dict(l=40, r=10, t=40, b=40), legend=dict(x=0.3, y=0.1), xaxis_range=[0, 1])
    return fig


# ------------------------------------------------------- projections (issue 19)
FOOTPRINT_COLOR = "#00c853"
"""Ring around the neurons chosen by ground-truth defect cells (the ground-truth green of the contours)."""
NEAREST_COLOR = "#ffffff"


def _outlines(xy: np.ndarray, idx, topology: str) -> tuple[list, list]:
    """Cell outlines of neurons ``idx`` joined into one line trace (None between cells)."""
    xs, ys = [], []
    for j in idx:
        ox, oy = cell_outline(xy[j, 0], xy[j, 1], topology)
        xs += ox + [None]
        ys += oy + [None]
    return xs, ys


def heat_colorbar(scale, title: str = "score") -> dict:
    """A plotly colour bar for anomaly scores on the category's colour scale (:class:`somad.viz.HeatScale`):
    for a trace coloured by ``scale.normalise(scores)`` with ``cmin=0, cmax=1`` and
    ``colorscale=somad.viz.HEAT_COLORSCALE``; ticks at :meth:`~somad.viz.HeatScale.ticks`, labelled in
    Mahalanobis units. The footprint map and the Test inspector's heatmap share it."""
    ticks = scale.ticks()
    return dict(title=title, thickness=12, len=1.0, tickmode="array", tickvals=[t[0] for t in ticks],
                ticktext=[t[2] for t in ticks])


def footprint_map(u: np.ndarray, counts: np.ndarray, max_score: np.ndarray, defect_counts: np.ndarray,
                  topology: str = "rectangular", scale=None,
                  selected: tuple[int, int] | None = None, title: str = "", size: int = 420,
                  clickable: bool = True, preselected: tuple[int, int] | None = None) -> go.Figure:
    """A test image's footprint over the U-matrix (grey): the neurons its patches chose as BMU,
    coloured by the highest patch score among those patches on the category's heatmap colour scale;
    neurons chosen by ground-truth defect patches ringed in :data:`FOOTPRINT_COLOR`.

    Args:
        u: float ``(rows, cols)`` U-matrix. counts: int ``(rows, cols)`` cells of the image per neuron.
        max_score: float ``(rows, cols)`` highest patch score per neuron (NaN where not chosen;
            Mahalanobis units, before the heatmap's blur).
        defect_counts: int ``(rows, cols)`` defect cells per neuron.
        scale: the category's :class:`somad.viz.HeatScale` (:func:`somad.viz.heat_scale` of the model's
            ``pixel_range_`` and the evaluation's metrics), never one per image: a score gets the colour
            its heatmap pixel has, and the colour bar the heatmaps' ticks (:func:`heat_colorbar`).
        selected: neuron outlined in the selection colour.
        clickable: False: no :data:`CLICK_TRACE` on a rectangular grid, as :func:`som_map`. There the
            footprint is always a second heatmap over the grey one (neurons outside it are gaps).
        preselected: as :func:`som_map`: shown selected by plotly on a hexagonal grid (a figure left
            unchanged by a click is not redrawn), outlined on a rectangular one.

    Returns:
        figure whose trace :data:`CLICK_TRACE` has point ``j`` = neuron ``j`` (all neurons; on a
        hexagonal grid those outside the footprint transparent), as :func:`som_map` (when clickable or
        hexagonal).
    """
    u = np.asarray(u, dtype=float)
    shape = u.shape
    counts = np.asarray(counts).ravel()
    defect = np.asarray(defect_counts).ravel()
    score = np.asarray(max_score, dtype=float).ravel()
    if scale is None:
        raise ValueError("footprint_map needs the category's colour scale (somad.viz.heat_scale).")
    xy = grid_coordinates(shape, topology)
    plot_w, plot_h, cell_px = _map_px(shape, topology, size)
    ulo, uhi = _range(u)
    if topology == "hexagonal":
        base = go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", hoverinfo="skip", showlegend=False,
                          marker=dict(symbol="hexagon", size=cell_px * 1.12, color=u.ravel(), colorscale="Greys",
                                      cmin=ulo, cmax=uhi, line=dict(width=0)))
    else:
        base = go.Heatmap(z=u, x0=0, dx=1, y0=0, dy=1, colorscale="Greys", zmin=ulo, zmax=uhi, hoverinfo="skip",
                          showscale=False)
    chosen = counts > 0
    shown = np.where(chosen, scale.normalise(np.where(chosen, score, scale.lo)), 0.0)  # 0..1 on the heat scale
    custom = _points(np.stack([*np.divmod(np.arange(len(counts)), shape[1]), counts, defect,
                               np.where(chosen, score, np.nan), u.ravel()], 1))
    if topology == "hexagonal":
        click = _footprint_markers(xy, custom, chosen, shown, scale, cell_px)
        traces = [base, click]
    else:  # the footprint is a second heatmap over the grey one (neurons outside it are gaps)
        gap = max(1, round(0.1 * cell_px))  # the grey U-matrix shows around each chosen neuron
        colour = go.Heatmap(z=np.where(chosen, shown, np.nan).reshape(shape), x0=0, dx=1, y0=0, dy=1,
                            colorscale=HEAT_COLORSCALE, zmin=0.0, zmax=1.0, xgap=gap, ygap=gap,
                            colorbar=heat_colorbar(scale, "patch score"))
        if clickable:  # the click trace carries the hover
            colour.hoverinfo = "skip"
            click = go.Scatter(x=_points(xy[:, 0]), y=_points(xy[:, 1]), mode="markers", customdata=custom,
                               showlegend=False, hovertemplate=FOOTPRINT_HOVER, marker=click_marker(cell_px))
            traces = [base, click, colour]
        else:
            colour.customdata, colour.hovertemplate = custom.reshape(*shape, -1), FOOTPRINT_HOVER
            traces = [base, colour]
    if clickable or topology == "hexagonal":
        selected = _preselect(traces[CLICK_TRACE], preselected, selected, shape, topology)
    ring = np.flatnonzero(defect > 0)
    if len(ring):
        traces.append(go.Scatter(x=xy[ring, 0], y=xy[ring, 1], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="circle-open", size=max(cell_px * 1.3, 7),
                                             color=FOOTPRINT_COLOR, line=dict(width=2))))
    return _map_figure(traces, xy, shape, topology, title, size, plot_h, selected)


HIDDEN = -0.02
"""Colour value of a footprint marker outside the footprint: below the heat scale's 0..1, where
:data:`FOOTPRINT_COLORSCALE` is transparent."""
FOOTPRINT_COLORSCALE = [[0.0, "rgba(0,0,0,0)"]] + [
    [(-HIDDEN + pos) / (1 - HIDDEN), colour] for pos, colour in HEAT_COLORSCALE]
""":data:`HEAT_COLORSCALE` over ``cmin=HIDDEN, cmax=1``, transparent at :data:`HIDDEN`: values 0..1 keep
their heat colours exactly, and the markers can all be opaque (a per-point opacity would be overridden
by plotly's selected/unselected styles)."""


FOOTPRINT_HOVER = ("neuron (row %{customdata[0]}, col %{customdata[1]})<br>cells of this image %{customdata[2]} "
                   "(in the defect %{customdata[3]})<br>highest patch score %{customdata[4]:.3f}"
                   "<br>U %{customdata[5]:.4~g}<extra></extra>")
"""Hover of a footprint neuron; ``customdata`` per neuron: row, col, cells of the image, defect cells,
highest patch score, U."""


def _footprint_markers(xy, custom, chosen, shown, scale, cell_px) -> go.Scatter:
    """The footprint's click trace on a hexagonal grid: one marker per neuron coloured on the heat scale
    (``shown``, 0..1), those outside the footprint transparent (:data:`HIDDEN`); a selected one is
    filled in the selection colour, as on :func:`som_map`."""
    return go.Scatter(
        x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=custom, showlegend=False, hovertemplate=FOOTPRINT_HOVER,
        marker=dict(symbol="hexagon", size=max(cell_px * 0.8, 3),
                    color=np.where(chosen, shown, HIDDEN), colorscale=FOOTPRINT_COLORSCALE, cmin=HIDDEN, cmax=1.0,
                    line=dict(width=0), colorbar=heat_colorbar(scale, "patch score")),
        selected=dict(marker=dict(color=SELECT_COLOR, opacity=1)), unselected=dict(marker=dict(opacity=1)))


def distance_map_figure(dist: np.ndarray, nearest: list[tuple[int, int]], topology: str = "rectangular",
                        title: str = "", size: int = 420, clickable: bool = True) -> go.Figure:
    """One patch's Euclidean distance to every neuron (MiniSom's ``activate``) as a SOM map, its BMU
    outlined in the selection colour and the other ``k - 1`` nearest neurons in white.

    Args:
        dist: float ``(rows, cols)`` (:func:`somad.projection.distance_map`).
        nearest: neurons ``(row, col)`` nearest first; ``nearest[0]`` is the BMU.

        clickable: as :func:`som_map`.

    Returns:
        a figure as :func:`som_map` (point ``j`` of trace :data:`CLICK_TRACE` = neuron ``j`` when clickable).
    """
    fig = som_map(dist, topology, title, "Viridis_r", None, nearest[0] if nearest else None, size=size,
                  colorbar_title="distance", clickable=clickable)
    if len(nearest) > 1:
        xy = grid_coordinates(np.shape(dist), topology)
        xs, ys = _outlines(xy, [r * np.shape(dist)[1] + c for r, c in nearest[1:]], topology)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(color=NEAREST_COLOR, width=2, dash="dot")))
    return fig


def positions_figure(image: np.ndarray, counts: np.ndarray, title: str = "", size: int = 360) -> go.Figure:
    """Where a neuron lives in the images: the count of its training patches at each feature cell
    as a heat over an image (e.g. the mean training image); cells without patches stay clear.

    Args:
        image: uint8 ``(S, S, 3)``. counts: int ``(h, w)`` (:func:`somad.projection.neuron_positions`).
    """
    s = image.shape[0]
    h, w = np.shape(counts)
    z = np.where(np.asarray(counts) > 0, np.asarray(counts, dtype=float), np.nan)
    top = float(np.nanmax(z)) if np.isfinite(z).any() else 1.0
    heat = go.Heatmap(z=z, x0=s / w / 2, dx=s / w, y0=s / h / 2, dy=s / h, colorscale="Hot", reversescale=True,
                      zmin=0, zmax=max(top, 1), opacity=0.65, colorbar=_colorbar("patches"),
                      hovertemplate="cell (row %{customdata[0]}, col %{customdata[1]}): %{z:.0f} patches"
                                    "<extra></extra>",
                      customdata=np.stack(np.indices((h, w)), -1))
    return go.Figure([go.Image(source=image_source(image), hoverinfo="skip"), heat],
                     dict(title=dict(text=title, x=0.02, font=dict(size=13)), width=size + 70, height=size + 30,
                          margin=dict(l=10, r=70, t=40, b=10), dragmode=False,
                          xaxis=dict(visible=False, range=[0, s]),
                          yaxis=dict(visible=False, range=[s, 0], scaleanchor="x")))
