"""The lab as a library: a running lab's nodes, actions, status and evidence.

:class:`Lab` wraps a backend and its ``lab.json``: scripts, notebooks and the pytest plugin
(``lab.pytest_plugin``, whose fixtures hand it to tests) all use it. Bring one up with
``get_backend(name).up(topology, run_dir)`` and wrap the result (``Lab(backend, labfile,
topology)``), or use the plugin's ``start_lab``. Its calls block (HTTP status, SIP readiness,
capture barrier); from trio, run them with ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
import tomllib
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.backends import Backend, LabError, NodeState
from lab.faults import clear_rules
from lab.labfile import LabFile, NodeRecord, write_labfile
from lab.routers.kamailio.status import kamailio_status, render_kamailio
from lab.topology import Topology, dump_toml

if TYPE_CHECKING:
    from lab.engines import SippResult, SippScenario
    from lab.ua import UserAgent
    from lab.wire import SipRecord
    from router.realtime import Database
    from router.sip.transaction.timers import Timers


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

    def entry(self, *, relayed: bool = True) -> tuple[str, int]:
        """Where a UA sends: the ua-router relay if there is one (and ``relayed``), else the
        router. Load generators pass ``relayed=False``: the relay is a Python process that
        would be the bottleneck of a storm."""
        for n in self.labfile.nodes:
            if relayed and n.link == "ua-router":
                return n.host, n.port
        return self.router.host, self.router.port

    @property
    def domain(self) -> str:
        """The users' SIP domain (the router's address unless the topology names one)."""
        return self.topology.users_domain

    @property
    def time_scale(self) -> float:
        return self.topology.timers.time_scale

    def scaled(self, seconds: float) -> float:
        """A duration of the real system as this lab runs it (times ``time_scale``)."""
        return seconds * self.topology.timers.time_scale

    def users(self) -> dict[str, str]:
        """Provisioned users, username -> password (read from the lab's users CSV)."""
        users: dict[str, str] = {}
        for line in self.users_csv.read_text(encoding="utf-8").splitlines()[1:]:
            name, _, rest = line.partition(";")
            marker = "password="
            if marker in rest:
                users[name] = rest[rest.index(marker) + len(marker) :].rstrip("]")
        return users

    def password(self, user: str) -> str:
        """Password of a provisioned user.

        Raises:
            KeyError: not a provisioned user.
        """
        return self.users()[user]

    def db(self) -> Database:
        """A connection to the lab's realtime DB (use as a context manager; close it)."""
        from router.realtime import connect

        return connect(self.db_url)

    def ua_timers(self) -> Timers:
        """T1/T2/T4 of a phone in this lab (scaled like every node's)."""
        from router.sip.transaction.timers import Timers

        scale = self.topology.timers.time_scale
        t1 = self.topology.timers.t1 * scale
        return Timers(t1=t1, t2=max(4.0 * scale, t1), t4=5.0 * scale)

    def generator_host(self, index: int = 0) -> str:
        """A free loopback address for phones and load generators (after the relays)."""
        return self.topology.generator_host(index)

    @asynccontextmanager
    async def open_ua(
        self,
        user: str = "100",
        *,
        password: str | None = None,
        local: tuple[str, int] | None = None,
        relayed: bool = True,
        **options: Any,
    ) -> AsyncIterator[UserAgent]:
        """A trio phone (:func:`lab.ua.open_ua`) for ``user`` wired to this lab: outbound proxy
        :meth:`entry`, the users' domain, the user's provisioned password (unless given),
        scaled timers, events in ``events/ua-<n>.jsonl`` so ladders show its leg.
        Other keyword arguments go to ``open_ua`` (``drop_acks``, ``on_send`` ...)."""
        from lab.ua import open_ua

        if password is None:
            password = self.users().get(user)
        host = local or (self.generator_host(0), 0)
        options.setdefault("timers", self.ua_timers())
        options.setdefault("node", f"ua{user}")
        events = self.run_dir / "events" / f"ua-{next(_UA_SEQ)}.jsonl"
        options.setdefault("events_path", events)
        async with open_ua(
            local=host,
            proxy=self.entry(relayed=relayed),
            user=user,
            password=password,
            domain=self.domain,
            **options,
        ) as ua:
            yield ua

    def sipp_run(
        self,
        scenario: SippScenario,
        *,
        name: str,
        max_calls: int,
        rate: float = 10.0,
        generator: int = 1,
        relayed: bool = False,
        **options: Any,
    ) -> tuple[Any, Path]:
        """A :class:`lab.engines.SippRun` aimed at this lab and its work folder
        (``<run>/sipp/<name>``): from a generator address, to the router (not through the
        relay unless ``relayed``), the users CSV as injection file when the scenario needs one.
        Other keyword arguments go to ``SippRun`` (``service``, ``timeout_s``, ``rate_max`` ...).
        """
        from lab.engines import SippRun

        if scenario.needs_injection:
            options.setdefault("injection", self.users_csv)
        run = SippRun(
            scenario,
            self.generator_host(generator),
            remote=self.entry(relayed=relayed),
            rate=rate,
            max_calls=max_calls,
            name=name,
            **options,
        )
        return run, self.run_dir / "sipp" / name

    def run_sipp(self, scenario: SippScenario, **kwargs: Any) -> SippResult:
        """Run SIPp to completion (see :meth:`sipp_run` for the arguments)."""
        from lab.engines import run_sipp

        run, workdir = self.sipp_run(scenario, **kwargs)
        return run_sipp(run, workdir)

    async def run_sipp_async(self, scenario: SippScenario, **kwargs: Any) -> SippResult:
        """:meth:`run_sipp` for trio tests (the test's other tasks keep running)."""
        from lab.engines import run_sipp_async

        run, workdir = self.sipp_run(scenario, **kwargs)
        return await run_sipp_async(run, workdir)

    def artifacts(self, nodeid: str) -> Path:
        """``<run>/tests/<test id>/``: where a test's evidence and measurements go."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in nodeid)[-120:]
        folder = self.run_dir / "tests" / safe
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # configuration the topology does not carry

    def config_path(self, name: str) -> Path:
        """The TOML file node ``name`` was started with (``--config``); for a Kamailio router
        the router TOML its cfg is rendered from (``<run>/router.toml``).

        Raises:
            LabError: the node has no config file (external, SIPp).
        """
        node = self.node(name)
        if node.role == "router" and node.kind == "kamailio":
            return self.run_dir / "router.toml"
        argv = list(node.argv)
        if "--config" in argv[:-1]:
            return Path(argv[argv.index("--config") + 1])
        raise LabError(f"{name}: not started from a TOML config; cannot reconfigure it")

    def read_config(self, name: str) -> dict[str, Any]:
        """Node ``name``'s current TOML config as a dict."""
        return tomllib.loads(self.config_path(name).read_text(encoding="utf-8"))

    def reconfigure(self, name: str, changes: dict[str, Any], *, restart: bool = True) -> None:
        """Merge ``changes`` into node ``name``'s TOML (tables merged key by key, anything
        else replaced) and restart the node so it reads them.

        ``lab.reconfigure("router", {"registrar": {"nonce_lifetime": 1.0}})``. A Kamailio
        router's cfg is rendered again from the merged router TOML (same mapping as at ``up``).

        Raises:
            LabError: a setting Kamailio cannot express, or the rendered cfg does not parse.
        """
        path = self.config_path(name)
        merged = deep_merge(self.read_config(name), changes)
        path.write_text(dump_toml(merged), encoding="utf-8")
        node = self.node(name)
        if node.role == "router" and node.kind == "kamailio":
            # the settings are -A defines: the restart runs the new command line
            argv = render_kamailio(merged, self.run_dir)
            if node.argv:
                self.labfile = self.labfile.with_node(replace(node, argv=argv))
                write_labfile(self.labfile)
        if restart:
            self.restart(name)

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

    @property
    def router_kind(self) -> str:
        """``reference``, ``kamailio``, or ``external`` (``[router] external``: not the lab's)."""
        return "external" if self.topology.router.external else self.topology.router.kind

    def router_status(self) -> dict[str, Any]:
        """The router's ``/status`` JSON; for Kamailio the same shape for the parts scenarios
        read, built from its JSON-RPC (:func:`kamailio_status`): ``dispatcher`` (uri, flags
        ``AP``/``IP``..., set, priority, attrs), ``transactions``, ``drops``,
        ``registrar.bindings``/``aors``. Kamailio has no counter for what it cannot report
        (e.g. transaction timeouts): those keys are None."""
        if self.router_kind == "kamailio":
            return kamailio_status(self.router_rpc)
        if self.router_kind == "external":
            raise LabError("the router is external: the lab cannot read its state")
        with urllib.request.urlopen(f"http://{self.router.http}/status", timeout=2.0) as resp:
            data = json.loads(resp.read().decode())
        assert isinstance(data, dict)
        return data

    def router_rpc(self, method: str, *params: Any) -> Any:
        """One Kamailio RPC command over JSON-RPC (``POST http://<router.http>/RPC``).

        Raises:
            LabError: the router is not Kamailio, or the command failed.
        """
        if self.router_kind != "kamailio":
            raise LabError(f"router_rpc: the router is {self.router_kind!r}, not Kamailio")
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
        request = urllib.request.Request(
            f"http://{self.router.http}/RPC",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=2.0) as resp:
            answer = json.loads(resp.read().decode())
        if "error" in answer:
            raise LabError(f"kamailio rpc {method}: {answer['error']}")
        return answer.get("result")

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

    def flush_capture(self, timeout: float = 5.0) -> bool:
        """Barrier: once True, every packet sent before the call is in ``capture.pcap``
        (:func:`lab.capture.flush`). False when the lab has no running capture."""
        from lab.capture import flush, read_state

        state = read_state(self.run_dir)
        return state is not None and state.pid is not None and flush(state, timeout)

    def packets(self, since: float = 0.0) -> list[SipRecord]:
        """SIP messages on the wire since ``since`` (epoch seconds), every leg, whatever router
        and PBX run: read from the lab's capture after a flush barrier, with the fault relays'
        decisions as notes. A lab without a capture falls back to the nodes' event logs."""
        from lab.evidence import lab_packets

        self.flush_capture()
        addresses = {n.name: n.address for n in self.labfile.nodes if n.port}
        return lab_packets(self.run_dir, since, addresses, self.__dict__)

    def down(self) -> None:
        self.labfile = self.backend.down(self.labfile)


_UA_SEQ = itertools.count(1)


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: nested dicts merged, every other value replaced."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
