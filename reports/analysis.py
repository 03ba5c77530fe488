"""From a run folder to tables and a summary: the part of the report that is numbers.

A capacity run folder holds ``capacity.json`` (what the driver did: the search with every step's
SIPp figures and CPU, the service level, scenario, hardware and versions), ``events.jsonl``
(what every node saw), ``samples.csv`` (CPU/RSS over time) and ``lab.json``. A run folder from a
scenario (no ``capacity.json``) is analysed as one step spanning its events.

Per-step figures come from the events at the vantage node, and from the load generator's own
statistics when there are none. The events are the nodes' own logs (``events.jsonl``) when the
vantage node wrote one, else the lab's packet capture (``capture.pcap``, read by ``lab.wire``)
when it holds the whole run (not a ring-buffer window, ``capture.json``): the capture sees the
router's legs whatever router runs. The summary says which (``source``), so two reports are
compared like with like.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reports import metrics
from reports.environment import config_hash
from reports.sampling import bottleneck_warnings
from reports.search import SearchResult, StepResult
from reports.sizing import Capacity, extrapolation_limits, parse_target, size

__all__ = ["Analysis", "RunData", "analyse", "read_run"]


@dataclass(frozen=True, slots=True)
class RunData:
    """The files of one run folder, loaded."""

    run_dir: Path
    capacity: dict[str, Any]
    """``capacity.json`` (empty when the run was not a capacity run)."""
    search: SearchResult | None
    events: pd.DataFrame
    samples: pd.DataFrame
    lab: dict[str, Any]
    """``lab.json`` as read (empty when absent)."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def read_run(run_dir: str | Path) -> RunData:
    """Load a run folder. Raises ``FileNotFoundError`` if it is not a folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run folder")
    capacity = _read_json(run_dir / "capacity.json")
    search = SearchResult.from_dict(capacity["search"]) if "search" in capacity else None
    events_path = run_dir / "events.jsonl"
    events = metrics.load_events(events_path) if events_path.exists() else metrics.empty_events()
    lab = _read_json(run_dir / "lab.json")
    vantage = (capacity.get("vantage") or {}).get("node") or "router"
    if not (events["node"] == vantage).any():
        wire = capture_events(run_dir, lab)
        if wire is not None:
            events = pd.concat([events, wire], ignore_index=True).sort_values("t", kind="stable")
            events = events.reset_index(drop=True)
    samples_path = run_dir / "samples.csv"
    if samples_path.exists():
        samples = pd.read_csv(samples_path).astype(metrics.SAMPLE_DTYPES)
    else:
        samples = pd.DataFrame({c: pd.Series(dtype=d) for c, d in metrics.SAMPLE_DTYPES.items()})
    return RunData(run_dir, capacity, search, events, samples, lab)


def capture_events(run_dir: Path, lab: dict[str, Any]) -> pd.DataFrame | None:
    """The events table of the run's packet capture at every lab node's address, or None when
    the run has no capture or only a bounded window of it (a ring buffer: counts would be
    wrong for the steps before the window)."""
    from lab.wire import PcapError, read_records

    pcap = run_dir / "capture.pcap"
    state = _read_json(run_dir / "capture.json")
    if not pcap.exists() or state.get("ring_mb"):
        return None
    hosts = {
        str(n["host"]): str(n["name"])
        for n in lab.get("nodes", [])
        if n.get("host") and n.get("port")
    }
    try:
        return metrics.events_from_records(read_records(pcap), hosts)
    except PcapError:
        return None


@dataclass(frozen=True, slots=True)
class Analysis:
    kind: str
    """``"call"`` or ``"register"``: what the search measured."""
    source: str
    """``"events"`` or ``"generator"``: where the per-step figures come from."""
    steps: pd.DataFrame
    """``step, kind, offered, start, end, phase, passed, reasons``."""
    attempts: pd.DataFrame
    """:func:`metrics.calls` or :func:`metrics.registrations` at the vantage node."""
    rates: pd.DataFrame
    delays: pd.DataFrame
    failures: pd.DataFrame
    cpu: pd.DataFrame
    per_core: pd.DataFrame
    distribution: pd.DataFrame
    table: pd.DataFrame
    """One row per step: what the report's step table shows."""
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _num(value: object, digits: int = 3) -> float | None:
    if value is None or value is pd.NA:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else round(number, digits)


