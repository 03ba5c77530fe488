"""The lab topology: what ``siplab lab up`` brings up, as typed, validated TOML.

A topology names the router under test, the PBX nodes behind it, the realtime DB, the users and
queues to provision, the dispatcher's algorithm and probing, the timers, and the links that get a
fault relay. Every table is a frozen dataclass loaded through
:func:`router.configfile.load_section`, so a mistake comes back as one line naming the file, the
dotted field and the reason (``lab.toml: pbx[1].kind: must be one of ...``).

No file is needed for the common case: :func:`default_topology` is the router, three emulator
nodes, SQLite in the run folder, users 100..599 and ``queue1`` ringing 101 and 102.

The realtime DB (``[db]``) is SQLite in the run folder, an existing DB (``url``), or a
PostgreSQL the lab starts itself (``kind = "postgres"``: a private cluster in the run folder,
the ``db`` node on 127.<net>.0.5:5432, see ``lab/backends/postgres.py``). With
``router.kind = "kamailio"`` and no DB given (``kind = "auto"``, no ``url``) the lab starts that
PostgreSQL: Kamailio's db_sqlite (5.6) sets no SQLite busy timeout, and the realtime file is
written at the same time by Kamailio (``location``) and by every PBX node (``ps_contacts`` of the
forwarded registrations), so a registration storm fails a third of its REGISTERs with 500
"database is locked" (``lab.routers.kamailio.differences`` ``sqlite_concurrency``). PostgreSQL
has row locks and no such failure. ``kind = "sqlite"`` keeps SQLite for Kamailio anyway.
Example::

    [router]
    kind = "reference"              # or "kamailio"
    events = false                  # the reference router's own JSON event log (opt-in: the
                                    # lab's packet capture is the evidence)
    # config = "my-kamailio.cfg"    # kind "kamailio": the user's cfg (docs/kamailio-contract.md)
    # version = "6.0"               # kind "kamailio": "" host (5.6), "6.0"/"6.1" in a container
    # external = "127.0.0.60:5060"  # a router the lab does not start

    [[pbx]]                         # repeat per node; or `pbx_count = 3` for defaults
    kind = "emulator"               # "asterisk" (docker backend), "sipp" (stand-in UAS)
    [[pbx]]
    name = "pbx9"
    external = "127.0.0.50:5060"    # already running; the lab only points the router at it

    [db]
    kind = "auto"                   # "sqlite", "postgres" (started by the lab); auto: postgres
                                    # for router.kind "kamailio", else sqlite (or url if given)
    url = ""                        # an existing DB; empty: realtime.db in the run folder

    [users]
    count = 500
    first = 100

    [[queues]]
    name = "queue1"
    strategy = "ringall"
    members = ["101", "102"]

    [dispatcher]
    algorithm = 4                   # Kamailio number or name
    source = "config"               # destinations in router.toml, or "db": the `dispatcher` table
    [dispatcher.probing]
    interval = 2.0
    timeout = 1.0
    mode = 1

    [timers]
    t1 = 0.5
    time_scale = 1.0                # every duration is multiplied by this (0.1 = 10x faster)

    faults = ["ua-router", "router-pbx1"]

    [lab]
    net = "netns"                   # every node in its own network namespace (lab/netns.py)
    [lab.links.pbx2]                # pbx2's link, each direction: tc netem syntax
    delay = "80ms"
    loss = "5%"

Addresses are fixed by the architecture (one loopback address per node): the lab DB
``127.0.0.5:5432`` (when the lab starts PostgreSQL), router ``127.0.0.10:5060``, ``pbxN``
``127.0.0.(10+N):5060``, fault relays and load generators from ``127.0.0.100`` on.

Evidence: every run captures the packets between those addresses (``lab/capture.py``). The
top-level ``evidence_mb`` (0 = unbounded) bounds it for long, heavy runs: a ring buffer of the
last N/2 MB plus up to N/2 MB of earlier traffic with failed calls, and no node event logs
(``siplab capacity`` uses 160).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lab.netns import LinkSpec, lab_address
from router.configfile import ConfigError, FieldError, load_section, read_toml
from router.realtime.schema import QUEUE_STRATEGY_VALUES

ROUTER_HOST = "127.0.0.10"
SIP_PORT = 5060
HTTP_PORT = 8080
DB_PORT = 5432
"""Port of the lab's own PostgreSQL (``[db] kind = "postgres"``) on :func:`db_host`."""
FIRST_AUX_HOST = 100
"""Fault relays use 127.0.0.100 + i; load generators the addresses after them."""

