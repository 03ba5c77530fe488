"""``siplab lab link NODE ...``: a netns lab's link impairment and carrier at run time.

Examples::

    siplab lab link pbx2 --delay 80ms --loss 5%     # replaces whatever pbx2's link had
    siplab lab link pbx2 --rate 256kbit
    siplab lab link pbx2 --clear
    siplab lab link pbx1 --down                     # carrier off: a pulled cable
    siplab lab link pbx1 --up
    siplab lab link --show
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from lab.labfile import LabFile
from lab.netns import LinkSpec, NetnsError, enter
from router.configfile import FieldError


def enter_lab(lab: LabFile) -> None:
    """For a netns lab, move this (one-shot CLI) process into the harness namespace, so its
    in-process sockets (status, storm, probes) and children reach the lab's 10.N.0.x."""
    if lab.network.get("mode") != "netns":
        return
    try:
        enter(str(lab.network["host_ns"]))
    except (NetnsError, OSError) as exc:
        from router.cli import UserError

        raise UserError(
            f"{lab.run_dir}: the lab's namespace {lab.network['host_ns']} is gone "
            f"({exc}); run `siplab lab down` to clean up"
        ) from None


def cmd_link(args: argparse.Namespace) -> int:
    from lab.backends import LabError
    from lab.backends.netns import NetnsBackend
    from lab.cli import _lab
    from router.cli import UserError

    lab = _lab(args)
    if args.show or not args.node:
        if lab.network.get("mode") != "netns":
            raise UserError(f"{lab.run_dir}: not a netns lab (lab up --net netns)")
        down = set(lab.network.get("down", []))
        for node in sorted(lab.network.get("addresses", {})):
            state = "down" if node in down else "up"
            print(f"  {node:<22} {state:<5} {lab.network.get('links', {}).get(node, 'none')}")
        return 0
    backend = NetnsBackend(detach=True)
    try:
        if args.down or args.up:
            backend.link_state(lab, args.node, up=bool(args.up))
            print(f"link {args.node}: {'up' if args.up else 'down'}")
            return 0
        try:
            spec = (
                LinkSpec()
                if args.clear
                else LinkSpec(
                    delay=args.delay or "",
                    jitter=args.jitter or "",
                    loss=args.loss or "",
                    duplicate=args.duplicate or "",
                    reorder=args.reorder or "",
                    rate=args.rate or "",
                )
            )
        except FieldError as exc:
            raise UserError(f"lab link {args.node}: --{exc.field}: {exc.reason}") from None
        updated = backend.set_link(lab, args.node, spec)
    except LabError as exc:
        raise UserError(str(exc)) from None
    print(f"link {args.node}: {updated.network['links'][args.node]}")
    return 0


def add_link_command(
    lsub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_dir: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    p: Any = with_dir(
        lsub.add_parser("link", help="netns lab: impair a node's link (tc netem) or cut it")
    )
    p.add_argument("node", nargs="?", help="the node whose link (its veth pair) to change")
    for name, example in (
        ("delay", "80ms"),
        ("jitter", "10ms"),
        ("loss", "5%%"),
        ("duplicate", "1%%"),
        ("reorder", "25%%"),
        ("rate", "256kbit"),
    ):
        p.add_argument(f"--{name}", metavar=example.replace("%%", "%"), help=f"e.g. {example}")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--clear", action="store_true", help="remove every impairment")
    what.add_argument("--down", action="store_true", help="carrier off (a pulled cable)")
    what.add_argument("--up", action="store_true", help="carrier back on")
    what.add_argument("--show", action="store_true", help="every link and its impairment")
    p.set_defaults(func=cmd_link)


__all__ = ["add_link_command", "cmd_link", "enter_lab"]
