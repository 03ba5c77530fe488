"""The knee search: the highest offered rate that still meets a service level.

RFC 7502 §4.9 finds the "Session Establishment Rate" by stepping the offered load and keeping the
highest rate with no failed session. We do the same with a configurable service level (a small
failure ratio instead of zero, a p95 setup-delay bound, a retransmission bound, and the load
generator actually reaching the offered rate) and a cheaper walk:

1. **ramp**: measure at ``start``, multiply by ``growth`` while the level is met; the first
   failing rate brackets the knee (or ``max_rate`` is reached: the knee lies above the range);
2. **bisect**: halve the bracket until it is narrower than the resolution;
3. **soak**: measure once more at the found rate with a longer step. If the soak fails, step
   down by one resolution (or ``backoff``) and soak again, a bounded number of times; a knee
   that only holds for short steps is not a capacity.

``measure`` is any function ``(rate, duration_s) -> StepResult``: the capacity driver runs SIPp
through it, tests pass synthetic response curves. Nothing here touches the clock or the network.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = [
    "Measure",
    "Phase",
    "SearchResult",
    "SearchStep",
    "ServiceLevel",
    "StepResult",
    "find_knee",
    "parse_service_level",
]


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one load step measured."""

    offered: float
    """Offered rate (RFC 7501 Session Attempt Rate), per second."""
    duration_s: float
    """Length of the step."""
    attempted: int
    """Sessions (or registrations) started."""
    successful: int
    """Sessions established (2xx) or registrations completed."""
    failed: int
    """Attempts that ended in failure or timed out."""
    p95_ms: float | None = None
    """95th percentile setup delay (SRD or RRD) of successful attempts, ms."""
    p50_ms: float | None = None
    """Median setup delay, ms."""
    p99_ms: float | None = None
    """99th percentile setup delay, ms."""
    retransmissions: int = 0
    """Retransmitted messages seen by the load generator."""
    failed_by_reason: Mapping[str, int] = field(default_factory=dict)
    """Failure counts by cause (``"timeout"``, ``"503"``, SIPp's reason names...)."""
    cpu: Mapping[str, float] = field(default_factory=dict)
    """Mean CPU per node during the step, percent of one core."""
    start: float = 0.0
    """Wall-clock start (unix seconds)."""
    kind: str = "call"
    """``"call"`` or ``"register"``."""

    @property
    def achieved(self) -> float:
        """Attempts actually started per second."""
        return self.attempted / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def established(self) -> float:
        """Successful attempts per second (the step's throughput)."""
        return self.successful / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def failure_ratio(self) -> float:
        """Failed / (successful + failed); 1.0 when nothing completed but attempts were made."""
        ended = self.successful + self.failed
        if ended == 0:
            return 1.0 if self.attempted else 0.0
        return self.failed / ended

    @property
    def retrans_per_call(self) -> float:
        return self.retransmissions / self.attempted if self.attempted else 0.0

    @property
    def end(self) -> float:
        return self.start + self.duration_s

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed_by_reason"] = dict(self.failed_by_reason)
        data["cpu"] = dict(self.cpu)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepResult:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    """The criterion a step must meet to count toward capacity."""

    max_failure_ratio: float = 0.001
    """Failed sessions / ended sessions; 0.001 = 0.1%."""
    max_p95_ms: float = 200.0
    """Bound on the p95 setup delay (SRD or RRD)."""
    max_retrans_per_call: float = 0.01
    """Retransmissions per attempted call."""
    min_achieved_ratio: float = 0.95
    """The generator must start at least this share of the offered attempts."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_failure_ratio < 1:
            raise ValueError("failures: must be within 0..100%")
        if self.max_p95_ms <= 0:
            raise ValueError("p95: must be positive")
        if self.max_retrans_per_call < 0:
            raise ValueError("retrans: must be >= 0")
        if not 0 < self.min_achieved_ratio <= 1:
            raise ValueError("achieved: must be within 0..100%")

    def check(self, step: StepResult) -> tuple[str, ...]:
        """Reasons the step misses the level; empty when it meets it."""
        reasons: list[str] = []
        if step.attempted == 0:
            return ("no attempt was made",)
        if step.failure_ratio > self.max_failure_ratio:
            reasons.append(f"failures {step.failure_ratio:.2%} > {self.max_failure_ratio:.2%}")
        if step.p95_ms is None or step.p95_ms > self.max_p95_ms:
            shown = "n/a" if step.p95_ms is None else f"{step.p95_ms:.0f} ms"
            reasons.append(f"p95 delay {shown} > {self.max_p95_ms:g} ms")
        if step.retrans_per_call > self.max_retrans_per_call:
            reasons.append(
                f"retransmissions {step.retrans_per_call:.3f}/call > {self.max_retrans_per_call:g}"
            )
        if step.offered > 0 and step.achieved < self.min_achieved_ratio * step.offered:
            reasons.append(
                f"achieved {step.achieved:.1f}/s < {self.min_achieved_ratio:.0%} of offered "
                f"{step.offered:g}/s"
            )
        return tuple(reasons)

    def describe(self) -> str:
        return (
            f"failed <= {self.max_failure_ratio:.2%}, p95 setup delay <= {self.max_p95_ms:g} ms, "
            f"retransmissions <= {self.max_retrans_per_call:g}/call, achieved >= "
            f"{self.min_achieved_ratio:.0%} of offered"
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


_LEVEL_FIELDS = {
    "failures": "max_failure_ratio",
    "p95": "max_p95_ms",
    "retrans": "max_retrans_per_call",
    "achieved": "min_achieved_ratio",
}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(%|ms|s)?\s*$", re.IGNORECASE)


def parse_service_level(text: str, base: ServiceLevel | None = None) -> ServiceLevel:
    """Parse ``"failures=0.1%,p95=200ms,retrans=0.01,achieved=95%"`` (any subset).

    Raises:
        ValueError: naming the bad field and why.
    """
    values = (base or ServiceLevel()).to_dict()
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in _LEVEL_FIELDS:
            raise ValueError(
                f"service level: {key or part!r}: unknown field (expected "
                f"{', '.join(f'{k}=...' for k in _LEVEL_FIELDS)})"
            )
        match = _NUMBER.match(raw)
        if match is None:
            raise ValueError(f"service level: {key}: {raw.strip()!r} is not a number")
        number, unit = float(match.group(1)), (match.group(2) or "").lower()
        if key == "p95":
            if unit == "%":
                raise ValueError("service level: p95: a delay takes ms or s, not %")
            number = number * 1000 if unit == "s" else number
        elif unit in ("ms", "s"):
            raise ValueError(f"service level: {key}: a ratio takes % or a plain number")
        elif unit == "%":
            number /= 100
        values[_LEVEL_FIELDS[key]] = number
    try:
        return ServiceLevel(**values)
    except ValueError as exc:
        raise ValueError(f"service level: {exc}") from None


class Measure(Protocol):
    def __call__(self, rate: float, *, duration_s: float) -> StepResult: ...


class Phase(enum.Enum):
    RAMP = "ramp"
    BISECT = "bisect"
    SOAK = "soak"


@dataclass(frozen=True, slots=True)
class SearchStep:
    """One measurement the search took, with its verdict."""

    phase: Phase
    result: StepResult
    reasons: tuple[str, ...]
    """Why the level was missed; empty: met."""

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "result": self.result.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchStep:
        return cls(
            phase=Phase(data["phase"]),
            result=StepResult.from_dict(data["result"]),
            reasons=tuple(data.get("reasons", ())),
        )


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Every step the search took, and the knee it settled on."""

    steps: tuple[SearchStep, ...]
    level: ServiceLevel
    knee: float | None
    """Highest offered rate meeting the level (confirmed by soak if ``confirmed``); None if none."""
    bracketed: bool
    """False when even ``max_rate`` met the level: the real knee is higher."""
    confirmed: bool
    """True when a soak at ``knee`` met the level."""
    resolution: float

    @property
    def knee_step(self) -> SearchStep | None:
        """The last passing step at the knee (the soak when there was one)."""
        for step in reversed(self.steps):
            if step.passed and self.knee is not None and step.result.offered == self.knee:
                return step
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "knee": self.knee,
            "bracketed": self.bracketed,
            "confirmed": self.confirmed,
            "resolution": self.resolution,
            "service_level": self.level.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        return cls(
            steps=tuple(SearchStep.from_dict(s) for s in data.get("steps", ())),
            level=ServiceLevel(**data.get("service_level", {})),
            knee=data.get("knee"),
            bracketed=bool(data.get("bracketed", False)),
            confirmed=bool(data.get("confirmed", False)),
            resolution=float(data.get("resolution", 0.0)),
        )


