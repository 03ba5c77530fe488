"""Metric functions on the hand-written fixture run ``data/run_small`` (answers worked by hand).

The fixture: the router sees INVITEs from a UA (requests ``in``, responses ``out``), forwards them
to pbx1/pbx2. Step 1 is [100, 101) offered 4/s, step 2 is [101, 102) offered 8/s.

- c1 180 after 10 ms then 200; c2 200 after 30 ms (no 180); c3 407, re-INVITE, 180 40 ms after
  the *first* INVITE; c4 503 after 50 ms.
- c5 180 after 5 ms; c6 no answer (one retransmission); c7 486 after 20 ms; c8 180 after 20 ms.
- r1: REGISTER, 401, REGISTER, 200 (25 ms from the first); later a re-REGISTER on the same
  Call-ID answered in 3 ms. r2: REGISTER, 401, REGISTER, 403.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from reports import metrics

DATA = Path(__file__).parent / "data" / "run_small"


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return metrics.load_events(DATA / "events.jsonl")


@pytest.fixture(scope="module")
def steps() -> pd.DataFrame:
    return pd.DataFrame(
        {"step": [1, 2], "kind": ["call", "call"], "offered": [4.0, 8.0], "start": [100.0, 101.0]}
        | {"end": [101.0, 102.0]}
    ).astype(metrics.STEP_DTYPES)


@pytest.fixture(scope="module")
def calls(events: pd.DataFrame) -> pd.DataFrame:
    return metrics.calls(events, node="router", requests_dir="in")


def test_load_events_declared_dtypes(events: pd.DataFrame) -> None:
    for column, dtype in metrics.EVENT_DTYPES.items():
        assert str(events[column].dtype) == dtype, column
    assert len(events) == 50
    assert events["t"].is_monotonic_increasing
    # a state-change line has nulls where messages have values
    state = events[events["event"] == "dispatcher_state"].iloc[0]
    assert state["state"] == "AP"
    assert pd.isna(state["status"])


def test_load_events_skips_partial_last_line_and_names_bad_line(tmp_path: Path) -> None:
    good = json.dumps({"t": 1.0, "node": "a", "event": "sip", "status": 200})
    path = tmp_path / "events.jsonl"
    path.write_text(good + "\n" + '{"t": 2.0, "no')
    assert len(metrics.load_events(path)) == 1
    path.write_text(good + "\nnot json\n" + good + "\n")
    with pytest.raises(ValueError, match=r"events.jsonl:2: not JSON"):
        metrics.load_events(path)
    path.write_text("")
    assert list(metrics.load_events(path).columns) == list(metrics.EVENT_DTYPES)


def test_calls_srd_per_rfc6076(calls: pd.DataFrame) -> None:
    by_id = calls.set_index("call_id")
    assert list(by_id.index) == ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"]
    assert list(by_id["outcome"]) == ["success"] * 3 + ["failure", "success", "timeout"] + [
        "failure",
        "success",
    ]
    srd = by_id["srd_ms"].round(3)
    assert srd["c1"] == 10.0  # first non-100 provisional, not the 100 at 1 ms
    assert srd["c2"] == 30.0  # no provisional: the 200
    assert srd["c3"] == 40.0  # the 407 is not status-indicative; clock from the first INVITE
    assert srd["c4"] == 50.0  # failed setup: to the failure response
    assert pd.isna(srd["c6"])
    assert by_id.loc["c4", "status"] == 503
    assert by_id.loc["c7", "status"] == 486
    assert by_id.loc["c3", "status"] == 200
    assert by_id.loc["c6", "retransmissions"] == 1
    assert calls["retransmissions"].sum() == 1


def test_registrations_rrd_counts_challenge(events: pd.DataFrame) -> None:
    regs = metrics.registrations(events, node="router", requests_dir="in")
    assert list(regs["call_id"]) == ["r1", "r2", "r1"]
    assert list(regs["outcome"]) == ["success", "failure", "success"]
    assert regs["rrd_ms"].round(3).tolist()[0] == 25.0
    assert regs["rrd_ms"].round(3).tolist()[2] == 3.0
    assert pd.isna(regs["rrd_ms"].iloc[1])  # RRD only for successful registrations
    assert regs["status"].iloc[1] == 403
    pct = metrics.delay_percentiles(regs, column="rrd_ms")
    assert pct.loc[0, "count"] == 2
    assert round(pct.loc[0, "p50"], 3) == 3.0


def test_step_rates_offered_vs_achieved(calls: pd.DataFrame, steps: pd.DataFrame) -> None:
    rates = metrics.step_rates(calls, steps).set_index("step")
    assert rates.loc[1, "attempted"] == 4
    assert rates.loc[1, "successful"] == 3
    assert rates.loc[2, "successful"] == 2
    assert rates.loc[1, "attempt_rate"] == pytest.approx(4.0)
    assert rates.loc[2, "success_rate"] == pytest.approx(2.0)
    assert rates.loc[2, "offered"] == 8.0
    assert rates.loc[1, "success_ratio"] == pytest.approx(0.75)
    assert metrics.success_ratio(calls) == pytest.approx(5 / 8)


def test_delay_percentiles_nearest_rank(calls: pd.DataFrame, steps: pd.DataFrame) -> None:
    pct = metrics.delay_percentiles(calls, steps).set_index("step").round(3)
    assert pct.loc[1, ["count", "p50", "p95", "p99"]].tolist() == [3, 30.0, 40.0, 40.0]
    assert pct.loc[2, ["count", "p50", "p95"]].tolist() == [2, 5.0, 20.0]


def test_failures_by_status_and_cause(calls: pd.DataFrame, steps: pd.DataFrame) -> None:
    by_status = metrics.failures_by_status(calls)
    assert by_status["count"].sum() == 3
    assert set(by_status["status"].dropna().astype(int)) == {503, 486}
    cause = metrics.failures_by_cause(calls, steps)
    got = {(int(r.step), r.cause): int(r.count) for r in cause.itertuples()}
    assert got == {(1, "5xx"): 1, (2, "timeout"): 1, (2, "4xx"): 1}


def test_per_node_distribution_both_sources(events: pd.DataFrame) -> None:
    addresses = {"127.0.0.11:5060": "pbx1", "127.0.0.12:5060": "pbx2"}
    from_router = metrics.per_node_distribution(events, addresses=addresses)
    from_pbx = metrics.per_node_distribution(events)
    for table in (from_router, from_pbx):
        assert table["node"].tolist() == ["pbx1", "pbx2"]
        assert table["calls"].tolist() == [5, 3]
        assert table["share"].tolist() == pytest.approx([5 / 8, 3 / 8])


def test_cpu_per_step_and_calls_per_core(calls: pd.DataFrame, steps: pd.DataFrame) -> None:
    samples = pd.read_csv(DATA / "samples.csv").astype(metrics.SAMPLE_DTYPES)
    cpu = metrics.cpu_per_step(samples, steps)
    router = cpu[cpu["node"] == "router"].set_index("step")
    assert router["cpu"].tolist() == pytest.approx([25.0, 50.0])
    assert router["rss"].tolist() == [50_000_000, 50_000_000]
    per_core = metrics.calls_per_core(metrics.step_rates(calls, steps), cpu)
    row = per_core[(per_core["node"] == "router") & (per_core["step"] == 1)].iloc[0]
    assert row["per_core"] == pytest.approx(3.0 / 0.25)


def test_empty_inputs_give_empty_tables() -> None:
    empty = metrics.empty_events()
    assert metrics.calls(empty, node="router").empty
    assert metrics.registrations(empty, node="router").empty
    assert metrics.per_node_distribution(empty).empty


def test_definitions_name_the_rfc_terms() -> None:
    text = " ".join(metrics.DEFINITIONS.values())
    for term in ("RFC 6076 §4.2", "RFC 6076 §4.1", "Session Attempt Rate", "Registration Rate"):
        assert term in text


def test_events_from_records_reads_a_capture_at_each_node() -> None:
    from lab.wire import sip_record
    from router.sip import Headers, Request, make_response, serialize

    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.50:5060;branch=z9hG4bK-1"),
            ("From", "<sip:100@lab>;tag=a"),
            ("To", "<sip:600@lab>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
            ("Content-Length", "0"),
        ]
    )
    invite = Request("INVITE", "sip:600@lab", headers, b"")
    ok = serialize(make_response(invite, 200))
    phone, router, pbx = "127.0.0.50:5060", "127.0.0.10:5060", "127.0.0.11:5060"
    wire = [
        (1.0, phone, router, serialize(invite)),
        (1.01, router, pbx, serialize(invite)),
        (1.05, pbx, router, ok),
        (1.06, router, phone, ok),
        (1.56, router, phone, ok),  # the same bytes again: a retransmission
    ]
    records = [sip_record(t, s, d, data) for t, s, d, data in wire]
    hosts = {"127.0.0.10": "router", "127.0.0.11": "pbx1"}
    events = metrics.events_from_records([r for r in records if r is not None], hosts)
    assert list(events.columns) == list(metrics.EVENT_DTYPES)
    at_router = events[events["node"] == "router"]
    assert list(zip(at_router["dir"], at_router["event"], strict=True)) == [
        ("in", "sip"),
        ("out", "sip"),
        ("in", "sip"),
        ("out", "sip"),
        ("out", "retransmit"),
    ]
    assert set(events[events["node"] == "pbx1"]["dir"]) == {"in", "out"}
    call = metrics.calls(events, node="router", requests_dir="in")
    assert list(call["outcome"]) == ["success"]
    assert call["srd_ms"].iloc[0] == pytest.approx(60.0)
    assert int(call["retransmissions"].iloc[0]) == 1
    assert metrics.events_from_records([], hosts).empty
