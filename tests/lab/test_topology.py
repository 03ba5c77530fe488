"""Topology: defaults, addresses, TOML round trip, and errors that name file, field, reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lab.topology import (
    ConfigError,
    PbxSpec,
    Topology,
    default_topology,
    dump_toml,
    load_topology,
    topology_from_dict,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_topology_default_needs_no_file() -> None:
    t = default_topology()
    assert [p.name for p in t.pbx_nodes()] == ["pbx1", "pbx2", "pbx3"]
    assert {p.kind for p in t.pbx_nodes()} == {"emulator"}
    assert t.router.kind == "reference"
    assert (t.users.count, t.users.first) == (500, 100)
    assert t.db.url == ""  # SQLite in the run folder
    [queue] = t.queues
    assert (queue.name, queue.strategy, queue.interfaces) == (
        "queue1",
        "ringall",
        ["PJSIP/101", "PJSIP/102"],
    )
    assert t.router_host == "127.0.0.10"
    assert [t.pbx_address(i) for i in (1, 2, 3)] == [
        ("127.0.0.11", 5060),
        ("127.0.0.12", 5060),
        ("127.0.0.13", 5060),
    ]


def test_topology_relays_and_generators_from_100() -> None:
    t = Topology(faults=["ua-router", "router-pbx2"], net=42)
    assert t.relay_host("ua-router") == "127.42.0.100"
    assert t.relay_host("router-pbx2") == "127.42.0.101"
    assert t.generator_host() == "127.42.0.102"
    assert t.router_host == "127.42.0.10"


def test_topology_file_round_trip(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
faults = ["router-edge"]
[[pbx]]
name = "edge"
kind = "sipp"
[[pbx]]
external = "127.0.0.50:5070"
[users]
count = 10
[dispatcher]
algorithm = "round_robin"
[dispatcher.probing]
interval = 0.5
[timers]
time_scale = 0.1
""",
    )
    t = load_topology(path)
    assert [(p.name, p.kind) for p in t.pbx_nodes()] == [("edge", "sipp"), ("pbx2", "emulator")]
    assert t.pbx_address(2) == ("127.0.0.50", 5070)
    assert t.timers.scaled(2.0) == pytest.approx(0.2)
    again = topology_from_dict(tomllib.loads(dump_toml(t.to_dict())))
    assert again.pbx_nodes() == t.pbx_nodes()
    assert again.dispatcher == t.dispatcher
    assert again.users == t.users
    assert again.faults == t.faults


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ('[[pbx]]\nkind = "bogus"\n', "pbx[0].kind", "must be one of"),
        ('[router]\nkind = "opensips"\n', "router.kind", "must be one of"),
        ("[users]\ncount = -1\n", "users.count", "must be >= 0"),
        ('[users]\ncount = "many"\n', "users.count", "expected an integer"),
        ("[dispatcher.probing]\nmode = 7\n", "dispatcher.probing.mode", "0, 1, 2 or 3"),
        ("[timers]\ntime_scale = 0\n", "timers.time_scale", "must be > 0"),
        ('faults = ["router-pbx9"]\n', "faults[0]", "unknown link"),
        ('[[pbx]]\nexternal = "localhost"\n', "pbx[0].external", "expected IPv4:PORT"),
        ('[db]\nurl = "mysql://x"\n', "db.url", "expected sqlite"),
        ("[[queues]]\nstrategy = 'ringall'\n", "queues[0].name", "required setting is missing"),
        (
            "[[queues]]\nname = 'q'\nstrategy = 'roundrobin'\n",
            "queues[0].strategy",
            "queue_strategy_values",
        ),
        ("[timerz]\nt1 = 1\n", "timerz", "unknown setting"),
    ],
)
def test_topology_errors_name_file_field_reason(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert info.value.file == str(path)
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{path}: {field}: ")


def test_topology_duplicate_node_names_refused() -> None:
    with pytest.raises(ConfigError, match=r"pbx\[1\]\.name"):
        topology_from_dict({"pbx": [{"name": "a"}, {"name": "a"}]})


def test_topology_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_topology(tmp_path / "nope.toml")


def test_topology_with_pbx_overrides_count_and_kind() -> None:
    t = default_topology().with_pbx(5, "sipp")
    assert [p.name for p in t.pbx_nodes()] == [f"pbx{i}" for i in range(1, 6)]
    assert t.pbx_nodes()[4] == PbxSpec(name="pbx5", kind="sipp")


# -- [db]: the lab's own PostgreSQL ----------------------------------------------------------


def test_db_kind_auto_means_postgres_under_kamailio_only() -> None:
    from lab.backends.render import plan, resolve_db

    run = Path("/tmp/siplab-topology-test")
    reference = topology_from_dict({"net": 9})
    kamailio = topology_from_dict({"net": 9, "router": {"kind": "kamailio"}})
    assert reference.db.kind == "auto"
    assert not reference.lab_postgres
    assert kamailio.lab_postgres
    assert kamailio.db_host == "127.9.0.5"
    pg = "postgresql://siplab:siplab@127.9.0.5:5432/siplab"
    assert resolve_db(reference, run) == (f"sqlite:///{run}/realtime.db", False)
    assert resolve_db(kamailio, run) == (pg, True)
    # an explicit choice wins: --db sqlite / --db postgres / --db URL, [db] kind / url
    assert resolve_db(kamailio, run, "sqlite") == (f"sqlite:///{run}/realtime.db", False)
    assert resolve_db(reference, run, "postgres") == (pg, True)
    assert resolve_db(kamailio, run, "sqlite:///x.db") == ("sqlite:///x.db", False)
    pinned = topology_from_dict({"router": {"kind": "kamailio"}, "db": {"kind": "sqlite"}})
    assert not pinned.lab_postgres
    external = topology_from_dict(
        {"router": {"kind": "kamailio"}, "db": {"url": "postgresql://u@127.0.0.9/x"}}
    )
    assert resolve_db(external, run) == ("postgresql://u@127.0.0.9/x", False)
    # the plan carries the db node only when the lab starts it
    db = plan(topology_from_dict({"net": 9, "db": {"kind": "postgres"}}), run).db
    assert db is not None
    assert (db.name, db.role, db.kind, db.host, db.port) == (
        "db", "db", "postgresql", "127.9.0.5", 5432,
    )  # fmt: skip
    assert plan(reference, run).db is None


def test_db_kind_round_trips_and_bad_combinations_are_named() -> None:
    t = topology_from_dict({"db": {"kind": "postgres"}})
    back = topology_from_dict(tomllib.loads(dump_toml(t.to_dict())))
    assert back.db == t.db
    assert back.to_dict() == t.to_dict()
    with pytest.raises(ConfigError, match=r"db\.kind: must be one of"):
        topology_from_dict({"db": {"kind": "mysql"}})
    with pytest.raises(ConfigError, match=r"db\.url: kind 'postgres' is the PostgreSQL the lab"):
        topology_from_dict({"db": {"kind": "postgres", "url": "postgresql://u@127.0.0.1/x"}})
    with pytest.raises(ConfigError, match=r"db\.url: kind 'sqlite' with a postgresql"):
        topology_from_dict({"db": {"kind": "sqlite", "url": "postgresql://u@127.0.0.1/x"}})
