"""Profile the reference router under a fixed SIPp dispatcher load (cProfile, in the router).

The router runs pinned on CPU 1 under ``cProfile`` (``--serve``: the profiler is enabled around
``router.cli.main`` and the stats are dumped when the router shuts down on SIGTERM); the SIPp
UAC and the two UAS run on CPU 0, the same topology as :mod:`bench.bench_dispatch`. Prints the
step's figure (CPU per call is inflated by the profiler, compare profiles, not this figure with
the bench's) and the top functions by own time and by cumulative time.

Run: ``python -m bench.profile_router --rate 1000 --seconds 10 [--top 30]``
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.bench_dispatch import ROUTER_ADDR, UAC_IP, UAS_IPS, UAS_PORT, reference_argv
from bench.harness import require_tools, run_step, start_pinned_router, start_uas_pair
from lab.engines import uac_call


def serve(config: str, out: str) -> int:
    from router.cli import main as router_main

    profile = cProfile.Profile()
    profile.enable()
    try:
        return router_main(["router", "--config", config])
    finally:
        profile.disable()
        profile.dump_stats(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--serve", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(*args.serve)
    require_tools("taskset", "sipp")
    workdir: Path = (
        args.workdir or Path("runs") / f"profile_router_{time.strftime('%Y%m%d-%H%M%S')}"
    ).resolve()
    out = workdir / "router.prof"
    config = reference_argv(workdir / "router")[-1]
    command = [sys.executable, "-m", "bench.profile_router", "--serve", config, str(out)]
    uas = start_uas_pair(UAS_IPS, UAS_PORT, workdir / "uas")
    try:
        router = start_pinned_router("reference-profiled", command, ROUTER_ADDR, workdir)
        try:
            fig = run_step(
                router, uac_call(0), uac_ip=UAC_IP, remote=ROUTER_ADDR,
                rate=args.rate, step_s=args.seconds, workdir=workdir / "uac",
            )  # fmt: skip
            print(fig.line(), flush=True)
        finally:
            router.stop()
    finally:
        for h in uas:
            h.stop(grace=1.0)
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(f"profile: {out} (python -m pstats {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
