"""Shared helpers for router benchmarks: SIPp peers and the max-CPS step search.

A benchmark measures, never asserts: these helpers return numbers and the evidence (every
step's :class:`~lab.engines.SippResult` and its run folder).

The search (:func:`find_max_cps`) runs SIPp UAC steps of ``step_s`` seconds at a target rate.
A step passes when fewer than ``max_failure_ratio`` (default 0.1 %) of its calls failed, every
call it created ended, SIPp was not killed, and it kept at least ``min_rate_ratio`` of the
target rate (a saturated load generator is a failed step too: on a 2-core machine SIPp, the
router and the UAS share CPUs, so the figure is "what this box sustains", stated as such).
The target grows geometrically until a step fails, then bisects between the best pass and the
lowest failure until they are within ``resolution`` of each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.engines import SippProcess, SippResult, SippRun, run_sipp, start_sipp_uas, uac_call

__all__ = [
    "CapacitySearch",
    "CapacityStep",
    "MakeUacRun",
    "call_run_factory",
    "find_max_cps",
    "judge_step",
    "start_uas_pool",
    "stop_all",
]

MakeUacRun = Callable[[float, int, float], SippRun]
"""``(rate_cps, max_calls, timeout_s) -> SippRun`` for one search step."""


@dataclass(frozen=True, slots=True)
class CapacityStep:
    """One constant-rate step of the search."""

    target_cps: float
    """Rate asked of SIPp."""
    result: SippResult
    """What SIPp measured."""
    passed: bool
    """Whether the step met the criteria."""
    reason: str
    """Why it failed ("" when passed)."""


@dataclass(frozen=True, slots=True)
class CapacitySearch:
    """Outcome of :func:`find_max_cps`."""

    max_cps: float
    """Highest passing target (0 when even the first step failed)."""
    steps: tuple[CapacityStep, ...]
    """Every step, in order."""

    @property
    def best(self) -> CapacityStep | None:
        passing = [s for s in self.steps if s.passed and s.target_cps == self.max_cps]
        return passing[-1] if passing else None


def judge_step(
    result: SippResult,
    *,
    target_cps: float,
    expected_calls: int,
    max_failure_ratio: float = 0.001,
    min_rate_ratio: float = 0.9,
) -> tuple[bool, str]:
    """Pass/fail of one step and a short reason."""
    if result.killed:
        return False, "SIPp killed at its timeout"
    ended = result.successful + result.failed
    if ended < expected_calls:
        return False, f"only {ended}/{expected_calls} calls ended"
    if result.failure_ratio >= max_failure_ratio:
        reasons = ", ".join(f"{k}={v}" for k, v in result.failed_by_reason.items())
        return False, f"{result.failed} failed ({result.failure_ratio:.2%}) {reasons}".strip()
    if result.achieved_cps < min_rate_ratio * target_cps:
        return False, f"achieved {result.achieved_cps:.0f} cps < {min_rate_ratio:.0%} of target"
    return True, ""


def find_max_cps(
    start_target: float,
    make_uac_run: MakeUacRun,
    *,
    workdir: Path,
    step_s: float = 5.0,
    max_failure_ratio: float = 0.001,
    min_rate_ratio: float = 0.9,
    growth: float = 2.0,
    resolution: float = 0.1,
    max_steps: int = 12,
    max_target: float | None = None,
    settle_s: float = 1.0,
    on_step: Callable[[CapacityStep], None] | None = None,
) -> CapacitySearch:
    """Step search for the highest calls per second with < ``max_failure_ratio`` failures.

    Args:
        start_target: first rate tried (cps).
        make_uac_run: builds the SIPp run of a step (see :func:`call_run_factory`).
        workdir: each step writes to ``workdir/step_NN_<rate>cps``.
        step_s: duration of a step at constant rate (max calls = rate x step_s).
        growth: factor applied to the target while every step passes.
        resolution: stop when (lowest failure - best pass) / best pass < this.
        max_target: never ask more than this.
        settle_s: pause between steps so lingering calls and transactions drain.
        on_step: called after each step (progress printing).
    """
    if start_target <= 0 or growth <= 1 or step_s <= 0:
        raise ValueError("start_target > 0, growth > 1 and step_s > 0 are required")
    steps: list[CapacityStep] = []
    best: float | None = None
    worst: float | None = None
    target = start_target
    while len(steps) < max_steps:
        if max_target is not None:
            target = min(target, max_target)
        max_calls = max(1, round(target * step_s))
        run = make_uac_run(target, max_calls, step_s * 3 + 10)
        result = run_sipp(run, workdir / f"step_{len(steps):02d}_{target:.0f}cps")
        passed, reason = judge_step(
            result,
            target_cps=target,
            expected_calls=max_calls,
            max_failure_ratio=max_failure_ratio,
            min_rate_ratio=min_rate_ratio,
        )
        step = CapacityStep(target_cps=target, result=result, passed=passed, reason=reason)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if passed:
            best = target if best is None else max(best, target)
        else:
            worst = target if worst is None else min(worst, target)
        if worst is None:
            if max_target is not None and target >= max_target:
                break
            target *= growth
        elif best is None:
            target /= growth
            if target < 1:
                break
        else:
            if (worst - best) / best < resolution:
                break
            target = (best + worst) / 2
        time.sleep(settle_s)
    return CapacitySearch(max_cps=best or 0.0, steps=tuple(steps))


def call_run_factory(
    *,
    local_ip: str,
    remote: tuple[str, int],
    hold_ms: int = 0,
    max_concurrent: int | None = None,
) -> MakeUacRun:
    """A :data:`MakeUacRun` placing INVITE-ACK-(hold)-BYE calls at ``remote``."""
    scenario = uac_call(hold_ms)

    def make(rate: float, max_calls: int, timeout_s: float) -> SippRun:
        return SippRun(
            scenario=scenario,
            local_ip=local_ip,
            remote=remote,
            rate=rate,
            max_calls=max_calls,
            max_concurrent=max_concurrent,
            timeout_s=timeout_s,
        )

    return make


def start_uas_pool(
    ips: Sequence[str], port: int, workdir: Path, *, prefix: str = "uas"
) -> list[SippProcess]:
    """Start one SIPp UAS per address (all on ``port``); stops those started if one fails."""
    started: list[SippProcess] = []
    try:
        for n, ip in enumerate(ips, start=1):
            started.append(start_sipp_uas(ip, port, workdir, name=f"{prefix}{n}"))
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(processes: Sequence[SippProcess]) -> list[SippResult]:
    """Stop SIPp processes (reverse order) and return their final results in start order."""
    results = [p.stop() for p in reversed(processes)]
    return list(reversed(results))
