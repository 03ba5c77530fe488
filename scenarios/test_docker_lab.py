"""Scenario (docker variant): the tier in containers, registrations and calls through it.

Topology: the docker backend (every node a container with host networking on loopback): the
reference router, two Asterisk-node emulators and PostgreSQL as the shared realtime DB
(127.78.0.x). Action: 100 users register with digest auth through the router (SIPp with the
lab's users CSV), then 100 calls to extension 600 are dispatched over the two nodes.

Must hold: every registration and every call succeeds; the router's ``location`` table in the
containers' PostgreSQL holds the 100 bindings; both nodes took calls; ``compose.yml`` describes
the containers that ran (``down`` and its cleanup are tested in tests/docker/).

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
from lab.requires import missing_tool, needs
from lab.topology import UsersSpec, default_topology
from router.realtime import connect

pytestmark = [
    pytest.mark.docker,
    needs(sipp_binary() is not None, "SIPp (Debian sip-tester) is not installed"),
]

NET = 78
USERS = 100


@pytest.fixture(scope="module")
def docker_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, LabFile, Any]]:
    from lab.docker.backend import DockerBackend
    from lab.docker.base_image import DockerUnavailable, ensure_dockerd

    try:
        client = ensure_dockerd(install=False)
    except DockerUnavailable as exc:
        missing_tool(f"no Docker engine: {exc}")
    run_dir = Path("/tmp") / f"siplab-docker-scenario-{tmp_path_factory.getbasetemp().name}"
    topology = replace(default_topology(pbx=2), net=NET, users=UsersSpec(count=USERS, first=100))
    backend = DockerBackend(db="postgres")
    lab = backend.up(topology, run_dir)
    try:
        yield backend, lab, client
    finally:
        backend.down(lab)
        client.close()


def _router(lab: LabFile) -> tuple[str, int]:
    node = next(n for n in lab.nodes if n.role == "router")
    return node.host, node.port


def test_docker_lab_registrations_and_calls(
    docker_lab: tuple[Any, LabFile, Any], tmp_path: Path
) -> None:
    _backend, lab, client = docker_lab
    router = _router(lab)
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
            max_calls=100,
            service="600",
            timeout_s=60,
            name="calls",
        ),
        tmp_path / "calls",
    )
    assert (calls.successful, calls.failed) == (100, 0), calls.failed_by_reason
    # Both emulator containers took calls (round robin over the two nodes).
    for node in (n for n in lab.nodes if n.role == "pbx"):
        events = Path(node.events).read_text() if node.events else ""
        assert '"method":"INVITE"' in events, f"{node.name} took no call"
    compose = Path(lab.run_dir) / "compose.yml"
    assert compose.is_file()
    text = compose.read_text()
    for node in lab.nodes:
        if node.container:
            assert node.name in text
    running = {c.id for c in client.containers.list()}
    assert all(n.container in running for n in lab.nodes if n.container)
