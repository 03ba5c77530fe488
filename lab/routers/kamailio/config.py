"""Render ``kamailio.cfg`` from typed parameters.

The cfg body (``kamailio.cfg`` next to this file) is fixed Kamailio script; everything that
varies between runs is a preprocessor ``#!define`` placed in front of it, so the rendered file is
plain, readable Kamailio config and the body never needs string templating. Roles are enabled
with ``#!define WITH_<ROLE>`` and guarded by ``#!ifdef`` blocks in the body.

Production sizing is the default: 1 worker (``children=1``), ``-m 2048`` MB shared memory and
``-M 16`` MB private memory per process.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lab.engines.probe import require_loopback

__all__ = [
    "DispatcherDestination",
    "KamailioParams",
    "KamailioRole",
    "dispatcher_list",
    "render_config",
]

_ATTR_RE = re.compile(r"^[A-Za-z0-9_.=;:@-]*$")


class KamailioRole(enum.Enum):
    """Optional blocks of the cfg (``#!ifdef WITH_<value>``)."""

    DISPATCHER = "DISPATCHER"
    REGISTRAR = "REGISTRAR"
    """Reserved for the registrar task (the body has only the hook so far)."""


@dataclass(frozen=True, slots=True)
class DispatcherDestination:
    """One line of a dispatcher list file (SIP-REFERENCE §1.1): ``setid uri flags prio attrs``."""

    uri: str
    """Destination SIP URI, e.g. ``sip:127.0.0.33:5090``."""
    setid: int = 1
    """Dispatcher set (group) id."""
    flags: int = 0
    """Bit 8 = PROBING (send keepalives), 4 = DISABLED, 1 = INACTIVE (§1.4)."""
    priority: int = 0
    """Higher first in the in-memory order (§1.2)."""
    attrs: str = ""
    """``name=value;...`` e.g. ``duid=pbx1;weight=50``."""

    def __post_init__(self) -> None:
        if not self.uri.startswith("sip:") or any(c.isspace() for c in self.uri):
            raise ValueError(f"dispatcher destination {self.uri!r} must be a sip: URI")
        host = self.uri[4:].split(";")[0].rsplit(":", 1)[0].split("@")[-1]
        require_loopback(host)
        if not _ATTR_RE.match(self.attrs):
            raise ValueError(f"dispatcher attrs {self.attrs!r} hold unsupported characters")

    def line(self) -> str:
        fields = [str(self.setid), self.uri, str(self.flags), str(self.priority)]
        if self.attrs:
            fields.append(self.attrs)
        return " ".join(fields)


def dispatcher_list(destinations: tuple[DispatcherDestination, ...]) -> str:
    """Text of a dispatcher list file."""
    return "".join(d.line() + "\n" for d in destinations)


@dataclass(frozen=True, slots=True)
class KamailioParams:
    """Everything the rendered cfg and the command line depend on."""

    listen_ip: str
    """UDP listen address (127.0.0.x)."""
    listen_port: int = 5060
    """UDP listen port."""
    children: int = 1
    """UDP worker processes (``children=``)."""
    shm_mb: int = 2048
    """``-m``: shared memory in MB."""
    pkg_mb: int = 16
    """``-M``: private memory per process in MB."""
    destinations: tuple[DispatcherDestination, ...] = ()
    """Dispatcher list-file entries (ignored when :attr:`ds_db_url` is set)."""
    ds_db_url: str | None = None
    """Dispatcher DB (e.g. ``sqlite:///path/db.sqlite``) instead of a list file."""
    ds_set: int = 1
    """Set used by ``ds_select_dst``."""
    ds_alg: int = 4
    """``ds_select_dst`` algorithm (4 = round robin, §1.3)."""
    ds_ping_interval: int = 0
    """Seconds between OPTIONS keepalives; 0 disables probing entirely (§1.5)."""
    ds_probing_mode: int = 0
    """0 probe PROBING-flagged only, 1 all, 2 inactive only, 3 flagged forever."""
    ds_probing_threshold: int = 1
    """Failed pings before a destination goes INACTIVE."""
    ds_inactive_threshold: int = 1
    """Successful pings before an INACTIVE destination is ACTIVE again."""
    ds_mark_failed: bool = False
    """``ds_mark_dst("ip")`` on a failed-over destination (inactive + probing)."""
    fr_timer_ms: int = 2000
    """tm ``fr_timer``."""
    fr_inv_timer_ms: int = 40000
    """tm ``fr_inv_timer``."""
    debug: int = 1
    """Log level (-5..3; 1 = NOTICE, 3 = DEBUG)."""
    roles: frozenset[KamailioRole] = frozenset({KamailioRole.DISPATCHER})
    """Enabled cfg blocks."""
    extra_defines: tuple[tuple[str, str | None], ...] = ()
    """Further ``#!define NAME [value]`` lines for later roles."""

    def __post_init__(self) -> None:
        require_loopback(self.listen_ip)
        if not 0 < self.listen_port < 65536:
            raise ValueError("listen_port out of range")
        if self.children < 1 or self.shm_mb < 16 or self.pkg_mb < 2:
            raise ValueError("children >= 1, shm_mb >= 16 and pkg_mb >= 2 are required")
        if not 0 <= self.ds_probing_mode <= 3:
            raise ValueError("ds_probing_mode is 0..3")
        if self.ds_ping_interval < 0 or self.fr_timer_ms <= 0 or self.fr_inv_timer_ms <= 0:
            raise ValueError("timers must be positive (ds_ping_interval >= 0)")
        if (
            KamailioRole.DISPATCHER in self.roles
            and not self.destinations
            and self.ds_db_url is None
        ):
            raise ValueError("the dispatcher role needs destinations or ds_db_url")
        for name, _ in self.extra_defines:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(f"bad define name {name!r}")

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_ip, self.listen_port)


