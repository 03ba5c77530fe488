"""Scenario (swarm variant): the tier as Docker Swarm services, registrations and calls through it.

Topology: the swarm backend on a one-node swarm on loopback (``docker swarm init
--advertise-addr 127.0.0.1``; initialised by the test when the engine is in none, and left again
at the end): the reference router, two Asterisk-node emulators and PostgreSQL as one-replica
services on the host network (127.171.0.x), placed with ``node.role==manager``. Action: 50 users
register with digest auth through the router (SIPp with the lab's users CSV), then 50 calls to
extension 600 are dispatched over the two nodes.

Must hold: every registration and every call succeeds; the router's ``location`` table holds the
50 bindings; both nodes took calls; every node is a running swarm task of a service labelled
with the run. Up/down, kill/restart and placement errors are tested in tests/docker/test_swarm.py.

Skipped, with the reason, when no Docker engine answers (CI starts one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab.engines import SippRun, run_sipp, sipp_binary, uac_call, uac_register
from lab.labfile import LabFile
from lab.requires import needs
from lab.topology import UsersSpec, default_topology
from router.realtime import connect

pytestmark = [
    pytest.mark.docker,
    needs(sipp_binary() is not None, "SIPp (Debian sip-tester) is not installed"),
]

NET = 171
USERS = 50


@pytest.fixture(scope="module")
def swarm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, LabFile, Any]]:
    from lab.docker.base_image import DockerUnavailable, ensure_dockerd
    from lab.docker.swarm import SwarmBackend

    try:
        client = ensure_dockerd(install=False)
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    created = client.info()["Swarm"]["LocalNodeState"] == "inactive"
    if created:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    run_dir = Path("/tmp") / f"siplab-swarm-scenario-{tmp_path_factory.getbasetemp().name}"
    topology = replace(default_topology(pbx=2), net=NET, users=UsersSpec(count=USERS, first=100))
    backend = SwarmBackend(db="postgres", placement={"*": ["node.role==manager"]})
    try:
        lab = backend.up(topology, run_dir)
        try:
            yield backend, lab, client
        finally:
            backend.down(lab)
    finally:
        if created:
            client.swarm.leave(force=True)
        client.close()


def test_swarm_lab_registrations_and_calls(
    swarm_lab: tuple[Any, LabFile, Any], tmp_path: Path
) -> None:
    _backend, lab, client = swarm_lab
    router_node = next(n for n in lab.nodes if n.role == "router")
    router = (router_node.host, router_node.port)
    gen_ip = f"127.{NET}.0.200"
    reg = run_sipp(
        SippRun(
            uac_register(),
            local_ip=gen_ip,
            remote=router,
            rate=50,
            max_calls=USERS,
            injection=Path(lab.users_csv),
            timeout_s=60,
            name="reg",
        ),
        tmp_path / "reg",
    )
    assert (reg.successful, reg.failed) == (USERS, 0), reg.failed_by_reason
    with connect(lab.db) as db:
        assert db.location_count() == USERS
    calls = run_sipp(
        SippRun(
            uac_call(),
            local_ip=gen_ip,
            remote=router,
            rate=50,
            max_calls=USERS,
            service="600",
            timeout_s=60,
            name="calls",
        ),
        tmp_path / "calls",
    )
    assert (calls.successful, calls.failed) == (USERS, 0), calls.failed_by_reason
    for node in (n for n in lab.nodes if n.role == "pbx"):
        events = Path(node.events).read_text() if node.events else ""
        assert '"method":"INVITE"' in events, f"{node.name} took no call"
    # Every node of the lab is a swarm service whose current task runs.
    services = {s.name: s for s in client.services.list()}
    for node in (n for n in lab.nodes if n.container):
        tasks = services[node.container].tasks(filters={"desired-state": "running"})
        assert [t["Status"]["State"] for t in tasks] == ["running"], node.name
