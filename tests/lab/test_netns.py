"""Network-namespace mode (``lab/netns.py``, ``lab/backends/netns.py``) on the real kernel.

Every test here makes real namespaces, veths, a bridge, qdiscs and nftables rules named
``sl<net>-...`` (``--lab-net``), and checks with ``ip`` / ``tc`` that nothing is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lab.netns import (
    LinkSpec,
    NetnsError,
    NetnsLab,
    capture_command,
    list_namespaces,
    missing_prerequisites,
    required,
)
from lab.topology import topology_from_dict
from router.configfile import ConfigError, FieldError

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.netns


@pytest.fixture
def net(request: pytest.FixtureRequest) -> NetnsLab:
    """This session's lab net; skipped (failed in CI) without root, ip or tc."""
    missing = missing_prerequisites()
    if missing:
        if required():
            pytest.fail(f"netns mode required in CI: missing {missing}")
        pytest.skip(f"netns mode: missing {missing}")
    lab = NetnsLab(int(request.config.getoption("--lab-net")))
    lab.destroy()
    yield lab
    lab.destroy()


def leftovers(net: NetnsLab) -> dict[str, list[str]]:
    """This lab net's namespaces and root-namespace links (there should never be any)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {
        "namespaces": net.namespaces(),
        "links": [ln for ln in links.splitlines() if f"sl{net.net}" in ln],
    }


def siplab(
    *args: str, env: dict[str, str] | None = None, user: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "lab.cli", *args]
    if user:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    full = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=full, timeout=120)


def test_link_settings_are_validated_with_the_field_named() -> None:
    with pytest.raises(FieldError, match="delay"):
        LinkSpec(delay="80 parsecs")
    with pytest.raises(FieldError, match="loss"):
        LinkSpec(loss="5")
    with pytest.raises(FieldError, match="jitter"):
        LinkSpec(jitter="5ms")  # jitter without delay
    with pytest.raises(ConfigError, match=r"lab\.links\.pbx7: no such node"):
        topology_from_dict({"lab": {"net": "netns", "links": {"pbx7": {"loss": "1%"}}}})
    with pytest.raises(ConfigError, match=r"lab\.links: link impairment needs"):
        topology_from_dict({"lab": {"links": {"pbx1": {"loss": "1%"}}}})
    netns = topology_from_dict({"net": 7, "lab": {"net": "netns"}})
    assert netns.router_host == "10.7.0.10" and netns.pbx_address(2) == ("10.7.0.12", 5060)
    assert topology_from_dict({"net": 7}).router_host == "127.7.0.10"


def test_up_without_root_or_tools_fails_before_starting_anything(
    net: NetnsLab, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    topo = tmp_path / "t.toml"
    topo.write_text(f'net = {net.net}\n[lab]\nnet = "netns"\n')
    # The check itself as an unprivileged user (lab.netns needs only the standard library, so
    # this runs even where the user cannot read the harness's site-packages).
    as_user = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "from lab.netns import check_prerequisites; check_prerequisites()"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert as_user.returncode != 0
    assert "--net netns cannot start: missing root (running as uid 65534" in as_user.stderr
    no_tools = siplab(
        "lab", "up", "--net", "netns", "--topology", str(topo), "--dir", str(run),
        env={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert no_tools.returncode != 0
    assert "'ip' on PATH" in no_tools.stderr and "'tc' on PATH" in no_tools.stderr
    assert "Traceback" not in no_tools.stderr
    assert not (run / "lab.json").exists()
    assert leftovers(net) == {"namespaces": [], "links": []}


def test_links_are_impaired_by_the_kernel_and_refusals_name_the_setting(net: NetnsLab) -> None:
    net.create({"a": f"10.{net.net}.0.11", "b": f"10.{net.net}.0.12"}, [])
    address = f"10.{net.net}.0.12"
    engine = net.set_link("b", address, LinkSpec(loss="20%", rate="256kbit"))
    qdiscs = subprocess.run(
        ["tc", "-n", net.host_ns, "qdisc", "show", "dev", net.host_veth(address)],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    if engine == "netem":
        assert "netem" in qdiscs and "loss 20%" in qdiscs
    else:  # a kernel without netem (this project's CI): tbf + nftables
        assert engine == "tbf+nftables" and "tbf" in qdiscs and "256Kbit" in qdiscs
        rules = subprocess.run(
            ["ip", "netns", "exec", net.ns("b"), "nft", "list", "table", "inet", "sllink"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        assert rules.count("numgen random mod 10000 < 2000") == 2  # both directions
    with pytest.raises(NetnsError, match=r"link b: loss 150%"):
        net.set_link("b", address, LinkSpec(loss="150%"))
    with pytest.raises(NetnsError, match=r"link b: loss 150%: refused"):  # not the delay
        net.set_link("b", address, LinkSpec(delay="80ms", loss="150%"))
    if engine != "netem":
        with pytest.raises(NetnsError, match=r"link b: delay 80ms: this kernel has no netem"):
            net.set_link("b", address, LinkSpec(delay="80ms"))
    net.link_state("b", address, up=False)
    state = subprocess.run(
        ["ip", "-n", net.ns("b"), "-o", "link", "show", "eth0"], capture_output=True, text=True
    ).stdout
    assert "NO-CARRIER" in state or "LOWERLAYERDOWN" in state
    removed = net.destroy()
    assert sorted(removed) == sorted([net.ns("a"), net.ns("b"), net.host_ns])
    assert removed[-1] == net.host_ns  # the bridge goes last
    assert leftovers(net) == {"namespaces": [], "links": []}


HARNESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lab.backends import get_backend
    from lab.topology import topology_from_dict

    topology = topology_from_dict({
        "net": int(sys.argv[2]), "pbx_count": 2, "users": {"count": 5},
        "timers": {"time_scale": 0.1},
        "lab": {"net": "netns", "links": {"pbx2": {"loss": "1%", "rate": "10mbit"}}},
    })
    lab = get_backend("netns").up(topology, Path(sys.argv[1]))
    print("UP", *[n.pid for n in lab.nodes if n.pid], flush=True)
    time.sleep(600)
    """
)


