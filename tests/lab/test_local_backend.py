"""The local backend on real processes: lab.json matches what runs, SIP readiness, kill/pause
noticed by the router's dispatcher (compressed probing), faults on a relayed link, nothing left
behind by `down` or by a crashed harness."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab.backends import LabError, NodeState, get_backend
from lab.backends.local import options_ping
from lab.cli import add_commands
from lab.engines import sipp_binary
from lab.labfile import read_labfile
from lab.pytest_plugin import Faults, Lab
from lab.topology import PbxSpec, Topology, default_topology

pytestmark = pytest.mark.lab

NET = 81


def small_topology(net: int = NET, **changes: object) -> Topology:
    t = default_topology(pbx=2)
    # pbx2 is a SIPp UAS stand-in when SIPp is installed: both PBX kinds get exercised.
    kind = "sipp" if sipp_binary() else "emulator"
    t = replace(
        t,
        pbx=[PbxSpec(name="pbx1"), PbxSpec(name="pbx2", kind=kind)],
        users=replace(t.users, count=20),
        timers=replace(t.timers, time_scale=0.1),  # probing every 0.2 s, timeout 0.1 s
        faults=["ua-router", "router-pbx1"],
        net=net,
    )
    return replace(t, **changes)  # type: ignore[arg-type]


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    topology = small_topology()
    backend = get_backend("local")
    lab = Lab(backend, backend.up(topology, tmp_path_factory.mktemp("lab")), topology)
    try:
        yield lab
    finally:
        lab.down()


def test_labfile_matches_what_runs(lab: Lab) -> None:
    written = read_labfile(lab.run_dir)
    assert written == lab.labfile
    assert [n.name for n in written.nodes] == [
        "db",
        "pbx1",
        "pbx2",
        "fault-router-pbx1",
        "router",
        "fault-ua-router",
    ]
    assert written.node("router").address == f"127.{NET}.0.10:5060"
    assert written.node("pbx2").address == f"127.{NET}.0.12:5060"
    assert written.node("fault-ua-router").host == f"127.{NET}.0.100"
    assert written.db.startswith("sqlite:///")
    assert Path(written.db.removeprefix("sqlite://")).is_file()
    assert len(Path(written.users_csv).read_text().splitlines()) == 1 + 20
    for node in written.nodes[1:]:
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        assert cmdline == [a.encode() for a in node.argv], node.name
        assert options_ping(node.host, node.port, source=lab.router.host, timeout=1.0) == 200, (
            node.name
        )
        assert Path(node.log).is_file()


def test_pause_and_kill_are_noticed_by_the_router(lab: Lab) -> None:
    lab.wait_dispatcher("pbx2", active=True)
    lab.pause("pbx2")
    assert lab.state("pbx2") is NodeState.PAUSED
    assert options_ping(*lab.node("pbx2").address.split(":")[0:1], 5060, timeout=0.3) is None
    lab.wait_dispatcher("pbx2", active=False, timeout=5)
    lab.resume("pbx2")
    lab.wait_dispatcher("pbx2", active=True, timeout=5)

    pid = lab.node("pbx1").pid
    lab.kill("pbx1")
    assert lab.state("pbx1") is NodeState.DOWN
    assert not Path(f"/proc/{pid}").exists()
    lab.wait_dispatcher("pbx1", active=False, timeout=5)
    lab.restart("pbx1")
    assert lab.node("pbx1").pid != pid
    assert read_labfile(lab.run_dir).node("pbx1").pid == lab.node("pbx1").pid
    lab.wait_dispatcher("pbx1", active=True, timeout=5)


def test_faults_on_a_lab_link_drop_exactly_count(lab: Lab) -> None:
    faults = Faults(lab)
    since = time.time()
    faults.add("router-pbx1", "drop", method="OPTIONS", direction="a2b", count=2)
    deadline = time.monotonic() + 5
    while len(faults.decisions("router-pbx1", "pass", since)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    drops = faults.decisions("router-pbx1", "drop", since)
    assert len(drops) == 2
    assert {d["method"] for d in drops} == {"OPTIONS"}
    faults.clear()
    with pytest.raises(LabError, match="no fault relay"):
        faults.add("router-pbx2", "drop")


def test_cli_status_and_actions(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["lab", "status", "--json", "--dir", str(lab.run_dir)])
    assert args.func(args) == 0
    status = json.loads(capsys.readouterr().out)
    states = {n["name"]: n["state"] for n in status["nodes"]}
    assert states == {
        "db": "embedded",
        "pbx1": "up",
        "pbx2": "up",
        "fault-router-pbx1": "up",
        "router": "up",
        "fault-ua-router": "up",
    }
    assert {d["uri"] for d in status["dispatcher"]} == {
        f"sip:127.{NET}.0.101:5060",
        f"sip:127.{NET}.0.12:5060",
    }
    assert status["bindings"]["location"] == 0
    args = parser.parse_args(
        [
            "lab",
            "fault",
            "add",
            "--dir",
            str(lab.run_dir),
            "--link",
            "ua-router",
            "--drop",
            "ACK",
            "--count",
            "1",
        ]
    )
    assert args.func(args) == 0
    [relay] = [n for n in lab.labfile.nodes if n.link == "ua-router"]
    assert json.loads(Path(relay.rules).read_text())["rules"][0]["method"] == "ACK"
    args = parser.parse_args(["lab", "fault", "clear", "--dir", str(lab.run_dir)])
    assert args.func(args) == 0
    assert json.loads(Path(relay.rules).read_text()) == {"rules": []}


def test_up_fails_with_node_name_and_log(tmp_path: Path) -> None:
    # pbx1 is external and nobody listens there: `up` names it and gives up in time.
    t = replace(
        small_topology(net=84, faults=[]), pbx=[PbxSpec(name="ghost", external="127.84.0.50:5099")]
    )
    backend = get_backend("local", ready_timeout=1.0)
    with pytest.raises(LabError, match=r"ghost \(127\.84\.0\.50:5099\) not ready"):
        backend.up(t, tmp_path)


def test_second_lab_on_the_same_addresses_fails_up_with_its_own_log(tmp_path: Path) -> None:
    """With a lab up, a second one on the same net must not pass readiness on the first
    lab's answers: its first node fails to bind, `up` fails naming that node with the
    "Address already in use" of its own log, and nothing of the second lab keeps running."""
    backend = get_backend("local")
    t = small_topology(net=85, faults=[])
    first = backend.up(t, tmp_path / "first")
    try:
        second_dir = tmp_path / "second"
        with pytest.raises(LabError) as caught:
            backend.up(t, second_dir)
        message = str(caught.value)
        # Either the node could not bind (its own log line says so) or, both sockets having
        # SO_REUSEADDR, it bound beside the first lab's node, which the lab names.
        sharing = re.search(r"also bound by pid (\d+)", message)
        first_pids = {n.pid for n in first.nodes if n.pid}
        assert "Address already in use" in message or (
            sharing is not None and int(sharing.group(1)) in first_pids
        ), message
        failed = message.split(" ", 1)[0]
        assert failed in {n.name for n in first.nodes}, message
        assert str(second_dir / "logs" / f"{failed}.log") in message
        # nothing of the second lab runs: no process has its run folder as working directory
        leftovers = []
        for cwd in Path("/proc").glob("[0-9]*/cwd"):
            try:
                if Path(os.readlink(cwd)).is_relative_to(second_dir):
                    leftovers.append(cwd.parent.name)
            except OSError:
                continue
        assert leftovers == []
        # the first lab is untouched and still the one answering
        for node in first.nodes:
            if node.pid:
                assert backend.node_state(node) is NodeState.UP, node.name
    finally:
        backend.down(first)


def test_down_and_a_crashed_harness_leave_nothing(tmp_path: Path) -> None:
    script = f"""
