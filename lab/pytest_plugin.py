"""pytest plugin: the lab as fixtures, evidence on failure.

Enable with ``pytest_plugins = ["lab.pytest_plugin"]`` in the root ``conftest.py`` (or ``-p
lab.pytest_plugin``). Fixtures:

- ``lab``: the default topology (router, 3 PBX nodes, SQLite, 500 users, queue1) brought up once
  per session on the chosen backend, with fault relays on ``ua-router`` and ``router-pbx1``.
  Before each test the cheap resets run: fault rules cleared, paused nodes resumed, killed nodes
  restarted. The run folder is ``runs/pytest-<time>/`` under the rootdir.
- ``faults``: add/clear rules on relayed links; cleared after the test.
- ``lab_topology`` (module scope, default None): override it in a test module to give that
  module its own lab (a :class:`LabSpec`, a :class:`~lab.topology.Topology` or a TOML-layout
  dict); ``lab`` and ``faults`` then use that lab, brought up once for the module on its own
  ``127.<net>.0.x`` addresses (next to the session lab) and taken down after it.
- ``make_lab``: module-scoped factory ``make_lab(spec) -> Lab`` for modules that need several
  labs; every lab it made is taken down at the end of the module.

Options: ``--lab-backend`` (local), ``--router`` (reference|kamailio), ``--time-scale`` (every
timer multiplied; default 0.1), ``--lab-faults`` (links with relays), ``--lab-net``.

When a test that used a lab fails (any fixture value that is a :class:`Lab`), the report gets
the ladders of the calls that failed during the test (text; SVGs under
``<run>/tests/<test id>/``) and the path of a pcap of that test's traffic, cut from the lab's
packet capture (``lab/capture.py``: every packet between the lab's addresses, whatever router
and PBX run) after its flush barrier.

Settings the topology does not carry (the registrar's ``nonce_lifetime``, a PBX's
``queue_mode``, probing thresholds ...) are given as router/PBX config tables
(:class:`LabSpec` ``router=`` / ``pbx=``): the node's TOML is rewritten and the node restarted
once after ``up`` (:meth:`Lab.reconfigure`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lab.backends import LabError, get_backend
from lab.docker.asterisk import backend_for, with_pbx_kind
from lab.faults import FaultRule, add_rule, clear_rules
from lab.labfile import NodeRecord, write_labfile
from lab.routers.kamailio.capabilities import skip_unsupported
from lab.topology import RouterSpec, Topology, default_topology, topology_from_dict

if TYPE_CHECKING:
    pass


from lab.api import Lab, deep_merge


@dataclass(frozen=True)
class LabSpec:
    """A lab to bring up for a test module: a topology plus node settings it does not carry.

    Args:
        topology: a :class:`Topology`, a TOML-layout dict (``{"dispatcher": {"algorithm": 8},
            "faults": ["router-pbx2"]}``; missing tables take the defaults) or None for the
            default topology.
        router: tables merged into ``router.toml`` (``{"registrar": {"min_expires": 1}}``).
        pbx: keys merged into every emulator node's TOML (``{"queue_mode": "per_node"}``).
        nodes: per node name, keys merged into that node's TOML only.
        time_scale: overrides ``--time-scale`` (``1.0`` for real-time variants).
        faults: links with fault relays; None keeps the topology's (a dict) or ``--lab-faults``.
    """

    topology: Topology | dict[str, Any] | None = None
    router: dict[str, Any] = field(default_factory=dict)
    pbx: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    time_scale: float | None = None
    faults: list[str] | None = None


_NEXT_NET = itertools.count(1)


def _options_topology(config: pytest.Config, spec: LabSpec, net: int) -> Topology:
    opt = config.getoption
    given = spec.topology
    if isinstance(given, Topology):
        topology = given
        faults = spec.faults if spec.faults is not None else given.faults
    else:
        data = dict(given or {})
        explicit_faults = "faults" in data
        data.setdefault("pbx_count", 3)
        topology = topology_from_dict(data, source="lab_topology")
        if not topology.pbx:
            topology = topology.with_pbx(topology.pbx_count)
        if spec.faults is not None:
            faults = spec.faults
        elif explicit_faults:
            faults = topology.faults
        else:
            faults = [x for x in opt("--lab-faults").split(",") if x]
        if "router" not in data or "kind" not in data.get("router", {}):
            # --router / --router-config choose the router; the module's other [router] fields
            # (its event log, web listeners, policy) stay.
            chosen = _router_spec(config)
            topology = replace(
                topology,
                router=replace(
                    topology.router, kind=chosen.kind, version=chosen.version, config=chosen.config
                ),
            )
        if "time_scale" not in data.get("timers", {}):
            topology = replace(
                topology, timers=replace(topology.timers, time_scale=opt("--time-scale"))
            )
    if spec.time_scale is not None:
        topology = replace(topology, timers=replace(topology.timers, time_scale=spec.time_scale))
    if opt("--lab-net-mode") == "netns":
        topology = replace(topology, lab=replace(topology.lab, net="netns"))
    return _with_pbx_option(config, replace(topology, faults=list(faults), net=net))


def _with_pbx_option(config: pytest.Config, topology: Topology) -> Topology:
    return with_pbx_kind(topology, config.getoption("--pbx"))


def _backend_for(config: pytest.Config, topology: Topology) -> Any:
    if topology.lab.net == "netns":  # lab/backends/netns.py
        return get_backend("netns")
    return get_backend(backend_for(topology, config.getoption("--lab-backend")))


def start_lab(config: pytest.Config, spec: LabSpec, name: str) -> Lab:
    """Bring up ``spec`` on its own ``127.<net>.0.x`` addresses in ``runs/pytest-<time>-<name>``
    and apply its node settings."""
    net = (config.getoption("--lab-net") + 100 + next(_NEXT_NET)) % 256
    topology = _options_topology(config, spec, net)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[-60:]
    run_dir = _run_root(config) / f"{_session_stamp(config)}-{safe}"
    backend = _backend_for(config, topology)
    lab = Lab(backend, backend.up(topology, run_dir), topology)
    try:
        pbx_names = [n.name for n in lab.pbx if n.kind == "emulator"]
        for node in pbx_names:
            changes = deep_merge(spec.pbx, spec.nodes.get(node, {}))
            if changes:
                lab.reconfigure(node, changes)
        if spec.router or spec.nodes.get("router"):
            lab.reconfigure("router", deep_merge(spec.router, spec.nodes.get("router", {})))
        if lab.router_kind != "external":  # an external router's state is not ours to read
            for node in [n.name for n in lab.pbx if n.kind in ("emulator", "asterisk")]:
                lab.wait_dispatcher(node, active=True)
        write_labfile(lab.labfile)
    except BaseException:
        lab.down()
        raise
    return lab


def stop_lab(lab: Lab) -> None:
    """Take a lab down and write its merged events and pcap."""
    lab.down()
    from lab.evidence import write_capture

    write_capture(lab.run_dir)


def _run_root(config: pytest.Config) -> Path:
    return Path(str(config.rootpath)) / "runs"


_STAMP = pytest.StashKey[str]()


def _session_stamp(config: pytest.Config) -> str:
    stamp = config.stash.get(_STAMP, None)
    if stamp is None:
        stamp = time.strftime("pytest-%Y%m%d-%H%M%S")
        config.stash[_STAMP] = stamp
    return stamp


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


# -- where Kamailio differs ------------------------------------------------------------------


def _router_option(config: pytest.Config) -> str:
    """The router kind of ``--router`` (``kamailio:6.0`` -> ``kamailio``)."""
    return _router_spec(config).kind


def _router_spec(config: pytest.Config) -> RouterSpec:
    """``[router]`` from ``--router kind[:version]`` and ``--router-config``."""
    from lab.routers.kamailio.capabilities import router_spec

    try:
        return router_spec(config.getoption("--router"), config.getoption("--router-config"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def kamailio_differs(request: pytest.FixtureRequest, name: str, *, run: bool = True) -> None:
    """Under ``--router kamailio``, expect this test to fail because Kamailio differs by design
    (``lab.routers.kamailio.differences`` entry ``name``): a strict xfail whose reason is the
    entry's text (``run=False``: not even run, e.g. a TCP scenario). No effect otherwise.

    The marker form ``@pytest.mark.kamailio_differs("name")`` does the same at collection.

    Raises:
        KeyError: ``name`` is not a known difference.
    """
    from lab.routers.kamailio.differences import difference

    reason = difference(name)
    if _router_option(request.config) == "kamailio":
        request.applymarker(pytest.mark.xfail(strict=True, run=run, reason=reason))


def kamailio_cannot_observe(lab: Lab, name: str) -> None:
    """Skip (with the difference's reason) a check the lab cannot make against Kamailio, e.g.
    one that reads the reference router's Prometheus metrics (``metrics``). What the router
    sent and received is never such a check: the lab's capture shows it for every router
    (:meth:`Lab.packets`). No effect otherwise."""
    from lab.routers.kamailio.differences import difference

    reason = difference(name)
    if lab.router_kind == "kamailio":
        pytest.skip(reason)


# -- hooks and fixtures ---------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kamailio_differs(name, run=True): strict xfail under --router kamailio, with the reason "
        "of lab.routers.kamailio.differences entry `name`",
    )
    config.addinivalue_line(
        "markers",
        "kamailio_cannot_observe(name): skipped under --router kamailio with the reason of "
        "differences entry `name` (a check the lab cannot make against Kamailio)",
    )
    config.addinivalue_line(
        "markers",
        "router_needs(capability): skipped when the router under test lacks it (auth, "
        "registrar, tcp, ds_alg:N; lab.routers.kamailio.capabilities)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from lab.routers.kamailio.differences import difference

    kamailio = _router_option(config) == "kamailio"
    for item in items:
        for mark in item.iter_markers("kamailio_differs"):
            reason = difference(str(mark.args[0]))  # unknown names fail under both routers
            if kamailio:
                run = bool(mark.kwargs.get("run", True))
                item.add_marker(pytest.mark.xfail(strict=True, run=run, reason=reason))
        for mark in item.iter_markers("kamailio_cannot_observe"):
            reason = difference(str(mark.args[0]))
            if kamailio:
                item.add_marker(pytest.mark.skip(reason=reason))
    skip_unsupported(_router_spec(config), items)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("siplab", "siplab lab")
    group.addoption("--lab-backend", default="local", help="lab backend (local)")
    group.addoption(
        "--router",
        default="reference",
        help="router under test: reference, kamailio, kamailio:VERSION (5.6, 6.0, 6.1)",
    )
    group.addoption("--router-config", default="", help="a user's kamailio.cfg as the router")
    group.addoption(
        "--time-scale", type=float, default=0.1, help="multiply every lab timer (default 0.1)"
    )
    group.addoption(
        "--lab-faults", default="ua-router,router-pbx1", help="links that get a fault relay"
    )
    group.addoption(
        "--lab-net", type=int, default=0, help="second octet of lab addresses (127.N.0.x)"
    )
    group.addoption(
        "--pbx",
        default="emulator",
        choices=["emulator", "asterisk"],
        help="PBX nodes of every lab: the emulator, or real Asterisk containers (docker backend)",
    )
    group.addoption(
        "--lab-net-mode",
        default="loopback",
        choices=["loopback", "netns"],
        help="netns: every lab node in its own network namespace (root; docs/scale-out.md)",
    )


@pytest.fixture(scope="session")
def lab_session(request: pytest.FixtureRequest) -> Iterator[Lab]:
    opt = request.config.getoption
    topology = default_topology()
    topology = replace(
        topology,
        router=_router_spec(request.config),
        timers=replace(topology.timers, time_scale=opt("--time-scale")),
        faults=[x for x in opt("--lab-faults").split(",") if x],
        net=opt("--lab-net"),
    )
    if opt("--lab-net-mode") == "netns":
        topology = replace(topology, lab=replace(topology.lab, net="netns"))
    topology = _with_pbx_option(request.config, topology)
    run_dir = _run_root(request.config) / _session_stamp(request.config)
    backend = _backend_for(request.config, topology)
    lab = Lab(backend, backend.up(topology, run_dir), topology)
    try:
        yield lab
    finally:
        stop_lab(lab)


@pytest.fixture(scope="module")
def lab_topology() -> LabSpec | Topology | dict[str, Any] | None:
    """Override in a test module to give it its own lab (see the module docstring)."""
    return None


@pytest.fixture(scope="module")
def module_lab(
    request: pytest.FixtureRequest, lab_topology: LabSpec | Topology | dict[str, Any] | None
) -> Iterator[Lab]:
    """The lab of a module that overrides ``lab_topology`` (use ``lab`` in tests)."""
    if lab_topology is None:
        raise LabError("module_lab needs a lab_topology override in the test module")
    spec = lab_topology if isinstance(lab_topology, LabSpec) else LabSpec(lab_topology)
    lab = start_lab(request.config, spec, request.module.__name__.rpartition(".")[2])
    try:
        yield lab
    finally:
        stop_lab(lab)


@pytest.fixture(scope="module")
def make_lab(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """``make_lab(spec_or_topology, **LabSpec fields) -> Lab``; all taken down after the module.

    Labs made this way are not reset between tests: do it with ``lab.reset()`` if needed.
    """
    made: list[Lab] = []

    def make(spec: LabSpec | Topology | dict[str, Any] | None = None, **fields: Any) -> Lab:
        if not isinstance(spec, LabSpec):
            spec = LabSpec(spec, **fields)
        elif fields:
            spec = replace(spec, **fields)
        name = f"{request.module.__name__.rpartition('.')[2]}-{len(made) + 1}"
        lab = start_lab(request.config, spec, name)
        made.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in reversed(made):
            stop_lab(lab)


@pytest.fixture
def lab(
    request: pytest.FixtureRequest, lab_topology: LabSpec | Topology | dict[str, Any] | None
) -> Lab:
    """The running lab, reset: the session's default lab, or the module's own when the module
    overrides ``lab_topology``."""
    name = "lab_session" if lab_topology is None else "module_lab"
    current: Lab = request.getfixturevalue(name)
    current.reset()
    request.node.stash[_STARTED] = (current, time.time())
    return current


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
    if report.when != "call" or not report.failed:
        return
    labs: list[Lab] = []
    started = item.stash.get(_STARTED, None)
    if started is not None:
        labs.append(started[0])
    funcargs = getattr(item, "funcargs", {})
    labs += [v for v in funcargs.values() if isinstance(v, Lab) and v not in labs]
    since = call.start
    for lab in labs:
        try:
            attach_evidence(report, lab, since, item.nodeid)
        except Exception as exc:  # evidence must never hide the real failure
            report.sections.append(("siplab evidence", f"could not collect evidence: {exc!r}"))


def attach_evidence(report: pytest.TestReport, lab: Lab, since: float, nodeid: str) -> None:
    """Ladders of the calls that failed since ``since`` and a pcap of the test's traffic."""
    from lab.evidence import failure_evidence

    names = {n.address: n.name for n in lab.labfile.nodes if n.port}
    for section in failure_evidence(
        lab.run_dir, lab.packets(since), lab.artifacts(nodeid), since, names
    ):
        report.sections.append(section)
