"""``siplab pbx --config node.toml``: run one emulated Asterisk node until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial
from typing import Any

import trio

from router.configfile import ConfigError

from .config import PbxConfig, load_config
from .dialplan import Dialplan, load_dialplan
from .server import serve_pbx


def add_commands(subparsers: Any) -> None:
    """Add the ``pbx`` subcommand to ``siplab``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "pbx",
        help="run an Asterisk-node emulator (PJSIP realtime behaviour on the wire)",
        description="Run one emulated Asterisk 22 node: registrar on ps_contacts, dialplan "
        "(600/601/602, users, 700, 800 queue), realtime queues, pjsip timers.",
    )
    parser.add_argument("--config", required=True, help="node TOML file")
    parser.add_argument(
        "--check", action="store_true", help="validate the config and dialplan, then exit"
    )
    parser.set_defaults(func=run)


async def _serve_until_signal(config: PbxConfig, dialplan: Dialplan | None) -> None:
    """Serve until SIGTERM/SIGINT, then stop cleanly (the events file is flushed and closed)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_pbx, config, dialplan=dialplan))
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def run(args: argparse.Namespace) -> int:
    from router.cli import UserError
    from router.realtime.engine import RealtimeError

    try:
        config = load_config(args.config)
        dialplan = load_dialplan(config.dialplan) if config.dialplan else None
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if args.check:
        print(f"{args.config}: ok (node {config.name} on {config.listen}:{config.port})")
        return 0
    import sqlite3

    from router.cli import find_exception
    from router.realtime.engine import db_errors

    try:
        trio.run(_serve_until_signal, config, dialplan)
    except KeyboardInterrupt:
        print(f"pbx {config.name}: stopped", file=sys.stderr)
        return 130
    except (RealtimeError, OSError, sqlite3.Error, BaseExceptionGroup) as exc:
        db_kinds = (RealtimeError, sqlite3.Error, *db_errors())
        err = find_exception(exc, db_kinds)
        if err is not None:
            raise UserError(
                f"{args.config}: db: {err} (is the realtime DB initialised? "
                "run `siplab db init --db URL` and `siplab users add ...`)"
            ) from None
        bind = find_exception(exc, (OSError,))
        if isinstance(bind, OSError):
            raise UserError(
                f"{args.config}: listen: cannot bind {config.listen}:{config.port}: "
                f"{bind.strerror or bind}"
            ) from None
        raise
    return 0
