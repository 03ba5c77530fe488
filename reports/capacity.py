"""The capacity driver: bring a lab up, search for the knee with SIPp, sample CPU, report.

``run_capacity(lab_factory, engine, config, out_dir)`` is the whole pipeline with its two
effects passed in:

- ``lab_factory(run_dir)`` is a context manager yielding the running lab's
  :class:`~lab.labfile.LabFile` (:func:`local_lab` brings up the default topology with the local
  backend; tests pass a fake);
- ``engine`` runs one load step and returns a :class:`~reports.search.StepResult`
  (:class:`SippEngine` drives SIPp against the router; tests pass a synthetic curve).

Everything the run produced lands in ``out_dir``: the lab's own files (``lab.json``,
``events.jsonl``, ``logs/``), ``sipp/step-NN/`` per step, ``samples.csv``, ``capacity.json``,
then the report (``plots/``, ``summary.json``, ``report.html``) built from those files alone, so
``python -m reports.build`` rebuilds exactly the same report later.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from lab.labfile import LabFile
from reports.build import build_report
from reports.environment import hardware, versions
from reports.sampling import ProcessSampler, bottleneck_warnings
from reports.search import SearchStep, ServiceLevel, StepResult, find_knee

__all__ = [
    "CapacityConfig",
    "LabFactory",
    "SippEngine",
    "TrafficEngine",
    "format_step",
    "local_lab",
    "run_capacity",
]

Scenario = Literal["call", "register", "mixed"]
RouterKind = Literal["reference", "kamailio"]
LabFactory = Callable[[Path], AbstractContextManager[LabFile]]


class TrafficEngine(Protocol):
    """Runs one load step against a running lab."""

    name: str
    """Node name its processes are sampled under (``"sipp"``)."""

    def step(
        self,
        lab: LabFile,
        rate: float,
        duration_s: float,
        *,
        workdir: Path,
        watch: Callable[[str, int], None],
    ) -> StepResult:
        """Offer ``rate`` per second for ``duration_s``; call ``watch(name, pid)`` for every
        process it starts, so its CPU is sampled."""
        ...


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    """What ``siplab capacity`` was asked to do; every field lands in ``capacity.json``."""

    scenario: Scenario = "call"
    router: RouterKind = "reference"
    pbx: int = 3
    """PBX nodes in the lab."""
    pbx_kind: str = "emulator"
    """``emulator`` (local backend) or ``asterisk`` (real Asterisk 22 containers)."""
    quick: bool = False
    """Short steps and coarse resolution: a useful answer in about a minute."""
    level: ServiceLevel = field(default_factory=ServiceLevel)
    target: str | None = None
    """Sizing target profile, e.g. ``"cps=300,users=50000,reregister=600s"``."""
    headroom: float = 0.3
    start: float | None = None
    max_rate: float | None = None
    resolution: float | None = None
    step_s: float | None = None
    soak_s: float | None = None

    def search_parameters(self) -> dict[str, float]:
        """The search's effective parameters: explicit values, else quick/full defaults."""
        defaults = (
            {
                "start": 25.0,
                "max_rate": 3200.0,
                "resolution": 10.0,
                "relative": 0.15,
                "step_s": 3.0,
                "soak_s": 8.0,
                "growth": 2.0,
            }
            if self.quick
            else {
                "start": 25.0,
                "max_rate": 20000.0,
                "resolution": 5.0,
                "relative": 0.03,
                "step_s": 10.0,
                "soak_s": 60.0,
                "growth": 2.0,
            }
        )
        for name in ("start", "max_rate", "resolution", "step_s", "soak_s"):
            value = getattr(self, name)
            if value is not None:
                defaults[name] = float(value)
        return defaults

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["level"] = self.level.to_dict()
        data["search"] = self.search_parameters()
        return data


# -- SIPp -------------------------------------------------------------------------------------


@dataclass(slots=True)
class SippEngine:
    """SIPp UAC against the lab's router: one bounded SIPp run per step."""

    scenario: Scenario = "call"
    local_ip: str = "127.0.0.120"
    """The generator's own loopback address (after fault relays, see ``lab.topology``)."""
    service: str = "600"
    """Request-URI user of the ``call`` scenario: the emulator's dialplan answers 600 itself
    (``Answer()``, then waits for the BYE), so no registered phone is needed."""
    name: str = "sipp"
    _count: int = 0

    def step(
        self,
        lab: LabFile,
        rate: float,
        duration_s: float,
        *,
        workdir: Path,
        watch: Callable[[str, int], None],
    ) -> StepResult:
        from lab.engines import SippRun, start_sipp
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
        run = SippRun(
            scenario=scenario,
            local_ip=self.local_ip,
            remote=(router.host, router.port),
            rate=rate,
            max_calls=max(1, math.ceil(rate * duration_s)),
            timeout_s=duration_s + 15.0,
            injection=Path(lab.users_csv) if scenario.needs_injection else None,
            service=self.service,
            name=f"step{self._count:02d}",
            max_retrans=5,
        )
        handle = start_sipp(run, workdir)
        watch(self.name, handle.pid)
        result = handle.wait()
        handle.stop(grace=1.0)
        delays = sorted(result.setup_delays_ms)

        def pct(q: float) -> float | None:
            return delays[max(1, math.ceil(q * len(delays))) - 1] if delays else None

        reasons = dict(result.failed_by_reason)
        if result.current_calls:
            reasons["unfinished"] = result.current_calls
        return StepResult(
            offered=rate,
            duration_s=max(duration_s, result.elapsed_s),
            attempted=result.calls_created,
            successful=result.successful,
            failed=result.failed + result.current_calls,
            p50_ms=pct(0.50),
            p95_ms=pct(0.95),
            p99_ms=pct(0.99),
            retransmissions=result.retransmissions,
            failed_by_reason=reasons,
            kind="register" if self.scenario == "register" else "call",
        )


