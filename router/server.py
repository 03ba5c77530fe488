"""Running the router: ``serve_router`` (in-process, for tests and the lab) and the
``siplab router`` command.

SIGTERM and SIGINT shut down gracefully: the sockets close, the event log is flushed. Nothing the
router acknowledged is lost on SIGKILL either: the registrar (part 2) commits bindings before the
200 OK leaves.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from router.app import RouterCore
from router.config import RouterConfig, load_router_config, parse_listen
from router.configfile import ConfigError
from router.observe import EventLog
from router.transport.driver import ROUTER_GC_THRESHOLD, SipDriver, tune_gc_for_serving
from router.transport.http import json_route, serve_http
from router.transport.streams import stream_listeners


@dataclass
class RunningRouter:
    core: RouterCore
    driver: SipDriver
    http: tuple[str, int] | None
    cancel_scope: trio.CancelScope

    def stop(self) -> None:
        self.cancel_scope.cancel()


async def serve_router(
    config: RouterConfig,
    *,
    task_status: trio.TaskStatus[RunningRouter] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the router until cancelled; ``task_status.started`` once every socket is bound."""
    # TLS certificates first: a missing file is a config error before anything starts.
    streams = stream_listeners(
        [parse_listen(x) for x in config.router.listen], config.streams, config.source
    )
    events = EventLog(config.router.events, config.name, raw=config.router.events_raw)
    core = RouterCore(config, events=events, now=trio.current_time())
    driver = SipDriver(
        core,
        udp=config.listen_by_proto("udp"),
        tcp=config.listen_by_proto("tcp"),
        streams=streams,
    )
    core.attach_transport(driver.statistics)
    tune_gc_for_serving(ROUTER_GC_THRESHOLD)
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                # HTTP first: whoever sees the router answer SIP (the lab's readiness probe)
                # may ask /status at once.
                http = None
                if config.router.http:
                    host, _, port = config.router.http.rpartition(":")
                    http = await nursery.start(
                        serve_http,
                        host,
                        int(port),
                        {
                            "/metrics": lambda: (
                                "text/plain; version=0.0.4",
                                core.metrics.render(),
                            ),
                            "/status": json_route(core.status),
                        },
                    )
                await nursery.start(driver.serve)
                # Kick the timer loop so keepalives start at once.
                driver.flush()
                task_status.started(RunningRouter(core, driver, http, scope))
    finally:
        core.close()
        events.event("stopped")
        events.close()


def _setup_logging(path: str | None) -> None:
    handler: logging.Handler
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("siplab")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


async def _main(config: RouterConfig) -> None:
    async with trio.open_nursery() as nursery:
        running: RunningRouter = await nursery.start(serve_router, config)
        addrs = ", ".join(
            [f"udp:{h}:{p}" for h, p in running.driver.bound_udp]
            + [f"tcp:{h}:{p}" for h, p in running.driver.bound_tcp]
            + [f"{proto}:{h}:{p}" for proto, (h, p) in running.driver.bound_streams]
        )
        print(f"siplab router {config.name}: listening on {addrs}", flush=True)
        if running.http:
            print(
                f"  metrics and status on http://{running.http[0]}:{running.http[1]}/", flush=True
            )
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                print(f"siplab router: {signal.Signals(signum).name}, shutting down", flush=True)
                nursery.cancel_scope.cancel()
                break


def run_router_command(args: argparse.Namespace) -> int:
    from router.cli import UserError, find_exception

    try:
        config = load_router_config(args.config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    _setup_logging(config.router.log)
    from router.realtime import RealtimeError

    try:
        trio.run(_main, config)
    except (OSError, ConfigError, RealtimeError, BaseExceptionGroup) as exc:
        err = find_exception(exc, (ConfigError, RealtimeError, OSError))
        if isinstance(err, ConfigError):
            raise UserError(str(err)) from None
        if isinstance(err, RealtimeError):
            raise UserError(f"{args.config}: registrar.db: {err}") from None
        if isinstance(err, OSError):
            raise UserError(
                f"{args.config}: router.listen/http: cannot bind: {err.strerror or err}"
            ) from None
        raise
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("router", help="run the reference SIP router")
    p.add_argument("--config", required=True, help="router TOML file")
    p.set_defaults(func=run_router_command)