def find_knee(
    measure: Measure,
    level: ServiceLevel,
    *,
    start: float,
    max_rate: float,
    resolution: float,
    growth: float = 2.0,
    step_s: float = 10.0,
    soak_s: float | None = 60.0,
    soak_retries: int = 2,
    relative: float = 0.0,
    on_step: Callable[[SearchStep], None] | None = None,
) -> SearchResult:
    """Find the highest rate meeting ``level``: ramp, bisect to ``resolution``, soak.

    Args:
        measure: runs one step at an offered rate for ``duration_s`` seconds.
        level: the service level.
        start: first offered rate (> 0).
        max_rate: the ramp never offers more than this.
        resolution: bisection stops when the bracket is at most this wide (rate units).
        growth: ramp factor (> 1).
        step_s: duration of ramp and bisection steps.
        soak_s: duration of the confirming step; None skips the soak.
        soak_retries: how many times to step down by ``resolution`` after a failed soak.
        relative: also stop when the bracket is at most this share of its lower end (0.05 =
            5%), so one setting suits 20 and 5,000 calls/s.
        on_step: called after every measurement (live progress).

    Returns:
        The steps in order and the knee (None if not even the lowest rate tried met the level).
    """
    if not 0 < start <= max_rate:
        raise ValueError("need 0 < start <= max_rate")
    if resolution <= 0 or growth <= 1 or relative < 0:
        raise ValueError("need resolution > 0, growth > 1 and relative >= 0")
    steps: list[SearchStep] = []

    def run(phase: Phase, rate: float, duration: float) -> bool:
        result = measure(rate, duration_s=duration)
        step = SearchStep(phase, result, level.check(result))
        steps.append(step)
        if on_step is not None:
            on_step(step)
        return step.passed

    lo, hi = 0.0, None
    rate = start
    while True:
        if run(Phase.RAMP, rate, step_s):
            lo = rate
            if rate >= max_rate:
                break
            rate = min(rate * growth, max_rate)
        else:
            hi = rate
            break
    bracketed = hi is not None
    if hi is not None:
        while hi - lo > max(resolution, relative * lo):
            mid = _round_rate((lo + hi) / 2, resolution)
            if mid <= lo or mid >= hi:
                break
            if run(Phase.BISECT, mid, step_s):
                lo = mid
            else:
                hi = mid
    knee: float | None = lo if lo > 0 else None
    confirmed = False
    if knee is not None and soak_s is not None:
        # A failed soak steps down; if every retry fails, the short-step knee is kept but
        # reported unconfirmed (the report says so) rather than dropped.
        candidate = knee
        for attempt in range(soak_retries + 1):
            if run(Phase.SOAK, candidate, soak_s):
                knee, confirmed = candidate, True
                break
            lower = _round_rate(candidate - resolution, resolution)
            if attempt == soak_retries or lower <= 0:
                break
            candidate = lower
    return SearchResult(
        steps=tuple(steps),
        level=level,
        knee=knee,
        bracketed=bracketed,
        confirmed=confirmed,
        resolution=resolution,
    )


def _round_rate(rate: float, resolution: float) -> float:
    """Round to a tenth of the resolution so offered rates print cleanly."""
    quantum = 10 ** math.floor(math.log10(resolution / 10)) if resolution >= 0.1 else 0.01
    return round(round(rate / quantum) * quantum, 6)