@contextmanager
def _local_lab(run_dir: Path, router: RouterKind, pbx: int, net: int) -> Iterator[LabFile]:
    from lab.backends import get_backend
    from lab.topology import default_topology

    topology = default_topology(pbx=pbx)
    topology = replace(
        topology, router=replace(topology.router, kind=router), evidence_mb=EVIDENCE_MB, net=net
    )
    backend = get_backend("local")
    lab = backend.up(topology, run_dir)
    try:
        yield lab
    finally:
        backend.down(lab)  # stops the capture (ring merged) and merges the nodes' events
        record_evidence(run_dir)


EVIDENCE_MB = 160
"""A capacity run keeps at most 160 MB of packet capture: the last 80 MB (a ring buffer) and up
to 80 MB of earlier ring files that held failed calls (``lab/capture.py``); no node writes
an event log (the router's would be measured as capacity, and a line per message outgrows any
bound). Ladders: of the failed calls in the kept capture, at most :data:`MAX_LADDERS`;
the per-step figures come from the load generator."""
MAX_LADDERS = 100


def record_evidence(run_dir: Path) -> dict[str, object]:
    """Write the failed calls' ladders of the capture window and ``evidence.json`` (what the
    run kept and how big it is, shown by the report)."""
    from lab.capture import read_state
    from lab.evidence import failed_calls, run_packets, write_ladders

    packets = run_packets(run_dir)
    failed = failed_calls(packets)
    lab = json.loads((run_dir / "lab.json").read_text(encoding="utf-8"))
    router = {n["host"] for n in lab.get("nodes", []) if n.get("role") == "router"}
    pbx = {f"{n['host']}:{n['port']}": n["name"] for n in lab["nodes"] if n.get("role") == "pbx"}
    calls: dict[str, set[str]] = {name: set() for name in pbx.values()}
    for p in packets:  # calls the router dispatched to each node, in the capture's window
        sent = p.method == "INVITE" and p.is_request and p.src.rpartition(":")[0] in router
        if sent and p.dst in pbx and p.call_id:
            calls[pbx[p.dst]].add(p.call_id)
    ladders = write_ladders(run_dir, failed[:MAX_LADDERS], packets=packets)
    state = read_state(run_dir)
    pcap = run_dir / "capture.pcap"
    events = run_dir / "events.jsonl"
    info: dict[str, object] = {
        "capture_bound_mb": (state.ring_mb * state.ring_files + state.keep_mb) if state else None,
        "capture_bytes": pcap.stat().st_size if pcap.exists() else 0,
        "capture_window_s": round(packets[-1].t - packets[0].t, 1) if packets else 0.0,
        "capture_cpu_s": state.cpu_s if state else None,
        "capture_dropped": state.dropped if state else None,
        "events_bytes": events.stat().st_size if events.exists() else 0,
        "failed_calls_in_window": len(failed),
        "ladders": len(ladders),
        "window_distribution": {name: len(ids) for name, ids in calls.items()},
    }
    (run_dir / "evidence.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


@contextmanager
def _asterisk_lab(run_dir: Path, router: RouterKind, pbx: int, net: int) -> Iterator[LabFile]:
    from lab.docker.backend import DockerBackend
    from lab.topology import default_topology

    topology = default_topology(pbx=pbx, kind="asterisk")
    topology = replace(
        topology, router=replace(topology.router, kind=router), evidence_mb=EVIDENCE_MB, net=net
    )
    backend = DockerBackend()
    lab = backend.up(topology, run_dir)
    try:
        yield lab
    finally:
        backend.down(lab)  # stops the capture (ring merged)
        record_evidence(run_dir)


def asterisk_lab(*, router: RouterKind = "reference", pbx: int = 3, net: int = 0) -> LabFactory:
    """The default topology with real Asterisk 22 containers (docker backend, PostgreSQL)."""
    return lambda run_dir: _asterisk_lab(run_dir, router, pbx, net)


def node_pids(lab: LabFile) -> dict[str, list[int]]:
    """The process to sample per node: its pid, or a container's main process as the host sees
    it (host networking, shared PID view; the sampler follows its children: Asterisk's threads
    and the entrypoint's ``exec asterisk``)."""
    pids = {n.name: [n.pid] for n in lab.nodes if n.pid}
    containers = {n.name: n.container for n in lab.nodes if n.container and not n.pid}
    if containers:
        from lab.docker.base_image import docker_client

        client = docker_client()
        try:
            for name, cid in containers.items():
                pid = int(client.containers.get(cid).attrs["State"]["Pid"] or 0)
                if pid:
                    pids[name] = [pid]
        finally:
            client.close()
    return pids


def local_lab(*, router: RouterKind = "reference", pbx: int = 3, net: int = 0) -> LabFactory:
    """A lab factory for the default topology on the local backend (addresses 127.net.0.x)."""
    return lambda run_dir: _local_lab(run_dir, router, pbx, net)


# -- the pipeline -------------------------------------------------------------------------------


def format_step(number: int, step: SearchStep, *, generators: tuple[str, ...] = ("sipp",)) -> str:
    """One live progress line."""
    r = step.result
    p95 = f"{r.p95_ms:.0f}" if r.p95_ms is not None else "-"
    cpu = " ".join(f"{k} {v:.0f}%" for k, v in sorted(r.cpu.items()))
    verdict = "PASS" if step.passed else "FAIL: " + "; ".join(step.reasons)
    line = (
        f"[{number:2d}] {step.phase.value:<6} offered {r.offered:8.1f}/s  achieved "
        f"{r.achieved:8.1f}/s  ok {r.established:8.1f}/s  fail {r.failure_ratio:6.2%}  "
        f"p95 {p95:>5} ms  {cpu}  {verdict}"
    )
    warnings = bottleneck_warnings(
        offered=r.offered, achieved=r.achieved, cpu=r.cpu, generators=generators
    )
    return "\n".join([line, *(f"     warning: {w}" for w in warnings)])


def run_capacity(
    lab_factory: LabFactory,
    engine: TrafficEngine,
    config: CapacityConfig,
    out_dir: Path,
    *,
    progress: Callable[[str], None] = print,
    compare: Path | None = None,
    clock: Callable[[], float] = time.time,
    sample_interval: float = 0.5,
) -> Path:
    """Run the capacity search in a fresh lab and write the run folder; returns report.html.

    Args:
        lab_factory: brings the lab up in ``out_dir`` and down on exit.
        engine: runs the load steps.
        config: scenario, service level, search parameters, sizing target.
        out_dir: the run folder (created).
        progress: receives one line per step as it ends.
        compare: a previous run folder to compare against in the report.
        clock: wall-clock time (unix seconds), shared with the sampler so windows line up.
        sample_interval: seconds between CPU samples.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = config.search_parameters()
    environment = {"hardware": hardware(), "versions": versions()}
    progress(
        f"capacity: {config.scenario} through {config.router}, {config.pbx} PBX nodes; "
        f"service level: {config.level.describe()}"
    )
    started = clock()
    with lab_factory(out_dir) as lab:
        nodes = node_pids(lab)
        progress(f"lab up: {', '.join(sorted(nodes))}")
        sampler = ProcessSampler(nodes, interval=sample_interval, clock=clock)
        count = 0

        def measure(rate: float, *, duration_s: float) -> StepResult:
            nonlocal count
            count += 1
            begin = clock()
            result = engine.step(
                lab,
                rate,
                duration_s,
                workdir=out_dir / "sipp" / f"step-{count:02d}",
                watch=sampler.watch,
            )
            end = clock()
            sampler.sample()
            table = sampler.table()
            window = table[(table["t"] > begin) & (table["t"] <= end + sample_interval)]
            per_t = window.groupby(["node", "t"])["cpu"].sum()
            cpu = {str(k): round(float(v), 1) for k, v in per_t.groupby("node").mean().items()}
            return replace(result, start=begin, cpu=cpu)

        generators = tuple(getattr(engine, "generator_names", (engine.name,)))

        def on_step(step: SearchStep) -> None:
            progress(format_step(count, step, generators=generators))
            for warning in (getattr(engine, "warnings", None) or [[]])[-1]:
                progress(f"     warning: {warning}")

        with sampler:
            result = find_knee(
                measure,
                config.level,
                start=params["start"],
                max_rate=params["max_rate"],
                resolution=params["resolution"],
                relative=params["relative"],
                growth=params["growth"],
                step_s=params["step_s"],
                soak_s=params["soak_s"],
                on_step=on_step,
            )
        samples = sampler.table()
    samples.to_csv(out_dir / "samples.csv", index=False)
    record = {
        "version": 1,
        "scenario": config.scenario,
        "router": config.router,
        "pbx_kind": config.pbx_kind,  # the sizing verdict names the kind of node it measured
        "quick": config.quick,
        "target": config.target,
        "headroom": config.headroom,
        "started": started,
        "finished": clock(),
        "generators": list(generators),
        "vantage": {"node": "router", "requests_dir": "in"},
        "config": config.to_dict(),
        **environment,
        "search": result.to_dict(),
    }
    (out_dir / "capacity.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    report = build_report(out_dir, compare=compare)
    knee = "none" if result.knee is None else f"{result.knee:g}/s"
    progress(f"knee: {knee} ({'confirmed' if result.confirmed else 'not confirmed'}); {report}")
    return report