import os, signal, sys
from dataclasses import replace
from pathlib import Path
from lab.backends import get_backend
from tests.lab.test_local_backend import small_topology
lab = get_backend("local").up(small_topology(net=82, faults=["router-pbx1"]), Path({str(tmp_path)!r}))
print("UP", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pids = [n.pid for n in read_labfile(tmp_path).nodes if n.pid]
    assert len(pids) == 4
    deadline = time.monotonic() + 5
    while any(group_members(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if group_members(pid)] == []  # PDEATHSIG took them all

    # Detached (CLI) mode survives its parent; `down` from another backend object stops it.
    backend = get_backend("local", detach=True)
    lab = backend.up(small_topology(net=83, faults=[]), tmp_path / "detached")
    pids = [n.pid for n in lab.nodes if n.pid]
    other = get_backend("local", detach=True)
    assert all(other.node_state(n) is NodeState.UP for n in lab.nodes if n.pid)
    stopped = other.down(read_labfile(tmp_path / "detached"))
    assert all(n.pid is None for n in stopped.nodes)
    deadline = time.monotonic() + 5
    while any(group_members(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if group_members(pid)] == []
    assert (tmp_path / "detached" / "events.jsonl").is_file()
    os.sync()


INNER_TEST = """
import socket
from router.sip import Headers, Request, serialize, parse_untrusted


def test_call_to_nowhere(lab, faults):
    assert faults.links() == ["ua-router"]
    host, port = lab.entry()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((lab.topology.generator_host(), 0))
        me = "%s:%d" % sock.getsockname()
        headers = Headers([
            ("Via", "SIP/2.0/UDP %s;branch=z9hG4bKplugin1;rport" % me),
            ("Max-Forwards", "70"),
            ("From", "<sip:101@%s>;tag=p1" % host),
            ("To", "<sip:999@%s>" % host),
            ("Call-ID", "plugin-call-1"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:101@%s>" % me),
        ])
        sock.sendto(serialize(Request("INVITE", "sip:999@%s" % host, headers)), (host, port))
        sock.settimeout(5)
        status = 100
        while status < 200:
            status = parse_untrusted(sock.recv(65536)).status
    assert status == 200, "the call failed"
"""


def test_pytest_plugin_attaches_ladder_and_pcap_on_failure(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "lab.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            "--lab-net",
            "86",
            "--lab-faults",
            "ua-router",
            "--time-scale",
            "0.1",
            "-rN",
            "test_inner.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "the call failed" in out
    assert "siplab ladder" in out
    assert "Call-ID: plugin-call-1" in out
    assert "siplab capture" in out
    [pcap] = (tmp_path / "runs").glob("pytest-*/tests/*/capture.pcap")
    assert pcap.stat().st_size > 24
    [svg] = (tmp_path / "runs").glob("pytest-*/tests/*/ladders/plugin-call-1.svg")
    assert "INVITE" in svg.read_text()
    [run] = (tmp_path / "runs").glob("pytest-*")
    assert read_labfile(run).nodes[1].pid is None  # the session lab was brought down


def test_is_ours_sees_through_setpriv() -> None:
    """The db node's recorded command is ``setpriv ... postgres ...``; once setpriv has exec'd,
    /proc/<pid>/cmdline is the postgres part, and ``lab down`` from another process must still
    recognise it (and not a different command on a reused PID)."""
    from lab.backends.local import _exec_tail, _is_ours
    from lab.labfile import NodeRecord

    argv = ["/usr/bin/setpriv", "--reuid=postgres", "--pdeathsig", "KILL", "/bin/sleep", "30"]
    assert _exec_tail(argv) == ["/bin/sleep", "30"]
    assert _exec_tail(["/bin/sleep", "30"]) == ["/bin/sleep", "30"]
    child = subprocess.Popen(["/bin/sleep", "30"], start_new_session=True)
    try:
        # Popen returns after fork; wait for the exec so /proc/<pid>/cmdline is sleep's own.
        deadline = time.monotonic() + 5.0
        cmdline = Path(f"/proc/{child.pid}/cmdline")
        while b"sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        node = NodeRecord("db", "db", "127.0.0.5", 5432, pid=child.pid, argv=argv)
        assert _is_ours(node)
        assert not _is_ours(replace(node, argv=[*argv[:-1], "31"]))
    finally:
        child.kill()
        child.wait()
    assert not _is_ours(node)
