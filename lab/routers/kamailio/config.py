"""Render ``kamailio.cfg`` from typed parameters.

The cfg body (``kamailio.cfg`` next to this file) is fixed Kamailio script; everything that
varies between runs is a preprocessor ``#!define`` placed in front of it, so the rendered file is
plain, readable Kamailio config and the body never needs string templating. Roles are enabled
with ``#!define WITH_<ROLE>`` and guarded by ``#!ifdef`` blocks in the body.

Production sizing is the default: 1 worker (``children=1``), ``-m 2048`` MB shared memory and
``-M 16`` MB private memory per process (Kamailio's default 64 MB of shared memory runs out of
transactions and fails calls at 400-500 CPS on the lab machine).
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
    "contract_defines",
    "db_module",
    "define_args",
    "dispatcher_list",
    "kamailio_db_url",
    "render_config",
]

_ATTR_RE = re.compile(r"^[A-Za-z0-9_.=;:@-]*$")


class KamailioRole(enum.Enum):
    """Optional blocks of the cfg (``#!ifdef WITH_<value>``)."""

    DISPATCHER = "DISPATCHER"
    REGISTRAR = "REGISTRAR"
    """auth_db on ps_auths, usrloc/registrar, REGISTER forwarding, lookup, blocking (needs the
    dispatcher role and :attr:`KamailioParams.db_url`; see ``lab.routers.kamailio.router``)."""


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
    ds_ping_reply_codes: str = ""
    """``ds_ping_reply_codes`` (``class=2;code=403``); empty = 2xx only."""
    db_url: str | None = None
    """Kamailio DB URL (``sqlite:///abs/path.db`` or ``postgres://...``) of the realtime DB for
    the registrar role (auth_db, usrloc, sqlops); see :func:`kamailio_db_url`."""
    fr_timer_ms: int = 2000
    """tm ``fr_timer``."""
    fr_inv_timer_ms: int = 40000
    """tm ``fr_inv_timer``."""
    t1_ms: int | None = None
    """tm ``retr_timer1`` (RFC 3261 T1); None keeps Kamailio's 500 ms (and T2 4000 ms)."""
    t2_ms: int = 4000
    """tm ``retr_timer2`` (RFC 3261 T2), used only when :attr:`t1_ms` is set."""
    debug: int = 1
    """Log level (-5..3; 1 = NOTICE, 3 = DEBUG)."""
    roles: frozenset[KamailioRole] = frozenset({KamailioRole.DISPATCHER})
    """Enabled cfg blocks."""
    extra_defines: tuple[tuple[str, str | None], ...] = ()
    """Further ``#!define NAME [value]`` lines for later roles."""
    http: str | None = None
    """``IP:PORT`` of a JSON-RPC-over-HTTP endpoint (xhttp + jsonrpcs, ``POST /RPC``) for
    state (``dispatcher.list``, ``stats.get_statistics``); the reference router's ``/status``
    address. None = no HTTP listener."""
    tcp: bool = False
    """SIP over TCP too, on the same address and port (``LISTEN_TCP``)."""

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
        if KamailioRole.REGISTRAR in self.roles:
            if self.db_url is None:
                raise ValueError("the registrar role needs db_url")
            if KamailioRole.DISPATCHER not in self.roles:
                raise ValueError("the registrar role needs the dispatcher role (PBX nodes)")
        for url in (self.db_url, self.ds_db_url):
            if url is not None:
                db_module(url)
        if self.t1_ms is not None and not 0 < self.t1_ms <= self.t2_ms:
            raise ValueError("0 < t1_ms <= t2_ms is required")
        if self.http is not None:
            host, _, port = self.http.rpartition(":")
            require_loopback(host)
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"http must be IP:PORT, got {self.http!r}")
        for name, _ in self.extra_defines:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(f"bad define name {name!r}")

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_ip, self.listen_port)


def db_module(url: str) -> str:
    """The Kamailio DB driver module for a Kamailio DB URL (``db_sqlite`` / ``db_postgres``)."""
    scheme = url.partition("://")[0]
    if scheme == "sqlite":
        return "db_sqlite"
    if scheme == "postgres":
        return "db_postgres"
    raise ValueError(f"{url!r}: Kamailio DB URL must start with sqlite:// or postgres://")


