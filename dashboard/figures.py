"""Plotly figures of the dashboard (pure: arrays in, ``go.Figure`` out).

Clickable maps: Streamlit cannot select cells of a heatmap trace, so every map
that can be clicked carries one scatter point per cell, in flat C order (point
``j`` = row ``j // W``, column ``j % W``), nearly transparent on rectangular
grids and coloured hexagons on hexagonal ones. That click trace is always
trace :data:`CLICK_TRACE`; read a click with :func:`dashboard.events.point_to_neuron`.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

CLICK_TRACE = 1
"""Index of the clickable scatter trace in SOM maps and image figures."""

SELECT_COLOR = "#ff2d55"
NO_MODEBAR = {"displayModeBar": False}
"""``st.plotly_chart(config=...)``: no plotly toolbar over the titles (clicks and hover stay)."""


def _grid_xy(rows: int, cols: int, topology: str) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.divmod(np.arange(rows * cols), cols)
    x = c.astype(float)
    y = r.astype(float)
    if topology == "hexagonal":
        x = x + 0.5 * (r % 2)
        y = y * math.sqrt(3) / 2
    return x, y


def som_map(values: np.ndarray, topology: str = "rectangular", title: str = "", colorscale: str = "Viridis",
            hover: dict[str, np.ndarray] | None = None, selected: tuple[int, int] | None = None,
            size: int = 420, colorbar_title: str = "") -> go.Figure:
    """A SOM map (U-matrix, hit map, component plane) as a clickable figure.

    Args:
        values: float ``(rows, cols)`` one value per neuron.
        topology: ``"rectangular"`` (heatmap + transparent square markers) or ``"hexagonal"``
            (hexagon markers coloured by value).
        hover: extra per-neuron arrays ``(rows, cols)`` shown on hover, by label.
        selected: neuron (row, col) outlined in the selection colour.
        size: figure width in pixels (height follows the grid's aspect).

    Returns:
        figure whose trace :data:`CLICK_TRACE` has point ``j`` = neuron ``j``.
    """
    values = np.asarray(values, dtype=float)
    rows, cols = values.shape
    x, y = _grid_xy(rows, cols, topology)
    hover = hover or {}
    custom = np.stack([np.divmod(np.arange(rows * cols), cols)[0], np.arange(rows * cols) % cols,
                       values.ravel()] + [np.asarray(v, dtype=float).ravel() for v in hover.values()], axis=1)
    tmpl = "neuron (row %{customdata[0]}, col %{customdata[1]})<br>value %{customdata[2]:.4g}"
    for i, label in enumerate(hover, start=3):
        tmpl += f"<br>{label} %{{customdata[{i}]:.4g}}"
    tmpl += "<extra></extra>"
    hex_grid = topology == "hexagonal"
    width_cells = cols + (0.5 if hex_grid else 0)
    height_cells = (rows - 1) * (math.sqrt(3) / 2 if hex_grid else 1) + 1
    plot_w = size - 40 - 80  # left margin 40, right margin 80 holds the colour bar
    plot_h = plot_w * height_cells / width_cells
    fig = go.Figure()
    vmin, vmax = np.nanmin(values) if np.isfinite(values).any() else 0, np.nanmax(values) if np.isfinite(values).any() else 1
    if hex_grid:
        # trace 0: a background placeholder so the click trace keeps index 1 on both topologies
        fig.add_trace(go.Scatter(x=[x.min()], y=[y.min()], mode="markers", marker=dict(opacity=0), hoverinfo="skip",
                                 showlegend=False))
        cell_px = plot_w / width_cells
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", customdata=custom, hovertemplate=tmpl, showlegend=False,
            marker=dict(symbol="hexagon", size=cell_px * 1.12, color=values.ravel(), colorscale=colorscale,
                        cmin=vmin, cmax=vmax, line=dict(width=0),
                        colorbar=dict(title=colorbar_title, thickness=12)),
        ))
    else:
        fig.add_trace(go.Heatmap(z=values, x0=0, dx=1, y0=0, dy=1, colorscale=colorscale, hoverinfo="skip",
                                 zmin=vmin, zmax=vmax, colorbar=dict(title=colorbar_title, thickness=12)))
        cell_px = plot_w / width_cells
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", customdata=custom, hovertemplate=tmpl, showlegend=False,
            marker=dict(symbol="square", size=max(cell_px * 0.95, 3), color="rgba(255,255,255,0.01)",
                        line=dict(width=0)),
        ))
    if selected is not None:
        j = selected[0] * cols + selected[1]
        fig.add_trace(go.Scatter(x=[x[j]], y=[y[j]], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="hexagon-open" if hex_grid else "square-open",
                                             size=max(cell_px * 1.3, 9), color=SELECT_COLOR, line=dict(width=3))))
    fig.update_layout(
        title=dict(text=title, x=0.02, font=dict(size=14)), width=size, height=int(plot_h + 80),
        margin=dict(l=40, r=80, t=40, b=30, autoexpand=False), clickmode="event+select", dragmode=False,
        plot_bgcolor="white", hovermode="closest",
    )
    fig.update_xaxes(range=[-0.6, width_cells - 0.4], showgrid=False, zeroline=False, title=None,
                     constrain="domain")
    fig.update_yaxes(range=[height_cells - 0.4, -0.6], showgrid=False, zeroline=False, title=None,
                     scaleanchor="x", scaleratio=1)
    if hex_grid:  # label rows by their index, not their y coordinate
        step = max(1, rows // 6)
        ticks = list(range(0, rows, step))
        fig.update_yaxes(tickvals=[r * math.sqrt(3) / 2 for r in ticks], ticktext=[str(r) for r in ticks])
    return fig


def image_figure(image: np.ndarray, feature_shape: tuple[int, int], title: str = "",
                 cell_values: np.ndarray | None = None, selected: tuple[int, int] | None = None,
                 size: int = 420, value_label: str = "patch score") -> go.Figure:
    """An RGB image with one nearly transparent clickable square per feature cell.

    Args:
        image: uint8 ``(S, S, 3)`` (e.g. a heatmap overlay).
        feature_shape: (h, w) feature cells; point ``j`` of trace :data:`CLICK_TRACE` is cell
            ``(j // w, j % w)``.
        cell_values: optional float ``(h, w)`` shown on hover.
        selected: cell (row, col) outlined.
    """
    s = image.shape[0]
    h, w = feature_shape
    ch, cw = s / h, s / w
    r, c = np.divmod(np.arange(h * w), w)
    xs, ys = (c + 0.5) * cw, (r + 0.5) * ch
    vals = np.zeros(h * w) if cell_values is None else np.asarray(cell_values, dtype=float).ravel()
    fig = go.Figure()
    fig.add_trace(go.Image(z=image, hoverinfo="skip"))
    plot = size - 20
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=np.stack([r, c, vals], 1), showlegend=False,
        hovertemplate="cell (row %{customdata[0]}, col %{customdata[1]})"
                      + (f"<br>{value_label} %{{customdata[2]:.3f}}" if cell_values is not None else "")
                      + "<extra></extra>",
        marker=dict(symbol="square", size=max(plot / w * 0.95, 3), color="rgba(255,255,255,0.01)", line=dict(width=0)),
    ))
    if selected is not None:
        fig.add_trace(go.Scatter(x=[(selected[1] + 0.5) * cw], y=[(selected[0] + 0.5) * ch], mode="markers",
                                 hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="square-open", size=max(plot / w * 1.2, 10), color="white",
                                             line=dict(width=3))))
    fig.update_layout(title=dict(text=title, x=0.02, font=dict(size=13)), width=size, height=size + 30,
                      margin=dict(l=10, r=10, t=40, b=10), clickmode="event+select", dragmode=False)
    fig.update_xaxes(visible=False, range=[0, s])
    fig.update_yaxes(visible=False, range=[s, 0], scaleanchor="x")
    return fig


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


def contributions_figure(top: list[tuple[int, int, float, float]], title: str = "") -> go.Figure:
    """Horizontal bars of the features contributing most to a squared Mahalanobis distance.

    Args:
        top: ``(dim, backbone_channel, term, share)`` as :func:`somad.explain.top_contributions` returns.
    """
    labels = [f"dim {d} (ch {c})" for d, c, _, _ in top][::-1]
    terms = [t for _, _, t, _ in top][::-1]
    shares = [s for _, _, _, s in top][::-1]
    fig = go.Figure(go.Bar(x=terms, y=labels, orientation="h", customdata=np.array(shares) * 100,
                           hovertemplate="%{y}: %{x:.3f} (%{customdata:.1f}% of distance²)<extra></extra>",
                           marker_color="#e76f51"))
    fig.update_layout(title=title, xaxis_title="contribution to Mahalanobis distance²", height=60 + 24 * len(top),
                      margin=dict(l=10, r=10, t=40, b=40))
    return fig
