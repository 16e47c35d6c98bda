"""PNG charts for the Dagster UI (matplotlib, Agg backend): the power trace and J/token across a setting.

Each function returns PNG bytes; ``embed_png`` turns them into a markdown image with a data: URI that
Dagster's markdown metadata renders inline. matplotlib is imported inside the functions; figures are
plain ``matplotlib.figure.Figure`` objects (no pyplot global state: safe in threads and forked steps).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path


def _figure(width_in: float = 7.0, height_in: float = 3.0):
    """Return (figure, axes) of a width_in × height_in inch figure at 90 dpi, drawn by the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=90)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _png(fig) -> bytes:
    """Return the figure as PNG bytes."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def power_trace_png(
    t_rel_s: Sequence[float],
    power_w: Sequence[float],
    series: Sequence[str],
    window: tuple[float, float] | None,
    title: str,
) -> bytes:
    """Return a PNG of power (W) over time (s from inference start), one line per series label.

    ``window`` (start, end in s) is shaded as the measurement window.
    """
    fig, ax = _figure()
    labels = sorted(set(series))
    for label in labels:
        pts = [(t, p) for t, p, s in zip(t_rel_s, power_w, series, strict=True) if s == label and p == p]
        pts.sort()
        if pts:
            ax.plot([t for t, _ in pts], [p for _, p in pts], linewidth=1.0, label=label)
    if window is not None:
        ax.axvspan(window[0], window[1], color="tab:green", alpha=0.12, label="window")
    ax.set_xlabel("time from inference start (s)")
    ax.set_ylabel("power (W)")
    ax.set_title(title, fontsize=10)
    if labels:
        ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    return _png(fig)


def j_per_token_png(rows: Sequence[tuple[str, str, float]], title: str) -> bytes:
    """Return a PNG bar chart of J per output token by setting; rows are (series, setting, J/token)."""
    fig, ax = _figure(width_in=7.0, height_in=3.2)
    settings = list(dict.fromkeys(setting for _, setting, _ in rows))
    series = list(dict.fromkeys(s for s, _, _ in rows))
    width = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        values = {setting: v for s, setting, v in rows if s == name}
        xs = [j + i * width for j, setting in enumerate(settings) if setting in values]
        ys = [values[setting] for setting in settings if setting in values]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(settings))])
    ax.set_xticklabels(settings, rotation=20, fontsize=8)
    ax.set_ylabel("J per output token")
    ax.set_title(title if len(series) != 1 else f"{title}\n{series[0]}", fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


INLINE_MARKDOWN_LIMIT = 1000  # the Dagster UI shows markdown metadata shorter than this inline, longer behind a click


def sparkline_png(
    t_rel_s: Sequence[float],
    power_w: Sequence[float],
    series: Sequence[str],
    window: tuple[float, float] | None,
    width: int = 240,
    height: int = 60,
) -> bytes:
    """Return a small 4-colour PNG of power over time (one line per series, the window shaded), a few hundred
    bytes: small enough to show inline in the Dagster UI as markdown (see INLINE_MARKDOWN_LIMIT)."""
    from PIL import Image, ImageDraw

    points = [(t, p, s) for t, p, s in zip(t_rel_s, power_w, series, strict=True) if t == t and p == p]
    img = Image.new("P", (width, height), 0)
    img.putpalette([255, 255, 255, 31, 119, 180, 214, 236, 214, 150, 150, 150] + [0] * (256 * 3 - 12))
    draw = ImageDraw.Draw(img)
    if points:
        t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
        top = max(p[1] for p in points) or 1.0
        span = (t1 - t0) or 1.0

        def x(t: float) -> int:
            return round((t - t0) / span * (width - 1))

        def y(w: float) -> int:
            return round((height - 3) - max(w, 0.0) / top * (height - 6))

        if window is not None:
            draw.rectangle([x(window[0]), 0, x(window[1]), height - 1], fill=2)
        for label in sorted({s for _, _, s in points}):
            line = sorted((t, w) for t, w, s in points if s == label)
            draw.line([(x(t), y(w)) for t, w in line], fill=1, width=1)
    draw.line([(0, height - 1), (width - 1, height - 1)], fill=3)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True, bits=2)
    return buf.getvalue()


def inline_sparkline(t_rel_s: Sequence[float], power_w: Sequence[float], series: Sequence[str],
                     window: tuple[float, float] | None, alt: str) -> str:
    """Return markdown of a power sparkline short enough for the Dagster UI to show inline (narrower when needed)."""
    for width in (240, 160, 100):
        text = embed_png(sparkline_png(t_rel_s, power_w, series, window, width=width), alt)
        if len(text) < INLINE_MARKDOWN_LIMIT:
            return text
    return f"_{alt}: the trace is too detailed for an inline image; see power_trace_png_"


def embed_png(png: bytes, alt: str) -> str:
    """Return a markdown image with the PNG inlined as a base64 data: URI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def save_png(png: bytes, path: Path) -> Path:
    """Write ``png`` to ``path`` atomically (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png)
    tmp.replace(path)
    return path


def pareto_png(panels: Sequence[tuple[str, dict[str, dict]]], title: str) -> bytes:
    """Return a PNG of J per output token against latency, one panel per (x label, series): every config as a
    point labelled with its setting, each series' Pareto front as a line (pareto_series gives the series)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_series = len({name for _, series in panels for name in series})
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.4 + 0.15 * n_series), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (xlabel, series) in zip(axes, panels, strict=False):
        for k, (name, s) in enumerate(series.items()):
            color = f"C{k % 10}"
            xs, ys = [p[0] for p in s["points"]], [p[1] for p in s["points"]]
            ax.scatter(xs, ys, s=14, color=color, label=name)
            for x, y, label in zip(xs, ys, s["settings"], strict=True):
                ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            front = [s["points"][i] for i in s["front"]]
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=color, linewidth=1.0)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("J per output token")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08 + 0.04 * len(labels), 1, 1))
    if labels:
        fig.legend(handles, labels, fontsize=6, loc="lower center", ncol=1, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
