"""Configuration of one emulated Asterisk node (``siplab pbx --config node.toml``).

Example::

    name = "pbx1"
    listen = "127.0.0.11"
    port = 5060
    db = "sqlite:///runs/lab/realtime.db"
    routers = ["127.0.0.10"]        # identified as endpoint `router_endpoint` (no auth)
    events = "runs/lab/events.jsonl"
    queue_mode = "shared"           # or "per_node" (real Asterisk, SIP-REFERENCE §5.9)
    time_scale = 1.0

    [timers]
    t1 = 0.5
    t2 = 4.0
    t4 = 5.0

    [capacity]
    max_channels = 200              # 0 = unlimited; a full node answers INVITE with 503
    call_cost_ms = 2.0              # CPU really burnt per new call

Every timer is configuration (ARCHITECTURE: "Timers ... are configuration, so suites can run
with compressed time"): the SIP timers scale through T1/T2/T4, dialplan and queue durations
through ``time_scale``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from router.configfile import FieldError, load_file

ASTERISK_VERSION = "22.10.1"


@dataclass(frozen=True, slots=True)
class TimersConfig:
    """pjsip timer values in seconds (Asterisk ``timer_t1`` 500 ms, T2 4 s, T4 5 s)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if self.t1 <= 0:
            raise FieldError("t1", "must be > 0")
        if self.t2 < self.t1:
            raise FieldError("t2", "must be >= t1")
        if self.t4 <= 0:
            raise FieldError("t4", "must be > 0")


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    """How much the node can take."""

    max_channels: int = 0
    """Channels (call legs, both directions) before new INVITEs get 503; 0 = unlimited."""
    call_cost_ms: float = 0.0
    """CPU time burnt (busy loop) for every new inbound call, so a node saturates like a real one."""

    def __post_init__(self) -> None:
        if self.max_channels < 0:
            raise FieldError("max_channels", "must be >= 0")
        if self.call_cost_ms < 0:
            raise FieldError("call_cost_ms", "must be >= 0")


@dataclass(frozen=True, slots=True)
class PbxConfig:
    """One emulator node."""

    name: str
    """Node name (events ``node`` field)."""
    db: str
    """Shared realtime DB URL (``sqlite:///path`` or ``postgresql://...``)."""
    listen: str = "127.0.0.11"
    """IP address to bind (UDP, and TCP when ``tcp`` is true)."""
    port: int = 5060
    tcp: bool = False
    """Also listen on TCP."""
    routers: list[str] = field(default_factory=list)
    """Router addresses (IP or CIDR), identified as endpoint ``router_endpoint`` (§6.1 ip)."""
    router_endpoint: str = "router"
    system_name: str = ""
    """Asterisk ``system_name``: ps_contacts.reg_server; empty = ``name``."""
    timers: TimersConfig = field(default_factory=TimersConfig)
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    events: str = ""
    """events.jsonl path; empty = no file."""
    raw_events: bool = True
    """Put each message's text in its event line (ladders and pcap need it)."""
    dialplan: str = ""
    """Dialplan TOML; empty = the built-in default (600, 601, 602, users, 700, 800)."""
    queue_mode: Literal["shared", "per_node"] = "shared"
    """``shared``: member busy state in ``queue_member_state``; ``per_node``: like Asterisk."""
    time_scale: float = 1.0
    """Multiplier for dialplan and queue durations (601's hangup, queue timeout/retry ...)."""
    endpoint_identifier_order: str = "ip,username,anonymous"
    default_realm: str = "asterisk"
    user_agent: str = f"Asterisk PBX {ASTERISK_VERSION}"
    seed: int | None = None
    external_signaling_address: str = ""
    """``IP:PORT`` put in Contact instead of the listen address (Asterisk's transport option
    of that name): the lab sets it to the fault relay in front of the node, so in-dialog
    requests (the ACK for a 2xx, BYE) also cross the relay."""
    """Seed for the node's random choices (queue strategy ``random``, tags are always random)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise FieldError("name", "must not be empty")
        try:
            ipaddress.ip_address(self.listen)
        except ValueError:
            raise FieldError("listen", f"not an IP address: {self.listen!r}") from None
        if not 0 <= self.port <= 65535:
            raise FieldError("port", "must be 0..65535")
        for i, item in enumerate(self.routers):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise FieldError(f"routers[{i}]", f"not an IP address or CIDR: {item!r}") from None
        if self.time_scale <= 0:
            raise FieldError("time_scale", "must be > 0")
        for i, name in enumerate(self.endpoint_identifier_order.split(",")):
            if name.strip() not in ("ip", "username", "anonymous", "auth_username", "header"):
                raise FieldError("endpoint_identifier_order", f"unknown identifier #{i}: {name!r}")

    @property
    def reg_server(self) -> str:
        """The value written to ps_contacts.reg_server."""
        return self.system_name or self.name


def load_config(path: str | Path) -> PbxConfig:
    """Read a node TOML file.

    Raises:
        ConfigError: naming the file, the field and the reason.
    """
    return load_file(path, PbxConfig)
