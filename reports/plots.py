"""Capacity plots, drawn with matplotlib's object API.

Every function builds its own :class:`matplotlib.figure.Figure` and attaches a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`; nothing touches ``pyplot``'s global
state, so plots can be built from threads and in tests without a display and without leaking
figures. Inputs are the tables from :mod:`reports.metrics`. Search steps are not in offered
order (bisection goes back and forth), so every series is sorted by offered load first.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "PLOT_NAMES",
    "cpu_vs_load",
    "delay_vs_load",
    "failures_vs_load",
    "figure_png",
    "node_distribution",
    "save_figure",
    "throughput_vs_offered",
]

PLOT_NAMES = ("throughput", "delay", "cpu", "failures", "distribution")
"""File stems of the plots a report contains (``plots/<name>.png``)."""


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(7.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")


def throughput_vs_offered(
    rates: pd.DataFrame, *, unit: str = "calls/s", knee: float | None = None
) -> Figure:
    """Achieved attempt rate and success rate against offered load (:func:`metrics.step_rates`)."""
    fig, ax = _figure(f"Throughput vs offered load ({unit})")
    data = rates.dropna(subset=["offered"]).sort_values("offered")
    if data.empty:
        _no_data(ax)
        return fig
    top = float(max(data["offered"].max(), data["attempt_rate"].max()))
    ax.plot([0, top], [0, top], color="lightgray", linestyle="--", label="offered = achieved")
    ax.plot(data["offered"], data["attempt_rate"], marker="o", label="attempted")
    ax.plot(data["offered"], data["success_rate"], marker="s", label="established (throughput)")
    if knee is not None:
        ax.axvline(knee, color="tab:red", linestyle=":", label=f"knee {knee:g}")
    ax.set_xlabel(f"offered ({unit})")
    ax.set_ylabel(unit)
    ax.legend(loc="upper left")
    return fig


def delay_vs_load(delays: pd.DataFrame, *, label: str = "SRD") -> Figure:
    """p50/p95/p99 delay against offered load (``delays`` has ``offered, p50, p95, p99``)."""
    fig, ax = _figure(f"{label} percentiles vs offered load")
    data = delays.dropna(subset=["p50", "offered"]).sort_values("offered")
    if data.empty:
        _no_data(ax)
        return fig
    for column, marker in (("p50", "o"), ("p95", "s"), ("p99", "^")):
        if column in data:
            ax.plot(data["offered"], data[column], marker=marker, label=column)
    ax.set_xlabel("offered load (/s)")
    ax.set_ylabel(f"{label} (ms)")
    ax.legend(loc="upper left")
    return fig


def cpu_vs_load(cpu: pd.DataFrame) -> Figure:
    """Mean CPU per node (percent of one core) against offered load (:func:`metrics.cpu_per_step`)."""
    fig, ax = _figure("CPU per node vs offered load")
    cpu = cpu.dropna(subset=["offered"])
    if cpu.empty:
        _no_data(ax)
        return fig
    for node, group in cpu.groupby("node"):
        per_rate = group.groupby("offered")["cpu"].mean().sort_index()
        ax.plot(per_rate.index, per_rate.to_numpy(), marker="o", label=str(node))
    ax.axhline(100.0, color="gray", linestyle=":", label="one core")
    ax.set_xlabel("offered load (/s)")
    ax.set_ylabel("CPU (% of one core)")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def failures_vs_load(failures: pd.DataFrame, steps: pd.DataFrame) -> Figure:
    """Failed attempts per cause, stacked per offered rate (:func:`metrics.failures_by_cause`)."""
    fig, ax = _figure("Failures vs offered load")
    merged = failures.merge(steps[["step", "offered"]], on="step", how="left")
    merged = merged.dropna(subset=["offered"])
    if merged.empty:
        _no_data(ax)
        return fig
    table = merged.pivot_table(index="offered", columns="cause", values="count", aggfunc="sum")
    table = table.fillna(0).sort_index()
    labels = [f"{rate:g}" for rate in table.index]
    bottom = [0.0] * len(table)
    for cause in table.columns:
        values = table[cause].to_list()
        ax.bar(labels, values, bottom=bottom, label=str(cause))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel("offered load (/s)")
    ax.set_ylabel("failed attempts")
    ax.legend(loc="upper left")
    return fig


def node_distribution(distribution: pd.DataFrame) -> Figure:
    """Calls per PBX node (:func:`metrics.per_node_distribution`)."""
    fig, ax = _figure("Calls per PBX node")
    if distribution.empty:
        _no_data(ax)
        return fig
    data = distribution.sort_values("node")
    bars = ax.bar(data["node"].astype(str), data["calls"])
    ax.bar_label(bars, labels=[f"{s:.0%}" for s in data["share"]])
    ax.set_ylabel("calls")
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def save_figure(fig: Figure, path: Path) -> Path:
    """Write the figure as PNG to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig))
    return path
