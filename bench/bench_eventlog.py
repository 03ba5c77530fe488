"""Benchmark: what the reference router's own JSON event log costs it, per call.

The router can write a JSON line per SIP message in and out (``[router] events``, with the
message text when ``events_raw``), on its hot path. The lab used to run it that way; it is now
opt-in (``[router] events = true`` in a topology) because the lab's packet capture shows the
same messages from outside. This benchmark measures the difference in the harness of
``bench_dispatch`` (the router dispatching round robin to two SIPp UAS, SIPp UAC calls
INVITE-ACK-BYE), once with the event log off and once on:

- **CPU per call**: the router process's user+system CPU time (``/proc/<pid>/stat``) over a
  bounded run at a moderate rate, divided by the calls that completed (ms per call);
- **under load**: achieved calls/s and failed calls at a high offered rate;
- the event log's size (bytes per call).

Numbers only; nothing here asserts a speed (CPU contention on a shared machine moves them).

Run: ``python -m bench.bench_eventlog [--net 0] [--rate 200 --calls 2000] [--high 1000]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.peers import call_run_factory, start_uas_pool, stop_all
from lab.engines import run_sipp, wait_sip_ready
from lab.procs import start_process

UAS_PORT = 5090


@dataclass(frozen=True, slots=True)
class Figure:
    """One router configuration's result."""

    mode: str
    calls: int
    cpu_ms_per_call: float
    log_bytes_per_call: float
    high_offered: float
    high_achieved: float
    high_failed: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def router_config(folder: Path, address: tuple[str, int], uas: Sequence[str], log: bool) -> Path:
    """The bench_dispatch router (round robin, record-route, no probing), event log on/off."""
    folder.mkdir(parents=True, exist_ok=True)
    events = f'events = "{folder / "router.jsonl"}"\nevents_raw = true\n' if log else ""
    dests = "".join(f'[[dispatcher.destinations]]\nuri = "sip:{ip}:{UAS_PORT}"\n' for ip in uas)
    path = folder / "router.toml"
    path.write_text(
        f'[router]\nname = "router"\nlisten = ["udp:{address[0]}:{address[1]}"]\n{events}\n'
        "[timers]\nfr_timer = 2.0\nfr_inv_timer = 40.0\n\n"
        "[dispatcher]\nalgorithm = 4\n\n" + dests + "\n[dispatcher.probing]\ninterval = 0\n",
        encoding="utf-8",
    )
    return path


def measure(mode: str, workdir: Path, net: int, rate: float, calls: int, high: float) -> Figure:
    """One run of the router with its event log ``mode`` ("on"/"off") in ``workdir/mode``."""
    uac, uas = f"127.{net}.0.41", (f"127.{net}.0.42", f"127.{net}.0.43")
    address = (f"127.{net}.0.44", 5060)
    log = mode == "on"
    config = router_config(workdir / mode, address, uas, log)
    pool = start_uas_pool(uas, UAS_PORT, workdir / mode / "uas")
    try:
        command = [sys.executable, "-m", "router.cli", "router", "--config", str(config)]
        proc = start_process(command, name="router", log_dir=workdir / mode)
        try:
            wait_sip_ready(address[0], address[1], timeout=15.0, alive=proc.is_running)
            make = call_run_factory(local_ip=uac, remote=address)
            before = cpu_seconds(proc.pid)
            steady = run_sipp(make(rate, calls, calls / rate + 15.0), workdir / mode / "steady")
            used = cpu_seconds(proc.pid) - before
            high_calls = int(high * 5)
            burst = run_sipp(make(high, high_calls, 20.0), workdir / mode / "high")
        finally:
            proc.stop()
    finally:
        stop_all(pool)
    log_path = workdir / mode / "router.jsonl"
    size = log_path.stat().st_size if log_path.exists() else 0
    done = max(1, steady.successful)
    return Figure(
        mode,
        steady.successful,
        1000.0 * used / done,
        size / max(1, steady.successful + burst.successful),
        high,
        burst.achieved_cps,
        burst.failed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="run folder")
    parser.add_argument("--net", type=int, default=0, help="addresses 127.<net>.0.41-44")
    parser.add_argument("--rate", type=float, default=200.0, help="steady rate (calls/s)")
    parser.add_argument("--calls", type=int, default=2000, help="calls of the steady run")
    parser.add_argument("--high", type=float, default=1000.0, help="high rate (5 s of calls)")
    parser.add_argument("--repeat", type=int, default=2, help="off/on pairs, interleaved")
    args = parser.parse_args(argv)
    workdir = (
        args.workdir or Path("runs") / f"bench_eventlog_{time.strftime('%Y%m%d-%H%M%S')}"
    ).resolve()
    print(f"bench_eventlog: run folder {workdir}", flush=True)
    figures = [
        measure(mode, workdir / f"run{i}", args.net, args.rate, args.calls, args.high)
        for i in range(args.repeat)
        for mode in ("off", "on")  # interleaved: a noisy neighbour hits both alike
    ]
    print()
    print(f"router event log   CPU/call   log/call   steady calls   at {args.high:g}/s offered")
    for f in figures:
        print(
            f"{f.mode:>16}   {f.cpu_ms_per_call:6.3f} ms  {f.log_bytes_per_call / 1024:6.1f} KiB"
            f"   {f.calls:>12}   achieved {f.high_achieved:7.1f}/s, failed {f.high_failed}"
        )
    median = {
        mode: statistics.median(f.cpu_ms_per_call for f in figures if f.mode == mode)
        for mode in ("off", "on")
    }
    print(f"median CPU per call: off {median['off']:.3f} ms, on {median['on']:.3f} ms", end="")
    if median["off"] > 0:
        print(f" (on / off = {median['on'] / median['off']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
