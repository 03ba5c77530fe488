"""The router's TOML configuration (``siplab router --config router.toml``).

Example (every key optional except where noted)::

    [router]
    name = "router"
    listen = ["udp:127.0.0.10:5060", "tcp:127.0.0.10:5060"]
    policy = "router.policy:request_route"    # your own function: "mymodule:request_route"
    events = "runs/router/events.jsonl"       # one JSON line per SIP message
    http = "127.0.0.10:8080"                  # /metrics (Prometheus) and /status (JSON)

    [timers]                                  # seconds
    t1 = 0.5
    t2 = 4.0
    t4 = 5.0
    fr_timer = 2.0                            # Kamailio tm fr_timer, as in dispatcher.cfg
    fr_inv_timer = 40.0

    [dispatcher]
    algorithm = 4                             # Kamailio number or name ("round_robin")
    list_file = "dispatcher.list"             # Kamailio list format, or:
    db = "sqlite:///runs/lab/realtime.db"     # the `dispatcher` table, or:
    [[dispatcher.destinations]]
    uri = "sip:127.0.0.11:5060"
    flags = 8
    attrs = "duid=pbx1"
    [dispatcher.probing]
    interval = 2.0                            # ds_ping_interval (0 = no probing)
    timeout = 1.0                             # ds_ping_fr_timer
    mode = 1                                  # ds_probing_mode
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.configfile import ConfigError, FieldError, load_file, load_section
from router.streamconfig import StreamsSection

PROTOCOLS = ("udp", "tcp", "tls", "ws", "wss")
"""Listen protocols: RFC 3261 UDP/TCP/TLS and RFC 7118 WebSocket (``ws``) / secure (``wss``)."""


def parse_listen(text: str) -> tuple[str, str, int]:
    """``"udp:127.0.0.10:5060"`` -> ("udp", "127.0.0.10", 5060); IPv6 as ``udp:[::1]:5060``."""
    proto, sep, rest = text.partition(":")
    expected = f"{text!r}: expected PROTO:IP:PORT with PROTO one of {', '.join(PROTOCOLS)}"
    if not sep or proto not in PROTOCOLS:
        raise ValueError(expected)
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(expected)
    return proto, host.strip("[]"), int(port_text)


@dataclass(frozen=True)
class RouterSection:
    name: str = "router"
    listen: list[str] = field(default_factory=lambda: ["udp:127.0.0.10:5060"])
    advertise: str | None = None
    """Host:port put in Via/Record-Route; default: the first listen address."""
    policy: str = "router.policy:request_route"
    events: str | None = None
    events_raw: bool = True
    http: str | None = None
    log: str | None = None

    def __post_init__(self) -> None:
        if not self.listen:
            raise FieldError("listen", "at least one listen address is needed")
        for i, item in enumerate(self.listen):
            try:
                parse_listen(item)
            except ValueError as exc:
                raise FieldError(f"listen[{i}]", str(exc)) from None
        if ":" not in self.policy:
            raise FieldError("policy", f"expected 'module:function', got {self.policy!r}")
        if self.http is not None and not self.http.rpartition(":")[2].isdigit():
            raise FieldError("http", f"expected IP:PORT, got {self.http!r}")


@dataclass(frozen=True)
class TimersSection:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    fr_timer: float = 2.0
    fr_inv_timer: float = 40.0

    def __post_init__(self) -> None:
        for name in ("t1", "t2", "t4", "fr_timer", "fr_inv_timer"):
            if getattr(self, name) <= 0:
                raise FieldError(name, "must be > 0")
        if self.t1 > self.t2:
            raise FieldError("t2", "must be >= t1")


@dataclass(frozen=True)
class DestinationSection:
    uri: str
    setid: int = 1
    flags: int = 0
    priority: int = 0
    attrs: str = ""
    description: str = ""


@dataclass(frozen=True)
class ProbingSection:
    interval: float = 10.0
    timeout: float = 2.0
    probing_threshold: int = 1
    inactive_threshold: int = 1
    mode: int = 1
    reply_codes: str = ""
    ping_from: str = "sip:dispatcher@localhost"

    def __post_init__(self) -> None:
        if self.interval < 0:
            raise FieldError("interval", "must be >= 0 (0 disables probing)")
        if self.timeout <= 0:
            raise FieldError("timeout", "must be > 0")
        if self.mode not in (0, 1, 2, 3):
            raise FieldError("mode", "must be 0, 1, 2 or 3")
        if self.probing_threshold < 1 or self.inactive_threshold < 1:
            raise FieldError("probing_threshold", "thresholds must be >= 1")


@dataclass(frozen=True)
class DispatcherSection:
    algorithm: int | str = 4
    setid: int = 1
    mark_failed: bool = True
    list_file: str | None = None
    db: str | None = None
    destinations: list[DestinationSection] = field(default_factory=list)
    probing: ProbingSection = field(default_factory=ProbingSection)

    def __post_init__(self) -> None:
        from router.features.dispatcher import get_algorithm

        try:
            get_algorithm(self.algorithm)
        except (ValueError, KeyError) as exc:
            raise FieldError("algorithm", str(exc)) from None
        sources = sum(
            x is not None and x != [] for x in (self.list_file, self.db, self.destinations or None)
        )
        if sources > 1:
            raise FieldError("destinations", "give only one of destinations, list_file, db")


@dataclass(frozen=True)
class RouterConfig:
    router: RouterSection = field(default_factory=RouterSection)
    timers: TimersSection = field(default_factory=TimersSection)
    dispatcher: DispatcherSection = field(default_factory=DispatcherSection)
    registrar: dict[str, Any] = field(default_factory=dict)
    """Router part 2 settings (registrar, auth, forwarding); validated by that feature."""
    streams: StreamsSection = field(default_factory=StreamsSection)
    """TLS and WebSocket listeners (``router/streamconfig.py``)."""
    source: str = "<config>"

    def __post_init__(self) -> None:
        secure = [x for x in self.router.listen if x.startswith(("tls:", "wss:"))]
        if secure and self.streams.cert is None:
            raise FieldError("streams.cert", f"{secure[0]} needs a certificate and key")

    # -- convenience ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.router.name

    @property
    def policy(self) -> str:
        return self.router.policy

    def listen_addresses(self) -> list[tuple[str, int]]:
        return [(h, p) for _, h, p in (parse_listen(x) for x in self.router.listen)]

    def listen_by_proto(self, proto: str) -> list[tuple[str, int]]:
        return [(h, p) for pr, h, p in (parse_listen(x) for x in self.router.listen) if pr == proto]

    @property
    def host(self) -> str:
        if self.router.advertise:
            return self.router.advertise.rpartition(":")[0] or self.router.advertise
        return self.listen_addresses()[0][0]

    @property
    def port(self) -> int:
        if self.router.advertise and self.router.advertise.rpartition(":")[2].isdigit():
            return int(self.router.advertise.rpartition(":")[2])
        return self.listen_addresses()[0][1]

    @property
    def dispatcher_algorithm(self) -> int | str:
        return self.dispatcher.algorithm

    @property
    def dispatcher_mark_failed(self) -> bool:
        return self.dispatcher.mark_failed

    def dispatcher_rows(self) -> list[dict[str, object]]:
        """The destination rows, from whichever source the config names."""
        ds = self.dispatcher
        if ds.list_file is not None:
            from router.features.dispatcher import DispatcherConfigError, parse_list_file

            path = Path(ds.list_file)
            if not path.is_absolute() and self.source not in ("<config>",):
                path = Path(self.source).parent / path
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(
                    self.source, "dispatcher.list_file", f"{path}: {exc.strerror}"
                ) from None
            try:
                dests = parse_list_file(text)
            except DispatcherConfigError as exc:
                raise ConfigError(str(path), f"line {exc.line}", str(exc)) from None
            return [
                {
                    "setid": d.setid,
                    "destination": d.uri,
                    "flags": d.flags,
                    "priority": d.priority,
                    "attrs": d.attrs_body,
                }
                for d in dests
            ]
        if ds.db is not None:
            from router.realtime import connect

            db = connect(ds.db)
            try:
                return [dataclasses.asdict(r) for r in db.dispatcher_rows()]
            finally:
                db.close()
        return [
            {
                "setid": d.setid,
                "destination": d.uri,
                "flags": d.flags,
                "priority": d.priority,
                "attrs": d.attrs,
                "description": d.description,
            }
            for d in ds.destinations
        ]


def load_router_config(path: str | Path) -> RouterConfig:
    cfg = load_file(path, RouterConfig)
    return RouterConfig(
        cfg.router, cfg.timers, cfg.dispatcher, cfg.registrar, cfg.streams, source=str(path)
    )


def router_config_from_dict(data: dict[str, Any], *, source: str = "<config>") -> RouterConfig:
    cfg = load_section(data, RouterConfig, file=source)
    return RouterConfig(
        cfg.router, cfg.timers, cfg.dispatcher, cfg.registrar, cfg.streams, source=source
    )
