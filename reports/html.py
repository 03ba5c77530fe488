"""One self-contained ``report.html``: plots inline, tables, definitions, hardware, verdict.

Self-contained means one file that opens anywhere, attached to a ticket or a mail: images are
``data:image/png;base64`` URIs, the style sheet is inline, there is no script and no external
reference. Every text that comes from a run (node names, reasons, versions) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["render_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.verdict { font-size: 1.2em; padding: .8em 1em; background: #eef6ee; border-left: 4px solid #3a3; }
.verdict.none { background: #fbeeee; border-left-color: #c33; }
.warn { background: #fff6e0; border-left: 4px solid #e90; padding: .5em 1em; }
figure { display: inline-block; margin: .5em; } img { max-width: 100%; border: 1px solid #ddd; }
dl dt { font-weight: bold; margin-top: .6em; } pre { background: #f6f6f6; padding: .6em; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _kv_table(rows: Mapping[str, object]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def _frame(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>no rows</em></p>"
    return str(
        frame.to_html(index=False, escape=True, na_rep="", float_format=lambda x: f"{x:.4g}")
    )


def _memory(value: object) -> str:
    if isinstance(value, int | float) and value:
        return f"{value / 2**30:.1f} GiB"
    return "unknown"


def _verdict(summary: Mapping[str, Any]) -> str:
    knee = summary.get("knee") or {}
    rate = knee.get("offered")
    unit = "registrations/s" if summary.get("max_registrations_per_s") is not None else "calls/s"
    if rate is None:
        return '<p class="verdict none">No offered rate met the service level.</p>'
    status = "confirmed by a soak step" if knee.get("confirmed") else "NOT confirmed by a soak"
    above = "" if knee.get("bracketed", True) else " (the search range ended first: higher)"
    extra = []
    if knee.get("established_per_s") is not None:
        extra.append(f"established {knee['established_per_s']:g}/s")
    if knee.get("p95_ms") is not None:
        extra.append(f"p95 delay {knee['p95_ms']:g} ms")
    if knee.get("router_per_core") is not None:
        extra.append(f"{knee['router_per_core']:g} per router core")
    details = f" ({', '.join(extra)})" if extra else ""
    return (
        f'<p class="verdict">Capacity at the service level: <b>{rate:g} {unit}</b>{above}, '
        f"{status}{_e(details)}.</p>"
    )


def _evidence_text(evidence: object) -> str | None:
    if not isinstance(evidence, dict):
        return None
    bound = evidence.get("capture_bound_mb")
    size = int(evidence.get("capture_bytes") or 0) / 1e6
    return (
        f"capture.pcap {size:.1f} MB (bound {bound} MB: the last part of the run and earlier "
        f"parts with failures, spanning {evidence.get('capture_window_s')} s), "
        f"{evidence.get('ladders')} ladders of the {evidence.get('failed_calls_in_window')} "
        f"failed calls in it, events.jsonl "
        f"{int(evidence.get('events_bytes') or 0) / 1e6:.1f} MB"
    )


def render_report(
    summary: Mapping[str, Any],
    *,
    figures: Mapping[str, bytes],
    tables: Sequence[tuple[str, pd.DataFrame]],
    definitions: Mapping[str, str],
    title: str | None = None,
) -> str:
    """The report as one HTML document.

    Args:
        summary: ``summary.json``'s content (see :mod:`reports.analysis`).
        figures: plot name -> PNG bytes, shown in this order.
        tables: (heading, table) pairs.
        definitions: term -> definition (RFC 6076 / RFC 7501 terms).
        title: page title; default names the run.
    """
    title = title or f"siplab capacity report: {summary.get('run', '')}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _kv_table(
            {
                "scenario": summary.get("scenario"),
                "router under test": summary.get("router"),
                "figures from": summary.get("source"),
                "vantage point": (summary.get("vantage") or {}).get("node"),
                "config hash": summary.get("config_hash"),
                "evidence kept": _evidence_text(summary.get("evidence")),
            }
        ),
        "<h2>Verdict</h2>",
        _verdict(summary),
    ]
    if summary.get("service_level_text"):
        parts.append(f"<p>Service level: {_e(summary['service_level_text'])}.</p>")
    parts.extend(f'<p class="warn">{_e(w)}</p>' for w in summary.get("warnings") or ())
    sizing = summary.get("sizing")
    if sizing:
        parts += [
            "<h2>Sizing</h2>",
            _kv_table(
                {
                    "target": sizing.get("target"),
                    "headroom": f"{float(sizing.get('headroom', 0)):.0%}",
                    "router cores": sizing.get("router_cores") or "not measured",
                    "PBX nodes": sizing.get("pbx_nodes")
                    if sizing.get("pbx_nodes") is not None
                    else "not measured",
                    "PBX nodes (N+1)": sizing.get("pbx_nodes_n_plus_1") or "",
                }
            ),
            "<pre>" + _e("\n".join(sizing.get("arithmetic", ()))) + "</pre>",
            "<h3>Limits of extrapolating from this machine</h3><ul>",
            *(f"<li>{_e(line)}</li>" for line in sizing.get("limits", ())),
            "</ul>",
        ]
    compare = summary.get("compare")
    if compare:
        rows = {
            key: f"this {v.get('this')} / other {v.get('other')} (ratio {v.get('ratio')})"
            for key, v in compare.items()
            if isinstance(v, dict)
        }
        parts += [
            f"<h2>Compared with {_e(compare.get('run'))} ({_e(compare.get('router'))})</h2>",
            _kv_table(rows),
        ]
    parts.append("<h2>Plots</h2>")
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(name)}</figcaption></figure>"
        )
    for heading, frame in tables:
        parts += [f"<h2>{_e(heading)}</h2>", _frame(frame)]
    hardware = summary.get("hardware") or {}
    parts += [
        "<h2>Hardware</h2>",
        _kv_table(
            {
                "CPU": hardware.get("cpu_model", "unknown"),
                "cores": hardware.get("cores", "unknown"),
                "usable cores": hardware.get("usable_cores", "unknown"),
                "memory": _memory(hardware.get("memory_bytes")),
                "kernel": hardware.get("kernel", "unknown"),
            }
        ),
        "<h2>Versions</h2>",
        _kv_table(
            {
                k: (v if v is not None else "not installed")
                for k, v in (summary.get("versions") or {}).items()
            }
        ),
        "<h2>Definitions</h2><dl>",
        *(f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>" for term, text in definitions.items()),
        "</dl>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
