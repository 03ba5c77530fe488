"""``siplab lab ...`` and ``siplab ladder``: bring a lab up, look at it, break it, read it.

``lab up`` starts the nodes *detached* (they outlive the command) and writes ``lab.json`` into the
run folder (``runs/lab`` unless ``--dir``); every other command finds the lab there.

:func:`main` is the ``siplab`` command (``[project.scripts]`` in pyproject.toml, or
``python -m lab.cli``): the router's own subcommands (``router/cli.py``: ``router``, ``db``,
``users``), then the lab's and the reports'. It lives here, not in the router, because the
router must not depend on the lab or the reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab.backends import LabError, NodeState, backend_names, get_backend
from lab.faults import Action, FaultRule, add_rule, clear_rules, read_rules
from lab.labfile import DEFAULT_RUN_DIR, LabFile, LabFileError, read_labfile
from lab.topology import RouterSpec, Topology, default_topology, load_topology
from router.configfile import ConfigError, FieldError


def _user_error(message: str) -> Exception:
    from router.cli import UserError

    return UserError(message)


def _lab(args: argparse.Namespace) -> LabFile:
    try:
        lab = read_labfile(args.dir)
    except LabFileError as exc:
        raise _user_error(str(exc)) from None
    from lab.netns_cli import enter_lab

    enter_lab(lab)  # netns lab: this process joins the harness namespace (lab/netns.py)
    return lab


def _backend(lab_or_name: LabFile | str, **options: Any) -> Any:
    name = lab_or_name if isinstance(lab_or_name, str) else lab_or_name.backend
    try:
        return get_backend(name, detach=True, **options)
    except LabError as exc:
        raise _user_error(str(exc)) from None


# -- up / down / status -------------------------------------------------------------------


def build_topology(args: argparse.Namespace) -> Topology:
    """The topology from ``--topology`` (or the default) with the command-line overrides."""
    try:
        topology = load_topology(args.topology) if args.topology else default_topology()
    except ConfigError as exc:
        raise _user_error(str(exc)) from None
    if args.pbx is not None:
        topology = topology.with_pbx(args.pbx, args.pbx_kind)
    elif args.pbx_kind:
        topology = replace(
            topology, pbx=[replace(p, kind=args.pbx_kind) for p in topology.pbx_nodes()]
        )
    topology = replace(topology, router=_router_overrides(args, topology.router))
    if args.time_scale is not None:
        topology = replace(topology, timers=replace(topology.timers, time_scale=args.time_scale))
    if getattr(args, "net", None):
        topology = replace(topology, lab=replace(topology.lab, net=args.net))
    for link in args.fault_link or ():
        if link not in topology.faults:
            topology = replace(topology, faults=[*topology.faults, link])
    try:  # re-run validation on the overridden values
        Topology(**{f: getattr(topology, f) for f in Topology.__dataclass_fields__})
    except FieldError as exc:
        raise _user_error(f"command line: {exc.field}: {exc.reason}") from None
    return topology


def _router_overrides(args: argparse.Namespace, router: RouterSpec) -> RouterSpec:
    """``[router]`` with ``--router kind[:version]`` and ``--router-config`` applied."""
    from lab.routers.kamailio.capabilities import parse_router_option

    fields = {f: getattr(router, f) for f in RouterSpec.__dataclass_fields__}
    try:
        if getattr(args, "router", None):
            fields["kind"], fields["version"] = parse_router_option(args.router)
        if getattr(args, "router_config", None):
            fields["config"] = str(Path(args.router_config).resolve())
        return RouterSpec(**fields)
    except FieldError as exc:
        raise _user_error(f"command line: router.{exc.field}: {exc.reason}") from None
    except ValueError as exc:
        raise _user_error(f"command line: {exc}") from None


def _placement(args: argparse.Namespace) -> dict[str, Any]:
    """``--place NODE=CONSTRAINT`` (swarm only) as the backend's ``placement`` option."""
    if not args.place:
        return {}
    if args.backend != "swarm":
        raise _user_error(f"--place: only the swarm backend places nodes, not {args.backend!r}")
    placement: dict[str, list[str]] = {}
    for item in args.place:
        node, sep, constraint = item.partition("=")
        if not sep or not node or not constraint:
            raise _user_error(f"--place {item!r}: expected NODE=CONSTRAINT (NODE may be '*')")
        placement.setdefault(node, []).append(constraint)
    return {"placement": placement}