PbxKind = Literal["emulator", "asterisk", "sipp"]
DbKind = Literal["auto", "sqlite", "postgres"]


def pbx_host(index: int, net: int = 0) -> str:
    """Address of the ``index``-th PBX node (1-based): 127.<net>.0.(10+index)."""
    if not 1 <= index <= 89:
        raise ValueError(f"pbx index {index} out of range 1..89 (127.x.0.11..127.x.0.99)")
    return f"127.{net}.0.{10 + index}"


def aux_host(index: int, net: int = 0) -> str:
    """The ``index``-th auxiliary address (0-based): fault relays, then load generators."""
    if not 0 <= index <= 150:
        raise ValueError(f"aux index {index} out of range")
    return f"127.{net}.0.{FIRST_AUX_HOST + index}"


def router_host(net: int = 0) -> str:
    return f"127.{net}.0.10"


def db_host(net: int = 0) -> str:
    """The lab DB's address: 127.<net>.0.5 (below the router's .10, above the host's .1)."""
    return f"127.{net}.0.5"


def _check_hostport(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise FieldError(name, f"expected IPv4:PORT, got {value!r}") from None
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise FieldError(name, f"expected IPv4:PORT, got {value!r}")
    return host, int(port)


KAMAILIO_VERSIONS = ("", "5.6", "6.0", "6.1")
"""``[router] version`` values: "" = the host's Kamailio, "5.6" (Debian 12, the host), "6.0"
(Debian trixie) and "6.1" (Debian sid) in a container (``lab.routers.kamailio.image``)."""

ROUTER_CAPABILITIES = ("auth", "registrar", "tcp", "ds_alg")
"""What a router cfg may provide (``[router] provides``; ``lab.routers.kamailio.capabilities``)."""


@dataclass(frozen=True, slots=True)
class RouterSpec:
    kind: Literal["reference", "kamailio"] = "reference"
    """The router under test: siplab's reference router or Kamailio (Debian package)."""
    policy: str = "router.policy:request_route"
    """Routing policy of the reference router (``module:function``)."""
    events: bool = False
    """The reference router writes its own JSON event log (``events/router.jsonl``, a line
    per SIP message, on its hot path). Off by default: the lab's packet capture is the
    evidence (``lab/capture.py``); status, metrics and counters stay either way."""
    config: str = ""
    """A user's own kamailio.cfg (kind "kamailio"); the lab passes its settings as ``-A``
    defines (docs/kamailio-contract.md). Empty: siplab's own cfg."""
    version: str = ""
    """Kamailio version (kind "kamailio"): "" / "5.6" the host's, "6.0" / "6.1" in a container."""
    external: str = ""
    """``IP:PORT`` of a router the lab does not start: the PBX nodes and the traffic are
    pointed at it (it must route to the nodes of the lab's ``dispatcher`` table)."""
    provides: list[str] = field(default_factory=list)
    """Capabilities of the router (``auth``, ``registrar``, ``tcp``, ``ds_alg``); empty: all for
    siplab's routers, detected from the text of a user's cfg, none declared for an external
    router. Scenarios needing one that is missing are skipped with the reason."""

    def __post_init__(self) -> None:
        if self.config and self.kind != "kamailio":
            raise FieldError("config", 'a kamailio.cfg needs kind = "kamailio"')
        if self.version not in KAMAILIO_VERSIONS:
            raise FieldError(
                "version", f"must be one of {', '.join(repr(v) for v in KAMAILIO_VERSIONS)}"
            )
        if self.version and self.kind != "kamailio":
            raise FieldError("version", 'a Kamailio version needs kind = "kamailio"')
        if self.external:
            _check_hostport("external", self.external)
            if self.config or self.version:
                raise FieldError("external", "an external router has no config or version")
        for i, name in enumerate(self.provides):
            if name not in ROUTER_CAPABILITIES:
                raise FieldError(
                    f"provides[{i}]",
                    f"unknown capability {name!r} ({', '.join(ROUTER_CAPABILITIES)})",
                )

    web: bool = False
    """Also listen for TLS (5061) and secure WebSocket (8443, RFC 7118) with certificates of a
    lab CA made in ``<run>/certs`` (``lab/certs.py``): what the lab's web phone connects to."""


@dataclass(frozen=True, slots=True)
class PbxSpec:
    name: str = ""
    """Node name; empty = ``pbx<N>`` by position."""
    kind: PbxKind = "emulator"
    """How the node runs: the emulator, real Asterisk (docker backend), or a SIPp UAS stand-in."""
    external: str = ""
    """``IP:PORT`` of a node the lab does not start (only routed to and probed)."""
    max_channels: int = 0
    """Emulator capacity (0 = unlimited)."""

    def __post_init__(self) -> None:
        if self.external:
            _check_hostport("external", self.external)
        if self.max_channels < 0:
            raise FieldError("max_channels", "must be >= 0")


@dataclass(frozen=True, slots=True)
class DbSpec:
    kind: DbKind = "auto"
    """``sqlite``: ``url`` or ``realtime.db`` in the run folder; ``postgres``: a PostgreSQL
    cluster the lab starts in the run folder (node ``db``); ``auto``: ``url`` if given, else
    ``postgres`` under Kamailio and ``sqlite`` under the reference router (module docstring)."""
    url: str = ""
    """An existing DB: ``postgresql://...`` or ``sqlite:///path``; empty for the lab's own."""

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "sqlite", "postgres"):
            raise FieldError("kind", f"must be one of auto, sqlite, postgres, got {self.kind!r}")
        if self.url and not self.url.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise FieldError(
                "url", f"expected sqlite:///path or postgresql://..., got {self.url!r}"
            )
        if self.url and self.kind == "postgres":
            raise FieldError(
                "url",
                "kind 'postgres' is the PostgreSQL the lab starts itself; an existing "
                "PostgreSQL is given as url with kind 'auto'",
            )
        if self.url.startswith("postgres") and self.kind == "sqlite":
            raise FieldError("url", "kind 'sqlite' with a postgresql:// url")


