"""Knee search on synthetic response curves with a known knee (seeded noise)."""

from __future__ import annotations

import random

import pytest

from reports.search import (
    Phase,
    SearchResult,
    ServiceLevel,
    StepResult,
    find_knee,
    parse_service_level,
)


class Curve:
    """A system that holds up to ``knee`` calls/s, then fails a growing share of calls.

    Below the knee a few random failures and delay jitter appear (seeded), never enough to break
    the level further than ``fuzz`` below the knee.
    """

    def __init__(
        self, knee: float, *, seed: int, fuzz: float = 0.0, soak_knee: float | None = None
    ):
        self.knee = knee
        self.soak_knee = soak_knee if soak_knee is not None else knee
        self.fuzz = fuzz
        self.rng = random.Random(seed)
        self.calls: list[tuple[float, float]] = []

    def __call__(self, rate: float, *, duration_s: float) -> StepResult:
        self.calls.append((rate, duration_s))
        knee = self.soak_knee if duration_s > 10 else self.knee
        # within +-fuzz of the knee the verdict is a coin toss
        edge = knee + self.rng.uniform(-self.fuzz, self.fuzz)
        attempted = round(rate * duration_s)
        over = max(0.0, rate - edge)
        failed = round(attempted * min(1.0, over / rate * 2)) if over > 0 else 0
        delay = 5 + self.rng.random() * 3 + (400 if over > 0 else 0)
        return StepResult(
            offered=rate,
            duration_s=duration_s,
            attempted=attempted,
            successful=attempted - failed,
            failed=failed,
            p95_ms=delay,
            retransmissions=failed,
            start=float(len(self.calls)),
        )


LEVEL = ServiceLevel(max_failure_ratio=0.001, max_p95_ms=100.0, max_retrans_per_call=0.01)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("knee", [37.0, 250.0, 1234.0])
def test_find_knee_lands_within_resolution(seed: int, knee: float) -> None:
    resolution = knee / 20
    curve = Curve(knee, seed=seed, fuzz=resolution / 4)
    result = find_knee(
        curve, LEVEL, start=10, max_rate=10_000, resolution=resolution, step_s=5, soak_s=30
    )
    assert result.knee is not None, f"seed={seed}"
    assert abs(result.knee - knee) <= resolution, f"seed={seed} knee={result.knee}"
    assert result.bracketed
    assert result.confirmed
    phases = [s.phase for s in result.steps]
    assert phases[0] is Phase.RAMP
    assert phases[-1] is Phase.SOAK
    assert result.steps[-1].result.duration_s == 30
    assert len(result.steps) == len(curve.calls)  # every measurement is reported


def test_find_knee_soak_failure_steps_down() -> None:
    curve = Curve(100.0, seed=1, soak_knee=92.0)
    result = find_knee(
        curve, LEVEL, start=10, max_rate=1000, resolution=5, step_s=5, soak_s=60, soak_retries=3
    )
    soaks = [s for s in result.steps if s.phase is Phase.SOAK]
    assert [s.passed for s in soaks][-1] is True
    assert all(not s.passed for s in soaks[:-1])
    assert result.knee is not None
    assert result.knee <= 92.0
    assert result.confirmed


def test_find_knee_unconfirmed_keeps_short_step_knee() -> None:
    curve = Curve(100.0, seed=1, soak_knee=20.0)
    result = find_knee(
        curve, LEVEL, start=10, max_rate=1000, resolution=5, step_s=5, soak_retries=1
    )
    assert not result.confirmed
    assert result.knee is not None
    assert abs(result.knee - 100) <= 5


def test_find_knee_above_range_is_not_bracketed() -> None:
    curve = Curve(10_000.0, seed=2)
    result = find_knee(curve, LEVEL, start=10, max_rate=300, resolution=5, soak_s=None)
    assert not result.bracketed
    assert result.knee == 300
    assert [s.result.offered for s in result.steps] == [10, 20, 40, 80, 160, 300]


def test_find_knee_nothing_passes() -> None:
    curve = Curve(1.0, seed=3)
    result = find_knee(curve, LEVEL, start=10, max_rate=300, resolution=2, step_s=5)
    assert result.knee is None
    assert not result.confirmed
    assert all(not s.passed for s in result.steps)


def test_search_result_round_trips_through_dict() -> None:
    curve = Curve(50.0, seed=4)
    result = find_knee(curve, LEVEL, start=10, max_rate=300, resolution=5, step_s=5, soak_s=20)
    again = SearchResult.from_dict(result.to_dict())
    assert again == result


def test_service_level_check_reasons() -> None:
    step = StepResult(
        offered=100,
        duration_s=10,
        attempted=800,
        successful=790,
        failed=10,
        p95_ms=300,
        retransmissions=100,
    )
    reasons = LEVEL.check(step)
    assert any(r.startswith("failures") for r in reasons)
    assert any(r.startswith("p95 delay 300 ms") for r in reasons)
    assert any(r.startswith("retransmissions") for r in reasons)
    assert any(r.startswith("achieved 80.0/s") for r in reasons)
    assert (
        LEVEL.check(
            StepResult(offered=10, duration_s=1, attempted=10, successful=10, failed=0, p95_ms=5)
        )
        == ()
    )


def test_parse_service_level() -> None:
    level = parse_service_level("failures=0.5%, p95=0.3s,retrans=0.02,achieved=90%")
    assert level == ServiceLevel(0.005, 300.0, 0.02, 0.9)
    assert parse_service_level("p95=150ms").max_failure_ratio == 0.001
    with pytest.raises(ValueError, match="'latency': unknown field"):
        parse_service_level("latency=5ms")
    with pytest.raises(ValueError, match="p95: 'fast' is not a number"):
        parse_service_level("p95=fast")
    with pytest.raises(ValueError, match="failures: a ratio takes %"):
        parse_service_level("failures=5ms")
    with pytest.raises(ValueError, match="failures: must be within"):
        parse_service_level("failures=150%")
