"""The measurement harness of ``../shared/docs/PERFORMANCE.md``, shared by the router benchmarks.

How a figure is obtained (so that it reproduces Kamailio's published one before we compare):

- Pinning: the router under test alone on CPU :data:`ROUTER_CPU` (``taskset -c 1``), the SIPp
  UAC and both SIPp UAS on CPU :data:`LOAD_CPU`. Unpinned, the scheduler puts SIPp and the
  router on one core at random and figures move by 2x from run to run.
- Constant-rate steps (``-r R -m R*step_s``, ``-l`` at least 10 x R). A step passes when every
  call placed completed (SIPp's SuccessfulCall equals the calls placed, 0 failed, 0
  retransmissions) and the drop counter of every UDP socket of the bench (``/proc/net/udp``,
  last column) did not move.
- CPU of the router from ``/proc/<pid>/stat`` (utime + stime + children's, summed over the
  process and every live descendant: Kamailio forks its workers) over the load phase only,
  the first ``step_s`` seconds after the UAC starts, not the tail of retransmitted calls.

Numbers only: nothing here asserts a speed. Addresses are 127.77.0.x (the bench's own range).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.engines import SippProcess, SippResult, SippRun, wait_sip_ready
from lab.engines.sipp_scenarios import SippScenario, uas_answer
from lab.procs import ManagedProcess, start_process

ROUTER_CPU = 1
LOAD_CPU = 0
BENCH_NET = os.environ.get("SIPLAB_BENCH_NET", "127.77.0.")
"""The bench's own addresses (``SIPLAB_BENCH_NET=127.78.0.`` moves them, for two benches at once)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The harness cannot run (tool missing, peer did not start)."""


# -- measures read from /proc --------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return text[text.rindex(")") + 2 :].split()


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system, reaped children included) of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        child = int(entry.name)
        stats[child] = fields
        children.setdefault(int(fields[1]), []).append(child)
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:
            # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
        todo.extend(children.get(current, ()))
    return total / CLOCK_TICKS


def _hex_ipv4(text: str) -> str:
    raw = int(text, 16).to_bytes(4, "little")
    return ".".join(str(b) for b in raw)


