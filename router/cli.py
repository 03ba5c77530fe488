"""The reference router's command line: ``python -m router.cli router --config router.toml``
(plus ``db`` and ``users`` for its realtime DB).

The router does not depend on the lab or the reports: the ``siplab`` command, which adds the lab's
and the reports' subcommands to these, lives in ``lab/cli.py``. Each module contributing
subcommands exposes ``add_commands(subparsers)`` and sets ``func`` on every parser it adds;
``func(args) -> int`` is the exit status.

Errors a user can fix (bad config, bad CLI value, missing file) are raised as ``UserError`` and
printed as one line naming the file, field and reason; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class UserError(Exception):
    """An error the user can fix: printed as ``siplab: error: <message>``, exit status 2."""


def find_exception(
    exc: BaseException, kinds: tuple[type[BaseException], ...]
) -> BaseException | None:
    """The first exception of one of ``kinds`` (in that order of preference), looking inside
    exception groups (trio wraps what a nursery's tasks raise)."""
    flat: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            flat.append(e)

    walk(exc)
    for kind in kinds:
        for e in flat:
            if isinstance(e, kind):
                return e
    return None


def add_router_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The router's own subcommands: ``db``, ``users`` (``router/realtime/cli.py``) and
    ``router`` (``router/server.py``)."""
    from router import server
    from router.realtime import cli as realtime_cli

    realtime_cli.add_commands(sub)
    server.add_commands(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m router.cli",
        description="siplab's reference SIP router and its realtime DB (the lab's commands "
        "are in `siplab`).",
    )
    add_router_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand: its exit status, 2 with one line on
    stderr for a :class:`UserError`, 130 on Ctrl-C."""
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except UserError as exc:
        print(f"siplab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    # `python -m router.cli` runs this file as __main__; delegate to the module proper so that
    # the UserError the commands raise (imported from router.cli) is the class caught in run.
    from router.cli import main as _main

    sys.exit(_main())