def test_a_killed_harness_leaves_no_namespace_veth_qdisc_or_process(
    net: NetnsLab, tmp_path: Path
) -> None:
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    harness = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run"), str(net.net)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    try:
        assert harness.stdout is not None
        line = harness.stdout.readline()
        assert line.startswith("UP"), line
        pids = [int(p) for p in line.split()[1:]]
        assert len(pids) == 3 and set(net.namespaces()) >= {net.host_ns, net.ns("pbx2")}
        lab = json.loads((tmp_path / "run" / "lab.json").read_text())
        assert lab["network"]["bridge"] == f"sl{net.net}br"
        assert lab["network"]["links"]["pbx2"].startswith("loss 1% rate 10mbit")
    finally:
        harness.send_signal(signal.SIGKILL)
        harness.wait()
        if harness.stdout is not None:
            harness.stdout.close()
    deadline = time.monotonic() + 20.0
    while (leftovers(net)["namespaces"] or _alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(net) == {"namespaces": [], "links": []}
    assert _alive(pids) == []


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def test_cli_up_link_down_cycle(net: NetnsLab, tmp_path: Path) -> None:
    run = tmp_path / "run"
    topo = tmp_path / "t.toml"
    topo.write_text(f"net = {net.net}\npbx_count = 2\n[users]\ncount = 5\n")
    up = siplab("lab", "up", "--net", "netns", "--topology", str(topo), "--dir", str(run))
    try:
        assert up.returncode == 0, up.stderr
        assert f"10.{net.net}.0.12:5060" in up.stdout
        status = siplab("lab", "status", "--json", "--dir", str(run))
        nodes = {n["name"]: n["state"] for n in json.loads(status.stdout)["nodes"]}
        assert nodes == {"db": "embedded", "pbx1": "up", "pbx2": "up", "router": "up"}
        network = json.loads((run / "lab.json").read_text())["network"]
        prefix, bridge = capture_command(network)
        assert bridge == f"sl{net.net}br"
        seen = subprocess.run(  # the router's keepalive OPTIONS cross the bridge (every 2 s)
            [*prefix, "tshark", "-i", bridge, "-c", "1", "-f", "udp port 5060"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert "SIP" in seen.stdout and f"10.{net.net}.0.10" in seen.stdout, seen.stderr
        link = siplab("lab", "link", "pbx2", "--loss", "5%", "--dir", str(run))
        assert link.returncode == 0 and "link pbx2: loss 5%" in link.stdout, link.stderr
        bad = siplab("lab", "link", "pbx2", "--loss", "150%", "--dir", str(run))
        assert bad.returncode != 0 and "link pbx2: loss 150%" in bad.stderr
        cut = siplab("lab", "link", "pbx1", "--down", "--dir", str(run))
        assert cut.returncode == 0, cut.stderr
        show = siplab("lab", "link", "--show", "--dir", str(run)).stdout
        assert "pbx1" in show and "down" in show.splitlines()[0]
    finally:
        down = siplab("lab", "down", "--dir", str(run))
    assert down.returncode == 0, down.stderr
    assert leftovers(net) == {"namespaces": [], "links": []}
    assert [n for n in list_namespaces() if n.startswith(net.prefix)] == []