def udp_drops(prefix: str = BENCH_NET) -> dict[str, int]:
    """Drop counter of every UDP socket bound to an address starting with ``prefix``."""
    drops: dict[str, int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        host_hex, port_hex = cols[1].split(":")
        host = _hex_ipv4(host_hex)
        if host.startswith(prefix):
            drops[f"{host}:{int(port_hex, 16)}"] = int(cols[-1])
    return drops


def drops_moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Sockets whose drop counter grew, and by how much (a socket seen only after counts whole)."""
    moved = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in moved.items() if v > 0}


# -- pinned processes ----------------------------------------------------------------------------


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)}")
    if len(os.sched_getaffinity(0)) < 2:
        raise BenchError("the harness pins the router and the load on two different CPUs")


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv]


def start_pinned_sipp(run: SippRun, workdir: Path, cpu: int = LOAD_CPU) -> SippProcess:
    """:func:`lab.engines.start_sipp` under ``taskset`` (which execs SIPp: same PID)."""
    exe = shutil.which("sipp")
    if exe is None:
        raise BenchError("SIPp is not installed (Debian package sip-tester)")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    path = run.scenario.write(workdir)
    if path.stem != run.stem:
        path.rename(workdir / f"{run.stem}.xml")
    proc = start_process(
        pinned(cpu, run.argv(workdir, exe)),
        name=run.stem,
        log_dir=workdir,
        stop_signal=signal.SIGUSR1,
    )
    return SippProcess(run=run, workdir=workdir, process=proc)


def start_uas_pair(ips: Sequence[str], port: int, workdir: Path) -> list[SippProcess]:
    """The two PBX stand-ins (SIPp UAS answering 180/200), pinned on the load CPU."""
    started: list[SippProcess] = []
    try:
        for n, ip in enumerate(ips, start=1):
            run = SippRun(
                scenario=uas_answer(),
                local_ip=ip,
                local_port=port,
                name=f"uas{n}",
                timeout_s=24 * 3600.0,
            )
            handle = start_pinned_sipp(run, workdir / f"uas{n}")
            started.append(handle)
            wait_sip_ready(ip, port, timeout=10.0, alive=handle.is_running)
    except BaseException:
        for h in started:
            h.stop(grace=1.0)
        raise
    return started


@dataclass(slots=True)
class RunningRouter:
    """A router under test: its main PID (CPU is read over its process tree) and how to stop it."""

    name: str
    pid: int
    stop: Callable[[], object]

    def cpu(self) -> float:
        return process_tree_cpu(self.pid)


def pin_tree(pid: int, cpu: int = ROUTER_CPU) -> int:
    """Move ``pid`` and every live descendant (Kamailio's forked workers) to ``cpu``; returns
    how many processes were pinned."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    todo, pinned_count = [pid], 0
    while todo:
        current = todo.pop()
        try:
            os.sched_setaffinity(current, {cpu})
            pinned_count += 1
        except OSError:
            pass  # ended meanwhile
        todo.extend(children.get(current, ()))
    return pinned_count


def start_pinned_router(
    name: str, argv: Sequence[str], address: tuple[str, int], workdir: Path
) -> RunningRouter:
    """Start a router alone on :data:`ROUTER_CPU`; ready when it answers an OPTIONS."""
    proc: ManagedProcess = start_process(pinned(ROUTER_CPU, argv), name=name, log_dir=workdir)
    try:
        wait_sip_ready(address[0], address[1], timeout=20.0, alive=proc.is_running)
    except BaseException:
        proc.stop(grace=2.0)
        raise
    return RunningRouter(name, proc.pid, lambda: proc.stop(grace=5.0))


# -- one constant-rate step ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepFigure:
    """One constant-rate step against one router: what SIPp saw, the router's CPU, the drops."""

    router: str
    rate: float
    step_s: float
    placed: int
    successful: int
    failed: int
    retransmissions: int
    drops: dict[str, int]
    cpu_s: float
    load_s: float
    p99_ms: float | None
    p50_ms: float | None
    completed_cps: float
    answered_503: int
    passed: bool
    reason: str

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.load_s if self.load_s > 0 else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        """Router CPU over the load phase / calls placed in it (ms)."""
        return 1000.0 * self.cpu_s / self.placed if self.placed else 0.0

    def line(self) -> str:
        p99 = f"{self.p99_ms:.0f}" if self.p99_ms is not None else "-"
        verdict = "pass" if self.passed else f"FAIL ({self.reason})"
        return (
            f"  [{self.router:14s}] {self.rate:6.0f}/s x {self.step_s:.0f} s  "
            f"ok={self.successful}/{self.placed} failed={self.failed} "
            f"retrans={self.retransmissions} drops={sum(self.drops.values())}  "
            f"cpu={self.cpu_percent:3.0f}% {self.cpu_ms_per_call:.3f} ms/call  "
            f"p99={p99} ms  completed {self.completed_cps:.0f}/s 503s={self.answered_503}  "
            f"{verdict}"
        )

    def record(self, **extra: object) -> dict[str, object]:
        row = asdict(self)
        row.update(cpu_percent=round(self.cpu_percent, 1))
        row.update(cpu_ms_per_call=round(self.cpu_ms_per_call, 4))
        row.update(extra)
        return row


def run_step(
    router: RunningRouter,
    scenario: SippScenario,
    *,
    uac_ip: str,
    remote: tuple[str, int],
    rate: float,
    step_s: float,
    workdir: Path,
    injection: Path | None = None,
    tail_s: float = 20.0,
) -> StepFigure:
    """Run one UAC step at ``rate`` for ``step_s`` seconds; measure the router over the load."""
    placed = max(1, round(rate * step_s))
    run = SippRun(
        scenario=scenario,
        local_ip=uac_ip,
        remote=remote,
        rate=rate,
        max_calls=placed,
        max_concurrent=max(100, int(10 * rate)),
        timeout_s=step_s + tail_s,
        injection=injection,
        extra_args=("-default_behaviors", "all,-abortunexp"),
    )
    drops_before = udp_drops()
    cpu_before = router.cpu()
    started = time.monotonic()
    uac = start_pinned_sipp(run, workdir)
    # The load phase: the first step_s seconds after the UAC starts (it may end sooner).
    while time.monotonic() - started < step_s and uac.is_running():
        time.sleep(0.05)
    cpu_after = router.cpu()
    load_s = time.monotonic() - started
    result: SippResult = uac.wait()
    uac.process.stop(grace=1.0)
    moved = drops_moved(drops_before, udp_drops())
    return judge(router.name, rate, step_s, placed, result, moved, cpu_after - cpu_before, load_s)


def judge(
    name: str,
    rate: float,
    step_s: float,
    placed: int,
    result: SippResult,
    moved: dict[str, int],
    cpu_s: float,
    load_s: float,
) -> StepFigure:
    reasons: list[str] = []
    if result.killed:
        reasons.append("SIPp killed")
    if result.calls_created < placed:
        reasons.append(f"placed {result.calls_created}/{placed}")
    if result.successful < placed:
        reasons.append(f"{placed - result.successful} not completed")
    if result.failed:
        detail = ",".join(f"{k}={v}" for k, v in result.failed_by_reason.items())
        reasons.append(f"{result.failed} failed {detail}".strip())
    if result.retransmissions:
        reasons.append(f"{result.retransmissions} retrans")
    if moved:
        reasons.append(f"{sum(moved.values())} drops at " + ",".join(moved))
    shed = result.count("503")
    completed_cps = (result.successful - shed) / max(result.elapsed_s, step_s)
    return StepFigure(
        router=name,
        rate=rate,
        step_s=step_s,
        placed=placed,
        successful=result.successful,
        failed=result.failed,
        retransmissions=result.retransmissions,
        drops=moved,
        cpu_s=round(cpu_s, 3),
        load_s=round(load_s, 3),
        p99_ms=result.p99_ms,
        p50_ms=result.p50_ms,
        completed_cps=round(completed_cps, 1),
        answered_503=shed,
        passed=not reasons,
        reason="; ".join(reasons),
    )


# -- history and plot ----------------------------------------------------------------------------


def append_history(path: Path, rows: Iterable[dict[str, object]]) -> None:
    """Append JSON lines to the committed history (``bench/results/*.jsonl``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")


_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e")


def cpu_plot_svg(figures: Sequence[StepFigure], title: str) -> str:
    """Router CPU (% of one core) against offered rate, one line per router; failed steps
    drawn hollow. Plain SVG: no plotting library needed."""
    width, height, pad = 640, 400, 50
    max_rate = max((f.rate for f in figures), default=1.0) * 1.1
    max_cpu = max(100.0, max((f.cpu_percent for f in figures), default=100.0))

    def xy(rate: float, cpu: float) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * rate / max_rate
        y = height - pad - (height - 2 * pad) * cpu / max_cpu
        return x, y

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{pad}" y="20" font-size="14">{title}</text>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<text x="{width / 2 - 40}" y="{height - 10}" font-size="12">offered calls/s</text>',
        f'<text x="5" y="{pad - 10}" font-size="12">router CPU % of one core</text>',
    ]
    for tick in range(0, int(max_cpu) + 1, 25):
        _, y = xy(0, tick)
        parts.append(f'<text x="{pad - 30}" y="{y + 4}" font-size="10">{tick}</text>')
    for tick in sorted({f.rate for f in figures}):
        x, _ = xy(tick, 0)
        parts.append(f'<text x="{x - 12}" y="{height - pad + 15}" font-size="10">{tick:.0f}</text>')
    names = list(dict.fromkeys(f.router for f in figures))
    for n, name in enumerate(names):
        colour = _COLOURS[n % len(_COLOURS)]
        mine = sorted((f for f in figures if f.router == name), key=lambda f: f.rate)
        points = " ".join("{:.1f},{:.1f}".format(*xy(f.rate, f.cpu_percent)) for f in mine)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}"/>')
        for f in mine:
            x, y = xy(f.rate, f.cpu_percent)
            fill = colour if f.passed else "white"
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}" stroke="{colour}"/>'
            )
        parts.append(
            f'<text x="{width - pad - 150}" y="{pad + 15 * n}" font-size="12" '
            f'fill="{colour}">{name}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