def kamailio_db_url(url: str) -> str:
    """A realtime DB URL (``router.realtime.connect`` form) as Kamailio writes it.

    ``sqlite:///abs/path.db`` stays (its ``?options`` dropped: db_sqlite takes none), a bare
    file path becomes ``sqlite:///<absolute path>``, ``postgresql://`` becomes ``postgres://``.
    """
    base = url.split("?", 1)[0]
    if base.startswith(("postgresql://", "postgres://")):
        return "postgres://" + base.partition("://")[2]
    if base.startswith("sqlite://"):
        path = base[len("sqlite://") :]
        if not path.startswith("/"):
            raise ValueError(f"{url!r}: Kamailio needs an absolute SQLite path (sqlite:///...)")
        return base
    if "://" in base:
        raise ValueError(f"{url!r}: Kamailio speaks SQLite and PostgreSQL only")
    return "sqlite://" + str(Path(base).resolve())


def _quote(value: str) -> str:
    if '"' in value or "\n" in value:
        raise ValueError(f"cannot quote {value!r} for kamailio.cfg")
    return f'"{value}"'


def _body() -> str:
    return resources.files(__package__).joinpath("kamailio.cfg").read_text(encoding="utf-8")


Define = tuple[str, str | None]
"""``(NAME, value)`` of a preprocessor define; value None = a flag (``#!define NAME``)."""


def contract_defines(params: KamailioParams, list_file: Path | None = None) -> list[Define]:
    """The defines the lab hands to a kamailio.cfg (docs/kamailio-contract.md): as ``-A
    NAME=VALUE`` on the command line (:func:`define_args`) or as ``#!define`` lines
    (:func:`render_config`). ``SIPLAB`` is always defined, so a cfg can tell it runs in the lab.

    Args:
        list_file: path of the dispatcher list file (required for the dispatcher role unless
            ``params.ds_db_url`` is set).
    """
    defines: list[Define] = [
        ("SIPLAB", None),
        ("LISTEN", f"udp:{params.listen_ip}:{params.listen_port}"),
        ("CHILDREN", str(params.children)),
        ("DEBUG_LEVEL", str(params.debug)),
        ("FR_TIMER", str(params.fr_timer_ms)),
        ("FR_INV_TIMER", str(params.fr_inv_timer_ms)),
    ]
    if params.t1_ms is not None:
        defines += [("RETR_T1", str(params.t1_ms)), ("RETR_T2", str(params.t2_ms))]
    defines += [
        (f"WITH_{role.value}", None) for role in sorted(params.roles, key=lambda r: r.value)
    ]
    urls = [params.ds_db_url if KamailioRole.DISPATCHER in params.roles else None]
    if KamailioRole.REGISTRAR in params.roles and params.db_url is not None:
        urls.append(params.db_url)
        defines.append(("DB_URL", _quote(params.db_url)))
    modules = {db_module(u) for u in urls if u is not None}
    defines += [(f"DB_{m.removeprefix('db_').upper()}", None) for m in sorted(modules)]
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
        if params.ds_ping_reply_codes:
            defines.append(("DS_PING_REPLY_CODES", _quote(params.ds_ping_reply_codes)))
    if params.tcp:
        defines.append(("LISTEN_TCP", f"tcp:{params.listen_ip}:{params.listen_port}"))
    if params.http is not None:
        # xhttp rides on Kamailio's TCP stack: its own TCP listener, for HTTP only.
        defines += [("WITH_HTTP", None), ("HTTP_LISTEN", f"tcp:{params.http}")]
    defines += list(params.extra_defines)
    return defines


def define_args(defines: list[Define]) -> list[str]:
    """``-A NAME=VALUE`` / ``-A NAME`` arguments of ``kamailio`` for ``defines``."""
    args: list[str] = []
    for name, value in defines:
        args += ["-A", name if value is None else f"{name}={value}"]
    return args


def render_config(params: KamailioParams, list_file: Path | None = None) -> str:
    """The full cfg text: ``#!KAMAILIO``, the :func:`contract_defines` for ``params`` as
    ``#!define`` lines, then the fixed body (a self-contained file, the same as running the
    body with those defines as ``-A``)."""
    defines = contract_defines(params, list_file)
    head = "#!KAMAILIO\n# rendered by lab.routers.kamailio.config from KamailioParams\n"
    head += "".join(
        f"#!define {n} {v}\n" if v is not None else f"#!define {n}\n" for n, v in defines
    )
    return head + "\n" + _body()
