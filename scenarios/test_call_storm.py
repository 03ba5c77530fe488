"""Call storm: a ramp of calls per second through the default lab, and its capacity report.

Topology: the session's default lab (router, pbx1..3, SQLite, 500 users, relays on
ua-router and router-pbx1; the calls for pbx1 cross that relay). SIPp places calls to
extension 600 (Answer; the caller sends BYE at once) straight to the router, in steps of
increasing offered rate, each step a bounded number of calls: 50/s, 100/s, 200/s for 3 s each.

What is done with the numbers: each step becomes a ``StepResult`` judged against the service
level (failed <= 0.1%, p95 setup delay bound), the steps and the lab's events of the storm
window are written as a run folder (``<run>/tests/<test>/report/``: ``capacity.json``,
``capture.pcap`` cut from the lab's capture, ``lab.json``) and ``reports.build.build_report`` turns it into
``report.html`` + ``summary.json``.

Must hold: success >= 99.9% on the steps below the lab's capacity (``CAPACITY_CPS``); the
report is built; checked against an independent source, SIPp's own statistics files read by
this test (``<step>_stat.csv`` counters, ``<step>_<pid>_rtt.csv`` setup delays), not the
figures the test fed the report: the report's generator columns are SIPp's files; below
capacity its per-step numbers, counted at the router's address on the wire (the vantage node, from
the capture), equal SIPp's; the
service level holds as the report computes each such step, as SIPp's files give it, and in
the report's verdict (knee at or above ``CAPACITY_CPS``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from typing import Any

import pytest

from lab.engines import uac_call
from lab.pytest_plugin import Lab
from lab.wire import cut_pcap
from reports.build import build_report
from reports.search import Phase, SearchResult, SearchStep, ServiceLevel, StepResult

STEPS = [(50.0, 150), (100.0, 300), (200.0, 600)]
"""(offered calls/s, calls) per step."""
CAPACITY_CPS = 100.0
"""Offered rates up to this are below the default lab's capacity on the 2-core reference
machine; steps above it are measured and reported (the report's knee), not judged. Measured
there: 100/s all calls complete (p95 ~60 ms); 200/s ~5% of the BYEs time out (router, three
nodes, the Python relay in front of pbx1 and SIPp share two cores)."""
LEVEL = ServiceLevel(
    max_failure_ratio=0.001,
    max_p95_ms=500.0,
    max_retrans_per_call=0.05,
    # A step's window runs from SIPp's start to the last BYE plus 0.3 s, so the achieved
    # rate over it is ~10% under what SIPp offered while running.
    min_achieved_ratio=0.8,
)


def step_result(lab: Lab, rate: float, calls: int, number: int) -> StepResult:
    start = time.time()
    sipp = lab.run_sipp(
        uac_call(hold_ms=0),
        name=f"call-storm-{number}-{rate:g}cps",
        service="600",
        max_calls=calls,
        rate=rate,
        timeout_s=60.0,
    )
    time.sleep(0.3)  # the last BYEs and the nodes' last event batches
    end = time.time()
    return StepResult(
        offered=rate,
        duration_s=end - start,
        attempted=sipp.calls_created,
        successful=sipp.successful,
        failed=sipp.failed,
        p50_ms=sipp.p50_ms,
        p95_ms=sipp.p95_ms,
        p99_ms=sipp.p99_ms,
        retransmissions=sipp.retransmissions,
        failed_by_reason=dict(sipp.failed_by_reason),
        start=start,
        kind="call",
    )


def sipp_files(lab: Lab, name: str) -> dict[str, Any]:
    """A step's figures read straight from SIPp's own files, independently of
    ``lab.engines.results`` (what fed the report): the cumulative counters of the last row of
    ``<name>_stat.csv`` (``-trace_stat``) and every setup delay of ``<name>_<pid>_rtt.csv``
    (``-trace_rtt``, integer ms, one row per answered call)."""
    folder = lab.run_dir / "sipp" / name
    header, *rows = (folder / f"{name}_stat.csv").read_text().splitlines()
    last = dict(zip(header.split(";"), rows[-1].split(";"), strict=False))
    (rtt_file,) = folder.glob(f"{name}_*_rtt.csv")
    delays = sorted(
        float(line.split(";")[1])
        for line in rtt_file.read_text().splitlines()[1:]
        if line.strip() and line.split(";")[2].strip() == "1"
    )
    p95 = delays[min(len(delays) - 1, math.ceil(0.95 * len(delays)) - 1)] if delays else None
    return {
        "created": int(last["OutgoingCall(C)"]),
        "successful": int(last["SuccessfulCall(C)"]),
        "failed": int(last["FailedCall(C)"]),
        "retransmissions": int(last["Retransmissions(C)"]),
        "p95_ms": p95,
    }


def level_on(row: dict[str, Any], duration_s: float) -> tuple[str, ...]:
    """``LEVEL`` applied to one step as the report computed it (a ``summary.json`` row)."""
    return LEVEL.check(
        StepResult(
            offered=row["offered"],
            duration_s=duration_s,
            attempted=row["attempted"],
            successful=row["successful"],
            failed=row["failed"],
            p95_ms=row["p95_ms"],
            retransmissions=row["retransmissions"],
        )
    )


def write_run_folder(lab: Lab, folder: Any, search: SearchResult, since: float) -> None:
    """A run folder ``reports`` can read: capacity.json, lab.json and the storm window of the
    lab's packet capture (``capture.pcap``): the router's counts come from the wire, a source
    independent of SIPp's statistics and of what the router says about itself."""
    folder.mkdir(parents=True, exist_ok=True)
    capacity = {
        "scenario": "call",
        "router": lab.topology.router.kind,
        "vantage": {"node": "router", "requests_dir": "in"},
        "generators": ["sipp"],
        "search": search.to_dict(),
    }
    (folder / "capacity.json").write_text(json.dumps(capacity, indent=2) + "\n")
    assert lab.flush_capture(), "the lab's capture is not running"
    cut_pcap(lab.run_dir / "capture.pcap", folder / "capture.pcap", since)
    shutil.copy(lab.run_dir / "lab.json", folder / "lab.json")


@pytest.mark.kamailio  # the router's counts come from the capture for every router
def test_call_storm_ramp_and_report(
    lab: Lab, measurements: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """Three steps, 50 -> 100 -> 200 calls/s (1050 calls), then the report.

    Must hold: every step at or below ``CAPACITY_CPS`` completes >= 99.9% of its calls (SIPp's
    stat file); ``report.html`` and ``summary.json`` exist (built from the capture); per step the report's generator
    counts are SIPp's files' and its own never exceed what SIPp created; at or below
    ``CAPACITY_CPS`` the router's attempted and successful counts equal SIPp's files' and
    ``LEVEL`` is met by the report's step, by SIPp's files and in the report's verdict.
    """
    for node in lab.pbx:
        lab.wait_dispatcher(node.name, active=True)
    since = time.time()
    steps = []
    for number, (rate, calls) in enumerate(STEPS, start=1):
        result = step_result(lab, rate, calls, number)
        steps.append(SearchStep(Phase.RAMP, result, LEVEL.check(result)))
    passing = [s.result.offered for s in steps if s.passed]
    search = SearchResult(
        steps=tuple(steps),
        level=LEVEL,
        knee=max(passing) if passing else None,
        bracketed=len(passing) < len(steps),
        confirmed=False,
        resolution=50.0,
    )
    folder = lab.artifacts(request.node.nodeid) / "report"
    write_run_folder(lab, folder, search, since)
    report = build_report(folder)

    measurements["steps"] = [
        {
            "offered": s.result.offered,
            "attempted": s.result.attempted,
            "successful": s.result.successful,
            "failed": s.result.failed,
            "achieved_per_s": round(s.result.achieved, 1),
            "p95_ms": s.result.p95_ms,
            "passed": s.passed,
            "reasons": list(s.reasons),
        }
        for s in steps
    ]
    measurements["knee_cps"] = search.knee
    measurements["report"] = str(report)
    for s in steps:
        r = s.result
        print(
            f"{r.offered:g} cps: {r.successful}/{r.attempted} ok, p95 {r.p95_ms} ms, "
            f"{r.retransmissions} retransmissions, {'pass' if s.passed else s.reasons}"
        )

    # SIPp's own files, read here without the parser that fed the report.
    files = [sipp_files(lab, f"call-storm-{n}-{rate:g}cps") for n, (rate, _) in enumerate(STEPS, 1)]
    measurements["sipp_files"] = files
    for s, f, (_, calls) in zip(steps, files, STEPS, strict=True):
        assert f["created"] == calls, f
        if s.result.offered <= CAPACITY_CPS:
            assert f["successful"] >= 0.999 * calls, (
                s.result.offered,
                f,
                s.result.failed_by_reason,
            )

    assert report.name == "report.html"
    assert report.is_file()
    summary = json.loads((folder / "summary.json").read_text())
    # The router's figures come from the capture at its address, for every router.
    assert summary["source"] == "events"
    assert len(summary["steps"]) == len(steps)
    for row, s, f in zip(summary["steps"], steps, files, strict=True):
        assert row["offered"] == s.result.offered
        # The report's generator columns are SIPp's files.
        assert (row["generator_successful"], row["generator_failed"]) == (
            f["successful"],
            f["failed"],
        ), (row, f)
        # The report's own count (at the router's address, from the capture) never exceeds
        # what SIPp created.
        assert 0 <= row["successful"] <= row["attempted"] <= f["created"], (row, f)
        if s.result.offered > CAPACITY_CPS:
            # Above capacity the vantages differ by design: a call the router saw answered
            # can still fail at SIPp (its BYE timed out); the step is reported, not judged.
            continue
        # Below capacity the router and SIPp saw the same calls...
        assert (row["attempted"], row["successful"]) == (f["created"], f["successful"]), (row, f)
        # ...and the service level holds as the report computes the step (router vantage),
        # as SIPp's files give it, and in the report's verdict.
        # (Retransmissions counted at the router's address are those of both legs, the
        # router's own INVITE retransmissions to a PBX whose 100 came after T1 included: 50 ms
        # at the suite's time scale 0.1, which a loaded machine exceeds under Kamailio. They are
        # reported; the retransmission criterion is judged at the caller, on SIPp's files.)
        problems = level_on(row, s.result.duration_s)
        assert [p for p in problems if not p.startswith("retransmissions")] == [], row
        from_files = StepResult(
            offered=s.result.offered,
            duration_s=s.result.duration_s,
            attempted=f["created"],
            successful=f["successful"],
            failed=f["failed"],
            p95_ms=f["p95_ms"],
            retransmissions=f["retransmissions"],
        )
        assert LEVEL.check(from_files) == (), f
        assert row["passed"] is True, row
    assert summary["totals"]["attempted"] == sum(row["attempted"] for row in summary["steps"])
    assert summary["knee"] is not None and summary["knee"]["offered"] >= CAPACITY_CPS, summary
