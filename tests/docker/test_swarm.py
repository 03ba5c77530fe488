"""The lab on Docker Swarm: a one-node swarm on this machine's loopback.

``docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377`` is accepted by the
engine and keeps the swarm's control plane on loopback (no traffic leaves the machine). The
module initialises the swarm only when the engine is not in one, and then leaves it at the end
(``docker swarm leave --force``), so the engine ends as it was found. Every service runs on the
engine's ``host`` network with its own 127.170.0.x address.

Covered: ``siplab lab up --backend swarm`` then status / kill / restart / pause / resume / down
through the CLI; the generated ``stack.yml`` deployed with ``docker stack deploy``; a swarm that is
not initialised and a service no node can take, both reported with Docker's own words and
nothing left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.backends import LabError
from lab.backends.local import options_ping
from lab.backends.render import plan
from lab.docker.backend import run_id
from lab.docker.compose import LABEL_LAB
from lab.docker.swarm import STACK_FILE, SwarmBackend, stack_dict, write_stack
from lab.requires import needs_module
from lab.topology import Topology

yaml = needs_module("yaml", "PyYAML (test extra) reads stack.yml back")

NET = 170
ROUTER = f"127.{NET}.0.10"
IN_CI = os.environ.get("CI") == "true" or os.environ.get("SIPLAB_REQUIRE_DOCKER") == "1"
STACK_KEYS = {
    "image",
    "command",
    "environment",
    "volumes",
    "labels",
    "stop_grace_period",
    "networks",
    "deploy",
}
"""Service keys of the Compose file format 3.8 that stack.yml uses (none that stack ignores)."""


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "lab.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"siplab {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _swarm_state(client: Any) -> str:
    return str(client.info()["Swarm"]["LocalNodeState"])


def _leftovers(client: Any, run_dir: Path) -> list[str]:
    label = {"label": f"{LABEL_LAB}={run_id(run_dir)}"}
    names = [c["Names"][0] for c in client.api.containers(all=True, filters=label)]
    if _swarm_state(client) == "active":
        names += [s.name for s in client.services.list(filters=label)]
    return names


# -- no engine needed ---------------------------------------------------------------------------


def test_stack_file_is_a_swarm_compose_file_with_placement(tmp_path: Path) -> None:
    topology = Topology(net=NET, pbx_count=2, faults=["router-pbx1"])
    backend = SwarmBackend(placement={"*": ["node.role==manager"], "pbx2": ["node.labels.b==1"]})
    p = plan(topology, tmp_path, db_url="postgresql://siplab:siplab@127.170.0.5:5432/siplab")
    specs = backend.services(topology, p, with_db=True)
    doc = yaml.safe_load(write_stack(tmp_path, specs, backend.placement).read_text())
    assert doc["version"] == "3.8"
    assert doc["networks"] == {"hostnet": {"external": True, "name": "host"}}
    assert list(doc["services"]) == [
        "db",
        "provision",
        "pbx1",
        "pbx2",
        "fault-router-pbx1",
        "router",
    ]
    for name, svc in doc["services"].items():
        assert set(svc) <= STACK_KEYS, name
        assert svc["networks"] == ["hostnet"]
        deploy = svc["deploy"]
        assert deploy["replicas"] == 1
        assert deploy["restart_policy"] == {"condition": "none"}
        assert deploy["labels"][LABEL_LAB] == run_id(tmp_path)
        want = ["node.role==manager"] + (["node.labels.b==1"] if name == "pbx2" else [])
        assert deploy["placement"]["constraints"] == want
    assert stack_dict(specs)["services"]["pbx1"]["deploy"].get("placement") is None


def test_place_option_is_checked_before_anything_starts(tmp_path: Path) -> None:
    bad = _cli(
        "lab", "up", "--backend", "swarm", "--dir", str(tmp_path), "--place", "pbx1", check=False
    )
    assert bad.returncode != 0
    assert "--place 'pbx1': expected NODE=CONSTRAINT" in bad.stderr
    assert "Traceback" not in bad.stderr
    local = _cli(
        "lab", "up", "--dir", str(tmp_path), "--place", "pbx1=node.role==manager", check=False
    )
    assert local.returncode != 0
    assert "only the swarm backend places nodes" in local.stderr
    assert not (tmp_path / "lab.json").exists()
    typo = SwarmBackend(placement={"pbx9": ["node.role==manager"]})
    with pytest.raises(LabError, match=r"placement: unknown node 'pbx9' \(nodes: pbx1, router;"):
        typo.up(Topology(net=NET, pbx_count=1), tmp_path / "typo", db_url="sqlite")


# -- with an engine -----------------------------------------------------------------------------


@pytest.mark.docker
def test_swarm_not_initialised_is_reported_with_dockers_message(
    docker_engine: Any, tmp_path: Path
) -> None:
    if _swarm_state(docker_engine) != "inactive":
        pytest.skip("the engine is already in a swarm (not ours to leave)")
    run_dir = tmp_path / "swarm-noinit"
    proc = _cli("lab", "up", "--backend", "swarm", "--dir", str(run_dir), "--pbx", "1", check=False)
    assert proc.returncode != 0
    # Docker's words, as the engine answers any swarm API call on a node outside a swarm.
    assert "This node is not a swarm manager" in proc.stderr
    assert "docker swarm init" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "lab.json").exists()
    assert _leftovers(docker_engine, run_dir) == []


@pytest.fixture(scope="module")
def swarm(docker_engine: Any) -> Iterator[Any]:
    """A one-node swarm on loopback; left again at the end if this fixture created it."""
    state = _swarm_state(docker_engine)
    created = False
    if state == "inactive":
        docker_engine.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        created = True
    elif state != "active":
        pytest.fail(f"the Docker engine's swarm is {state!r}; cannot test the swarm backend")
    if not docker_engine.info()["Swarm"].get("ControlAvailable"):
        pytest.skip("the engine is a swarm worker, not a manager")
    try:
        yield docker_engine
    finally:
        if created:
            docker_engine.swarm.leave(force=True)


@pytest.fixture(scope="module")
def images(swarm: Any) -> None:
    from lab.docker.images import ensure_emulator_image, ensure_postgres_image

    ensure_emulator_image(swarm)
    ensure_postgres_image(swarm)


def _status(run_dir: Path) -> dict[str, str]:
    out = _cli("lab", "status", "--dir", str(run_dir), "--json").stdout
    return {n["name"]: n["state"] for n in json.loads(out)["nodes"]}


@pytest.mark.docker
def test_swarm_lab_through_the_cli(swarm: Any, images: None, tmp_path: Path) -> None:
    run_dir = tmp_path / "swarm-cli"
    topology = tmp_path / "topology.toml"
    topology.write_text(f"net = {NET}\n")
    try:
        _cli(
            "lab", "up", "--backend", "swarm", "--dir", str(run_dir), "--topology",
            str(topology), "--pbx", "2", "--place", "*=node.role==manager",
        )  # fmt: skip
        lab = json.loads((run_dir / "lab.json").read_text())
        assert lab["backend"] == "swarm"
        assert lab["db"].startswith(f"postgresql://siplab:siplab@127.{NET}.0.5:")
        services = swarm.services.list(filters={"label": f"{LABEL_LAB}={run_id(run_dir)}"})
        assert len(services) == 4  # db, pbx1, pbx2, router
        for service in services:
            spec = service.attrs["Spec"]
            assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==manager"]
            assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
        assert _status(run_dir) == dict.fromkeys(("db", "pbx1", "pbx2", "router"), "up")
        assert options_ping(f"127.{NET}.0.11", 5060, source=ROUTER, timeout=2.0) == 200

        _cli("lab", "kill", "pbx2", "--dir", str(run_dir))
        assert _status(run_dir)["pbx2"] == "down"  # restart policy none: swarm leaves it dead
        assert options_ping(f"127.{NET}.0.12", 5060, source=ROUTER, timeout=0.5) is None
        _cli("lab", "restart", "pbx2", "--dir", str(run_dir))
        assert _status(run_dir)["pbx2"] == "up"
        assert options_ping(f"127.{NET}.0.12", 5060, source=ROUTER, timeout=2.0) == 200

        _cli("lab", "pause", "pbx1", "--dir", str(run_dir))
        assert _status(run_dir)["pbx1"] == "paused"
        _cli("lab", "resume", "pbx1", "--dir", str(run_dir))
        assert options_ping(f"127.{NET}.0.11", 5060, source=ROUTER, timeout=2.0) == 200
    finally:
        down = _cli("lab", "down", "--dir", str(run_dir), check=False)
    assert _leftovers(swarm, run_dir) == [], down.stderr
    assert (run_dir / "logs" / "router.log").stat().st_size > 0


@pytest.mark.docker
def test_unplaceable_service_is_reported_and_nothing_is_left(
    swarm: Any, images: None, tmp_path: Path
) -> None:
    run_dir = tmp_path / "swarm-noplace"
    # The router starts last: pbx1 is already a running service when the router cannot be
    # placed, so the test also shows that what was started is removed again.
    backend = SwarmBackend(
        db="sqlite",
        build=False,
        client=swarm,
        placement={"router": ["node.labels.siplab.host==nowhere"]},
    )
    with pytest.raises(LabError) as info:
        backend.up(Topology(net=NET, pbx_count=1), run_dir)
    message = str(info.value)
    assert message.startswith("router: swarm service ")
    assert "constraints: node.labels.siplab.host==nowhere" in message
    assert "Docker: no suitable node (scheduling constraints not satisfied" in message
    assert _leftovers(swarm, run_dir) == []
    assert (run_dir / "logs" / "pbx1.log").is_file()  # it ran, and its log was kept


def _wait_ok(host: str, deadline: float) -> int | None:
    last = None
    while time.monotonic() < deadline:
        last = options_ping(host, 5060, source=ROUTER, timeout=0.5)
        if last == 200:
            break
    return last


@pytest.mark.docker
def test_stack_file_deploys_with_docker_stack(swarm: Any, images: None, tmp_path: Path) -> None:
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        if IN_CI:
            pytest.fail("the docker CLI is required in CI (Debian package docker.io)")
        pytest.skip("no docker CLI for `docker stack deploy`")
    run_dir = tmp_path / "swarm-stack"
    placement = {"*": ["node.role==manager"]}
    backend = SwarmBackend(db="sqlite", build=False, client=swarm, placement=placement)
    # `lab up` writes the configs, the provisioned SQLite DB and stack.yml; then the same lab
    # is started by the stack alone.
    backend.down(backend.up(Topology(net=NET, pbx_count=2), run_dir))
    stack = f"swarm-{run_id(run_dir)}"[:40]
    label = {"label": f"com.docker.stack.namespace={stack}"}
    try:
        subprocess.run(
            [docker_cli, "stack", "deploy", "--resolve-image", "never", "-c",
             str(run_dir / STACK_FILE), stack],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        services = {s.name: s for s in swarm.services.list(filters=label)}
        assert set(services) == {f"{stack}_{n}" for n in ("pbx1", "pbx2", "router")}
        for service in services.values():
            template = service.attrs["Spec"]["TaskTemplate"]
            assert template["Placement"]["Constraints"] == ["node.role==manager"]
        deadline = time.monotonic() + 60
        for host in (f"127.{NET}.0.11", f"127.{NET}.0.12", ROUTER):
            assert _wait_ok(host, deadline) == 200, host
        containers = swarm.api.containers(filters=label)
        assert len(containers) == 3
        assert {c["HostConfig"]["NetworkMode"] for c in containers} == {"host"}
    finally:
        subprocess.run([docker_cli, "stack", "rm", stack], capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while swarm.api.containers(all=True, filters=label) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert swarm.api.containers(all=True, filters=label) == []
