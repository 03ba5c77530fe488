"""compose.yml generation: the YAML parses and describes exactly what the backend starts.

No engine needed: the specs come from the docker backend's planning, and ``docker compose
config`` is not available here, so the structure is checked in Python against the Compose
Specification's fields the file uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.backends import LabError
from lab.backends.render import plan
from lab.docker.backend import DockerBackend, db_host, run_id
from lab.docker.compose import (
    LABEL_LAB,
    LABEL_NODE,
    ServiceSpec,
    compose_dict,
    to_yaml,
    write_compose,
)
from lab.requires import needs_module
from lab.topology import PbxSpec, RouterSpec, Topology

yaml = needs_module("yaml", "PyYAML (test extra) reads compose.yml back")

ALLOWED_KEYS = {
    "image",
    "container_name",
    "pull_policy",
    "network_mode",
    "restart",
    "stop_grace_period",
    "command",
    "environment",
    "volumes",
    "labels",
    "depends_on",
}


def _services(tmp_path: Path, topology: Topology, **backend: str) -> list[ServiceSpec]:
    b = DockerBackend(**backend)  # type: ignore[arg-type]
    with_db = b.db == "postgres"
    url = f"postgresql://siplab:siplab@{db_host(topology.net)}:5432/siplab" if with_db else None
    p = plan(topology, tmp_path, db_url=url)
    return b.services(topology, p, with_db=with_db)


def test_compose_file_parses_with_every_service_on_host_network(tmp_path: Path) -> None:
    topology = Topology(net=77, pbx_count=2, faults=["ua-router", "router-pbx1"])
    specs = _services(tmp_path, topology)
    path = write_compose(tmp_path, "siplab-test", specs)
    doc = yaml.safe_load(path.read_text())
    assert doc["name"] == "siplab-test"
    services = doc["services"]
    assert list(services) == [
        "db",
        "provision",
        "pbx1",
        "pbx2",
        "fault-router-pbx1",
        "router",
        "fault-ua-router",
    ]
    names = [s["container_name"] for s in services.values()]
    assert len(set(names)) == len(names)
    for name, svc in services.items():
        assert set(svc) <= ALLOWED_KEYS, name
        assert svc["network_mode"] == "host"
        assert svc["pull_policy"] == "never"
        assert svc["image"].startswith("siplab/")
        assert svc["labels"][LABEL_LAB] == run_id(tmp_path)
        assert svc["labels"][LABEL_NODE] == name
        for dep in svc.get("depends_on", []):
            assert dep in services
            assert list(services).index(dep) < list(services).index(name)
        assert all(isinstance(v, str) for v in svc.get("environment", {}).values())
        assert all(isinstance(c, str) for c in svc.get("command", []))


def test_compose_matches_the_containers_the_backend_runs(tmp_path: Path) -> None:
    topology = Topology(net=77, pbx_count=1, faults=["router-pbx1"])
    specs = _services(tmp_path, topology)
    doc = yaml.safe_load(to_yaml(compose_dict("p", specs)))
    run_dir = str(tmp_path.resolve())
    for spec in specs:
        svc = doc["services"][spec.name]
        kwargs = spec.run_kwargs()
        assert kwargs["network_mode"] == svc["network_mode"] == "host"
        assert (kwargs["command"] or []) == svc.get("command", [])
        assert kwargs["environment"] == svc.get("environment", {})
        assert kwargs["labels"] == svc["labels"]
        assert kwargs["name"] == svc["container_name"]
        if spec.name != "db":  # nodes see the run folder at the same path
            assert svc["volumes"] == [f"{run_dir}:{run_dir}"]
            assert kwargs["volumes"] == {run_dir: {"bind": run_dir, "mode": "rw"}}
    cmds = {s.name: s.command for s in specs}
    assert cmds["pbx1"] == ["pbx", "--config", f"{run_dir}/pbx1.toml"]
    assert cmds["router"] == ["router", "--config", f"{run_dir}/router.toml"]
    assert cmds["fault-router-pbx1"][:3] == ["python", "-m", "lab.faults"]
    db = doc["services"]["db"]
    assert db["environment"]["PG_LISTEN"] == "127.77.0.5"
    assert "volumes" not in db


def test_compose_provisions_before_the_nodes_start(tmp_path: Path) -> None:
    """``provision`` is a one-shot service (the SDK backend provisions in-process instead);
    the PBX nodes wait for it to exit 0, everything else only for containers to start."""
    specs = _services(tmp_path, Topology(net=77, pbx_count=1))
    doc = yaml.safe_load(to_yaml(compose_dict("p", specs)))["services"]
    run_dir = str(tmp_path.resolve())
    assert doc["provision"]["command"] == [
        "python", "-m", "lab.docker.provision", run_dir,
        "postgresql://siplab:siplab@127.77.0.5:5432/siplab",
    ]  # fmt: skip
    assert doc["provision"]["depends_on"] == {"db": {"condition": "service_started"}}
    assert doc["pbx1"]["depends_on"]["provision"] == {"condition": "service_completed_successfully"}
    assert doc["router"]["depends_on"]["pbx1"] == {"condition": "service_started"}


def test_compose_sqlite_mode_has_no_db_service(tmp_path: Path) -> None:
    specs = _services(tmp_path, Topology(net=77, pbx_count=1), db="sqlite")
    assert [s.name for s in specs] == ["pbx1", "router"]
    assert specs[1].depends_on == ["pbx1"]


def test_compose_asterisk_node_is_configured_from_the_environment(tmp_path: Path) -> None:
    topology = Topology(net=77, pbx=[PbxSpec(kind="asterisk")], faults=["router-pbx1"])
    specs = {s.name: s for s in _services(tmp_path, topology)}
    env = specs["pbx1"].environment
    assert specs["pbx1"].image == "siplab/asterisk:latest"
    assert env["SIPLAB_NODE_NAME"] == "pbx1"
    assert env["SIPLAB_BIND"] == "127.77.0.11"
    assert env["SIPLAB_DB_URL"].startswith("postgresql://siplab:siplab@127.77.0.5:5432/")
    assert env["SIPLAB_ROUTER"] == "127.77.0.10,127.77.0.100"  # router and its relay


def test_compose_asterisk_needs_postgres(tmp_path: Path) -> None:
    topology = Topology(net=77, pbx=[PbxSpec(kind="asterisk")])
    with pytest.raises(LabError, match="needs PostgreSQL"):
        _services(tmp_path, topology, db="sqlite")


def test_compose_leaves_a_kamailio_router_to_the_host(tmp_path: Path) -> None:
    """No Kamailio image: the router runs as a host process (same loopback address), so
    compose.yml has no router service and nothing depends on one."""
    topology = Topology(
        net=77, pbx_count=1, router=RouterSpec(kind="kamailio"), faults=["ua-router"]
    )
    specs = _services(tmp_path, topology)
    assert [s.name for s in specs] == ["db", "provision", "pbx1", "fault-ua-router"]
    assert all("router" not in s.depends_on for s in specs)
    p = plan(topology, tmp_path)
    with pytest.raises(LabError, match="kamailio"):  # asked for as a container, still named
        DockerBackend().node_spec(topology, p, p.router, [])


def test_yaml_quotes_strings_that_look_like_other_types() -> None:
    doc = {"services": {"a": {"environment": {"X": "yes", "Y": "1.0", "Z": "a: b # c"}}}}
    assert yaml.safe_load(to_yaml(doc)) == doc


def test_run_id_is_stable_and_distinguishes_folders(tmp_path: Path) -> None:
    a, b = tmp_path / "lab", tmp_path / "x" / "lab"
    assert run_id(a) == run_id(a)
    assert run_id(a) != run_id(b)
    assert run_id(tmp_path / "we ird!").startswith("we-ird-")
