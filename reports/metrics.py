"""Metrics of a run, as pure DataFrame -> DataFrame functions over typed tables.

Three tables come out of a run folder:

- **events** (``events.jsonl``, see :mod:`router.observe`): one row per SIP message in or out of a
  node, plus state changes. :func:`load_events` reads it with the declared :data:`EVENT_DTYPES`,
  so a column is the same type whether the file has 3 lines or 3 million.
- **steps** (the capacity driver's ``capacity.json``): one row per load step, the offered rate
  and the wall-clock window it ran in (:data:`STEP_DTYPES`).
- **samples** (``samples.csv``, :mod:`reports.sampling`): CPU and RSS per node over time.

Every metric function takes tables and returns a table; none reads a file or a clock, so each is
tested on tiny fixture runs whose answers can be worked out by hand.

The delay metrics follow RFC 6076 ("Basic Telephony SIP End-to-End Performance Metrics") to the
letter, with the vantage point a parameter: the RFC measures "at the originating UA"; in a run
where SIPp is the UA and writes no events, the router's client side (requests ``in``, responses
``out``) is the nearest observer we have, and the report says which vantage point it used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

__all__ = [
    "DEFINITIONS",
    "EVENT_DTYPES",
    "SAMPLE_DTYPES",
    "STEP_DTYPES",
    "assign_step",
    "calls",
    "calls_per_core",
    "cpu_per_step",
    "delay_percentiles",
    "empty_events",
    "events_from_records",
    "failures_by_cause",
    "failures_by_status",
    "load_events",
    "per_node_distribution",
    "registrations",
    "step_rates",
    "success_ratio",
]

# -- definitions printed by the report ------------------------------------------------------------

DEFINITIONS: dict[str, str] = {
    "Offered load": (
        "RFC 7501 §3.4 'Session Attempt Rate': the configured number of sessions per second the "
        "Emulated Agent (here SIPp) attempts to establish. Reported as 'offered' (calls/s or "
        "registrations/s) for each step."
    ),
    "Achieved attempt rate": (
        "Sessions (INVITE transactions with a new Call-ID) or registrations actually started per "
        "second of the step; below the offered rate when the load generator cannot keep up."
    ),
    "Session Establishment Rate": (
        "RFC 7501 §3.4 'Session Establishment Rate': the maximum average rate at which the "
        "DUT/SUT can successfully establish sessions. Here: sessions whose INVITE got a 2xx, per "
        "second of the step (the step's throughput). The capacity figure is the highest offered "
        "rate whose step meets the service level."
    ),
    "Registration Rate": (
        "RFC 7501 §3.4 'Registration Rate': the maximum average rate at which the DUT/SUT can "
        "successfully register users. Here: registration attempts ending in 2xx per second."
    ),
    "Throughput": (
        "Successful sessions (or registrations) per second at a given offered load; it follows "
        "the offered load until the knee, then flattens or falls."
    ),
    "Session Request Delay (SRD)": (
        "RFC 6076 §4.2: 'SRD = Time of Status Indicative Response - Time of INVITE'. For a "
        "successful setup the status-indicative response is the first non-100 provisional "
        "response (e.g. 180), or the 200 when no such provisional arrives (§4.2.1). Failed "
        "setups (§4.2.2, first 4xx/5xx/6xx) are reported separately: the RFC says they 'MUST "
        "NOT be combined in the same result with successful requests'. A 401/407 challenge is "
        "not status-indicative; the clock runs from the first INVITE of the call."
    ),
    "Registration Request Delay (RRD)": (
        "RFC 6076 §4.1: 'RRD = Time of Final Response - Time of REGISTER Request', measured "
        "'only for successful REGISTER requests'. The flow 'includes an expected authentication "
        "challenge prior to receiving the 200 OK', so a challenged registration is timed from "
        "its first REGISTER to the final 200."
    ),
    "Success ratio": (
        "Successful / attempted sessions of a step (RFC 6076 §4.6 Session Establishment Ratio "
        "counts INVITEs answered 2xx against all INVITEs; we do not exclude 3xx, none occur)."
    ),
    "Failure causes": (
        "timeout: no final response seen; 3xx/4xx/5xx/6xx: the call's final status class. "
        "RFC 6076 §4.8 Ineffective Session Attempts are the 408, 500, 503 and 504 among these."
    ),
    "Retransmissions per call": (
        "Retransmitted SIP messages (event 'retransmit') per call attempted; any value above 0 "
        "on loopback means some node answered later than T1 (RFC 3261 Timer A/E, 500 ms)."
    ),
    "Calls per core": (
        "Established sessions per second divided by the node's CPU use in cores (100% of one "
        "core = 1.0): the per-core capacity used for sizing, valid only near the measured load."
    ),
    "Service level": (
        "The criterion a step must meet to count (RFC 7502 §4.9 uses zero failures; we allow a "
        "configured failure ratio): failed sessions <= the bound, p95 SRD <= the bound, "
        "retransmissions per call <= the bound."
    ),
}

# -- events ---------------------------------------------------------------------------------------

EVENT_DTYPES: dict[str, str] = {
    "t": "float64",
    "node": "string",
    "event": "string",
    "dir": "string",
    "method": "string",
    "status": "Int64",
    "call_id": "string",
    "cseq": "Int64",
    "peer": "string",
    "branch": "string",
    "transport": "string",
    "trigger": "string",
    "state": "string",
}
"""Declared column types of ``events.jsonl`` (``raw`` is loaded only on request)."""

STEP_DTYPES: dict[str, str] = {
    "step": "Int64",
    "kind": "string",
    "offered": "float64",
    "start": "float64",
    "end": "float64",
}
"""Declared column types of the steps table: ``kind`` is ``"call"`` or ``"register"``."""

SAMPLE_DTYPES: dict[str, str] = {
    "t": "float64",
    "node": "string",
    "pid": "Int64",
    "cpu": "float64",
    "rss": "Int64",
}
"""Declared column types of the samples table: ``cpu`` in percent of one core, ``rss`` bytes."""

_CHALLENGES = (401, 407)


def empty_events(*, raw: bool = False) -> pd.DataFrame:
    """An events table with no rows and the declared columns."""
    dtypes = dict(EVENT_DTYPES, **({"raw": "string"} if raw else {}))
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in dtypes.items()})


def load_events(path: str | Path, *, raw: bool = False) -> pd.DataFrame:
    """Read ``events.jsonl`` into a DataFrame with :data:`EVENT_DTYPES`, sorted by time.

    A missing column is filled with nulls; unknown fields are ignored. A last line cut short
    (a writer killed mid-line) is skipped.

    Raises:
        ValueError: a line that is not a JSON object, naming the file and line number.
    """
    path = Path(path)
    columns = list(EVENT_DTYPES) + (["raw"] if raw else [])
    rows: list[list[object]] = []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if number == len(lines):  # no newline after it: a partial write
                continue
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        rows.append([record.get(c) for c in columns])
    if not rows:
        return empty_events(raw=raw)
    frame = pd.DataFrame(rows, columns=columns)
    dtypes = dict(EVENT_DTYPES, **({"raw": "string"} if raw else {}))
    frame = frame.astype(dtypes)
    return frame.sort_values("t", kind="stable").reset_index(drop=True)


class WireMessage(Protocol):
    """What :func:`events_from_records` reads of a captured message (``lab.wire.SipRecord``)."""

    @property
    def t(self) -> float: ...

    @property
    def src(self) -> str: ...

    @property
    def dst(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def call_id(self) -> str | None: ...

    @property
    def method(self) -> str | None: ...

    @property
    def status(self) -> int | None: ...

    @property
    def cseq(self) -> int | None: ...

    @property
    def branch(self) -> str | None: ...

    @property
    def transport(self) -> str: ...


def events_from_records(records: Iterable[WireMessage], hosts: Mapping[str, str]) -> pd.DataFrame:
    """An events table (:data:`EVENT_DTYPES`) from the messages of a capture.

    Each message becomes a row ``dir="in"`` at the node whose address it was sent to and a row
    ``dir="out"`` at the node whose address sent it (``peer`` the other end), so the metrics
    below read a capture exactly as they read the nodes' own event logs. A message sent again
    with the same bytes between the same addresses is a retransmission (``event="retransmit"``
    for the sender, RFC 3261 §17; the receiver sees it as ``sip`` as a node's log would).

    Args:
        hosts: node IP -> node name (``router``, ``pbx1`` ...): the vantage points.
    """
    rows: list[list[object]] = []
    sent: set[tuple[str, str, int]] = set()
    for r in records:
        src_node = hosts.get(r.src.rpartition(":")[0])
        dst_node = hosts.get(r.dst.rpartition(":")[0])
        key = (r.src, r.dst, hash(r.data))
        event = "retransmit" if key in sent else "sip"
        sent.add(key)
        common = [r.method, r.status, r.call_id, r.cseq]
        tail = [r.branch, r.transport, None, None]
        if dst_node is not None:
            rows.append([r.t, dst_node, "sip", "in", *common, r.src, *tail])
        if src_node is not None:
            rows.append([r.t, src_node, event, "out", *common, r.dst, *tail])
    if not rows:
        return empty_events()
    frame = pd.DataFrame(rows, columns=list(EVENT_DTYPES)).astype(EVENT_DTYPES)
    return frame.sort_values("t", kind="stable").reset_index(drop=True)


# -- transactions and calls ----------------------------------------------------------------------


def _view(events: pd.DataFrame, node: str, requests_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Requests and responses of ``node`` seen as a client: requests in ``requests_dir``."""
    answers_dir = "in" if requests_dir == "out" else "out"
    at = events[(events["node"] == node) & (events["event"] == "sip")]
    requests = at[(at["dir"] == requests_dir) & at["status"].isna()]
    responses = at[(at["dir"] == answers_dir) & at["status"].notna()]
    return requests, responses


def _retransmissions(events: pd.DataFrame, node: str) -> pd.Series:
    at = events[(events["node"] == node) & (events["event"] == "retransmit")]
    return at.groupby("call_id").size()


def calls(events: pd.DataFrame, *, node: str, requests_dir: str = "out") -> pd.DataFrame:
    """One row per call (INVITE Call-ID) as ``node`` saw it, with RFC 6076 SRD.

    Args:
        events: an events table.
        node: the vantage point (a UA: ``requests_dir="out"``; the router's client side:
            ``requests_dir="in"``).
        requests_dir: direction of the INVITEs at that node.

    Returns:
        Columns ``call_id, start, outcome ("success"|"failure"|"timeout"), status (final, Int64),
        srd_ms (successful and failed setups both; see ``outcome``), retransmissions``.
    """
    requests, responses = _view(events, node, requests_dir)
    invites = requests[requests["method"] == "INVITE"]
    out_cols = ["call_id", "start", "outcome", "status", "srd_ms", "retransmissions"]
    if invites.empty:
        frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in out_cols})
        return frame.astype(
            {
                "call_id": "string",
                "outcome": "string",
                "status": "Int64",
                "retransmissions": "Int64",
            }
        )
    start = invites.groupby("call_id")["t"].min().rename("start")
    answers = responses[responses["method"] == "INVITE"].join(start, on="call_id", how="inner")
    answers = answers[answers["t"] >= answers["start"]]
    status = answers["status"]
    indicative = ((status > 100) & (status < 200)) | (status >= 200) & ~status.isin(_CHALLENGES)
    finals = answers[status >= 200]
    last_final = finals.sort_values("t").groupby("call_id").tail(1).set_index("call_id")
    succeeded = finals[(finals["status"] >= 200) & (finals["status"] < 300)]
    success_ids = pd.Index(succeeded["call_id"].unique())
    first_indicative = answers[indicative].groupby("call_id")["t"].min()

    table = start.to_frame()
    table["status"] = last_final["status"].reindex(table.index).astype("Int64")
    ok = table.index.isin(success_ids)
    table.loc[ok, "status"] = (
        succeeded.groupby("call_id")["status"].min().reindex(table.index[ok]).astype("Int64")
    )
    outcome = np.where(ok, "success", np.where(table["status"].isna(), "timeout", "failure"))
    table["outcome"] = pd.array(outcome, dtype="string")
    # §4.2.1: success -> first non-100 provisional or the 200; §4.2.2: failure -> the failure
    # response, i.e. the final that ended the call (a challenge followed by nothing is one).
    stop = first_indicative.reindex(table.index)
    failed = table["outcome"] == "failure"
    stop[failed.to_numpy()] = last_final["t"].reindex(table.index[failed.to_numpy()]).to_numpy()
    table["srd_ms"] = (stop - table["start"]) * 1000.0
    table.loc[table["outcome"] == "timeout", "srd_ms"] = np.nan
    retrans = _retransmissions(events, node).reindex(table.index, fill_value=0)
    table["retransmissions"] = retrans.astype("Int64")
    table = table.reset_index().rename(columns={"index": "call_id"})
    table["call_id"] = table["call_id"].astype("string")
    return table[out_cols].sort_values("start", kind="stable").reset_index(drop=True)


