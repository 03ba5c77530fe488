"""Benchmark: registrations per second with digest auth, reference router vs Kamailio 5.6.

The harness of :mod:`bench.harness` (PERFORMANCE.md): the router alone on CPU 1, the SIPp UAC on
CPU 0, constant-rate steps, a step passes when every registration completed (REGISTER -> 401 ->
REGISTER with digest -> 200), 0 failed, 0 retransmissions and no UDP socket drop; router CPU
over the load phase only. Same users (500 by default) provisioned in one SQLite realtime DB per
router (Asterisk's ``ps_auths`` for auth, Kamailio's ``location`` for bindings):

- ``kamailio``: Kamailio 5.6 (Debian), 1 worker, ``-m 2048``, ``auth_db`` on ``ps_auths``,
  ``registrar``/``usrloc`` db_mode 1 (write-through) with ``db_sqlite`` (lab/routers/kamailio);
  every process of it pinned on CPU 1 once it answers.
- ``reference``: 1 process, registrar with grouped commits, SQLite ``synchronous=FULL``.

Both: no registration forwarding (``forward = none``), so only the registrar is measured. Steps
re-register the users (SEQUENTIAL wraps around): each REGISTER updates a binding. Results are
appended to ``bench/results/register.jsonl``; the CPS-vs-CPU plot goes to the run folder.

Run: ``python -m bench.bench_register --quick`` or
``python -m bench.bench_register --rates 500,1000,2000 --step-s 15``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.bench_dispatch import _floats, _git_commit
from bench.harness import (
    BENCH_NET,
    BenchError,
    RunningRouter,
    StepFigure,
    append_history,
    cpu_plot_svg,
    pin_tree,
    require_tools,
    run_step,
    start_pinned_router,
)
from lab.engines import uac_register
from router.realtime import connect, write_sipp_csv

UAC_IP = BENCH_NET + "41"
KAMAILIO_ADDR = (BENCH_NET + "43", 5060)
REFERENCE_ADDR = (BENCH_NET + "44", 5060)
DOMAIN = "siplab.local"
HISTORY = Path(__file__).parent / "results" / "register.jsonl"
ROUTERS = ("kamailio", "reference")


def provision(folder: Path, users: int) -> tuple[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'realtime.db'}"
    with connect(url) as db:
        db.init_schema()
        creds = db.provision_users(users, 1000, domain=DOMAIN, context="default", seed=11)
    csv = folder / "users.csv"
    write_sipp_csv(csv, creds)
    return url, csv


def start_kamailio(workdir: Path, url: str) -> RunningRouter:
    from lab.routers.kamailio.router import KamailioRouterParams, start_kamailio_router

    params = KamailioRouterParams(
        listen_ip=KAMAILIO_ADDR[0],
        listen_port=KAMAILIO_ADDR[1],
        db_url=url,
        registrar=True,
        forward="none",
        destinations=(),
        probe_interval_s=0,
        domain=DOMAIN,
        children=1,
        shm_mb=2048,
        max_failures_per_source=10**6,
        max_failures_per_user=10**6,
    )
    handle = start_kamailio_router(params, workdir / "kamailio")
    pin_tree(handle.pid)
    return RunningRouter("kamailio", handle.pid, handle.stop)


def start_reference(workdir: Path, url: str) -> RunningRouter:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "router.toml"
    cfg.write_text(
        f'[router]\nlisten = ["udp:{REFERENCE_ADDR[0]}:{REFERENCE_ADDR[1]}"]\n\n'
        "[dispatcher]\n[dispatcher.probing]\ninterval = 0\n\n"
        f'[registrar]\ndb = "{url}"\nforward = "none"\ndomain = "{DOMAIN}"\n'
        "max_failures_per_source = 1000000\nmax_failures_per_user = 1000000\n"
    )
    argv = [sys.executable, "-m", "router.cli", "router", "--config", str(cfg)]
    return start_pinned_router("reference", argv, REFERENCE_ADDR, workdir)


def measure(
    name: str, workdir: Path, users: int, rates: Sequence[float], step_s: float
) -> list[StepFigure]:
    url, csv = provision(workdir / "db", users)
    if name == "kamailio":
        router, address = start_kamailio(workdir, url), KAMAILIO_ADDR
    else:
        router, address = start_reference(workdir, url), REFERENCE_ADDR
    figures = []
    try:
        for rate in rates:
            fig = run_step(
                router, uac_register(expires=3600), uac_ip=UAC_IP, remote=address,
                rate=rate, step_s=step_s, workdir=workdir / f"step_{rate:.0f}", injection=csv,
            )  # fmt: skip
            print(fig.line(), flush=True)
            figures.append(fig)
            time.sleep(2.0)
    finally:
        router.stop()
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rates", type=_floats, default=(500.0, 1000.0, 2000.0))
    parser.add_argument("--step-s", type=float, default=15.0)
    parser.add_argument("--routers", default=",".join(ROUTERS), help=",".join(ROUTERS))
    parser.add_argument("--quick", action="store_true", help="5 s steps at 500 and 1,000/s")
    parser.add_argument("--no-history", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.step_s = (500.0, 1000.0), 5.0
    names = [n.strip() for n in args.routers.split(",") if n.strip()]
    if not names or any(n not in ROUTERS for n in names):
        parser.error(f"--routers: choose from {','.join(ROUTERS)}")
    workdir = (
        args.workdir or Path("runs") / f"bench_register_{time.strftime('%Y%m%d-%H%M%S')}"
    ).resolve()
    print(f"bench_register: run folder {workdir}; {args.users} users; 1 worker each", flush=True)
    try:
        require_tools("taskset", "sipp")
        figures = [
            f for n in names for f in measure(n, workdir / n, args.users, args.rates, args.step_s)
        ]
    except BenchError as exc:
        print(f"bench_register: {exc}", file=sys.stderr)
        return 2
    print()
    for name in names:
        mine = [f for f in figures if f.router == name]
        held = max((f.rate for f in mine if f.passed), default=0.0)
        ms = statistics.median(f.cpu_ms_per_call for f in mine) if mine else 0.0
        print(
            f"{name:10s} holds {held:6.0f} registrations/s; median {ms:.3f} ms CPU per registration"
        )
    plot = workdir / "cpu.svg"
    plot.write_text(cpu_plot_svg(figures, "registrar: router CPU vs offered registrations/s"))
    print(f"plot: {plot}")
    if not args.no_history:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        commit = _git_commit()
        append_history(
            HISTORY,
            (f.record(phase="register", at=stamp, commit=commit, note=args.note) for f in figures),
        )
        print(f"history: appended {len(figures)} rows to {HISTORY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
