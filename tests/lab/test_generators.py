"""Several load generators (``lab/generators.py``, ``siplab storm --generators N``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.generators import shares, split_load
from lab.labfile import LabFile
from lab.netns import NetnsLab, missing_prerequisites, required
from lab.topology import default_topology, dump_toml

ROOT = Path(__file__).resolve().parents[2]


def test_split_load_keeps_totals_and_proportions() -> None:
    split = split_load(100.0, 10, 3)
    assert [c for _, c in split] == [4, 3, 3]
    assert sum(r for r, _ in split) == pytest.approx(100.0)
    assert split[0][0] == pytest.approx(40.0)
    with pytest.raises(ValueError, match="fewer than --generators"):
        split_load(10.0, 2, 3)
    with pytest.raises(ValueError, match="must be > 0"):
        split_load(0.0, 10, 2)


def test_loopback_generators_get_the_lab_generator_addresses(tmp_path: Path) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(
        dump_toml({**default_topology().to_dict(), "net": 9, "faults": ["ua-router"]})
    )
    lab = LabFile(str(tmp_path), "local", "", "", "", topology=str(topology))
    hosts = [s.host for s in shares(lab, 30.0, 9, 3)]
    assert hosts == ["127.9.0.101", "127.9.0.102", "127.9.0.103"]  # after the relay's .100


def siplab(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=180,
    )  # fmt: skip


@pytest.mark.netns
@pytest.mark.sipp
def test_storm_from_three_generator_hosts_merges_and_warns(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    missing = missing_prerequisites()
    if missing:
        if required():
            pytest.fail(f"netns mode required in CI: missing {missing}")
        pytest.skip(f"netns mode: missing {missing}")
    net = NetnsLab(int(request.config.getoption("--lab-net")))
    run = tmp_path / "run"
    topo = tmp_path / "t.toml"
    topo.write_text(
        f"net = {net.net}\npbx_count = 2\n[users]\ncount = 30\n[timers]\ntime_scale = 0.1\n"
        '[lab]\nnet = "netns"\n'
    )
    up = siplab("lab", "up", "--topology", str(topo), "--dir", str(run))
    assert up.returncode == 0, up.stderr
    try:
        out = tmp_path / "storm"
        storm = siplab(
            "storm", "--dir", str(run), "--generators", "3", "--rate", "45", "--calls", "60",
            "--out", str(out),
        )  # fmt: skip
        assert storm.returncode == 0, storm.stdout + storm.stderr
        summary = json.loads((out / "storm.json").read_text())
        gens = summary["generators"]
        assert [g["host"] for g in gens] == [f"10.{net.net}.0.{200 + i}" for i in range(3)]
        assert [g["calls"] for g in gens] == [20, 20, 20]
        assert summary["attempted"] == sum(g["attempted"] for g in gens) == 60
        assert summary["succeeded"] == 60 and summary["failed"] == 0
        assert summary["setup_delay_ms"]["p95"] is not None
        assert not any("-gen" in ns for ns in net.namespaces())  # generator hosts removed

        # A router that does not answer: every generator retransmits, and says so.
        assert siplab("lab", "pause", "router", "--dir", str(run)).returncode == 0
        out2 = tmp_path / "storm2"
        stuck = siplab(
            "storm", "--dir", str(run), "--generators", "2", "--rate", "4", "--calls", "4",
            "--timeout", "4", "--out", str(out2),
        )  # fmt: skip
        assert stuck.returncode == 1
        warned = json.loads((out2 / "storm.json").read_text())["warnings"]
        assert any("generator 1" in w and "retransmissions" in w for w in warned), warned
        assert any("generator 2" in w and "retransmissions" in w for w in warned), warned
        assert "warning: generator" in stuck.stdout
    finally:
        down = siplab("lab", "down", "--dir", str(run))
    assert down.returncode == 0, down.stderr
    assert net.namespaces() == []


@pytest.mark.sipp
def test_capacity_step_from_two_generators(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """``siplab capacity --generators 2``'s engine on a loopback lab: one step, merged."""
    from dataclasses import replace

    from lab.backends import get_backend
    from reports.generators_engine import MultiSippEngine

    topology = replace(
        default_topology(pbx=2), net=int(request.config.getoption("--lab-net")), faults=[]
    )
    topology = replace(topology, timers=replace(topology.timers, time_scale=0.1))
    backend = get_backend("local")
    lab = backend.up(topology, tmp_path / "run")
    try:
        engine = MultiSippEngine(scenario="call", generators=2)
        watched: list[str] = []
        step = engine.step(
            lab, 40.0, 1.5, workdir=tmp_path / "step", watch=lambda name, pid: watched.append(name)
        )
    finally:
        backend.down(lab)
    assert watched == ["sipp1", "sipp2"] == list(engine.generator_names)
    assert step.attempted == 60 and step.successful == 60 and step.failed == 0, step
    assert step.p95_ms is not None
    assert engine.warnings == [[]]