def registrations(events: pd.DataFrame, *, node: str, requests_dir: str = "out") -> pd.DataFrame:
    """One row per registration attempt as ``node`` saw it, with RFC 6076 RRD.

    An attempt is a run of REGISTER transactions on one Call-ID where every one but the last
    was challenged (401/407): a UA that re-registers on the same Call-ID starts a new attempt.

    Returns:
        Columns ``call_id, start, outcome, status, rrd_ms`` (RRD only for successes, RFC 6076
        §4.1: "RRD SHALL be measured and reported only for successful REGISTER requests").
    """
    requests, responses = _view(events, node, requests_dir)
    regs = requests[requests["method"] == "REGISTER"]
    cols = ["call_id", "start", "outcome", "status", "rrd_ms"]
    if regs.empty:
        frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
        return frame.astype({"call_id": "string", "outcome": "string", "status": "Int64"})
    sent = regs.groupby(["call_id", "cseq"])["t"].min().rename("sent")
    finals = responses[(responses["method"] == "REGISTER") & (responses["status"] >= 200)]
    final = finals.sort_values("t").groupby(["call_id", "cseq"]).head(1)
    final = final.set_index(["call_id", "cseq"])[["t", "status"]]
    tx = sent.to_frame().join(final, how="left").sort_index().reset_index()

    rows: list[tuple[str, float, str, object, float]] = []
    for call_id, group in tx.groupby("call_id", sort=False):
        begin: float | None = None
        for sent_t, t, st in zip(group["sent"], group["t"], group["status"], strict=True):
            begin = sent_t if begin is None else begin
            if pd.isna(st):
                rows.append((str(call_id), begin, "timeout", pd.NA, np.nan))
                begin = None
            elif int(st) in _CHALLENGES:
                continue  # the attempt goes on with the answered challenge
            elif 200 <= int(st) < 300:
                rows.append((str(call_id), begin, "success", int(st), (t - begin) * 1000.0))
                begin = None
            else:
                rows.append((str(call_id), begin, "failure", int(st), np.nan))
                begin = None
        if begin is not None:  # challenged, never answered again
            last = group.iloc[-1]
            rows.append((str(call_id), begin, "failure", int(last["status"]), np.nan))
    table = pd.DataFrame(rows, columns=cols).astype(
        {"call_id": "string", "start": "float64", "outcome": "string", "status": "Int64"}
    )
    table["rrd_ms"] = table["rrd_ms"].astype("float64")
    return table.sort_values("start", kind="stable").reset_index(drop=True)


