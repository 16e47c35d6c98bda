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
