"""pytest plugin: the lab as fixtures, evidence on failure.

Enable with ``pytest_plugins = ["lab.pytest_plugin"]`` in the root ``conftest.py`` (or ``-p
lab.pytest_plugin``). Fixtures:

- ``lab``: the default topology (router, 3 PBX nodes, SQLite, 500 users, queue1) brought up once
  per session on the chosen backend, with fault relays on ``ua-router`` and ``router-pbx1``.
  Before each test the cheap resets run: fault rules cleared, paused nodes resumed, killed nodes
  restarted. The run folder is ``runs/pytest-<time>/`` under the rootdir.
- ``faults``: add/clear rules on relayed links; cleared after the test.

Options: ``--lab-backend`` (local), ``--router`` (reference|kamailio), ``--time-scale`` (every
timer multiplied; default 0.1), ``--lab-faults`` (links with relays), ``--lab-net``.

When a test that used the lab fails, the report gets the ladders of the calls that failed
during the test (text; SVGs in ``ladders/``) and the path of a pcap of that test's traffic.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab.backends import Backend, LabError, NodeState, get_backend
from lab.faults import FaultRule, add_rule, clear_rules
from lab.labfile import LabFile, NodeRecord
from lab.topology import Topology, default_topology


class Lab:
    """A running lab as a test sees it: nodes, actions, status and evidence."""

    def __init__(self, backend: Backend, labfile: LabFile, topology: Topology) -> None:
        self.backend = backend
        self.labfile = labfile
        self.topology = topology

    @property
    def run_dir(self) -> Path:
        return Path(self.labfile.run_dir)

    @property
    def db_url(self) -> str:
        return self.labfile.db

    @property
    def users_csv(self) -> Path:
        return Path(self.labfile.users_csv)

    def node(self, name: str) -> NodeRecord:
        return self.labfile.node(name)

    @property
    def router(self) -> NodeRecord:
        return self.node("router")

    @property
    def pbx(self) -> list[NodeRecord]:
        return [n for n in self.labfile.nodes if n.role == "pbx"]

    def entry(self) -> tuple[str, int]:
        """Where a UA sends: the ua-router relay if there is one, else the router."""
        for n in self.labfile.nodes:
            if n.link == "ua-router":
                return n.host, n.port
        return self.router.host, self.router.port

    # actions

    def kill(self, name: str) -> None:
        self.labfile = self.backend.kill(self.labfile, name)

    def pause(self, name: str) -> None:
        self.labfile = self.backend.pause(self.labfile, name)

    def resume(self, name: str) -> None:
        self.labfile = self.backend.resume(self.labfile, name)

    def restart(self, name: str) -> None:
        self.labfile = self.backend.restart(self.labfile, name)

    def state(self, name: str) -> NodeState:
        return self.backend.node_state(self.node(name))

    def reset(self) -> None:
        """Cheap reset between tests: clear fault rules, resume paused, restart dead nodes."""
        for node in self.labfile.nodes:
            if node.rules:
                clear_rules(node.rules)
        for node in list(self.labfile.nodes):
            if not node.pid:
                continue
            state = self.backend.node_state(node)
            if state is NodeState.PAUSED:
                self.resume(node.name)
            elif state is NodeState.DOWN:
                self.restart(node.name)

    # observation

    def router_status(self) -> dict[str, Any]:
        """The router's ``/status`` JSON."""
        import json

        with urllib.request.urlopen(f"http://{self.router.http}/status", timeout=2.0) as resp:
            data = json.loads(resp.read().decode())
        assert isinstance(data, dict)
        return data

    def dispatcher_flags(self) -> dict[str, str]:
        """Destination URI -> Kamailio state letters (``AP`` active, ``IP`` inactive ...)."""
        return {d["uri"]: d["flags"] for d in self.router_status().get("dispatcher", [])}

    def dispatch_uri(self, pbx: str) -> str:
        """The URI the router uses for ``pbx`` (a relay's when the link is relayed)."""
        for n in self.labfile.nodes:
            if n.link == f"router-{pbx}":
                return f"sip:{n.address}"
        return f"sip:{self.node(pbx).address}"

    def wait_dispatcher(self, pbx: str, active: bool, timeout: float = 10.0) -> str:
        """Poll ``/status`` until ``pbx`` is (in)active in the dispatcher; returns its flags.

        Raises:
            TimeoutError: naming the node, the wanted state and the last flags seen.
        """
        uri = self.dispatch_uri(pbx)
        deadline = time.monotonic() + timeout
        flags = "?"
        while time.monotonic() < deadline:
            flags = self.dispatcher_flags().get(uri, "?")
            if flags[:1] == ("A" if active else "I"):
                return flags
            time.sleep(0.05)
        want = "active" if active else "inactive"
        raise TimeoutError(
            f"dispatcher: {pbx} ({uri}) not {want} after {timeout} s (flags {flags})"
        )

    def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        from lab.evidence import load_events

        return [e for e in load_events(self.run_dir) if e["t"] >= since]

    def packets(self, since: float = 0.0) -> list[Any]:
        from lab.evidence import packets_from_events

        return packets_from_events(
            self.events(since), {n.name: n.address for n in self.labfile.nodes if n.port}
        )

    def down(self) -> None:
        self.labfile = self.backend.down(self.labfile)


