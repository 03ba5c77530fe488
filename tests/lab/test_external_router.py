"""An external router (``[router] external = "IP:PORT"``): the lab does not start it, points the
PBX nodes and the traffic at it.

The "external" router here is a Kamailio this test starts itself with siplab's example cfg
(dispatcher role only, the lab's PBX addresses in a list file), before the lab exists, as a
staging router would already be running. Lab addresses: net 94 (127.94.0.x); the external
router is 127.94.0.60.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.backends import get_backend
from lab.engines import SippRun, run_sipp, sipp_binary, uac_call
from lab.evidence import merge_events
from lab.requires import needs
from lab.routers.kamailio import (
    DispatcherDestination,
    KamailioParams,
    kamailio_binary,
    start_kamailio,
)
from lab.topology import pbx_host, topology_from_dict

NET = 94
EXTERNAL = f"127.{NET}.0.60"

pytestmark = [
    pytest.mark.kamailio,
    pytest.mark.sipp,
    needs(kamailio_binary() is not None, "Kamailio not installed (Debian package kamailio)"),
    needs(sipp_binary() is not None, "SIPp not installed (Debian package sip-tester)"),
]


def test_calls_through_an_external_router_reach_the_lab_nodes(tmp_path: Path) -> None:
    nodes = [f"sip:{pbx_host(i, NET)}:5060" for i in (1, 2)]
    params = KamailioParams(
        listen_ip=EXTERNAL,
        destinations=tuple(
            DispatcherDestination(u, attrs=f"duid=pbx{i}") for i, u in enumerate(nodes, 1)
        ),
        shm_mb=64,
    )
    topology = topology_from_dict(
        {
            "net": NET,
            "pbx_count": 2,
            "router": {"external": f"{EXTERNAL}:5060"},
            "db": {"kind": "sqlite"},
            "users": {"count": 5},
        },
        source="test",
    )
    backend = get_backend("local")
    with start_kamailio(params, tmp_path / "external", probe_ip=f"127.{NET}.0.1") as kam:
        lab = backend.up(topology, tmp_path / "run")
        try:
            router = next(n for n in lab.nodes if n.role == "router")
            assert (router.kind, router.host, router.pid) == ("external", EXTERNAL, None)
            # the nodes trust the router by its address (ps_endpoint_id_ips)
            run = SippRun(
                uac_call(0),
                local_ip=topology.generator_host(0),
                remote=(EXTERNAL, 5060),
                rate=20,
                max_calls=20,
                service="600",
                timeout_s=20,
            )
            result = run_sipp(run, tmp_path / "uac")
        finally:
            backend.down(lab)
        assert kam.is_running()  # the lab did not stop what it did not start
    assert (result.successful, result.failed) == (20, 0), result.errors
    merge_events(tmp_path / "run")
    invites: dict[str, int] = {}
    for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("method") == "INVITE" and e.get("dir") == "in" and e.get("status") is None:
            invites[e["node"]] = invites.get(e["node"], 0) + 1
    # both nodes got calls from the external router (round robin)
    assert invites.get("pbx1", 0) + invites.get("pbx2", 0) == 20, invites
    assert min(invites.get("pbx1", 0), invites.get("pbx2", 0)) >= 9, invites
