"""Typed results parsed from the files SIPp writes (stat CSV, counts CSV, rtt CSV, error log).

SIPp's stat file (``sipp -h stat``) has one header row naming counters, where ``(P)`` means
periodic and ``(C)`` cumulative, then one row per ``-fd`` period plus a final row at exit. Dates
are ``YYYY-MM-DD<TAB>HH:MM:SS.micro<TAB>epoch``; durations ``HH:MM:SS:micro``. We read the last
row's cumulative columns. The rtt file holds ``Date_ms;response_time_ms;rtd_no`` rows; the counts
file ``<index>_<message>_<Sent|Recv|Retrans|Timeout|Unexp>`` columns.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SippResult", "parse_result", "percentile"]

_FAILED_PREFIX = "Failed"


def percentile(samples: tuple[float, ...], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``samples``; None when empty."""
    if not samples:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class SippResult:
    """What one SIPp process did, from its own statistics."""

    name: str
    """File stem of the run."""
    exit_code: int | None
    """SIPp's exit code (None if still running when parsed)."""
    killed: bool
    """True when the runner had to kill SIPp past its timeout."""
    stats_rows: int
    """Data rows in the stat CSV (0: SIPp died before its first dump)."""
    calls_created: int
    """``TotalCallCreated``."""
    incoming_calls: int
    """``IncomingCall(C)`` (UAS side)."""
    outgoing_calls: int
    """``OutgoingCall(C)`` (UAC side)."""
    successful: int
    """``SuccessfulCall(C)``."""
    failed: int
    """``FailedCall(C)``: all reasons."""
    failed_by_reason: dict[str, int]
    """Non-zero ``Failed<Reason>(C)`` counters, e.g. ``{"MaxUDPRetrans": 3}``."""
    current_calls: int
    """Calls still open at the last dump."""
    retransmissions: int
    """``Retransmissions(C)``."""
    out_of_call_msgs: int
    """Messages matching no call."""
    dead_call_msgs: int
    """Messages for calls already ended."""
    elapsed_s: float
    """From SIPp's start to its last statistics row."""
    rtt_avg_ms: float | None
    """Average Response Time 1 (call setup delay) from the stat file."""
    rtt_histogram: tuple[tuple[int | None, int], ...]
    """``(upper bound ms, count)`` buckets; bound None means ``>=`` the last bound."""
    setup_delays_ms: tuple[float, ...]
    """Every Response Time 1 sample from the rtt file (1 ms resolution)."""
    message_counts: dict[str, int] = field(default_factory=dict)
    """The counts CSV's last row: ``"<index>_<message>_<what>" -> count``."""
    errors: tuple[str, ...] = ()
    """First lines of SIPp's error log."""
    workdir: Path | None = None
    """Folder holding the raw files."""

    @property
    def failure_ratio(self) -> float:
        """Failed / (successful + failed); 0 when no call ended."""
        ended = self.successful + self.failed
        return self.failed / ended if ended else 0.0

    @property
    def achieved_cps(self) -> float:
        """Calls created per second of run time."""
        return self.calls_created / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def setup_delay_ms(self, q: float) -> float | None:
        """Percentile ``q`` of per-call setup delay (None without samples)."""
        return percentile(self.setup_delays_ms, q)

    @property
    def p50_ms(self) -> float | None:
        return self.setup_delay_ms(50)

    @property
    def p95_ms(self) -> float | None:
        return self.setup_delay_ms(95)

    @property
    def p99_ms(self) -> float | None:
        return self.setup_delay_ms(99)

    def count(self, message: str, what: str = "Recv") -> int:
        """Sum of ``what`` (Sent/Recv/Retrans/Timeout/Unexp) over scenario elements ``message``.

        For a UAS, ``count("INVITE")`` is the number of calls it was offered.
        """
        total = 0
        for key, value in self.message_counts.items():
            parts = key.split("_")
            if len(parts) >= 3 and parts[1] == message and parts[-1] == what:
                total += value
        return total


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def _duration_s(value: str) -> float | None:
    """``HH:MM:SS:micro`` (or ``HH:MM:SS``) to seconds."""
    parts = value.strip().split(":")
    try:
        if len(parts) == 4:
            h, m, s, us = (int(p) for p in parts)
            return h * 3600 + m * 60 + s + us / 1e6
        if len(parts) == 3:
            h, m, s = (int(p) for p in parts)
            return float(h * 3600 + m * 60 + s)
    except ValueError:
        return None
    return None