class Faults:
    """Fault rules on the lab's relayed links."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def links(self) -> list[str]:
        return [n.link for n in self.lab.labfile.nodes if n.link]

    def _relay(self, link: str) -> NodeRecord:
        for n in self.lab.labfile.nodes:
            if n.link == link:
                return n
        raise LabError(
            f"no fault relay on link {link!r} (links: {', '.join(self.links()) or 'none'})"
        )

    def add(self, link: str, action: str = "drop", **match: Any) -> FaultRule:
        """``faults.add("router-pbx1", "drop", method="ACK", count=1)``."""
        return add_rule(self._relay(link).rules, FaultRule(action=action, **match))  # type: ignore[arg-type]

    def clear(self, link: str | None = None) -> None:
        for name in [link] if link else self.links():
            clear_rules(self._relay(name).rules)

    def decisions(
        self, link: str, action: str | None = None, since: float = 0.0
    ) -> list[dict[str, Any]]:
        """The relay's ``fault`` events (optionally only one action) since ``since``."""
        relay = self._relay(link)
        from lab.evidence import read_events

        return [
            e
            for e in read_events(relay.events)
            if e.get("event") == "fault"
            and e["t"] >= since
            and (action is None or e.get("action") == action)
        ]


# -- hooks and fixtures ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("siplab", "siplab lab")
    group.addoption("--lab-backend", default="local", help="lab backend (local)")
    group.addoption(
        "--router", default="reference", choices=["reference", "kamailio"], help="router under test"
    )
    group.addoption(
        "--time-scale", type=float, default=0.1, help="multiply every lab timer (default 0.1)"
    )
    group.addoption(
        "--lab-faults", default="ua-router,router-pbx1", help="links that get a fault relay"
    )
    group.addoption(
        "--lab-net", type=int, default=0, help="second octet of lab addresses (127.N.0.x)"
    )


@pytest.fixture(scope="session")
def lab_session(request: pytest.FixtureRequest) -> Iterator[Lab]:
    opt = request.config.getoption
    topology = default_topology()
    topology = replace(
        topology,
        router=replace(topology.router, kind=opt("--router")),
        timers=replace(topology.timers, time_scale=opt("--time-scale")),
        faults=[x for x in opt("--lab-faults").split(",") if x],
        net=opt("--lab-net"),
    )
    run_dir = Path(str(request.config.rootpath)) / "runs" / time.strftime("pytest-%Y%m%d-%H%M%S")
    backend = get_backend(opt("--lab-backend"))
    lab = Lab(backend, backend.up(topology, run_dir), topology)
    try:
        yield lab
    finally:
        lab.down()
        from lab.evidence import write_capture

        write_capture(lab.run_dir)


@pytest.fixture
def lab(lab_session: Lab, request: pytest.FixtureRequest) -> Lab:
    lab_session.reset()
    request.node.stash[_STARTED] = (lab_session, time.time())
    return lab_session


@pytest.fixture
def faults(lab: Lab) -> Iterator[Faults]:
    f = Faults(lab)
    yield f
    f.clear()


_STARTED = pytest.StashKey[tuple[Lab, float]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    started = item.stash.get(_STARTED, None)
    if started is None or report.when != "call" or not report.failed:
        return
    lab, since = started
    try:
        attach_evidence(report, lab, since, item.nodeid)
    except Exception as exc:  # evidence must never hide the real failure
        report.sections.append(("siplab evidence", f"could not collect evidence: {exc!r}"))


def attach_evidence(report: pytest.TestReport, lab: Lab, since: float, nodeid: str) -> None:
    """Ladders of the calls that failed since ``since`` and a pcap of the test's traffic."""
    from lab.evidence import failed_calls, write_ladders, write_pcap

    time.sleep(0.05)  # XXX let nodes flush their last event batch (they flush per datagram batch)
    packets = lab.packets(since)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in nodeid)[-120:]
    folder = lab.run_dir / "tests" / safe
    folder.mkdir(parents=True, exist_ok=True)
    pcap = folder / "capture.pcap"
    write_pcap(pcap, packets)
    names = {n.address: n.name for n in lab.labfile.nodes if n.port}
    ladders = write_ladders(folder, failed_calls(packets), names=names, packets=packets)
    text = (
        "\n".join(f"{body}  -> {svg}\n" for _, svg, body in ladders[:5])
        or "no failed calls during the test\n"
    )
    report.sections.append(("siplab ladder", text))
    report.sections.append(
        ("siplab capture", f"pcap: {pcap} ({len(packets)} packets)\nrun folder: {lab.run_dir}")
    )
