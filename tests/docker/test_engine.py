"""With a Docker engine: build the emulator image (base image from debootstrap when no registry
answers), get an OPTIONS 200 from a container on host networking, and run the docker backend
through up / pause / resume / kill / restart / down.

Skipped with the reason when no engine answers (CI starts one with
``python -m lab.docker.base_image --start-dockerd``). The first run builds the images (about a
minute for the base, half a minute each for the emulator and PostgreSQL); later runs reuse them
and rebuild only the emulator's source layer when the sources changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.backends import LabError, NodeState
from lab.backends.local import options_ping
from lab.docker.backend import DockerBackend, run_id
from lab.docker.base_image import ensure_base_image
from lab.docker.compose import LABEL_LAB
from lab.docker.images import BASE_IMAGE, EMULATOR_IMAGE, ensure_emulator_image
from lab.requires import needs_module
from lab.topology import Topology

yaml = needs_module("yaml", "PyYAML (test extra) reads compose.yml back")

pytestmark = pytest.mark.docker

PBX_ADDR = "127.0.0.70"
ROUTER_ADDR = "127.0.0.69"
"""The container identifies requests from this address as the router endpoint (no auth)."""
NET = 77
"""The backend test's lab lives on 127.77.0.x."""


@pytest.fixture(scope="module")
def emulator_image(docker_engine: Any) -> str:
    base = ensure_base_image(docker_engine, log=lambda _: None)
    assert base.how in ("present", "pulled", "debootstrap")
    ensure_emulator_image(docker_engine)
    return EMULATOR_IMAGE


@pytest.fixture
def container(docker_engine: Any, emulator_image: str, tmp_path: Path) -> Iterator[Any]:
    tmp_path.chmod(0o755)
    ctr = docker_engine.containers.run(
        emulator_image,
        network_mode="host",
        detach=True,
        name=f"siplab-test-emulator-{tmp_path.name}",
        labels={LABEL_LAB: "pytest-docker"},
        volumes={str(tmp_path): {"bind": "/data", "mode": "rw"}},
        environment={
            "SIPLAB_NODE_NAME": "pbx70",
            "SIPLAB_BIND": PBX_ADDR,
            "SIPLAB_DB_URL": "sqlite:////data/realtime.db",
            "SIPLAB_ROUTER": ROUTER_ADDR,
        },
    )
    try:
        yield ctr
    finally:
        import docker.errors

        try:
            ctr.remove(force=True)
        except docker.errors.NotFound:  # the test removed it already
            pass


def _ready(host: str, source: str, attempts: int = 40) -> int | None:
    status = None
    for _ in range(attempts):
        status = options_ping(host, 5060, source=source, timeout=0.5)
        if status == 200:
            break
    return status


def test_emulator_image_has_base_and_source_label(docker_engine: Any, emulator_image: str) -> None:
    image = docker_engine.images.get(emulator_image)
    assert image.attrs["Config"]["Labels"]["siplab.source-hash"]
    assert docker_engine.images.get(BASE_IMAGE)


def test_emulator_container_answers_options_on_loopback(docker_engine: Any, container: Any) -> None:
    assert _ready(PBX_ADDR, ROUTER_ADDR) == 200, container.logs(tail=20).decode()
    # From any other address the node asks for credentials, like Asterisk (SIP-REFERENCE §6.4).
    assert options_ping(PBX_ADDR, 5060, source="127.0.0.71", timeout=1.0) == 401
    container.remove(force=True)
    names = [c.name for c in docker_engine.containers.list(all=True)]
    assert container.name not in names
    assert options_ping(PBX_ADDR, 5060, source=ROUTER_ADDR, timeout=0.3) is None


def test_docker_backend_lifecycle(docker_engine: Any, tmp_path: Path) -> None:
    backend = DockerBackend(client=docker_engine, ready_timeout=30.0, stop_grace=1.0)
    topology = Topology(net=NET, pbx_count=1, faults=["router-pbx1"])
    run_dir = tmp_path / "lab"
    label = {"label": f"{LABEL_LAB}={run_id(run_dir)}"}
    lab = backend.up(topology, run_dir)
    try:
        assert [n.name for n in lab.nodes] == ["db", "pbx1", "fault-router-pbx1", "router"]
        assert lab.db.startswith("postgresql://siplab:siplab@127.77.0.5:5432/")
        assert len(docker_engine.containers.list(filters=label)) == 4
        pbx = lab.node("pbx1")
        assert pbx.container
        assert backend.node_state(pbx) is NodeState.UP
        # The router answers from its container on 127.77.0.10 (probed from a generator address).
        assert _ready("127.77.0.10", "127.77.0.150", attempts=10) == 200

        backend.pause(lab, "pbx1")
        assert backend.node_state(pbx) is NodeState.PAUSED
        assert options_ping(pbx.host, 5060, source="127.77.0.10", timeout=0.3) is None
        backend.resume(lab, "pbx1")
        assert _ready(pbx.host, "127.77.0.10", attempts=10) == 200

        backend.kill(lab, "pbx1")
        assert backend.node_state(pbx) is NodeState.DOWN
        lab = backend.restart(lab, "pbx1")  # waits for OPTIONS 200
        assert backend.node_state(lab.node("pbx1")) is NodeState.UP

        compose = yaml.safe_load((run_dir / "compose.yml").read_text())
        # compose.yml also has the one-shot `provision` (the SDK path provisions in-process)
        assert set(compose["services"]) == {
            "db", "provision", "pbx1", "fault-router-pbx1", "router",
        }  # fmt: skip
        with pytest.raises(LabError, match="no node"):
            backend.pause(lab, "pbx9")
    finally:
        lab = backend.down(lab)
    assert docker_engine.containers.list(all=True, filters=label) == []
    assert all(n.container is None for n in lab.nodes)
    assert (run_dir / "logs" / "router.log").is_file()
    assert (run_dir / "lab.json").is_file()
