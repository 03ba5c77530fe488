"""``siplab storm``: drive a bounded call or registration storm through the running lab.

Finds the lab from ``lab.json`` (``runs/lab`` unless ``--dir``), sends traffic to the lab's
entry point (the ``ua-router`` fault relay when there is one, else the router) with SIPp
(default) or siplab's trio UA (``--engine ua``, for machines without SIPp), prints a live
progress line, then a summary: attempted, succeeded, failed by status code, retransmissions,
setup delay p50/p95/p99. The summary is also written as JSON (``storm.json`` in ``--out``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lab.labfile import LabFile, LabFileError, read_labfile

# SIPp's errors log: "Aborting call on unexpected message ... received 'SIP/2.0 404 ..."
_STATUS_RE = re.compile(r"Aborting call on unexpected message[^\n]*?received 'SIP/2\.0 (\d{3})")


def _user_error(message: str) -> Exception:
    from router.cli import UserError

    return UserError(message)


def entry_point(lab: LabFile) -> tuple[str, int]:
    """Where user traffic enters the lab: the ua-router relay if present, else the router."""
    for node in lab.nodes:
        if node.role == "proxy" and node.link == "ua-router":
            return node.host, node.port
    for node in lab.nodes:
        if node.role == "router":
            return node.host, node.port
    raise _user_error(f"{lab.run_dir}/lab.json: nodes: no router")


def _generator_host(lab: LabFile) -> str:
    """The lab topology's free load-generator address (it knows the lab's address block)."""
    from lab.topology import load_topology
    from router.configfile import ConfigError

    try:
        return load_topology(lab.topology).generator_host(0) if lab.topology else "127.0.0.100"
    except (ConfigError, OSError):  # the topology file is gone: the default address block
        return "127.0.0.100"


def _read_users(csv_path: Path) -> list[tuple[str, str]]:
    users = []
    pattern = re.compile(r"^([^;]+);[^;]*;\[authentication username=\S+ password=(\S+)\]")
    for line in csv_path.read_text().splitlines()[1:]:
        m = pattern.match(line)
        if m:
            users.append((m.group(1), m.group(2)))
    return users


def _parse_ramp(text: str | None) -> tuple[float, float, float] | None:
    """``STEP/INTERVAL:MAX`` e.g. ``50/2:400`` = +50/s every 2 s up to 400/s."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)", text.strip())
    if m is None:
        raise _user_error(f"--ramp {text!r}: expected STEP/INTERVAL:MAX, e.g. 50/2:400")
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def _status_counts(sipp_dir: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for log in sipp_dir.glob("*errors.log"):
        for m in _STATUS_RE.finditer(log.read_text(errors="replace")):
            counts[m.group(1)] += 1
    return counts


def _run_sipp(
    args: argparse.Namespace, lab: LabFile, target: tuple[str, int], out: Path
) -> dict[str, Any]:
    from lab.engines import SippRun, register_then_call, start_sipp, uac_call, uac_register

    scenario = {
        "call": lambda: uac_call(hold_ms=int(args.hold * 1000)),
        "register": uac_register,
        "mixed": lambda: register_then_call(hold_ms=int(args.hold * 1000)),
    }[args.scenario]()
    ramp = _parse_ramp(args.ramp)
    run = SippRun(
        scenario,
        local_ip=args.local_ip,
        remote=target,
        rate=args.rate,
        max_calls=args.calls,
        service=args.callee,
        injection=Path(lab.users_csv) if args.scenario != "call" else None,
        rate_increase=ramp[0] if ramp else None,
        rate_interval_s=ramp[1] if ramp else 1.0,
        rate_max=ramp[2] if ramp else None,
        timeout_s=args.timeout,
        name="storm",
    )
    handle = start_sipp(run, out / "sipp")
    started = time.monotonic()
    while handle.is_running():
        time.sleep(1.0)
        r = handle.result()
        _progress(
            time.monotonic() - started, r.calls_created, r.successful, r.failed, r.retransmissions
        )
    result = handle.wait()
    print(file=sys.stderr)
    return {
        "engine": "sipp",
        "attempted": result.calls_created,
        "succeeded": result.successful,
        "failed": result.failed,
        "failed_by_status": dict(_status_counts(out / "sipp")),
        "failed_by_reason": dict(result.failed_by_reason),
        "retransmissions": result.retransmissions,
        "setup_delay_ms": {"p50": result.p50_ms, "p95": result.p95_ms, "p99": result.p99_ms},
        "elapsed_s": result.elapsed_s,
    }


def _run_ua(
    args: argparse.Namespace, lab: LabFile, target: tuple[str, int], out: Path
) -> dict[str, Any]:
    import trio

    from lab.ua.storm import run_storm

    users = _read_users(Path(lab.users_csv))
    if not users:
        raise _user_error(f"{lab.users_csv}: no users")

    def show(p: Any) -> None:
        _progress(p.elapsed, p.attempted, p.succeeded, p.failed, p.retransmissions)

    result = trio.run(
        lambda: run_storm(
            args.scenario,
            target,
            rate=args.rate,
            count=args.calls,
            users=users,
            local_ips=(args.local_ip,),
            callee=args.callee,
            hold=args.hold,
            max_duration=args.timeout,
            progress=show,
        )
    )
    print(file=sys.stderr)
    data = dict(result.to_json())
    data["engine"] = "ua"
    data["failed_by_status"] = data.get("failures_by_status", {})
    delay = data.get("rrd" if args.scenario == "register" else "srd") or {}
    data["setup_delay_ms"] = {
        q: (round(delay[q] * 1000, 1) if delay.get(q) is not None else None)
        for q in ("p50", "p95", "p99")
    }
    return data


def _progress(elapsed: float, attempted: int, ok: int, failed: int, retrans: int) -> None:
    print(
        f"\r  {elapsed:6.1f} s  attempted {attempted:7d}  ok {ok:7d}  failed {failed:6d}  "
        f"retransmissions {retrans:6d}",
        end="",
        file=sys.stderr,
        flush=True,
    )


def cmd_storm(args: argparse.Namespace) -> int:
    try:
        lab = read_labfile(args.dir)
    except LabFileError as exc:
        raise _user_error(f"{exc} (start one with `siplab lab up`)") from None
    from lab.engines.probe import require_loopback
    from lab.netns_cli import enter_lab

    enter_lab(lab)  # a netns lab: run from its harness namespace
    if args.generators != 1:
        from lab.storm_generators import storm_generators

        return storm_generators(args, lab, entry_point(lab))

    if args.local_ip is None:
        args.local_ip = _generator_host(lab)
    try:
        require_loopback(args.local_ip)
    except ValueError as exc:
        raise _user_error(f"--local-ip: {exc}") from None
    if args.rate <= 0 or args.calls <= 0:
        raise _user_error("--rate and --calls must be > 0")
    target = entry_point(lab)
    out = Path(args.out or Path(lab.run_dir) / f"storm-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"storm: {args.scenario} x {args.calls} at {args.rate:g}/s via {target[0]}:{target[1]} "
        f"({args.engine}); results in {out}",
        file=sys.stderr,
    )
    if args.engine == "sipp":
        from lab.engines import sipp_binary

        if sipp_binary() is None:
            raise _user_error(
                "--engine sipp: SIPp is not installed (Debian sip-tester); try --engine ua"
            )
        summary = _run_sipp(args, lab, target, out)
    else:
        summary = _run_ua(args, lab, target, out)
    summary.update(
        {
            "scenario": args.scenario,
            "rate": args.rate,
            "calls": args.calls,
            "target": f"{target[0]}:{target[1]}",
        }
    )
    (out / "storm.json").write_text(json.dumps(summary, indent=2) + "\n")
    d = summary.get("setup_delay_ms") or {}
    print(f"attempted   {summary.get('attempted')}")
    print(f"succeeded   {summary.get('succeeded')}")
    print(f"failed      {summary.get('failed')}  by status {summary.get('failed_by_status') or {}}")
    print(f"retransmissions {summary.get('retransmissions')}")
    if d:
        print(f"setup delay p50 {d.get('p50')} ms  p95 {d.get('p95')} ms  p99 {d.get('p99')} ms")
    print(f"summary: {out / 'storm.json'}")
    return 0 if not summary.get("failed") else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("storm", help="a bounded call/registration storm through the running lab")
    p.add_argument("--scenario", choices=["call", "register", "mixed"], default="call")
    p.add_argument("--rate", type=float, default=50.0, help="calls or registrations per second")
    p.add_argument("--calls", type=int, default=500, help="how many in all (bounded)")
    p.add_argument("--ramp", help="STEP/INTERVAL:MAX, e.g. 50/2:400 (SIPp engine)")
    p.add_argument("--engine", choices=["sipp", "ua"], default="sipp")
    p.add_argument("--callee", default="600", help="extension called (default 600: answers)")
    p.add_argument("--hold", type=float, default=0.0, help="call hold time, seconds")
    p.add_argument(
        "--local-ip", default=None, help="load generator address (default: the lab's free one)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="hard time bound, seconds")
    p.add_argument(
        "--generators",
        type=int,
        default=1,
        help="split the load over N SIPp instances on their own addresses (netns: own hosts)",
    )
    p.add_argument("--out", help="results folder (default <lab run>/storm-<time>)")
    p.add_argument("--dir", default=None, help="lab run folder (default runs/lab)")
    p.set_defaults(func=cmd_storm)