# -- per-step aggregates -------------------------------------------------------------------------


def assign_step(times: pd.Series, steps: pd.DataFrame) -> pd.Series:
    """Step number of each time (``start <= t < end``), NA outside every step."""
    result = pd.Series(pd.NA, index=times.index, dtype="Int64")
    for step, start, end in zip(steps["step"], steps["start"], steps["end"], strict=True):
        result[(times >= start) & (times < end)] = step
    return result


def step_rates(attempts: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Offered vs achieved rates per step from a :func:`calls` or :func:`registrations` table.

    Returns:
        Columns ``step, kind, offered, duration_s, attempted, successful, failed, attempt_rate,
        success_rate, success_ratio`` (rates per second of the step's window).
    """
    tagged = attempts.assign(step=assign_step(attempts["start"], steps))
    grouped = tagged.dropna(subset=["step"]).groupby("step")
    counts = pd.DataFrame(
        {
            "attempted": grouped.size(),
            "successful": grouped["outcome"].agg(lambda s: int((s == "success").sum())),
        }
    )
    table = steps.set_index("step")[["kind", "offered", "start", "end"]].join(counts)
    table[["attempted", "successful"]] = (
        table[["attempted", "successful"]].fillna(0).astype("int64")
    )
    table["failed"] = table["attempted"] - table["successful"]
    table["duration_s"] = table["end"] - table["start"]
    table["attempt_rate"] = table["attempted"] / table["duration_s"]
    table["success_rate"] = table["successful"] / table["duration_s"]
    table["success_ratio"] = (table["successful"] / table["attempted"]).where(
        table["attempted"] > 0
    )
    cols = ["kind", "offered", "duration_s", "attempted", "successful", "failed"]
    cols += ["attempt_rate", "success_rate", "success_ratio"]
    return table[cols].reset_index()


def success_ratio(attempts: pd.DataFrame) -> float:
    """Successful / attempted over a whole :func:`calls` or :func:`registrations` table (NaN if empty)."""
    if attempts.empty:
        return float("nan")
    return float((attempts["outcome"] == "success").mean())


def delay_percentiles(
    attempts: pd.DataFrame,
    steps: pd.DataFrame | None = None,
    *,
    column: str = "srd_ms",
    quantiles: tuple[float, ...] = (0.5, 0.95, 0.99),
) -> pd.DataFrame:
    """p50/p95/p99 of ``column`` over successful attempts, per step when ``steps`` is given.

    Percentiles are nearest-rank ("lower" interpolation is not it; we use ``method="higher"`` on
    the sorted samples, which equals nearest rank for these quantiles), in milliseconds.

    Returns:
        Columns ``step`` (0 when no steps), ``count``, then ``p50``, ``p95``, ``p99``.
    """
    ok = attempts[(attempts["outcome"] == "success") & attempts[column].notna()]
    if steps is not None:
        ok = ok.assign(step=assign_step(ok["start"], steps)).dropna(subset=["step"])
    else:
        ok = ok.assign(step=pd.array([0] * len(ok), dtype="Int64"))
    names = [f"p{round(q * 100)}" for q in quantiles]
    rows = []
    for step, group in ok.groupby("step"):
        values = np.sort(group[column].to_numpy(dtype="float64"))
        ranks = [max(1, int(np.ceil(q * len(values)))) for q in quantiles]
        rows.append([int(step), len(values), *(values[r - 1] for r in ranks)])
    table = pd.DataFrame(rows, columns=["step", "count", *names])
    if steps is not None:
        table = steps[["step"]].astype("int64").merge(table, on="step", how="left")
        table["count"] = table["count"].fillna(0).astype("int64")
    return table


def failures_by_status(attempts: pd.DataFrame) -> pd.DataFrame:
    """Count of failed attempts per final status code (``status`` NA for timeouts)."""
    failed = attempts[attempts["outcome"] != "success"]
    counts = failed.groupby("status", dropna=False).size().rename("count").reset_index()
    return counts.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)


def _cause(outcome: str, status: object) -> str:
    if outcome == "timeout" or pd.isna(status):
        return "timeout"
    return f"{int(status) // 100}xx"  # type: ignore[call-overload]


def failures_by_cause(attempts: pd.DataFrame, steps: pd.DataFrame | None = None) -> pd.DataFrame:
    """Failed attempts per cause (timeout, 3xx, 4xx, 5xx, 6xx), per step when given.

    Returns:
        Columns ``step`` (0 without steps), ``cause``, ``count``.
    """
    failed = attempts[attempts["outcome"] != "success"]
    causes = [_cause(o, s) for o, s in zip(failed["outcome"], failed["status"], strict=True)]
    failed = failed.assign(cause=pd.array(causes, dtype="string"))
    if steps is not None:
        failed = failed.assign(step=assign_step(failed["start"], steps)).dropna(subset=["step"])
    else:
        failed = failed.assign(step=pd.array([0] * len(failed), dtype="Int64"))
    table = failed.groupby(["step", "cause"]).size().rename("count").reset_index()
    return table.astype({"step": "int64", "cause": "string", "count": "int64"})


def per_node_distribution(
    events: pd.DataFrame,
    *,
    router: str = "router",
    addresses: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Calls (distinct INVITE Call-IDs) per PBX node.

    With ``addresses`` (``"ip:port" -> node name``, as :meth:`lab.labfile.LabFile.addresses`),
    counted from the router's ``out`` INVITEs by peer; otherwise from the ``in`` INVITEs at every
    node other than the router.

    Returns:
        Columns ``node, calls, share`` (share of all calls, 0..1), busiest first.
    """
    sip = events[(events["event"] == "sip") & (events["method"] == "INVITE")]
    sip = sip[sip["status"].isna()]
    if addresses is not None:
        out = sip[(sip["node"] == router) & (sip["dir"] == "out")]
        names = out["peer"].map(lambda p: addresses.get(str(p), str(p)))
        picked = pd.DataFrame({"node": names.astype("string"), "call_id": out["call_id"]})
    else:
        inbound = sip[(sip["node"] != router) & (sip["dir"] == "in")]
        picked = inbound[["node", "call_id"]]
    counts = picked.groupby("node")["call_id"].nunique().rename("calls").reset_index()
    total = counts["calls"].sum()
    counts["share"] = counts["calls"] / total if total else 0.0
    counts = counts.sort_values(["calls", "node"], ascending=[False, True], kind="stable")
    return counts.astype({"node": "string", "calls": "int64"}).reset_index(drop=True)


def cpu_per_step(samples: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Mean CPU (percent of one core) and peak RSS per node and step.

    Returns:
        Columns ``step, offered, node, cpu, rss`` (``rss`` bytes, the step's maximum).
    """
    tagged = samples.assign(step=assign_step(samples["t"], steps)).dropna(subset=["step"])
    # a node with several processes (Kamailio workers): sum per sampling instant first
    per_t = tagged.groupby(["step", "node", "t"]).agg(cpu=("cpu", "sum"), rss=("rss", "sum"))
    table = per_t.groupby(["step", "node"]).agg(cpu=("cpu", "mean"), rss=("rss", "max"))
    table = table.reset_index().merge(steps[["step", "offered"]], on="step", how="left")
    table = table.astype({"step": "int64", "node": "string", "rss": "int64"})
    return table[["step", "offered", "node", "cpu", "rss"]]


def calls_per_core(rates: pd.DataFrame, cpu: pd.DataFrame) -> pd.DataFrame:
    """Established sessions per second per core of CPU used, per node and step.

    Args:
        rates: :func:`step_rates` output.
        cpu: :func:`cpu_per_step` output.

    Returns:
        Columns ``step, node, success_rate, cores, per_core`` (``per_core`` NaN when the node
        used no measurable CPU).
    """
    table = cpu.merge(rates[["step", "success_rate"]], on="step", how="inner")
    table["cores"] = table["cpu"] / 100.0
    table["per_core"] = (table["success_rate"] / table["cores"]).where(table["cores"] > 0.005)
    return table[["step", "node", "success_rate", "cores", "per_core"]]
