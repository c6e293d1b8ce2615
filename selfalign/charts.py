"""The run's pictures, drawn with matplotlib: a funnel per stage and the models × benchmarks eval chart.

Stages write them as PNG next to their cards (`funnel.png`, `results.png`); the app shows the same figures.
Figures are built with `matplotlib.figure.Figure` and the Agg canvas, never pyplot: no global state, no GUI
backend, safe in the app's worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from selfalign.io.files import atomic_write

IN, DROP, OUT, COUNT = "#4c72b0", "#c44e52", "#55a868", "#b0b0b0"
FUNNEL_FILE = "funnel.png"


def funnel_bars(funnel: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    """(label, rows, colour) from top to bottom: rows in, informative counts, each drop reason, rows out."""
    bars = [("rows in", int(funnel.get("rows_in", 0)), IN)]
    bars += [(str(name), int(n), COUNT) for name, n in (funnel.get("counters") or {}).items()]
    bars += [(f"dropped: {reason}", int(n), DROP) for reason, n in (funnel.get("dropped") or {}).items()]
    bars.append(("rows out", int(funnel.get("rows_out", 0)), OUT))
    return bars


def draw_funnel(ax: Axes, funnel: Mapping[str, Any], title: str | None = None) -> None:
    """Horizontal bars, one per funnel line, each labelled with its count."""
    bars = funnel_bars(funnel)
    labels = [_short(label) for label, _, _ in bars]
    values = [n for _, n, _ in bars]
    positions = list(range(len(bars)))
    ax.barh(positions, values, color=[c for _, _, c in bars])
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()  # rows in at the top, rows out at the bottom
    top = max(values) if values and max(values) > 0 else 1
    ax.set_xlim(0, top * 1.18)
    for y, n in zip(positions, values, strict=True):
        ax.text(n + top * 0.01, y, f"{n:,}", va="center", fontsize=8)
    ax.set_xlabel("rows")
    ax.set_title(title or f"{funnel.get('stage', 'stage')}: {values[0]:,} in → {values[-1]:,} out", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def funnel_figure(funnel: Mapping[str, Any]) -> Figure:
    n = len(funnel_bars(funnel))
    fig = Figure(figsize=(7.5, 1.2 + 0.32 * n), layout="constrained")
    draw_funnel(fig.add_subplot(), funnel)
    return fig


def funnels_figure(funnels: Mapping[str, Mapping[str, Any]]) -> Figure:
    """One funnel per stage, stacked in pipeline order (the app's overview)."""
    sizes = [len(funnel_bars(f)) for f in funnels.values()] or [1]
    fig = Figure(figsize=(7.5, sum(1.0 + 0.3 * s for s in sizes)), layout="constrained")
    axes = fig.subplots(len(sizes), 1, squeeze=False, height_ratios=[1.0 + 0.3 * s for s in sizes])[:, 0]
    for ax, (stage, funnel) in zip(axes, funnels.items(), strict=False):
        draw_funnel(ax, funnel, f"{stage}: {funnel.get('rows_in', 0):,} in → {funnel.get('rows_out', 0):,} out")
    return fig


def eval_figure(scores: Mapping[str, Mapping[str, float]], metric: str = "pass@1",
                intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                marks: Mapping[str, Mapping[str, str]] | None = None, note: str = "", group: str = "benchmark",
                ymax: float | None = 105.0) -> Figure:
    """Grouped bars: one group per benchmark (or other `group`), one bar per model (scores[label][benchmark], in %).

    `intervals[label][benchmark]` = (low, high) draws an error bar; `marks[label][benchmark]` (e.g. "*" for a
    significant paired difference) is written above the bar. Both optional: a plain run has neither. `ymax`
    None scales the axis to the bars (small rates stay readable)."""
    labels = list(scores)
    benchmarks = list(dict.fromkeys(b for s in scores.values() for b in s))
    fig = Figure(figsize=(max(5.0, 1.6 + 1.3 * len(benchmarks) * max(len(labels), 1) ** 0.5), 4.0),
                 layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        xs = [b + (i - (len(labels) - 1) / 2) * width for b in range(len(benchmarks))]
        values = [scores[label].get(name, 0.0) for name in benchmarks]
        span = (intervals or {}).get(label, {})
        errors = None
        if span:
            low = [max(v - span[n][0], 0.0) if n in span else 0.0 for v, n in zip(values, benchmarks, strict=True)]
            high = [max(span[n][1] - v, 0.0) if n in span else 0.0 for v, n in zip(values, benchmarks, strict=True)]
            errors = [low, high]
        bars = ax.bar(xs, values, width * 0.92, label=label, yerr=errors, capsize=3 if errors else 0)
        texts = [f"{v:.1f}" + ((marks or {}).get(label, {}).get(n, "")) for v, n in zip(values, benchmarks, strict=True)]
        ax.bar_label(bars, texts, padding=2, fontsize=8)
    ax.set_xticks(range(len(benchmarks)), benchmarks)
    tops = [high for span in (intervals or {}).values() for _, high in span.values()]
    tops += [v for s in scores.values() for v in s.values()]
    ax.set_ylim(0, ymax if ymax is not None else min(105.0, 1.3 * max(tops, default=1.0) + 2))
    ax.set_ylabel(f"{metric} (%)")
    ax.set_xlabel(group)
    ax.set_title(f"{metric} per {group}" + (f" ({note})" if note else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if labels:
        ax.legend(title="model", fontsize=8, loc="upper right")
    return fig


def save_png(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Render a figure to `path` atomically (a reader sees the old chart or the new one)."""
    buffer = BytesIO()
    FigureCanvasAgg(fig)  # Agg, whatever matplotlib's default backend is on this machine
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write(path, buffer.getvalue())
    return path


def write_funnel_chart(folder: Path, funnel: Mapping[str, Any]) -> str:
    """`<folder>/funnel.png`; returns the file name, for the card's image link."""
    save_png(funnel_figure(funnel), folder / FUNNEL_FILE)
    return FUNNEL_FILE


def _short(label: str, width: int = 48) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def funnel_caption(funnel: Mapping[str, Any]) -> str:
    """Alt text of a funnel chart: the same numbers in words, for readers who cannot see it."""
    return "; ".join(f"{label} {n:,}" for label, n, _ in funnel_bars(funnel))
