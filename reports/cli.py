"""``siplab capacity`` and ``siplab report``: register with ``"reports.cli"`` in router/cli.py.

``siplab capacity [--quick] [--net N] [--scenario call|register|mixed] [--router reference|kamailio]
[--target "cps=300,users=50000,reregister=600s"] [--out DIR] [--service-level ...]
[--compare RUN_DIR]`` brings the default lab up, searches for the knee with SIPp, and writes the
run folder with ``report.html``; ``--quick`` with the call scenario runs a register search first
(``<out>/register``) so the sizing has router cores for registrations. ``siplab report RUN_DIR`` rebuilds a report.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from reports.search import ServiceLevel, parse_service_level
from reports.sizing import parse_target

__all__ = ["add_commands", "cmd_capacity", "cmd_report"]


def _user_error(message: str) -> Exception:
    from router.cli import UserError

    return UserError(message)


def _pbx_option(text: str) -> tuple[str, int]:
    """``--pbx``: ``N``, ``emulator[:N]`` or ``asterisk[:N]`` -> (kind, count)."""
    kind, _, count = text.partition(":") if not text.isdigit() else ("emulator", "", text)
    if kind not in ("emulator", "asterisk") or not (count or "3").isdigit() or int(count or 3) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a node count, `asterisk`, `asterisk:N` or `emulator:N`"
        )
    return kind, int(count or 3)


def cmd_capacity(args: argparse.Namespace) -> int:
    from reports.capacity import (
        CapacityConfig,
        SippEngine,
        asterisk_lab,
        local_lab,
        run_capacity,
    )

    kind, count = args.pbx
    make_lab = asterisk_lab if kind == "asterisk" else local_lab

    try:
        level = parse_service_level(args.service_level or "", ServiceLevel())
        if args.target:
            parse_target(args.target)
    except ValueError as exc:
        raise _user_error(str(exc)) from None
    if args.compare is not None and not (args.compare / "summary.json").exists():
        raise _user_error(f"--compare: {args.compare}/summary.json: no such file")
    if not 0 <= args.headroom < 10:
        raise _user_error("--headroom: must be within 0..1000%")
    from lab.engines import sipp_binary

    if sipp_binary() is None:
        raise _user_error("SIPp is not installed (Debian package sip-tester)")
    config = CapacityConfig(
        scenario=args.scenario,
        router=args.router,
        pbx=count,
        pbx_kind=kind,
        quick=args.quick,
        level=level,
        target=args.target,
        headroom=args.headroom,
        start=args.start,
        max_rate=args.max_rate,
        step_s=args.step,
    )
    if args.generators < 1:
        raise _user_error("--generators: must be >= 1")
    engine: Any = SippEngine(scenario=args.scenario, local_ip=f"127.{args.lab_net}.0.120")
    if args.generators > 1:
        from reports.generators_engine import MultiSippEngine

        engine = MultiSippEngine(scenario=args.scenario, generators=args.generators)
    out = args.out or Path("runs") / time.strftime(f"capacity-{args.scenario}-%Y%m%d-%H%M%S")
    if args.quick and args.scenario == "call":
        # The demo sizes users/reregister too: a register search first (its own lab and
        # report in <out>/register), whose registrations/s per router core the call run's
        # sizing reads (reports.analysis._register_run_per_core).
        run_capacity(
            make_lab(router=args.router, pbx=count, net=args.lab_net),
            SippEngine(scenario="register", local_ip=f"127.{args.lab_net}.0.120"),
            replace(config, scenario="register"),
            Path(out) / "register",
            progress=lambda line: print(f"register: {line}", flush=True),
        )
    run_capacity(
        make_lab(router=args.router, pbx=count, net=args.lab_net),
        engine,
        config,
        Path(out),
        progress=lambda line: print(line, flush=True),
        compare=args.compare,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.build import build_report

    try:
        print(build_report(args.run_dir, out=args.out, compare=args.compare))
    except (FileNotFoundError, ValueError) as exc:
        raise _user_error(str(exc)) from None
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``capacity`` and ``report`` to the ``siplab`` command line."""
    cap = sub.add_parser(
        "capacity",
        help="find the highest load meeting a service level; write report.html",
        description="Bring the default lab up, search for the knee with SIPp (ramp, bisect, "
        "soak), sample every node's CPU and write a run folder with report.html.",
    )
    cap.add_argument("--quick", action="store_true", help="short steps: a result in ~1 minute")
    cap.add_argument("--scenario", choices=["call", "register", "mixed"], default="call")
    cap.add_argument("--router", choices=["reference", "kamailio"], default="reference")
    cap.add_argument(
        "--pbx",
        type=_pbx_option,
        default=("emulator", 3),
        help="PBX nodes: a count (emulated, default 3), `asterisk` (3 real Asterisk 22 "
        "containers) or `asterisk:N`",
    )
    cap.add_argument(
        "--lab-net",
        "--net",
        dest="lab_net",
        type=int,
        default=0,
        help="second octet of the lab's addresses (127.N.0.x; default 0)",
    )
    cap.add_argument(
        "--generators", type=int, default=1, help="split each step over N SIPp generators"
    )
    cap.add_argument("--target", help='sizing target, e.g. "cps=300,users=50000,reregister=600s"')
    cap.add_argument("--headroom", type=float, default=0.3, help="sizing headroom (0.3 = 30%%)")
    cap.add_argument("--out", type=Path, help="run folder (default runs/capacity-...)")
    cap.add_argument(
        "--service-level",
        help='e.g. "failures=0.1%%,p95=200ms,retrans=0.01,achieved=95%%" (any subset)',
    )
    cap.add_argument("--compare", type=Path, help="a previous run folder to compare with")
    cap.add_argument("--start", type=float, help="first offered rate")
    cap.add_argument("--max-rate", type=float, help="highest rate the ramp may offer")
    cap.add_argument("--step", type=float, help="seconds per step")
    cap.set_defaults(func=cmd_capacity)

    rep = sub.add_parser("report", help="rebuild report.html from a run folder")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--out", type=Path)
    rep.add_argument("--compare", type=Path)
    rep.set_defaults(func=cmd_report)
