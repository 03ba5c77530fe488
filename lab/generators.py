"""Load from several generators: one offered rate split over N SIPp instances, one result.

One SIPp process is one core's worth of load generation at best; past that the generator, not
the router, is what a capacity test measures. ``siplab storm --generators N`` and ``siplab
capacity --generators N`` therefore split the offered rate and the call count over N SIPp
instances, each on an address of its own (the lab's generator addresses on loopback; in a netns
lab each generator is a host of its own: namespace ``sl<net>-gen<i>`` on ``10.<net>.0.(200+i)``
behind the lab bridge), start them together, and merge their statistics: counts add up, setup
delay percentiles come from every sample of every generator (not an average of percentiles).

Saturation. A generator that is itself the bottleneck makes the tier look worse than it is, so
each one is watched and a warning names it when

- its CPU (``utime + stime`` from ``/proc/<pid>/stat``, sampled while it runs) reaches
  :data:`CPU_LIMIT` of one core (SIPp is single-threaded),
- its own retransmissions exceed :data:`RETRANS_LIMIT` per call attempted, or
- it offered less than :data:`RATE_LIMIT` of its share of the rate.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.labfile import LabFile

if TYPE_CHECKING:
    from lab.engines import SippResult, SippRun

CPU_LIMIT = 0.85
"""Fraction of one core above which a generator is reported as saturated."""
RETRANS_LIMIT = 0.05
"""Retransmissions per attempted call above which a generator is reported."""
RATE_LIMIT = 0.9
"""Fraction of its rate share below which a generator is reported as not keeping up."""
FIRST_GENERATOR_OCTET = 200
"""netns mode: generator i (0-based) is 10.<net>.0.(200 + i)."""


@dataclass(frozen=True, slots=True)
class Share:
    """One generator's part of the load."""

    index: int
    host: str
    rate: float
    calls: int
    namespace: str = ""
    """netns lab: the generator's own namespace (empty on loopback)."""


def split_load(rate: float, calls: int, generators: int) -> list[tuple[float, int]]:
    """``(rate, calls)`` per generator: calls as even as integers allow, rate in proportion.

    Raises:
        ValueError: fewer calls than generators, or a non-positive value.
    """
    if generators < 1 or rate <= 0 or calls < 1:
        raise ValueError("--generators, --rate and --calls must be > 0")
    if calls < generators:
        raise ValueError(f"--calls {calls} is fewer than --generators {generators}")
    base, extra = divmod(calls, generators)
    counts = [base + (1 if i < extra else 0) for i in range(generators)]
    return [(rate * c / calls, c) for c in counts]


def shares(lab: LabFile, rate: float, calls: int, generators: int) -> list[Share]:
    """Where each generator runs and what it offers (module docstring for addresses)."""
    split = split_load(rate, calls, generators)
    network = lab.network
    if network.get("mode") == "netns":
        net = int(network["net"])
        if generators > 50:
            raise ValueError("--generators: at most 50 in a netns lab (10.N.0.200-249)")
        return [
            Share(i, f"10.{net}.0.{FIRST_GENERATOR_OCTET + i}", r, c, f"sl{net}-gen{i + 1}")
            for i, (r, c) in enumerate(split)
        ]
    from lab.topology import load_topology

    topology = load_topology(lab.topology)
    return [Share(i, topology.generator_host(i), r, c) for i, (r, c) in enumerate(split)]


@dataclass(slots=True)
class GeneratorRun:
    """One generator's process and what was seen of it."""

    share: Share
    handle: Any
    """The :class:`lab.engines.sipp.SippProcess`."""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    result: SippResult | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def cpu_share(self) -> float:
        """Fraction of one core used while it ran."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


@contextmanager
def _generator_host(share: Share, lab: LabFile) -> Iterator[None]:
    """netns lab: the generator's namespace exists while the block runs in it."""
    if not share.namespace:
        yield
        return
    from lab.netns import NetnsLab, entered

    net = NetnsLab(int(lab.network["net"]))
    node = share.namespace.removeprefix(net.prefix)
    if share.namespace in net.namespaces():
        net.remove_node(node)  # left by an earlier run that died
    net.add_node(node, share.host)
    try:
        with entered(share.namespace):  # SIPp forks from this thread: it starts in there
            yield
    except BaseException:
        net.remove_node(node)
        raise


