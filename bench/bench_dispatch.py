"""Benchmark: a stateful dispatcher in front of two SIPp UAS, reference router vs Kamailio 5.6.

The harness of ``../shared/docs/PERFORMANCE.md`` (see :mod:`bench.harness`): router alone on
CPU 1, SIPp UAC + 2 UAS on CPU 0, constant-rate steps, ``-l`` >= 10 x rate, a step passes when
every call completed with 0 failed, 0 retransmissions and no UDP socket drop. Routers, one
worker each, started once per repeat and measured at every rate in turn (interleaved):

- ``kamailio-qm``: Kamailio 5.6 (Debian), ``-m 2048 -M 16``, Debian's default allocator
  q_malloc (``-x qm``), dispatcher round robin with record-route (lab/routers/kamailio).
- ``kamailio-tlsf``: the same binary and cfg with ``-x tlsf``.
- ``reference``: ``python -m router.cli router`` with the equivalent TOML (no event log).

Prints per step the router's CPU (% of one core) and CPU per call over the load phase only,
p99 INVITE->200, then per rate the median over repeats, the highest rate every repeat passed,
and the ratio reference / kamailio-qm of CPU per call -- only when the Kamailio q_malloc figure
reproduces PERFORMANCE.md's (0.19 ms per call at 2,000 calls/s, within 15 %); otherwise it says
why the ratio is withheld. Optional overload phase (``--overload-rate``): a step far above
capacity, and 5 s after its load stops a low-rate probe step that must pass (back to normal).

Results are appended to ``bench/results/dispatch.jsonl`` (one JSON line per step) and the
CPS-vs-CPU plot is written to the run folder (``cpu.svg``).

Run: ``python -m bench.bench_dispatch --quick`` (one 5 s step at 2,000/s per router, ~1 min) or
``python -m bench.bench_dispatch --rates 1000,2000,3000 --step-s 15 --repeat 2``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    BENCH_NET,
    BenchError,
    RunningRouter,
    StepFigure,
    append_history,
    cpu_plot_svg,
    require_tools,
    run_step,
    start_pinned_router,
    start_uas_pair,
)
from lab.engines import uac_call
from lab.engines.sipp_scenarios import ScenarioRole, SippScenario
from lab.routers.kamailio import kamailio_binary

UAC_IP = BENCH_NET + "1"
PROBE_IP = BENCH_NET + "9"
UAS_IPS = (BENCH_NET + "2", BENCH_NET + "3")
UAS_PORT = 5090
ROUTER_ADDR = (BENCH_NET + "10", 5060)
KAMAILIO_CFG = Path(__file__).parent / "kamailio" / "dispatch.cfg"
HISTORY = Path(__file__).parent / "results" / "dispatch.jsonl"
ROUTERS = ("kamailio-qm", "kamailio-tlsf", "reference")
PUBLISHED_MS_PER_CALL = {"kamailio-qm": 0.19, "kamailio-tlsf": 0.09}
"""PERFORMANCE.md, CPU per call at 2,000 calls/s on this kind of machine."""
REPRODUCE_RATE = 2000.0
REPRODUCE_TOLERANCE = 0.15


def kamailio_argv(workdir: Path, allocator: str) -> list[str]:
    """The bench's minimal dispatcher cfg (bench/kamailio/dispatch.cfg), checked with
    ``kamailio -c``; the command line with ``-m 2048 -M 16 -x allocator``."""
    exe = kamailio_binary()
    if exe is None:
        raise BenchError("Kamailio is not installed (Debian package kamailio)")
    workdir.mkdir(parents=True, exist_ok=True)
    listing = workdir / "dispatcher.list"
    listing.write_text("".join(f"1 sip:{ip}:{UAS_PORT}\n" for ip in UAS_IPS))
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(
        KAMAILIO_CFG.read_text()
        .replace("LISTEN", f"{ROUTER_ADDR[0]}:{ROUTER_ADDR[1]}")
        .replace("LIST_FILE", str(listing))
    )
    rundir = workdir / "run"
    rundir.mkdir(parents=True, exist_ok=True)
    argv = [exe, "-f", str(cfg), "-Y", str(rundir), "-w", str(workdir), "-M", "16"]
    checked = subprocess.run(
        [*argv, "-m", "64", "-c"], capture_output=True, text=True, timeout=30, check=False
    )
    if checked.returncode != 0:
        raise BenchError(f"kamailio -c {cfg}: {(checked.stdout + checked.stderr)[-1500:]}")
    return [*argv, "-m", "2048", "-x", allocator, "-DD", "-E"]


def reference_argv(workdir: Path) -> list[str]:
    """The reference router's equivalent of the Kamailio cfg: round robin over the two UAS,
    record-route, fr_timer 2 s, failover without marking the node inactive, no probing (the
    Kamailio cfg neither probes nor calls ds_mark_dst: with marking and no probing, one timeout
    under overload would take a node out of the set for the rest of the run)."""
    workdir.mkdir(parents=True, exist_ok=True)
    dests = "".join(f'[[dispatcher.destinations]]\nuri = "sip:{ip}:{UAS_PORT}"\n' for ip in UAS_IPS)
    path = workdir / "router.toml"
    path.write_text(
        f'[router]\nname = "router"\nlisten = ["udp:{ROUTER_ADDR[0]}:{ROUTER_ADDR[1]}"]\n\n'
        "[timers]\nfr_timer = 2.0\nfr_inv_timer = 40.0\n\n"
        "[dispatcher]\nalgorithm = 4\nmark_failed = false\n\n"
        + dests
        + "\n[dispatcher.probing]\ninterval = 0\n"
    )
    return [sys.executable, "-m", "router.cli", "router", "--config", str(path)]


def uac_call_or_503() -> SippScenario:
    """:func:`lab.engines.uac_call` that also takes a 503 to its INVITE (overload shedding):
    ACK it (hop by hop, §17.1.1.3) and end the call; counted by the ``503`` receive element,
    so completed calls = successful - 503s."""
    base = uac_call(0)
    shed = (
        '  <label id="shed"/>\n  <send>\n    <![CDATA[\n\n'
        "ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n"
        "From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]T[call_number]\n[last_To:]\n"
        "Call-ID: [call_id]\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n"
        "    ]]>\n  </send>\n"
    )
    xml = base.xml.replace(
        '<recv response="100" optional="true"/>\n',
        '<recv response="100" optional="true"/>\n'
        '  <recv response="503" optional="true" next="shed"/>\n',
        1,
    )
    head, sep, tail = xml.rpartition('<recv response="200" crlf="true"/>\n')
    if not sep or 'next="shed"' not in xml:
        raise BenchError("uac_call changed shape: cannot add the 503 branch")
    xml = head + sep + '  <pause milliseconds="0" next="done"/>\n' + shed
    xml += '  <label id="done"/>\n' + tail
    return SippScenario("uac_call_or_503", ScenarioRole.UAC, xml)


def start_router(name: str, workdir: Path) -> RunningRouter:
    if name == "reference":
        argv = reference_argv(workdir)
    elif name.startswith("kamailio-"):
        argv = kamailio_argv(workdir, name.removeprefix("kamailio-"))
    else:
        raise BenchError(f"unknown router {name!r}: expected one of {', '.join(ROUTERS)}")
    return start_pinned_router(name, argv, ROUTER_ADDR, workdir)


@dataclass(frozen=True, slots=True)
class Options:
    routers: tuple[str, ...]
    rates: tuple[float, ...]
    step_s: float
    repeat: int
    overload_rate: float | None
    overload_s: float
    probe_rate: float
    settle_s: float
    warmup_s: float


def overload(router: RunningRouter, opts: Options, workdir: Path) -> list[StepFigure]:
    """``overload_rate`` for ``overload_s``; a probe step starts 5 s after that load stops."""
    assert opts.overload_rate is not None
    results: dict[str, StepFigure] = {}

    def heavy() -> None:
        results["overload"] = run_step(
            router, uac_call_or_503(), uac_ip=UAC_IP, remote=ROUTER_ADDR,
            rate=opts.overload_rate or 1.0, step_s=opts.overload_s,
            workdir=workdir / "overload",
        )  # fmt: skip

    thread = threading.Thread(target=heavy)
    thread.start()
    time.sleep(opts.overload_s + 5.0)
    probe = run_step(
        router, uac_call(0), uac_ip=PROBE_IP, remote=ROUTER_ADDR,
        rate=opts.probe_rate, step_s=5.0, workdir=workdir / "recovery", tail_s=10.0,
    )  # fmt: skip
    thread.join()
    return [results["overload"], probe]


def run(opts: Options, workdir: Path) -> list[tuple[str, StepFigure]]:
    """Every (phase, figure), in the order run."""
    done: list[tuple[str, StepFigure]] = []
    uas = start_uas_pair(UAS_IPS, UAS_PORT, workdir / "uas")
    try:
        for rep in range(opts.repeat):
            for name in opts.routers:
                router = start_router(name, workdir / f"r{rep}" / name)
                try:
                    if opts.warmup_s > 0:
                        # Not recorded: first-touch of Kamailio's 2 GB shared memory, imports
                        # and caches would otherwise be charged to the first step.
                        warm = run_step(
                            router, uac_call(0), uac_ip=UAC_IP, remote=ROUTER_ADDR,
                            rate=min(opts.rates), step_s=opts.warmup_s,
                            workdir=workdir / f"r{rep}" / name / "warmup",
                        )  # fmt: skip
                        print(warm.line() + "  <- warm-up, not recorded", flush=True)
                        time.sleep(opts.settle_s)
                    for rate in opts.rates:
                        fig = run_step(
                            router, uac_call(0), uac_ip=UAC_IP, remote=ROUTER_ADDR,
                            rate=rate, step_s=opts.step_s,
                            workdir=workdir / f"r{rep}" / name / f"step_{rate:.0f}",
                        )  # fmt: skip
                        print(fig.line(), flush=True)
                        done.append(("step", fig))
                        time.sleep(opts.settle_s)
                    if opts.overload_rate and rep == 0:
                        heavy, probe = overload(router, opts, workdir / f"r{rep}" / name)
                        print(heavy.line() + "  <- overload", flush=True)
                        print(probe.line() + "  <- 5 s after", flush=True)
                        done += [("overload", heavy), ("recovery", probe)]
                finally:
                    router.stop()
    finally:
        for h in uas:
            h.stop(grace=1.0)
    return done


def summarise(figures: Sequence[StepFigure], opts: Options) -> list[str]:
    lines = ["", "median over repeats (router CPU over the load phase; pinned, 1 worker each):"]
    median_ms: dict[tuple[str, float], float] = {}
    for name in opts.routers:
        best = 0.0
        for rate in opts.rates:
            mine = [f for f in figures if f.router == name and f.rate == rate]
            if not mine:
                continue
            ms = statistics.median(f.cpu_ms_per_call for f in mine)
            cpu = statistics.median(f.cpu_percent for f in mine)
            p99s = [f.p99_ms for f in mine if f.p99_ms is not None]
            p99 = f"{max(p99s):.0f}" if p99s else "-"
            passed = sum(f.passed for f in mine)
            median_ms[(name, rate)] = ms
            if passed == len(mine):
                best = max(best, rate)
            lines.append(
                f"  {name:14s} {rate:6.0f}/s  cpu {cpu:3.0f}%  {ms:.3f} ms/call  "
                f"p99<= {p99} ms  passed {passed}/{len(mine)}"
            )
        lines.append(f"  {name:14s} holds (every repeat passed): {best:.0f} calls/s")
    lines.append("")
    kam = median_ms.get(("kamailio-qm", REPRODUCE_RATE))
    if kam is None:
        lines.append(
            f"ratio withheld: kamailio-qm not measured at {REPRODUCE_RATE:.0f}/s, so this run "
            "cannot show it reproduces PERFORMANCE.md"
        )
        return lines
    published = PUBLISHED_MS_PER_CALL["kamailio-qm"]
    off = abs(kam - published) / published
    if off > REPRODUCE_TOLERANCE:
        lines.append(
            f"ratio withheld: kamailio-qm spends {kam:.3f} ms/call at {REPRODUCE_RATE:.0f}/s, "
            f"PERFORMANCE.md says {published} ms ({off:.0%} off, > {REPRODUCE_TOLERANCE:.0%}): "
            "this run does not reproduce the harness (shared or different machine?)"
        )
        return lines
    lines.append(f"kamailio-qm reproduces PERFORMANCE.md: {kam:.3f} ms/call vs {published} ms")
    for rate in opts.rates:
        ref = median_ms.get(("reference", rate))
        qm = median_ms.get(("kamailio-qm", rate))
        tlsf = median_ms.get(("kamailio-tlsf", rate))
        if ref and qm:
            extra = f", / kamailio-tlsf = {ref / tlsf:.2f}" if tlsf else ""
            lines.append(
                f"  at {rate:.0f}/s CPU per call reference / kamailio-qm = {ref / qm:.2f}{extra}"
            )
    return lines


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1000,2000: {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in ROUTERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"routers: choose from {','.join(ROUTERS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="run folder")
    parser.add_argument("--routers", type=_names, default=ROUTERS, help=",".join(ROUTERS))
    parser.add_argument("--rates", type=_floats, default=(1000.0, 2000.0, 3000.0))
    parser.add_argument("--step-s", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--overload-rate", type=float, default=None, help="e.g. 6000")
    parser.add_argument("--overload-s", type=float, default=60.0)
    parser.add_argument("--probe-rate", type=float, default=200.0)
    parser.add_argument("--warmup-s", type=float, default=5.0, help="unrecorded first step")
    parser.add_argument("--quick", action="store_true", help="one 5 s step at 2,000/s")
    parser.add_argument("--no-history", action="store_true", help="do not append results")
    parser.add_argument("--note", default="", help="free text stored with the results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.step_s, args.repeat = (REPRODUCE_RATE,), 5.0, 1
    opts = Options(
        routers=args.routers,
        rates=args.rates,
        step_s=args.step_s,
        repeat=max(1, args.repeat),
        overload_rate=args.overload_rate,
        overload_s=args.overload_s,
        probe_rate=args.probe_rate,
        settle_s=2.0,
        warmup_s=args.warmup_s,
    )
    workdir: Path = (
        args.workdir or Path("runs") / f"bench_dispatch_{time.strftime('%Y%m%d-%H%M%S')}"
    ).resolve()
    print(f"bench_dispatch: run folder {workdir}", flush=True)
    try:
        require_tools("taskset", "sipp")
        done = run(opts, workdir)
    except BenchError as exc:
        print(f"bench_dispatch: {exc}", file=sys.stderr)
        return 2
    steps = [f for phase, f in done if phase == "step"]
    for line in summarise(steps, opts):
        print(line)
    plot = workdir / "cpu.svg"
    plot.write_text(cpu_plot_svg(steps, "dispatcher: router CPU vs offered calls/s"))
    print(f"plot: {plot}")
    if not args.no_history:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        commit = _git_commit()
        append_history(
            HISTORY,
            (f.record(phase=phase, at=stamp, commit=commit, note=args.note) for phase, f in done),
        )
        print(f"history: appended {len(done)} rows to {HISTORY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
