"""``siplab capacity --generators N``: each load step offered by N SIPp generators.

The same step as :class:`reports.capacity.SippEngine` (bounded SIPp UAC run, ``rate *
duration`` attempts), split over N generators by ``lab/generators.py``: each on its own address,
started together, their statistics merged (counts summed, percentiles over every sample). Each
generator's process is sampled as node ``sipp<i>``, so the report's bottleneck check names the
generator that saturated its core; the generators' own retransmission and rate warnings are kept
in :attr:`MultiSippEngine.warnings` (one list per step) and printed with the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.generators import Share, merge, run_generators, shares, split_injection
from lab.labfile import LabFile
from reports.search import StepResult

__all__ = ["MultiSippEngine"]


@dataclass(slots=True)
class MultiSippEngine:
    """N SIPp generators against the lab's router, one bounded run each per step."""

    scenario: str = "call"
    generators: int = 2
    service: str = "600"
    name: str = "sipp"
    warnings: list[list[str]] = field(default_factory=list)
    """Per step: the generators' saturation warnings (``lab.generators``)."""
    _count: int = 0

    @property
    def generator_names(self) -> tuple[str, ...]:
        return tuple(f"sipp{i + 1}" for i in range(self.generators))

    def step(
        self,
        lab: LabFile,
        rate: float,
        duration_s: float,
        *,
        workdir: Path,
        watch: Callable[[str, int], None],
    ) -> StepResult:
        from lab.engines import SippRun
        from lab.engines.sipp_scenarios import register_then_call, uac_call, uac_register

        router = next((n for n in lab.nodes if n.role == "router"), None)
        if router is None:
            raise RuntimeError("the lab has no router node")
        if self.scenario == "register":
            scenario = uac_register()
        elif self.scenario == "mixed":
            scenario = register_then_call()
        else:
            scenario = uac_call()
        self._count += 1
        calls = max(self.generators, math.ceil(rate * duration_s))
        load = shares(lab, rate, calls, self.generators)
        injections = (
            split_injection(Path(lab.users_csv), len(load), workdir)
            if scenario.needs_injection
            else []
        )

        def make_run(share: Share) -> SippRun:
            return SippRun(
                scenario=scenario,
                local_ip=share.host,
                remote=(router.host, router.port),
                rate=share.rate,
                max_calls=share.calls,
                timeout_s=duration_s + 15.0,
                injection=injections[share.index] if injections else None,
                service=self.service,
                name=f"step{self._count:02d}-gen{share.index + 1}",
                max_retrans=5,
            )

        runs = run_generators(lab, load, make_run, workdir, watch=watch)
        merged = merge(runs)
        self.warnings.append(list(merged["warnings"]))
        reasons = dict(merged["failed_by_reason"])
        if merged["unfinished"]:
            reasons["unfinished"] = merged["unfinished"]
        delays = merged["setup_delay_ms"]
        return StepResult(
            offered=rate,
            duration_s=max(duration_s, merged["elapsed_s"]),
            attempted=merged["attempted"],
            successful=merged["succeeded"],
            failed=merged["failed"] + merged["unfinished"],
            p50_ms=delays["p50"],
            p95_ms=delays["p95"],
            p99_ms=delays["p99"],
            retransmissions=merged["retransmissions"],
            failed_by_reason=reasons,
            kind="register" if self.scenario == "register" else "call",
        )
