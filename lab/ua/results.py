"""Typed results of the trio UA and of storm mode, and the delay statistics they carry.

Delays follow RFC 6076 ("Basic Telephony SIP End-to-End Performance Metrics"):

* RRD, Registration Request Delay (§4.1): "the time of the final response ... minus the time
  of the REGISTER request". When the registrar challenges, "the time of the REGISTER request"
  is the first, unauthenticated one: the digest round trip is part of what a phone waits for.
* SRD, Session Request Delay (§4.2): from the INVITE to the first "status indicative" response,
  a non-100 provisional (180, 183) or the final response. As for RRD we start the clock at the
  first INVITE, so a 407 challenge counts.

Percentiles use the nearest-rank method (no interpolation), so every reported value is a delay
that was really measured.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from router.sip import Contact, Request, Response

Address = tuple[str, int]
Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """One entry of ``UserAgent.messages``: everything the UA sent or received."""

    t: float
    """trio time (``trio.current_time()``) of the send or receive."""
    direction: Direction
    """"in" or "out"."""
    message: Request | Response | None
    """The parsed message; None for raw bytes that do not parse (``send_raw`` or junk in)."""
    data: bytes
    """The bytes on the wire."""
    peer: Address
    """Where it went to or came from."""
    retransmission: bool = False
    """A repeat: transaction retransmission, re-ACK, or 2xx retransmission."""
    dropped: bool = False
    """Outgoing only: suppressed by ``drop_acks`` / ``on_send`` (never put on the wire)."""


@dataclass(frozen=True, slots=True)
class RegisterResult:
    """What ``UserAgent.register`` learned."""

    status: int
    """Final status (408 synthesized when the transaction timed out)."""
    response: Response
    """The final response."""
    bindings: list[Contact]
    """The Contacts the registrar listed in a 2xx (§10.3 step 8: all current bindings)."""
    attempts: int
    """REGISTER requests sent (2 when challenged once)."""
    delay: float
    """RFC 6076 RRD in seconds, from the first REGISTER to the final response."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class UaStatistics:
    """Counters of one UA (trio-style ``statistics()``)."""

    sent: int
    """Messages put on the wire, retransmissions included."""
    received: int
    """Datagrams received (parsed or not)."""
    retransmissions_sent: int
    """Requests/responses/ACKs we sent again."""
    retransmissions_received: int
    """2xx to INVITE received again (the peer did not see our ACK)."""
    dropped_out: int
    """Outgoing messages suppressed by the ACK/``on_send`` hook."""
    unparsable_in: int
    """Received datagrams that did not parse."""


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class DelaySummary:
    """p50/p95/p99 (and mean, max) of a list of delays, seconds."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None

    @classmethod
    def of(cls, values: list[float]) -> DelaySummary:
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            mean=sum(values) / len(values) if values else None,
            max=max(values) if values else None,
        )


@dataclass(frozen=True, slots=True)
class StormProgress:
    """One tick of the live progress callback (about once per second)."""

    elapsed: float
    """Seconds since the storm started."""
    attempted: int
    succeeded: int
    failed: int
    retransmissions: int
    """Totals so far."""
    attempted_per_s: float
    succeeded_per_s: float
    failed_per_s: float
    retransmissions_per_s: float
    """Rates over the last tick."""
    in_flight: int
    """Operations started and not finished."""


@dataclass(slots=True)
class StormResult:
    """The outcome of ``run_storm``; ``to_json`` / ``write`` give the saved form."""

    scenario: str
    target: Address
    rate: float
    count: int
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    failures: Counter[int] = field(default_factory=Counter)
    """Failed operations by final status (408 for timeouts, 0 for errors without a status)."""
    retransmissions: int = 0
    """Retransmissions sent by every UA of the storm (Timers A/E, re-ACKs, 2xx repeats)."""
    duration: float = 0.0
    """Seconds from the first attempt to the last completion."""
    timed_out: bool = False
    """True when ``max_duration`` cut the storm short."""
    srd: list[float] = field(default_factory=list)
    """RFC 6076 SRD per call (seconds)."""
    rrd: list[float] = field(default_factory=list)
    """RFC 6076 RRD per registration (seconds)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target": f"{self.target[0]}:{self.target[1]}",
            "rate": self.rate,
            "count": self.count,
            "attempted": self.attempted,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failures_by_status": {str(k): v for k, v in sorted(self.failures.items())},
            "retransmissions": self.retransmissions,
            "duration": self.duration,
            "timed_out": self.timed_out,
            "srd": asdict(DelaySummary.of(self.srd)),
            "rrd": asdict(DelaySummary.of(self.rrd)),
        }

    def write(self, path: str | Path) -> Path:
        """Write ``to_json()`` to ``path`` (parents created); returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return out
