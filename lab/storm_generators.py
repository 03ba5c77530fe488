"""``siplab storm --generators N``: the storm's rate and calls split over N SIPp generators.

See ``lab/generators.py`` for how the load is split, where each generator runs and when one is
reported as saturated. The summary (``storm.json``) has the merged figures plus one entry per
generator and the warnings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lab.generators import GeneratorRun, Share, merge, run_generators, shares, split_injection
from lab.labfile import LabFile


def storm_generators(args: argparse.Namespace, lab: LabFile, target: tuple[str, int]) -> int:
    from lab.engines import SippRun, register_then_call, sipp_binary, uac_call, uac_register
    from router.cli import UserError

    if args.engine != "sipp":
        raise UserError("--generators: needs --engine sipp (one SIPp process per generator)")
    if args.ramp:
        raise UserError("--generators: --ramp is not supported; give the total --rate")
    if args.local_ip:
        raise UserError("--generators: each generator has its own address; drop --local-ip")
    if sipp_binary() is None:
        raise UserError("--generators: SIPp is not installed (Debian package sip-tester)")
    try:
        load = shares(lab, args.rate, args.calls, args.generators)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = Path(args.out or Path(lab.run_dir) / f"storm-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    hold_ms = int(args.hold * 1000)
    if args.scenario == "register":
        scenario = uac_register()
    elif args.scenario == "mixed":
        scenario = register_then_call(hold_ms=hold_ms)
    else:
        scenario = uac_call(hold_ms=hold_ms)
    injections = (
        split_injection(Path(lab.users_csv), len(load), out / "sipp")
        if scenario.needs_injection
        else []
    )

    def make_run(share: Share) -> SippRun:
        return SippRun(
            scenario,
            local_ip=share.host,
            remote=target,
            rate=share.rate,
            max_calls=share.calls,
            service=args.callee,
            injection=injections[share.index] if injections else None,
            timeout_s=args.timeout,
            name=f"storm-gen{share.index + 1}",
        )

    def progress(runs: list[GeneratorRun], elapsed: float) -> None:
        results = [r.handle.result() for r in runs]
        print(
            f"\r  {elapsed:6.1f} s  attempted {sum(x.calls_created for x in results):7d}  "
            f"ok {sum(x.successful for x in results):7d}  "
            f"failed {sum(x.failed for x in results):6d}  "
            f"retransmissions {sum(x.retransmissions for x in results):6d}",
            end="",
            file=sys.stderr,
            flush=True,
        )

    where = ", ".join(s.host for s in load)
    print(
        f"storm: {args.scenario} x {args.calls} at {args.rate:g}/s via {target[0]}:{target[1]} "
        f"from {len(load)} generators ({where}); results in {out}",
        file=sys.stderr,
    )
    runs = run_generators(lab, load, make_run, out / "sipp", progress=progress, poll=1.0)
    print(file=sys.stderr)
    summary: dict[str, Any] = merge(runs)
    from lab.storm_cli import _status_counts

    by_status: Counter[str] = Counter()
    for share in load:
        by_status.update(_status_counts(out / "sipp" / f"gen{share.index + 1}"))
    summary["failed_by_status"] = dict(by_status)
    summary.update(
        {
            "scenario": args.scenario,
            "rate": args.rate,
            "calls": args.calls,
            "target": f"{target[0]}:{target[1]}",
        }
    )
    (out / "storm.json").write_text(json.dumps(summary, indent=2) + "\n")
    for g in summary["generators"]:
        print(
            f"  generator {g['index']} {g['host']:<15} {g['rate']:8.1f}/s  attempted "
            f"{g['attempted']:6d}  ok {g['succeeded']:6d}  failed {g['failed']:5d}  "
            f"cpu {g['cpu']:.0%}"
        )
    d = summary["setup_delay_ms"]
    print(f"attempted   {summary['attempted']}")
    print(f"succeeded   {summary['succeeded']}")
    print(
        f"failed      {summary['failed']}  by status {summary['failed_by_status']}  "
        f"by reason {summary['failed_by_reason']}"
    )
    print(f"retransmissions {summary['retransmissions']}")
    print(f"setup delay p50 {d['p50']} ms  p95 {d['p95']} ms  p99 {d['p99']} ms")
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    print(f"summary: {out / 'storm.json'}")
    return 0 if not summary["failed"] and not summary["unfinished"] else 1


__all__ = ["storm_generators"]
