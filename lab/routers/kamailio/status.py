"""Kamailio in the lab's router seat, seen through the same lens as the reference router:
re-rendering its cfg after a router.toml change, and its state (JSON-RPC over HTTP) in the shape
of the reference router's ``/status`` (the parts scenarios read)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.backends import LabError


def render_kamailio(router_toml: dict[str, Any], run_dir: Path) -> list[str]:
    """Check the cfg again with the defines of a changed router TOML; return the new argv
    (the node must be restarted with it: the settings are ``-A`` defines on the command line).
    The cfg and Kamailio version are the run's (``<run>/topology.toml`` ``[router]``)."""
    from lab.routers.kamailio import KamailioError
    from lab.routers.kamailio.launch import kamailio_router_argv
    from lab.routers.kamailio.router import router_params_from_dict
    from lab.topology import RouterSpec, load_topology
    from router.configfile import ConfigError

    try:
        topo = run_dir / "topology.toml"
        spec = load_topology(topo).router if topo.exists() else RouterSpec(kind="kamailio")
        params = router_params_from_dict(router_toml, source="router.toml")
        return kamailio_router_argv(params, run_dir / "kamailio", spec)
    except (KamailioError, ConfigError, ValueError) as exc:
        raise LabError(f"router (kamailio): {exc}") from exc


def kamailio_status(rpc: Callable[..., Any]) -> dict[str, Any]:
    """Kamailio's state in the reference router's ``/status`` shape (the parts scenarios use),
    from ``dispatcher.list`` and ``stats.get_statistics all`` through ``rpc(method, *params)``.
    """
    dispatcher: list[dict[str, Any]] = []
    listing = rpc("dispatcher.list") or {}
    for record in listing.get("RECORDS", []):
        group = record.get("SET", {})
        for target in group.get("TARGETS", []):
            dest = target.get("DEST", {})
            attrs = dest.get("ATTRS", {})
            dispatcher.append(
                {
                    "set": group.get("ID"),
                    "uri": dest.get("URI"),
                    "flags": dest.get("FLAGS", "?"),
                    "priority": dest.get("PRIORITY", 0),
                    "attrs": attrs.get("BODY", "") if isinstance(attrs, dict) else "",
                    "latency": dest.get("LATENCY"),
                }
            )
    stats: dict[str, int] = {}
    for line in rpc("stats.get_statistics", "all") or []:
        key, _, value = str(line).partition(" = ")
        if value.strip().lstrip("-").isdigit():
            stats[key.strip()] = int(value)
    return {
        "node": "router",
        "kind": "kamailio",
        "time": time.time(),
        "dispatcher": dispatcher,
        "transactions": {
            "server": stats.get("tmx:UAS_transactions"),
            "client": stats.get("tmx:UAC_transactions"),
            "active": stats.get("tmx:active_transactions"),
            "timeouts": None,  # tm counts no transaction timeouts
        },
        # Requests Kamailio refused to route: unparsable headers / URIs, dropped or erroring.
        "drops": {
            "bad_msg_hdr": stats.get("core:bad_msg_hdr", 0),
            "bad_uri": stats.get("core:bad_URIs_rcvd", 0),
            "drop_requests": stats.get("core:drop_requests", 0),
            "err_requests": stats.get("core:err_requests", 0),
        },
        "registrar": {
            "bindings": stats.get("usrloc:location_contacts", 0),
            "aors": stats.get("usrloc:location_users", 0),
            "accepted": stats.get("registrar:accepted_regs", 0),
            "rejected": stats.get("registrar:rejected_regs", 0),
        },
        "stats": stats,
    }