def run_generators(
    lab: LabFile,
    load: list[Share],
    make_run: Callable[[Share], SippRun],
    workdir: Path,
    *,
    progress: Callable[[list[GeneratorRun], float], None] | None = None,
    watch: Callable[[str, int], None] | None = None,
    poll: float = 0.5,
) -> list[GeneratorRun]:
    """Start one SIPp per share together, sample their CPU, wait for all, parse all."""
    from lab.engines import start_sipp

    runs: list[GeneratorRun] = []
    try:
        for share in load:
            with _generator_host(share, lab):
                handle = start_sipp(make_run(share), workdir / f"gen{share.index + 1}")
            runs.append(GeneratorRun(share, handle))
            if watch is not None:
                watch(f"sipp{share.index + 1}", handle.pid)
        started = time.monotonic()
        while any(r.handle.is_running() for r in runs):
            for r in runs:
                used = cpu_seconds(r.handle.pid)
                if used is not None and r.handle.is_running():
                    r.cpu_s, r.wall_s = used, time.monotonic() - started
            if progress is not None:
                progress(runs, time.monotonic() - started)
            time.sleep(poll)
        for r in runs:
            r.result = r.handle.wait()
            r.warnings = saturation_warnings(r)
    finally:
        for r in runs:
            r.handle.stop(grace=1.0)
        _remove_namespaces(lab, load)
    return runs


def _remove_namespaces(lab: LabFile, load: list[Share]) -> None:
    if not any(s.namespace for s in load):
        return
    from lab.netns import NetnsLab

    net = NetnsLab(int(lab.network["net"]))
    existing = set(net.namespaces())
    for share in load:
        if share.namespace in existing:
            net.remove_node(share.namespace.removeprefix(net.prefix))


def saturation_warnings(run: GeneratorRun) -> list[str]:
    """Why ``run``'s generator may have been the bottleneck (module docstring)."""
    s, r = run.share, run.result
    who = f"generator {s.index + 1} ({s.host})"
    warnings = []
    if run.cpu_share >= CPU_LIMIT:
        warnings.append(
            f"{who}: SIPp used {run.cpu_share:.0%} of a core: the generator may be the "
            "bottleneck (add generators, or hosts)"
        )
    if r is not None and r.calls_created:
        per_call = r.retransmissions / r.calls_created
        if per_call > RETRANS_LIMIT:
            warnings.append(
                f"{who}: {r.retransmissions} retransmissions for {r.calls_created} calls "
                f"({per_call:.2f} per call): its messages or their answers are late or lost"
            )
        if r.elapsed_s > 0 and r.calls_created < s.calls:
            achieved = r.calls_created / r.elapsed_s
            if achieved < RATE_LIMIT * s.rate:
                warnings.append(
                    f"{who}: offered {achieved:.1f}/s of its {s.rate:.1f}/s share "
                    f"({r.calls_created} of {s.calls} calls)"
                )
    return warnings


def percentile(samples: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of sorted ``samples``."""
    return samples[max(1, math.ceil(q * len(samples))) - 1] if samples else None


def merge(runs: list[GeneratorRun]) -> dict[str, Any]:
    """One result for every generator: sums, merged reasons, percentiles over all samples."""
    results = [r.result for r in runs if r.result is not None]
    delays = sorted(d for res in results for d in res.setup_delays_ms)
    reasons: Counter[str] = Counter()
    for res in results:
        reasons.update(res.failed_by_reason)
    return {
        "engine": "sipp",
        "generators": [
            {
                "index": r.share.index + 1,
                "host": r.share.host,
                "namespace": r.share.namespace,
                "rate": round(r.share.rate, 3),
                "calls": r.share.calls,
                "attempted": r.result.calls_created if r.result else 0,
                "succeeded": r.result.successful if r.result else 0,
                "failed": r.result.failed if r.result else 0,
                "retransmissions": r.result.retransmissions if r.result else 0,
                "cpu": round(r.cpu_share, 3),
                "warnings": r.warnings,
            }
            for r in runs
        ],
        "attempted": sum(res.calls_created for res in results),
        "succeeded": sum(res.successful for res in results),
        "failed": sum(res.failed for res in results),
        "unfinished": sum(res.current_calls for res in results),
        "failed_by_reason": dict(reasons),
        "retransmissions": sum(res.retransmissions for res in results),
        "setup_delay_ms": {f"p{q}": percentile(delays, q / 100) for q in (50, 95, 99)},
        "elapsed_s": max((res.elapsed_s for res in results), default=0.0),
        "warnings": [w for r in runs for w in r.warnings],
    }


def split_injection(csv_path: Path, parts: int, workdir: Path) -> list[Path]:
    """SIPp injection file split round-robin in ``parts`` (each generator its own users)."""
    lines = csv_path.read_text().splitlines()
    header, rows = lines[:1], lines[1:]
    paths = []
    for i in range(parts):
        path = workdir / f"users-gen{i + 1}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(header + rows[i::parts]) + "\n")
        paths.append(path)
    return paths


__all__ = [
    "CPU_LIMIT",
    "RATE_LIMIT",
    "RETRANS_LIMIT",
    "GeneratorRun",
    "Share",
    "cpu_seconds",
    "merge",
    "percentile",
    "run_generators",
    "saturation_warnings",
    "shares",
    "split_injection",
    "split_load",
]