def _quote(value: str) -> str:
    if '"' in value or "\n" in value:
        raise ValueError(f"cannot quote {value!r} for kamailio.cfg")
    return f'"{value}"'


def _body() -> str:
    return resources.files(__package__).joinpath("kamailio.cfg").read_text(encoding="utf-8")


def render_config(params: KamailioParams, list_file: Path | None = None) -> str:
    """The full cfg text: ``#!KAMAILIO``, the defines for ``params``, then the fixed body.

    Args:
        list_file: path of the dispatcher list file (required for the dispatcher role unless
            ``params.ds_db_url`` is set).
    """
    defines: list[tuple[str, str | None]] = [
        ("LISTEN", f"udp:{params.listen_ip}:{params.listen_port}"),
        ("CHILDREN", str(params.children)),
        ("DEBUG_LEVEL", str(params.debug)),
        ("FR_TIMER", str(params.fr_timer_ms)),
        ("FR_INV_TIMER", str(params.fr_inv_timer_ms)),
    ]
    defines += [
        (f"WITH_{role.value}", None) for role in sorted(params.roles, key=lambda r: r.value)
    ]
    if KamailioRole.DISPATCHER in params.roles:
        if params.ds_db_url is not None:
            defines.append(("DS_DB_URL", _quote(params.ds_db_url)))
        elif list_file is None:
            raise ValueError("render_config needs list_file for a list-file dispatcher")
        else:
            defines.append(("DS_LIST_FILE", _quote(str(list_file))))
        defines += [
            ("DS_SET", _quote(str(params.ds_set))),
            ("DS_ALG", _quote(str(params.ds_alg))),
            ("DS_PING_INTERVAL", str(params.ds_ping_interval)),
            ("DS_PROBING_MODE", str(params.ds_probing_mode)),
            ("DS_PROBING_THRESHOLD", str(params.ds_probing_threshold)),
            ("DS_INACTIVE_THRESHOLD", str(params.ds_inactive_threshold)),
            ("DS_PING_FROM", _quote(f"sip:dispatcher@{params.listen_ip}")),
        ]
        if params.ds_mark_failed:
            defines.append(("DS_MARK_FAILED", None))
    defines += list(params.extra_defines)
    head = "#!KAMAILIO\n# rendered by lab.routers.kamailio.config from KamailioParams\n"
    head += "".join(
        f"#!define {n} {v}\n" if v is not None else f"#!define {n}\n" for n, v in defines
    )
    return head + "\n" + _body()