def _steps(data: RunData, kind: str) -> pd.DataFrame:
    cols = ["step", "kind", "offered", "start", "end", "phase", "passed", "reasons"]
    if data.search is not None and data.search.steps:
        rows = [
            (
                i,
                s.result.kind,
                s.result.offered,
                s.result.start,
                s.result.end,
                s.phase.value,
                s.passed,
                "; ".join(s.reasons),
            )
            for i, s in enumerate(data.search.steps, start=1)
        ]
    elif not data.events.empty:
        t = data.events["t"]
        rows = [(1, kind, math.nan, float(t.min()), float(t.max()) + 1e-6, "run", True, "")]
    else:
        rows = []
    frame = pd.DataFrame(rows, columns=cols)
    return frame.astype(dict(metrics.STEP_DTYPES, phase="string", passed="bool", reasons="string"))


def _generator_rates(data: RunData, steps: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rates and delays from the load generator's step results (no events at the vantage)."""
    results: list[StepResult] = [s.result for s in data.search.steps] if data.search else []
    rates = pd.DataFrame(
        {
            "step": steps["step"].astype("int64"),
            "kind": steps["kind"],
            "offered": [r.offered for r in results],
            "duration_s": [r.duration_s for r in results],
            "attempted": [r.attempted for r in results],
            "successful": [r.successful for r in results],
            "failed": [r.failed for r in results],
            "attempt_rate": [r.achieved for r in results],
            "success_rate": [r.established for r in results],
            "success_ratio": [
                r.successful / r.attempted if r.attempted else math.nan for r in results
            ],
        }
    )
    delays = pd.DataFrame(
        {
            "step": rates["step"],
            "count": rates["successful"],
            "p50": [r.p50_ms for r in results],
            "p95": [r.p95_ms for r in results],
            "p99": [r.p99_ms for r in results],
        }
    ).astype({"p50": "float64", "p95": "float64", "p99": "float64"})
    return rates, delays


def _vantage(data: RunData) -> tuple[str, str]:
    vantage = data.capacity.get("vantage") or {}
    node = vantage.get("node")
    if node is None:
        routers = [n["name"] for n in data.lab.get("nodes", []) if n.get("role") == "router"]
        node = routers[0] if routers else "router"
    return str(node), str(vantage.get("requests_dir", "in"))


def analyse(data: RunData, *, compare: dict[str, Any] | None = None) -> Analysis:
    """Every table of the report and ``summary.json``'s content.

    Args:
        data: the loaded run folder.
        compare: another run's ``summary.json``, shown beside this one.
    """
    cap = data.capacity
    kind = "register" if cap.get("scenario") == "register" else "call"
    steps = _steps(data, kind)
    node, requests_dir = _vantage(data)
    if kind == "register":
        attempts = metrics.registrations(data.events, node=node, requests_dir=requests_dir)
        column = "rrd_ms"
    else:
        attempts = metrics.calls(data.events, node=node, requests_dir=requests_dir)
        column = "srd_ms"
    if not attempts.empty or data.search is None:
        source = "events"
        rates = metrics.step_rates(attempts, steps)
        delays = metrics.delay_percentiles(attempts, steps, column=column)
    else:
        source = "generator"
        rates, delays = _generator_rates(data, steps)
    failures = metrics.failures_by_cause(attempts, steps)
    cpu = metrics.cpu_per_step(data.samples, steps)
    per_core = metrics.calls_per_core(rates, cpu)
    addresses = {
        f"{n['host']}:{n['port']}": n["name"] for n in data.lab.get("nodes", []) if n.get("port")
    }
    distribution = metrics.per_node_distribution(
        data.events, router=node, addresses=addresses or None
    )
    delays = delays.merge(steps[["step", "offered"]], on="step", how="left")
    table = rates.merge(delays[["step", "p50", "p95", "p99"]], on="step", how="left").merge(
        steps[["step", "phase", "passed", "reasons"]], on="step", how="left"
    )
    if "retransmissions" in attempts:
        by_step = metrics.assign_step(attempts["start"], steps)
        retrans = attempts.groupby(by_step)["retransmissions"].sum()
    else:
        retrans = pd.Series(dtype="int64")
    table["retransmissions"] = table["step"].map(retrans).fillna(0).astype("int64")
    if source == "generator" and data.search is not None:
        table["retransmissions"] = [s.result.retransmissions for s in data.search.steps]

    if source == "events" and data.search is not None:
        # the generator's own count beside the vantage node's: they differ when calls fail after
        # setup (a lost ACK, a BYE answered 404), which the router's INVITE view cannot see
        table["generator_successful"] = [s.result.successful for s in data.search.steps]
        table["generator_failed"] = [s.result.failed for s in data.search.steps]
    elif source == "generator":
        # the figures are the generator's own: its counts are the table's counts
        table["generator_successful"] = table["successful"]
        if "failed" in table:
            table["generator_failed"] = table["failed"]
    warnings = _warnings(data, steps)
    if "generator_successful" in table:
        for row in table.itertuples():
            if row.generator_successful < row.successful:
                warnings.append(
                    f"step {row.step}: {node} saw {row.successful} successful setups but the "
                    f"load generator counted {row.generator_successful} successful calls: calls "
                    "failed after setup (ACK/BYE); see sipp/ error logs"
                )
    summary = _summary(data, kind, source, table, per_core, cpu, distribution, attempts, failures)
    summary["vantage"] = {"node": node, "requests_dir": requests_dir}
    evidence = _read_json(data.run_dir / "evidence.json")
    if evidence:
        summary["evidence"] = evidence  # what the run kept (capture window, ladders, sizes)
        if not summary.get("distribution") and evidence.get("window_distribution"):
            summary["distribution"] = evidence["window_distribution"]
            summary["distribution_from"] = "capture window"
    summary["warnings"] = warnings
    if compare:
        summary["compare"] = _compare(summary, compare)
    return Analysis(
        kind,
        source,
        steps,
        attempts,
        rates,
        delays,
        failures,
        cpu,
        per_core,
        distribution,
        table,
        summary,
        warnings,
    )


def _warnings(data: RunData, steps: pd.DataFrame) -> list[str]:
    warnings: list[str] = []
    generators = list(data.capacity.get("generators", ["sipp"]))
    if data.search is not None:
        for number, step in enumerate(data.search.steps, start=1):
            r = step.result
            found = bottleneck_warnings(
                offered=r.offered, achieved=r.achieved, cpu=r.cpu, generators=generators
            )
            warnings.extend(f"step {number}: {text}" for text in found)
        if data.search.knee is None:
            warnings.append("no offered rate met the service level")
        elif not data.search.confirmed:
            warnings.append("the knee was not confirmed by a soak step")
        if data.search.knee is not None and not data.search.bracketed:
            warnings.append("every rate up to the maximum met the level: the knee is higher")
    return warnings


def _knee_step(data: RunData) -> int | None:
    if data.search is None or data.search.knee is None:
        return None
    for number in range(len(data.search.steps), 0, -1):
        step = data.search.steps[number - 1]
        if step.passed and step.result.offered == data.search.knee:
            return number
    return None


def _summary(
    data: RunData,
    kind: str,
    source: str,
    table: pd.DataFrame,
    per_core: pd.DataFrame,
    cpu: pd.DataFrame,
    distribution: pd.DataFrame,
    attempts: pd.DataFrame,
    failures: pd.DataFrame,
) -> dict[str, Any]:
    cap = data.capacity
    knee_number = _knee_step(data)
    rows = {int(r["step"]): r for r in table.to_dict("records")}
    knee_row = rows.get(knee_number) if knee_number is not None else None
    knee_rate = data.search.knee if data.search is not None else None
    router_per_core = None
    if knee_number is not None:
        at = per_core[
            (per_core["step"] == knee_number) & (per_core["node"] == summary_router(data))
        ]
        router_per_core = _num(at["per_core"].iloc[0]) if not at.empty else None
    pbx_per_node = _pbx_per_node(data, cpu, knee_number, knee_row)
    summary: dict[str, Any] = {
        "run": data.run_dir.name,
        "scenario": cap.get("scenario", "run"),
        "router": cap.get("router"),
        "source": source,
        "service_level": data.search.level.to_dict() if data.search else None,
        "service_level_text": data.search.level.describe() if data.search else None,
        "knee": {
            "offered": knee_rate,
            "step": knee_number,
            "confirmed": data.search.confirmed if data.search else False,
            "bracketed": data.search.bracketed if data.search else False,
            "resolution": data.search.resolution if data.search else None,
            "established_per_s": _num(knee_row["success_rate"]) if knee_row else None,
            "success_ratio": _num(knee_row["success_ratio"], 6) if knee_row else None,
            "p95_ms": _num(knee_row["p95"]) if knee_row else None,
            "router_per_core": router_per_core,
            "pbx_per_node": pbx_per_node,
        },
        "max_cps": knee_rate if kind == "call" else None,
        "max_registrations_per_s": knee_rate if kind == "register" else None,
        "steps": [
            {
                "step": int(r["step"]),
                "phase": r["phase"],
                "offered": _num(r["offered"]),
                "attempted": int(r["attempted"]),
                "successful": int(r["successful"]),
                "failed": int(r["failed"]),
                "achieved_per_s": _num(r["attempt_rate"]),
                "established_per_s": _num(r["success_rate"]),
                "success_ratio": _num(r["success_ratio"], 6),
                "p50_ms": _num(r["p50"]),
                "p95_ms": _num(r["p95"]),
                "p99_ms": _num(r["p99"]),
                "retransmissions": int(r["retransmissions"]),
                "passed": bool(r["passed"]),
                "reasons": r["reasons"] or "",
                "generator_successful": r.get("generator_successful"),
                "generator_failed": r.get("generator_failed"),
            }
            for r in table.to_dict("records")
        ],
        "totals": {
            "attempted": len(attempts) if source == "events" else int(table["attempted"].sum()),
            "successful": int((attempts["outcome"] == "success").sum())
            if source == "events"
            else int(table["successful"].sum()),
            "success_ratio": _num(metrics.success_ratio(attempts), 6)
            if source == "events"
            else _num(table["successful"].sum() / max(1, table["attempted"].sum()), 6),
            "failures_by_cause": {
                str(c): int(n) for c, n in failures.groupby("cause")["count"].sum().items()
            },
        },
        "distribution": {str(r.node): int(r.calls) for r in distribution.itertuples()},
        "hardware": cap.get("hardware", {}),
        "versions": cap.get("versions", {}),
        "config": cap.get("config", {}),
        "config_hash": config_hash(cap.get("config", {})),
    }
    target = cap.get("target")
    if target:
        capacity = Capacity(
            router_cps_per_core=router_per_core if kind == "call" else None,
            router_regs_per_core=router_per_core
            if kind == "register"
            else _register_run_per_core(data.run_dir),
            pbx_cps_per_node=pbx_per_node if kind == "call" else None,
            pbx_kind=str(cap.get("pbx_kind", "emulator")),
        )
        headroom = float(cap.get("headroom", 0.3))
        verdict = size(parse_target(target), capacity, headroom=headroom)
        cores = (cap.get("hardware") or {}).get("cores")
        summary["sizing"] = verdict.to_dict() | {
            "limits": list(extrapolation_limits(capacity, cores=cores))
        }
    return summary


def _register_run_per_core(run_dir: Path) -> float | None:
    """Registrations/s per router core from the register run ``siplab capacity --quick`` makes
    next to a call run (``<run>/register/summary.json``), None when there is none."""
    path = run_dir / "register" / "summary.json"
    if not path.exists():
        return None
    value = (json.loads(path.read_text(encoding="utf-8")).get("knee") or {}).get("router_per_core")
    return float(value) if value else None


def summary_router(data: RunData) -> str:
    return _vantage(data)[0]


def _pbx_per_node(
    data: RunData, cpu: pd.DataFrame, knee: int | None, row: dict[str, Any] | None
) -> float | None:
    """Calls/s one PBX node would carry at one full core, from the knee step."""
    pbx = [n["name"] for n in data.lab.get("nodes", []) if n.get("role") == "pbx"]
    if knee is None or row is None or not pbx:
        return None
    at = cpu[(cpu["step"] == knee) & cpu["node"].isin(pbx)]
    if at.empty or at["cpu"].mean() <= 0.5:
        return None
    per_node_rate = float(row["success_rate"]) / len(pbx)
    return _num(per_node_rate / (float(at["cpu"].mean()) / 100.0))


def _compare(summary: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: object, b: object) -> float | None:
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            return round(a / b, 3)
        return None

    keys = ("max_cps", "max_registrations_per_s")
    result: dict[str, Any] = {"run": other.get("run"), "router": other.get("router")}
    for key in keys:
        result[key] = {
            "this": summary.get(key),
            "other": other.get(key),
            "ratio": ratio(summary.get(key), other.get(key)),
        }
    this_p95 = (summary.get("knee") or {}).get("p95_ms")
    other_p95 = (other.get("knee") or {}).get("p95_ms")
    result["knee_p95_ms"] = {
        "this": this_p95,
        "other": other_p95,
        "ratio": ratio(this_p95, other_p95),
    }
    return result
