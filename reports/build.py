"""Build (or rebuild) a run folder's report: ``python -m reports.build RUN_DIR``.

Writes ``plots/<name>.png`` (see :data:`reports.plots.PLOT_NAMES`), ``summary.json`` and
``report.html`` into the run folder (or ``--out``). Rebuilding is cheap and deterministic for a
given folder, so a report can be regenerated after a change to the report code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reports import plots
from reports.analysis import Analysis, analyse, read_run
from reports.html import render_report
from reports.metrics import DEFINITIONS

__all__ = ["build_report", "main", "render_figures"]


def render_figures(analysis: Analysis) -> dict[str, bytes]:
    """PNG bytes of every plot, keyed by :data:`reports.plots.PLOT_NAMES`."""
    unit = "registrations/s" if analysis.kind == "register" else "calls/s"
    knee = (analysis.summary.get("knee") or {}).get("offered")
    label = "RRD" if analysis.kind == "register" else "SRD"
    figures = {
        "throughput": plots.throughput_vs_offered(analysis.rates, unit=unit, knee=knee),
        "delay": plots.delay_vs_load(analysis.delays, label=label),
        "cpu": plots.cpu_vs_load(analysis.cpu),
        "failures": plots.failures_vs_load(analysis.failures, analysis.steps),
        "distribution": plots.node_distribution(analysis.distribution),
    }
    return {name: plots.figure_png(fig) for name, fig in figures.items()}


def _tables(analysis: Analysis) -> list[tuple[str, Any]]:
    steps = analysis.table.rename(
        columns={
            "attempt_rate": "achieved/s",
            "success_rate": "established/s",
            "p50": "p50 ms",
            "p95": "p95 ms",
            "p99": "p99 ms",
        }
    )
    cpu = analysis.cpu.assign(rss_mib=(analysis.cpu["rss"] / 2**20).round(1)).drop(columns="rss")
    return [
        ("Steps (offered vs achieved, delays, verdict)", steps),
        ("CPU per node and step (% of one core)", cpu),
        ("Capacity per core", analysis.per_core),
        ("Failures by cause", analysis.failures),
        ("Calls per PBX node", analysis.distribution),
    ]


def build_report(
    run_dir: str | Path, *, out: str | Path | None = None, compare: str | Path | None = None
) -> Path:
    """Write plots, ``summary.json`` and ``report.html`` for ``run_dir``; returns the HTML path.

    Args:
        run_dir: the run folder.
        out: where to write (default: the run folder itself).
        compare: another run folder whose ``summary.json`` is shown beside this run's.
    """
    data = read_run(run_dir)
    other = None
    if compare is not None:
        path = Path(compare) / "summary.json"
        other = json.loads(path.read_text(encoding="utf-8"))
    analysis = analyse(data, compare=other)
    target = Path(out) if out is not None else data.run_dir
    target.mkdir(parents=True, exist_ok=True)
    figures = render_figures(analysis)
    for name, png in figures.items():
        (target / "plots").mkdir(exist_ok=True)
        (target / "plots" / f"{name}.png").write_bytes(png)
    (target / "summary.json").write_text(
        json.dumps(analysis.summary, indent=2, default=str) + "\n", encoding="utf-8"
    )
    page = render_report(
        analysis.summary, figures=figures, tables=_tables(analysis), definitions=DEFINITIONS
    )
    report = target / "report.html"
    report.write_text(page, encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reports.build", description="Rebuild a run folder's capacity report."
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="write here instead")
    parser.add_argument("--compare", type=Path, default=None, help="another run folder")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.run_dir, out=args.out, compare=args.compare)
    except (FileNotFoundError, ValueError) as exc:
        print(f"reports.build: error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