@dataclass(frozen=True, slots=True)
class UsersSpec:
    count: int = 500
    first: int = 100
    domain: str = ""
    """SIP domain of the users (empty: the router's address)."""
    context: str = "from-users"
    password_seed: int | None = 1
    """Seed for reproducible passwords (None: random)."""

    def __post_init__(self) -> None:
        if self.count < 0:
            raise FieldError("count", "must be >= 0")
        if self.first < 0:
            raise FieldError("first", "must be >= 0")


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    strategy: str = "ringall"
    members: list[str] = field(default_factory=list)
    """Extensions (``"101"``) or interfaces (``"PJSIP/101"``)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise FieldError("name", "must not be empty")
        if self.strategy not in QUEUE_STRATEGY_VALUES:
            raise FieldError(
                "strategy",
                f"must be one of {', '.join(QUEUE_STRATEGY_VALUES)} (Asterisk's "
                f"queue_strategy_values), got {self.strategy!r}",
            )

    @property
    def interfaces(self) -> list[str]:
        return [m if "/" in m else f"PJSIP/{m}" for m in self.members]


def _default_queues() -> list[QueueSpec]:
    return [QueueSpec("queue1", "ringall", ["101", "102"])]


@dataclass(frozen=True, slots=True)
class ProbingSpec:
    interval: float = 2.0
    """Seconds between keepalive OPTIONS (scaled by time_scale; 0 disables)."""
    timeout: float = 1.0
    mode: int = 1
    """``ds_probing_mode``: 0 only inactive, 1 all, 2 on failure, 3 all with no state change."""

    def __post_init__(self) -> None:
        if self.interval < 0:
            raise FieldError("interval", "must be >= 0")
        if self.timeout <= 0:
            raise FieldError("timeout", "must be > 0")
        if self.mode not in (0, 1, 2, 3):
            raise FieldError("mode", "must be 0, 1, 2 or 3")


@dataclass(frozen=True, slots=True)
class DispatcherSpec:
    algorithm: int | str = 4
    source: Literal["db", "config"] = "config"
    """Where the router reads destinations: the realtime ``dispatcher`` table or its TOML."""
    probing: ProbingSpec = field(default_factory=ProbingSpec)


@dataclass(frozen=True, slots=True)
class TimersSpec:
    t1: float = 0.5
    time_scale: float = 1.0
    """Multiplies every duration the lab renders (T1/T2/T4, fr_timer, probing, dialplan)."""

    def __post_init__(self) -> None:
        if self.t1 <= 0:
            raise FieldError("t1", "must be > 0")
        if self.time_scale <= 0:
            raise FieldError("time_scale", "must be > 0")

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale


@dataclass(frozen=True, slots=True)
class LabSpec:
    net: Literal["loopback", "netns"] = "loopback"
    """``loopback``: every node on its 127.<net>.0.x; ``netns``: every node in its own network
    namespace on 10.<net>.0.x behind a lab bridge (``lab/netns.py``)."""
    links: dict[str, LinkSpec] = field(default_factory=dict)
    """Per-node link impairment in netns mode: ``[lab.links.pbx2] delay = "80ms"``."""


@dataclass(frozen=True, slots=True)
class Topology:
    router: RouterSpec = field(default_factory=RouterSpec)
    pbx: list[PbxSpec] = field(default_factory=list)
    pbx_count: int = 3
    """Number of default emulator nodes when no ``[[pbx]]`` table is given."""
    db: DbSpec = field(default_factory=DbSpec)
    users: UsersSpec = field(default_factory=UsersSpec)
    queues: list[QueueSpec] = field(default_factory=_default_queues)
    dispatcher: DispatcherSpec = field(default_factory=DispatcherSpec)
    timers: TimersSpec = field(default_factory=TimersSpec)
    faults: list[str] = field(default_factory=list)
    """Links that get a fault relay: ``"ua-router"`` or ``"router-pbxN"``."""
    net: int = 0
    """Second octet of every lab address: 127.<net>.0.x (0 = the documented addresses); a
    different value lets several labs (or test sessions) run side by side."""
    evidence_mb: int = 0
    """0: full evidence (the whole packet capture, the PBX emulators' event logs). N > 0:
    bounded evidence for long, heavy runs (capacity), at most N MB of capture: a ring of the
    last N/2 MB (5 files of N/10 MB) plus up to N/2 MB of earlier ring files that held failed
    calls (``lab/capture.py``); the emulators write no event log."""
    lab: LabSpec = field(default_factory=LabSpec)

    def __post_init__(self) -> None:
        if not 0 <= self.net <= 255:
            raise FieldError("net", "must be 0..255")
        if self.evidence_mb and not 10 <= self.evidence_mb <= 100_000:
            raise FieldError("evidence_mb", "must be 0 (unbounded) or 10..100000 (MB)")
        if not 0 <= self.pbx_count <= 89:
            raise FieldError("pbx_count", "must be 0..89")
        names = [p.name or f"pbx{i}" for i, p in enumerate(self.pbx_nodes(), 1)]
        for i, name in enumerate(names):
            if name in ("router", "db", "ua") or name in names[:i]:
                raise FieldError(f"pbx[{i}].name", f"duplicate or reserved node name {name!r}")
        known = {"router", *names}
        for i, link in enumerate(self.faults):
            a, sep, b = link.partition("-")
            if not sep or ((a, b) != ("ua", "router") and not (a == "router" and b in names)):
                raise FieldError(
                    f"faults[{i}]",
                    f"unknown link {link!r} (use 'ua-router' or 'router-<pbx>'; nodes: "
                    f"{', '.join(sorted(known))})",
                )
            if link in self.faults[:i]:
                raise FieldError(f"faults[{i}]", f"link {link!r} listed twice")
        for node in self.lab.links:
            if node not in known and node != "db":
                raise FieldError(
                    f"lab.links.{node}", f"no such node (nodes: {', '.join(sorted(known))})"
                )
        if self.lab.links and self.lab.net != "netns":
            raise FieldError("lab.links", 'link impairment needs lab.net = "netns"')

    def _host(self, address: str) -> str:
        """A node address in this lab's mode: 127.N.0.X, or 10.N.0.X in netns mode."""
        return lab_address(address) if self.lab.net == "netns" else address

    def pbx_nodes(self) -> list[PbxSpec]:
        """The PBX specs, named, ``pbx_count`` defaults when no table was given."""
        specs = self.pbx or [PbxSpec() for _ in range(self.pbx_count)]
        return [replace(p, name=p.name or f"pbx{i}") for i, p in enumerate(specs, 1)]

    @property
    def router_host(self) -> str:
        return self._host(router_host(self.net))

    @property
    def db_host(self) -> str:
        return self._host(db_host(self.net))

    @property
    def lab_postgres(self) -> bool:
        """True when the lab starts its own PostgreSQL (``[db]``: module docstring)."""
        if self.db.kind == "postgres":
            return True
        return self.db.kind == "auto" and not self.db.url and self.router.kind == "kamailio"

    @property
    def users_domain(self) -> str:
        return self.users.domain or self.router_host

    def pbx_address(self, index: int) -> tuple[str, int]:
        """``(host, port)`` of the ``index``-th node (1-based), external address included."""
        spec = self.pbx_nodes()[index - 1]
        if spec.external:
            host, _, port = spec.external.rpartition(":")
            return host, int(port)
        return self._host(pbx_host(index, self.net)), SIP_PORT

    def relay_host(self, link: str) -> str:
        """The fault relay address of ``link`` (127.<net>.0.100 + its position in ``faults``)."""
        return self._host(aux_host(self.faults.index(link), self.net))

    def generator_host(self, index: int = 0) -> str:
        """A free address for a load generator (after the relays)."""
        return self._host(aux_host(len(self.faults) + index, self.net))

    def with_pbx(self, count: int, kind: PbxKind | None = None) -> Topology:
        """The same topology with ``count`` default nodes (of ``kind`` if given)."""
        nodes = [PbxSpec(name=f"pbx{i}", kind=kind or "emulator") for i in range(1, count + 1)]
        return replace(self, pbx=nodes, pbx_count=count)

    def to_dict(self) -> dict[str, Any]:
        """A TOML-ready table that :func:`topology_from_dict` reads back to an equal value."""
        from dataclasses import asdict

        data = asdict(self)
        data["pbx"] = [asdict(p) for p in self.pbx_nodes()]
        data["users"] = {k: v for k, v in data["users"].items() if v is not None}
        return data


def default_topology(*, pbx: int = 3, kind: PbxKind = "emulator") -> Topology:
    """Router + ``pbx`` nodes + SQLite + 500 users + queue1(101, 102)."""
    return Topology().with_pbx(pbx, kind)


def topology_from_dict(data: dict[str, Any], *, source: str = "<topology>") -> Topology:
    """Build a topology from a parsed TOML table.

    Raises:
        ConfigError: naming ``source``, the field and the reason.
    """
    return load_section(data, Topology, file=source)


def load_topology(path: str | Path) -> Topology:
    """Read a topology TOML file.

    Raises:
        ConfigError: naming the file, the field and the reason.
    """
    topology = topology_from_dict(read_toml(path), source=str(path))
    config = topology.router.config
    if config and not Path(config).is_absolute():
        # a cfg named in a topology file lies next to it (not in the current directory)
        resolved = str((Path(path).parent / config).resolve())
        topology = replace(topology, router=replace(topology.router, config=resolved))
    return topology


# -- a small TOML writer (tomllib only reads) ----------------------------------------------


def dump_toml(data: dict[str, Any]) -> str:
    """Serialise nested dicts/lists of str, int, float, bool to TOML (None values skipped)."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _dump_table(data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    for key, value in data.items():
        if value is None or isinstance(value, dict) or _is_table_list(value):
            continue
        lines.append(f"{key} = {_scalar(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append("")
            lines.append(f"[{'.'.join([*path, key])}]")
            _dump_table(value, [*path, key], lines)
        elif _is_table_list(value):
            for item in value:
                lines.append("")
                lines.append(f"[[{'.'.join([*path, key])}]]")
                _dump_table(item, [*path, key], lines)


__all__ = [
    "DB_PORT",
    "HTTP_PORT",
    "KAMAILIO_VERSIONS",
    "ROUTER_CAPABILITIES",
    "ROUTER_HOST",
    "SIP_PORT",
    "ConfigError",
    "DbKind",
    "DbSpec",
    "DispatcherSpec",
    "LabSpec",
    "LinkSpec",
    "PbxSpec",
    "ProbingSpec",
    "QueueSpec",
    "RouterSpec",
    "TimersSpec",
    "Topology",
    "UsersSpec",
    "aux_host",
    "db_host",
    "default_topology",
    "dump_toml",
    "load_topology",
    "pbx_host",
    "router_host",
    "topology_from_dict",
]