def _epoch(value: str) -> float | None:
    try:
        return float(value.split("\t")[-1])
    except ValueError:
        return None


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        rows = [row for row in csv.reader(fh, delimiter=";") if row]
    if not rows:
        return [], []
    return rows[0], rows[1:]


def _latest(folder: Path, pattern: str) -> Path | None:
    matches = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    return matches[-1] if matches else None


def _histogram(row: dict[str, str]) -> tuple[tuple[int | None, int], ...]:
    buckets: list[tuple[int | None, int]] = []
    for key, value in row.items():
        if not key.startswith("ResponseTimeRepartition1_"):
            continue
        bound = key.removeprefix("ResponseTimeRepartition1_")
        if bound.startswith("<"):
            buckets.append((int(bound[1:]), _int(value)))
        elif bound.startswith(">="):
            buckets.append((None, _int(value)))
    return tuple(buckets)


def parse_result(
    folder: Path, stem: str, *, pid: int | None, exit_code: int | None, killed: bool = False
) -> SippResult:
    """Read ``<stem>_stat.csv`` (+ counts, rtt, errors files) in ``folder``.

    Files named by SIPp after its PID are looked up with that ``pid`` when given.
    """
    header: list[str] = []
    rows: list[list[str]] = []
    stat = folder / f"{stem}_stat.csv"
    if stat.exists():
        header, rows = _read_rows(stat)
    last: dict[str, str] = dict(zip(header, rows[-1], strict=False)) if rows else {}

    def c(name: str) -> int:
        return _int(last.get(f"{name}(C)", "0"))

    reasons = {
        key[len(_FAILED_PREFIX) : -3]: _int(value)
        for key, value in last.items()
        if key.startswith(_FAILED_PREFIX) and key.endswith("(C)") and key != "FailedCall(C)"
        if _int(value)
    }
    start, now = _epoch(last.get("StartTime", "")), _epoch(last.get("CurrentTime", ""))
    elapsed = now - start if start is not None and now is not None else 0.0
    rtt_avg = _duration_s(last.get("ResponseTime1(C)", ""))

    tag = f"_{pid}" if pid is not None else "_*"
    delays: list[float] = []
    rtt = _latest(folder, f"{stem}{tag}_rtt.csv")
    if rtt is not None:
        _, rtt_rows = _read_rows(rtt)
        delays.extend(float(r[1]) for r in rtt_rows if len(r) >= 3 and r[2].strip() == "1")

    counts: dict[str, int] = {}
    counts_file = _latest(folder, f"{stem}{tag}_counts.csv")
    if counts_file is not None:
        c_header, c_rows = _read_rows(counts_file)
        if c_rows:
            counts = {
                k: _int(v)
                for k, v in zip(c_header, c_rows[-1], strict=False)
                if k and k[0].isdigit()
            }

    errors: tuple[str, ...] = ()
    err = folder / f"{stem}_errors.log"
    if err.exists():
        errors = tuple(err.read_text(errors="replace").splitlines()[:50])

    return SippResult(
        name=stem,
        exit_code=exit_code,
        killed=killed,
        stats_rows=len(rows),
        calls_created=_int(last.get("TotalCallCreated", "0")),
        incoming_calls=c("IncomingCall"),
        outgoing_calls=c("OutgoingCall"),
        successful=c("SuccessfulCall"),
        failed=c("FailedCall"),
        failed_by_reason=reasons,
        current_calls=_int(last.get("CurrentCall", "0")),
        retransmissions=c("Retransmissions"),
        out_of_call_msgs=c("OutOfCallMsgs"),
        dead_call_msgs=c("DeadCallMsgs"),
        elapsed_s=elapsed,
        rtt_avg_ms=rtt_avg * 1000 if rtt_avg is not None else None,
        rtt_histogram=_histogram(last),
        setup_delays_ms=tuple(delays),
        message_counts=counts,
        errors=errors,
        workdir=folder,
    )
