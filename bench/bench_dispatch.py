"""Benchmark: max calls per second of a stateful dispatcher in front of two SIPp UAS.

Same load, same peers, same machine, one after the other:

1. Kamailio 5.6 (Debian) sized like production: 1 worker, ``-m 2048``, ``-M 16``, dispatcher
   round robin with record-route and failover (lab/routers/kamailio/kamailio.cfg).
2. The reference router, started from a command line such as
   ``siplab router --config FILE`` (see :func:`measure_reference_router`), when given.

Prints each max CPS (< 0.1 % failed calls per 5 s step), the split of calls between the two
UAS, and the ratio reference / Kamailio. Numbers only; nothing here asserts a speed.

Run: ``python -m bench.bench_dispatch [--router-cmd "siplab router --config r.toml"]``
(the reference router must listen on ``--router-address``, default 127.0.0.36:5060, and
dispatch to the UAS at 127.0.0.33:5090 and 127.0.0.34:5090).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.peers import (
    CapacitySearch,
    CapacityStep,
    call_run_factory,
    find_max_cps,
    start_uas_pool,
    stop_all,
)
from lab.engines import wait_sip_ready
from lab.procs import ManagedProcess, start_process
from lab.routers.kamailio import DispatcherDestination, KamailioParams, start_kamailio

UAC_IP = "127.0.0.32"
UAS_IPS = ("127.0.0.33", "127.0.0.34")
UAS_PORT = 5090
KAMAILIO_ADDR = ("127.0.0.35", 5060)
REFERENCE_ADDR = ("127.0.0.36", 5060)


@dataclass(frozen=True, slots=True)
class RouterFigure:
    """One router's result in this benchmark."""

    name: str
    search: CapacitySearch
    calls_per_uas: tuple[int, ...]


def _print_step(name: str) -> Callable[[CapacityStep], None]:
    def show(step: CapacityStep) -> None:
        r = step.result
        verdict = "pass" if step.passed else f"FAIL ({step.reason})"
        p99 = f"{r.p99_ms:.0f}" if r.p99_ms is not None else "-"
        print(
            f"  [{name}] {step.target_cps:7.0f} cps target  {r.achieved_cps:7.0f} achieved  "
            f"ok={r.successful} failed={r.failed} retrans={r.retransmissions} "
            f"p99 setup={p99} ms  {verdict}",
            flush=True,
        )

    return show


def measure(
    name: str,
    address: tuple[str, int],
    workdir: Path,
    start_router: Callable[[Path], Callable[[], None]],
    *,
    start_cps: float,
    step_s: float,
) -> RouterFigure:
    """Start the UAS pair and the router, search max CPS, stop everything.

    Args:
        start_router: starts the router writing into the given folder, returns its stop function.
    """
    uas = start_uas_pool(UAS_IPS, UAS_PORT, workdir / "uas")
    try:
        stop_router = start_router(workdir / "router")
        try:
            search = find_max_cps(
                start_cps,
                call_run_factory(local_ip=UAC_IP, remote=address),
                workdir=workdir / "uac",
                step_s=step_s,
                on_step=_print_step(name),
            )
        finally:
            stop_router()
    finally:
        results = stop_all(uas)
    return RouterFigure(name, search, tuple(r.count("INVITE") for r in results))


def start_kamailio_router(workdir: Path) -> Callable[[], None]:
    params = KamailioParams(
        listen_ip=KAMAILIO_ADDR[0],
        listen_port=KAMAILIO_ADDR[1],
        children=1,
        shm_mb=2048,
        pkg_mb=16,
        destinations=tuple(DispatcherDestination(f"sip:{ip}:{UAS_PORT}") for ip in UAS_IPS),
    )
    handle = start_kamailio(params, workdir)

    def stop() -> None:
        handle.stop()

    return stop


def measure_reference_router(
    command: Sequence[str],
    address: tuple[str, int],
    workdir: Path,
    *,
    start_cps: float,
    step_s: float,
) -> RouterFigure:
    """Measure the reference router started by ``command`` (e.g. ``siplab router --config F``).

    The command must start a router listening on ``address`` that dispatches to the two UAS
    (``UAS_IPS`` on ``UAS_PORT``); readiness is its answer to an OPTIONS.
    """

    def start(folder: Path) -> Callable[[], None]:
        proc: ManagedProcess = start_process(list(command), name="router", log_dir=folder)
        try:
            wait_sip_ready(address[0], address[1], timeout=15.0, alive=proc.is_running)
        except BaseException:
            proc.stop(grace=2.0)
            raise

        def stop() -> None:
            proc.stop()

        return stop

    return measure("reference", address, workdir, start, start_cps=start_cps, step_s=step_s)


def write_reference_config(folder: Path, address: tuple[str, int]) -> Path:
    """The reference router's equivalent of the Kamailio config: 1 worker (it has one),
    round robin over the two UAS, record-route, failover, fr_timer 2 s, no probing (the
    Kamailio side does not probe either)."""
    folder.mkdir(parents=True, exist_ok=True)
    dests = "".join(f'[[dispatcher.destinations]]\nuri = "sip:{ip}:{UAS_PORT}"\n' for ip in UAS_IPS)
    path = folder / "router.toml"
    path.write_text(
        f'[router]\nname = "router"\nlisten = ["udp:{address[0]}:{address[1]}"]\n\n'
        "[timers]\nfr_timer = 2.0\nfr_inv_timer = 40.0\n\n"
        "[dispatcher]\nalgorithm = 4\n\n" + dests + "\n[dispatcher.probing]\ninterval = 0\n"
    )
    return path


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="run folder")
    parser.add_argument("--start-cps", type=float, default=200.0)
    parser.add_argument("--step-s", type=float, default=5.0)
    parser.add_argument("--router-cmd", default=None, help='e.g. "siplab router --config r.toml"')
    parser.add_argument("--router-address", type=_address, default=REFERENCE_ADDR)
    args = parser.parse_args(argv)
    workdir: Path = (
        args.workdir or Path("runs") / f"bench_dispatch_{time.strftime('%Y%m%d-%H%M%S')}"
    )
    workdir = workdir.resolve()
    print(f"bench_dispatch: run folder {workdir}", flush=True)

    figures = [
        measure(
            "kamailio",
            KAMAILIO_ADDR,
            workdir / "kamailio",
            start_kamailio_router,
            start_cps=args.start_cps,
            step_s=args.step_s,
        )
    ]
    if args.router_cmd:
        command = shlex.split(args.router_cmd)
    else:
        command = [
            sys.executable,
            "-m",
            "router.cli",
            "router",
            "--config",
            str(write_reference_config(workdir / "reference", args.router_address)),
        ]
    figures.append(
        measure_reference_router(
            command,
            args.router_address,
            workdir / "reference",
            start_cps=args.start_cps,
            step_s=args.step_s,
        )
    )
    print()
    for fig in figures:
        split = " / ".join(str(n) for n in fig.calls_per_uas)
        print(f"{fig.name:10s} max {fig.search.max_cps:8.0f} cps   calls per UAS {split}")
    if len(figures) == 2 and figures[0].search.max_cps > 0:
        print(
            f"ratio reference / kamailio = {figures[1].search.max_cps / figures[0].search.max_cps:.2f}"
        )
    else:
        print("reference router not measured (pass --router-cmd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
