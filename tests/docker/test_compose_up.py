"""``docker compose up`` of the compose.yml a lab writes: the whole lab from Compose alone.

The docker backend prepares the run folder (images, node configs, compose.yml) without starting
anything; Docker Compose v2 (Debian trixie's ``docker-compose``, installed by scripts/setup.sh)
then starts PostgreSQL, the one-shot ``provision`` service, one real Asterisk node and the
reference router. A phone registers through the router with digest and calls 600 on the node.
Needs the engine, the images and Compose; in CI a missing one fails (lab.requires).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from lab.backends.local import wait_ready
from lab.docker.backend import DockerBackend
from lab.docker.compose import compose_binary
from lab.requires import missing_tool
from lab.topology import PbxSpec, Topology, UsersSpec
from lab.ua import open_ua

pytestmark = [pytest.mark.docker, pytest.mark.asterisk]


def _password(users_csv: Path, user: str) -> str:
    for line in users_csv.read_text().splitlines():
        if line.startswith(f"{user};"):
            return line.rsplit("password=", 1)[1].rstrip("]")
    raise AssertionError(f"{user} not in {users_csv}")


def test_compose_up_starts_a_provisioned_lab_that_takes_calls(
    docker_engine: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    compose = compose_binary()
    if compose is None:
        missing_tool("Docker Compose v2 (scripts/setup.sh installs Debian trixie's docker-compose)")
    net = int(request.config.getoption("--lab-net"))
    topology = Topology(
        net=net, pbx=[PbxSpec(kind="asterisk")], faults=[], users=UsersSpec(count=5)
    )
    run_dir = tmp_path / "lab"
    p, specs, with_db = DockerBackend(client=docker_engine).prepare(topology, run_dir)
    assert with_db and [s.name for s in specs] == ["db", "provision", "pbx1", "router"]
    cmd = [*compose, "-f", str(run_dir.resolve() / "compose.yml")]
    up = subprocess.run([*cmd, "up", "-d"], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        router = p.router.host
        wait_ready("pbx1", p.pbx[0].host, p.pbx[0].port, timeout=60, source=router)
        wait_ready("router", router, p.router.port, timeout=30, source=f"127.{net}.0.1")
        by_service = {s.name: s.container_name for s in specs}
        state = docker_engine.containers.get(by_service["provision"]).attrs["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0)
        password = _password(p.users_csv, "101")
        trio.run(_register_and_call, (f"127.{net}.0.60", 0), (router, p.router.port),
                 password, topology.users_domain)  # fmt: skip
    finally:
        down = subprocess.run([*cmd, "down", "-t", "2"], capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert down.returncode == 0, down.stderr[-2000:]
    left = docker_engine.containers.list(all=True, filters={"name": by_service["pbx1"]})
    assert left == []


async def _register_and_call(
    local: tuple[str, int], proxy: tuple[str, int], password: str, domain: str
) -> None:
    async with open_ua(local=local, proxy=proxy, user="101", password=password,
                       domain=domain) as ua:  # fmt: skip
        with trio.fail_after(10):
            result = await ua.register()
            assert result.status == 200, result
            call = await ua.call("600")
            answer = await call.wait_answered()
            assert answer.status == 200, answer
            await call.hangup()
