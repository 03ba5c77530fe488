"""The ``siplab`` command line.

Each area of the project contributes its subcommands through an explicit registry (no discovery by
name): a module listed in ``_COMMAND_MODULES`` exposes ``add_commands(subparsers)`` and sets
``func`` on every parser it adds. ``func(args) -> int`` is the exit status.

Errors a user can fix (bad config, bad CLI value, missing file) are raised as ``UserError`` and
printed as one line naming the file, field and reason; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add subcommands. A module missing from the tree is a packaging bug, so it is not
# silently skipped.
_COMMAND_MODULES: tuple[str, ...] = (
    "router.realtime.cli",
    "router.server",
    "lab.pbx.cli",
    "lab.cli",
    "reports.cli",
    "lab.storm_cli",
    "lab.conformance",
)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siplab",
        description="SIP routing-tier lab: reference router, Asterisk-node emulator, "
        "fault injection, load and capacity reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":
    # `python -m router.cli` runs this file as __main__; delegate to the module proper so that
    # the UserError the commands raise (imported from router.cli) is the class caught in main.
    from router.cli import main as _main

    sys.exit(_main())