def cmd_up(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir or DEFAULT_RUN_DIR)
    try:
        existing = read_labfile(run_dir)
    except LabFileError:
        existing = None
    if existing is not None:
        backend = _backend(existing)
        live = [n.name for n in existing.nodes if backend.node_state(n) is not NodeState.DOWN]
        if live:
            raise _user_error(
                f"{run_dir}: a lab is already up ({', '.join(live)}); run `siplab lab down` first"
            )
    topology = build_topology(args)
    backend = args.backend
    if topology.lab.net == "netns":
        if backend not in (None, "local", "netns"):
            raise _user_error(f"--net netns runs local processes, not --backend {backend}")
        backend = "netns"
    try:
        if backend == "netns":
            lab = _backend(backend).up(topology, run_dir, db_url=args.db)
        else:
            from lab.docker.asterisk import backend_for

            # real Asterisk nodes run only as containers: they imply --backend docker
            chosen = backend_for(topology, backend or "local")
            lab = _backend(chosen, **_placement(args)).up(topology, run_dir, db_url=args.db)
    except LabError as exc:
        raise _user_error(str(exc)) from None
    for node in lab.nodes:
        where = f"{node.host}:{node.port}" if node.port else lab.db
        extra = f"  {node.version}" if node.version else ""
        print(f"  {node.name:<22} {node.role:<7} {where:<22} pid {node.pid or '-'}{extra}")
    print(f"lab up: {Path(lab.run_dir) / 'lab.json'}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    lab = _lab(args)
    _backend(lab).down(lab)  # stops the capture after the nodes
    from lab.evidence import write_capture

    pcap = write_capture(lab.run_dir)  # the real capture; rebuilt from events only for old runs
    print(f"lab down: capture {pcap}, events {lab.events}")
    return 0


def _http_status(node: Any) -> dict[str, Any] | None:
    if not node.http:
        return None
    try:
        with urllib.request.urlopen(f"http://{node.http}/status", timeout=1.0) as resp:
            data = json.loads(resp.read().decode())
            return data if isinstance(data, dict) else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


def lab_status(lab: LabFile, backend: Any) -> dict[str, Any]:
    """Per node state, the router's dispatcher view and the DB's bindings count."""
    nodes = []
    dispatcher: list[dict[str, Any]] = []
    for node in lab.nodes:
        embedded = node.role == "db" and node.pid is None and node.container is None
        state = "embedded" if embedded else backend.node_state(node).value
        nodes.append(
            {
                "name": node.name,
                "role": node.role,
                "address": node.address if node.port else lab.db,
                "pid": node.pid,
                "state": state,
            }
        )
        if node.role == "router" and state == "up":
            status = _http_status(node)
            if status is not None:
                dispatcher = [
                    {"uri": d.get("uri"), "flags": d.get("flags")}
                    for d in status.get("dispatcher", [])
                ]
    bindings: dict[str, int] = {}
    try:
        from router.realtime import RealtimeError, connect

        db = connect(lab.db)
        try:
            for table in ("location", "ps_contacts"):
                try:
                    bindings[table] = db.count(table)
                except (ValueError, RealtimeError):
                    continue
        finally:
            db.close()
    except Exception as exc:  # the DB being gone must not break `status`
        bindings["error"] = -1
        nodes.append(
            {"name": "db", "role": "db", "address": lab.db, "pid": None, "state": f"error: {exc}"}
        )
    return {"run_dir": lab.run_dir, "nodes": nodes, "dispatcher": dispatcher, "bindings": bindings}


def cmd_status(args: argparse.Namespace) -> int:
    lab = _lab(args)
    status = lab_status(lab, _backend(lab))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    for node in status["nodes"]:
        print(f"  {node['name']:<22} {node['role']:<7} {node['address']:<22} {node['state']}")
    for dest in status["dispatcher"]:
        print(f"  dispatcher {dest['uri']:<30} {dest['flags']}")
    for table, count in status["bindings"].items():
        print(f"  bindings {table}: {count}")
    return 0


def _node_action(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        lab = _lab(args)
        try:
            getattr(_backend(lab), action)(lab, args.node)
        except LabError as exc:
            raise _user_error(str(exc)) from None
        print(f"lab {action} {args.node}: done")
        return 0

    return run


# -- faults ---------------------------------------------------------------------------------


def _relay(lab: LabFile, link: str) -> Any:
    relays = [n for n in lab.nodes if n.role == "proxy"]
    for node in relays:
        if node.link == link:
            return node
    known = (
        ", ".join(n.link for n in relays)
        or "none; add `faults = [...]` to the topology or `lab up --fault-link`"
    )
    raise _user_error(f"--link {link}: no fault relay on that link (links: {known})")


def rule_from_args(args: argparse.Namespace) -> FaultRule:
    """The rule ``lab fault add`` describes (``--drop ACK``, ``--drop 200``, ``--loss 0.1`` ...)."""
    method, status = (args.method or "").upper(), args.status or 0
    fields: dict[str, Any] = {}
    action: Action
    if args.drop is not None:
        action = "drop"
        what = args.drop.upper()
        if what.isdigit():
            status = int(what)
        elif what not in ("ANY", "ALL"):
            method = what
    elif args.loss is not None:
        action, fields["prob"] = "drop", args.loss
    elif args.delay is not None:
        action, fields["delay_ms"] = "delay", args.delay
    elif args.duplicate:
        action = "duplicate"
    elif args.reorder:
        action = "reorder"
    else:
        raise _user_error(
            "lab fault add: give one of --drop, --loss, --delay, --duplicate, --reorder"
        )
    if args.prob is not None:
        fields["prob"] = args.prob
    try:
        return FaultRule(
            action=action,
            direction=args.direction,
            method=method,
            status=status,
            call_id=args.call_id or "",
            count=args.count or 0,
            **fields,
        )
    except FieldError as exc:
        raise _user_error(f"lab fault add: {exc.field}: {exc.reason}") from None


def cmd_fault_add(args: argparse.Namespace) -> int:
    relay = _relay(_lab(args), args.link)
    rule = add_rule(relay.rules, rule_from_args(args))
    print(
        f"fault {rule.id} on {args.link}: {rule.action} {rule.method or ''}{rule.status or ''} ({relay.rules})"
    )
    return 0


def cmd_fault_clear(args: argparse.Namespace) -> int:
    lab = _lab(args)
    relays = [_relay(lab, args.link)] if args.link else [n for n in lab.nodes if n.role == "proxy"]
    for relay in relays:
        clear_rules(relay.rules)
    print(f"faults cleared on {', '.join(r.link for r in relays) or 'no link'}")
    return 0


def cmd_fault_list(args: argparse.Namespace) -> int:
    for relay in (n for n in _lab(args).nodes if n.role == "proxy"):
        for rule in read_rules(relay.rules):
            print(f"  {relay.link:<16} {rule}")
    return 0


# -- ladders --------------------------------------------------------------------------------


def cmd_ladder(args: argparse.Namespace) -> int:
    from lab.evidence import write_ladders

    run = Path(args.run_dir)
    if not run.is_dir():
        raise _user_error(f"{run}: no such run folder")
    ids = [args.call_id] if args.call_id else None
    ladders = write_ladders(
        run, ids, failed=args.failed or (not ids and not args.all), png=args.png
    )
    if not ladders:
        what = (
            f"Call-ID {args.call_id}" if args.call_id else ("calls" if args.all else "failed calls")
        )
        print(f"no {what} in {run}")
        return 1 if args.call_id else 0
    for _, svg, text in ladders:
        print(text)
        print(f"  -> {svg}\n")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser("lab", help="bring a lab topology up and down, inject faults")
    lsub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--dir", default=None, help=f"run folder (default {DEFAULT_RUN_DIR})")
        return p

    up = with_dir(
        lsub.add_parser("up", help="start the topology and wait until every node answers SIP")
    )
    up.add_argument("--topology", help="topology TOML (default: router + 3 PBX nodes)")
    up.add_argument("--pbx", type=int, help="number of PBX nodes")
    up.add_argument(
        "--pbx-kind", choices=["emulator", "sipp", "asterisk"], help="PBX implementation"
    )
    up.add_argument(
        "--router",
        metavar="KIND[:VERSION]",
        help="router under test: reference (default), kamailio (the host's), kamailio:6.0 / "
        "kamailio:6.1 (in a container)",
    )
    up.add_argument(
        "--router-config",
        metavar="PATH",
        help="your own kamailio.cfg as the router (with --router kamailio; the lab's settings "
        "arrive as -A defines: docs/kamailio-contract.md)",
    )
    up.add_argument(
        "--backend",
        choices=backend_names(),
        help="local (default) or docker (the default when a PBX node is real Asterisk)",
    )
    up.add_argument(
        "--place",
        action="append",
        metavar="NODE=CONSTRAINT",
        help="swarm placement constraint for NODE ('*': every node), e.g. "
        "'pbx2=node.labels.siplab.host==b'",
    )
    up.add_argument(
        "--db",
        help="realtime DB: a URL, 'sqlite' (file in the run folder), or 'postgres' (a PostgreSQL "
        "the lab starts); default: SQLite, or the lab's PostgreSQL under --router kamailio",
    )
    up.add_argument(
        "--net",
        choices=["loopback", "netns"],
        help="loopback: nodes on 127.N.0.x; netns: every node in its own network namespace",
    )
    up.add_argument("--time-scale", type=float, help="multiply every timer (0.1 = 10x faster)")
    up.add_argument(
        "--fault-link", action="append", help="put a fault relay on LINK (ua-router, router-pbx1)"
    )
    up.set_defaults(func=cmd_up)

    st = with_dir(lsub.add_parser("status", help="node states, dispatcher view, bindings"))
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    with_dir(
        lsub.add_parser("down", help="stop every node, merge events, write capture.pcap")
    ).set_defaults(func=cmd_down)
    for action, text in (
        ("kill", "SIGKILL a node (crash)"),
        ("pause", "SIGSTOP a node (hang)"),
        ("resume", "SIGCONT a paused node"),
        ("restart", "restart a node with the same command line"),
    ):
        p = with_dir(lsub.add_parser(action, help=text))
        p.add_argument("node")
        p.set_defaults(func=_node_action(action))

    from lab.netns_cli import add_link_command

    add_link_command(lsub, with_dir)
    fault = lsub.add_parser("fault", help="fault rules on relayed links")
    fsub = fault.add_subparsers(dest="fault_command", metavar="ACTION", required=True)
    add = with_dir(fsub.add_parser("add", help="add a rule"))
    add.add_argument("--link", required=True)
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--drop", metavar="METHOD|STATUS|any")
    what.add_argument("--loss", type=float, metavar="P", help="drop any message with probability P")
    what.add_argument("--delay", type=float, metavar="MS")
    what.add_argument("--duplicate", action="store_true")
    what.add_argument("--reorder", action="store_true")
    add.add_argument("--method")
    add.add_argument("--status", type=int)
    add.add_argument(
        "--direction", default="any", choices=["a2b", "b2a", "any"], help="a2b: towards B of A-B"
    )
    add.add_argument("--prob", type=float)
    add.add_argument("--count", type=int)
    add.add_argument("--call-id")
    add.set_defaults(func=cmd_fault_add)
    clear = with_dir(fsub.add_parser("clear", help="remove the rules (of one link or all)"))
    clear.add_argument("--link")
    clear.set_defaults(func=cmd_fault_clear)
    with_dir(fsub.add_parser("list", help="show the rules")).set_defaults(func=cmd_fault_list)

    ladder = sub.add_parser("ladder", help="draw call ladders of a run folder (text + SVG)")
    ladder.add_argument("run_dir")
    pick = ladder.add_mutually_exclusive_group()
    pick.add_argument("--call-id")
    pick.add_argument("--failed", action="store_true", help="failed calls (the default)")
    pick.add_argument("--all", action="store_true", help="every call")
    ladder.add_argument("--png", action="store_true", help="also PNG (needs matplotlib)")
    ladder.set_defaults(func=cmd_ladder)


# -- the `siplab` command -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, in help order: router, PBX emulator, lab, reports, storm, conformance."""
    from lab import conformance, fidelity, storm_cli
    from lab.pbx import cli as pbx_cli
    from reports import cli as reports_cli
    from router.cli import add_router_commands

    parser = argparse.ArgumentParser(
        prog="siplab",
        description="SIP routing-tier lab: reference router, Asterisk-node emulator, "
        "fault injection, load and capacity reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_router_commands(sub)
    for add in (
        pbx_cli.add_commands,
        add_commands,
        reports_cli.add_commands,
        storm_cli.add_commands,
        conformance.add_commands,
        fidelity.add_commands,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``siplab``: exit status of the subcommand (2 and one line for a user's error)."""
    from router.cli import run

    return run(build_parser(), argv)


if __name__ == "__main__":
    # `python -m lab.cli` runs this file as __main__: delegate to the module proper, so the
    # commands and the classes they share are those every other module imports.
    from lab.cli import main as _main

    sys.exit(_main())
