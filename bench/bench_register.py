"""Benchmark: registrations per second with digest auth, reference router vs Kamailio.

Same users (500 by default, provisioned in one SQLite realtime DB per router: Asterisk's
``ps_auths`` for auth, Kamailio's ``location`` for bindings), same SIPp REGISTER-with-auth
scenario, same machine, one after the other:

1. Kamailio 5.6 (Debian) sized like production: 1 worker, ``-m 2048``, ``auth_db`` on
   ``ps_auths`` (column mapping), ``registrar``/``usrloc`` db_mode 1 (write-through) with
   ``db_sqlite`` (lab/routers/kamailio).
2. The reference router, 1 worker (it has one), registrar with grouped commits, SQLite
   ``synchronous=FULL``.

Both: no registration forwarding (``forward = none``), so only the registrar is measured. One
registration = challenge + authenticated REGISTER + 200. Prints each max rate (< 0.1 % failed
per step), and the ratio. Numbers only; nothing here asserts a speed.

Run: ``python -m bench.bench_register [--users 500] [--step-s 4] [--start 100]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.peers import CapacitySearch, CapacityStep, find_max_cps
from lab.engines import SippRun, uac_register, wait_sip_ready
from lab.procs import start_process
from router.realtime import connect, write_sipp_csv

UAC_IP = "127.0.0.42"
KAMAILIO_ADDR = ("127.0.0.43", 5060)
REFERENCE_ADDR = ("127.0.0.44", 5060)
DOMAIN = "siplab.local"


def provision(folder: Path, users: int) -> tuple[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'realtime.db'}"
    with connect(url) as db:
        db.init_schema()
        creds = db.provision_users(users, 1000, domain=DOMAIN, context="default", seed=11)
    csv = folder / "users.csv"
    write_sipp_csv(csv, creds)
    return url, csv


def _print_step(name: str) -> Callable[[CapacityStep], None]:
    def show(step: CapacityStep) -> None:
        r = step.result
        verdict = "pass" if step.passed else f"FAIL ({step.reason})"
        p95 = f"{r.p95_ms:.0f}" if r.p95_ms is not None else "-"
        print(
            f"  [{name}] {step.target_cps:7.0f} reg/s target  {r.achieved_cps:7.0f} achieved  "
            f"ok={r.successful} failed={r.failed} retrans={r.retransmissions} p95={p95} ms  {verdict}",
            flush=True,
        )

    return show


def _search(
    name: str,
    address: tuple[str, int],
    csv: Path,
    workdir: Path,
    *,
    start: float,
    step_s: float,
    users: int,
) -> CapacitySearch:
    scenario = uac_register(expires=3600)

    def make(rate: float, max_calls: int, timeout_s: float) -> SippRun:
        return SippRun(
            scenario=scenario,
            local_ip=UAC_IP,
            remote=address,
            rate=rate,
            max_calls=max_calls,
            injection=csv,
            timeout_s=timeout_s,
        )

    # A step re-registers users (SEQUENTIAL wraps around): each REGISTER updates a binding.
    return find_max_cps(
        start,
        make,
        workdir=workdir,
        step_s=step_s,
        on_step=_print_step(name),
        max_target=float(users) * 10,
    )


def measure_kamailio(workdir: Path, users: int, *, start: float, step_s: float) -> CapacitySearch:
    from lab.routers.kamailio.router import KamailioRouterParams, start_kamailio_router

    url, csv = provision(workdir / "db", users)
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
    try:
        return _search(
            "kamailio", KAMAILIO_ADDR, csv, workdir / "uac", start=start, step_s=step_s, users=users
        )
    finally:
        handle.stop()


def measure_reference(workdir: Path, users: int, *, start: float, step_s: float) -> CapacitySearch:
    url, csv = provision(workdir / "db", users)
    cfg = workdir / "router.toml"
    cfg.write_text(
        f'[router]\nlisten = ["udp:{REFERENCE_ADDR[0]}:{REFERENCE_ADDR[1]}"]\n\n'
        "[dispatcher]\n[dispatcher.probing]\ninterval = 0\n\n"
        f'[registrar]\ndb = "{url}"\nforward = "none"\ndomain = "{DOMAIN}"\n'
        "max_failures_per_source = 1000000\nmax_failures_per_user = 1000000\n"
    )
    proc = start_process(
        [sys.executable, "-m", "router.cli", "router", "--config", str(cfg)],
        name="router",
        log_dir=workdir,
    )
    try:
        wait_sip_ready(*REFERENCE_ADDR, timeout=15.0, alive=proc.is_running, local_ip=UAC_IP)
        return _search(
            "reference",
            REFERENCE_ADDR,
            csv,
            workdir / "uac",
            start=start,
            step_s=step_s,
            users=users,
        )
    finally:
        proc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--start", type=float, default=100.0)
    parser.add_argument("--step-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    workdir = (
        args.workdir or Path("runs") / f"bench_register_{time.strftime('%Y%m%d-%H%M%S')}"
    ).resolve()
    print(
        f"bench_register: run folder {workdir}; {args.users} users; 1 worker each; Kamailio -m 2048",
        flush=True,
    )
    kam = measure_kamailio(workdir / "kamailio", args.users, start=args.start, step_s=args.step_s)
    ref = measure_reference(workdir / "reference", args.users, start=args.start, step_s=args.step_s)
    print()
    print(
        f"kamailio   max {kam.max_cps:8.0f} registrations/s (auth_db + registrar, db_sqlite, 1 worker, -m 2048)"
    )
    print(
        f"reference  max {ref.max_cps:8.0f} registrations/s (1 worker, grouped commits, SQLite FULL)"
    )
    if kam.max_cps > 0:
        print(f"ratio reference / kamailio = {ref.max_cps / kam.max_cps:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
