"""Kamailio in the router's seat: the reference router's settings rendered as a Kamailio cfg.

The reference router is configured by ``router.config.RouterConfig`` (listen address, timers,
dispatcher, probing) and ``router.registration.RegistrationSettings`` (the ``[registrar]``
table: realm, nonces, trusted sources, failure blocking, expiry limits, forwarding).
:func:`router_params` maps both onto :class:`KamailioRouterParams`, which renders
``kamailio.cfg`` with the ``DISPATCHER`` and ``REGISTRAR`` roles against the same realtime DB:

================================  ==============================================================
reference setting                 Kamailio 5.6
================================  ==============================================================
router.listen (first udp)         ``listen=udp:IP:PORT`` (``LISTEN``)
router.listen (any tcp)           ``listen=tcp:IP:PORT`` on the UDP address (``LISTEN_TCP``)
router.http                       ``listen=tcp:IP:PORT`` with xhttp + jsonrpcs (``POST /RPC``)
timers.t1 / t2                    tm ``retr_timer1`` / ``retr_timer2`` (ms)
timers.fr_timer / fr_inv_timer    tm ``fr_timer`` / ``fr_inv_timer`` (ms)
timers.t4                         not mapped (tm has no T4; ``wt_timer`` stays 5 s)
dispatcher.db / list / dests      dispatcher ``db_url`` (``dispatcher`` table) or ``list_file``
dispatcher.algorithm / setid      ``ds_select_dst(set, alg)``
dispatcher.mark_failed            ``ds_mark_dst("ip")`` in the failure route
probing.interval                  ``ds_ping_interval`` (whole seconds, rounded up)
probing.timeout                   not mapped: 5.6 has no ``ds_ping_fr_timer``, pings use fr_timer
probing.mode / thresholds         ``ds_probing_mode`` / ``ds_probing_threshold`` /
                                  ``ds_inactive_threshold``
probing.reply_codes / ping_from   ``ds_ping_reply_codes`` / ``ds_ping_from``
registrar.db                      ``db_url`` of auth_db, usrloc (``location``), sqlops
registrar.realm                   realm of ``www_authorize`` / ``proxy_authorize``
registrar.nonce_lifetime          auth ``nonce_expire``
registrar.nonce_secret            auth ``secret``
registrar.qop                     challenge flag 1 (``qop=auth``) / 2 (``auth-int``)
registrar.algorithms              auth ``algorithm`` (the first one)
registrar.auth_methods            ``is_method(...)`` guarding route[AUTH]
registrar.trusted_sources         ``is_in_subnet($si, ...)`` skips auth
registrar.failure_window          htable ``authfail`` autoexpire
registrar.max_failures_*          limits per ``ip:`` / ``user:`` key in route[AUTH_FAILED]
registrar.block_time              htable ``authban`` autoexpire; blocked -> 403 "Blocked"
registrar.default/min/max_expires registrar ``default_expires`` / ``min_expires`` /
registrar.min_expires_mode        ``max_expires`` / ``min_expires_mode``
registrar.max_contacts            ``$xavp(reg=>max_contacts)``; 0 = ``ps_aors.max_contacts``
registrar.cseq_delay              usrloc ``cseq_delay``
registrar.purge_interval          usrloc ``timer_interval``
registrar.forward all|hash|none   ``ds_select(set, 8)`` all / ``ds_select(set, 7, 1)`` on $tU /
                                  no forwarding; one ``uac_req_send()`` REGISTER per node
registrar.forward_set             the set given to ``ds_select``
registrar.domain                  From/To domain of forwarded REGISTERs (else the node's host)
registrar.path                    ``Path: <sip:ROUTER;lr>`` + ``Supported: path`` on forwards
forward_retry / expires_margin    not mapped: see ``differences.DIFFERENCES``
================================  ==============================================================

Kamailio's modules also read the ``version`` table (``location`` 9, ``dispatcher`` 4), which
the realtime schema does not create yet: :func:`prepare_database` adds it.
"""

from __future__ import annotations

import ipaddress
import math
import shlex
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.routers.kamailio.config import (
    DispatcherDestination,
    KamailioParams,
    KamailioRole,
    contract_defines,
    define_args,
    dispatcher_list,
    kamailio_db_url,
    render_config,
)
from lab.routers.kamailio.runner import (
    KamailioError,
    KamailioProcess,
    check_config,
    kamailio_binary,
    start_kamailio_config,
    write_config,
)

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.registration import RegistrationSettings

__all__ = [
    "KAMAILIO_TABLE_VERSIONS",
    "POSTGRES_CHILDREN",
    "KamailioRouterParams",
    "example_config",
    "prepare_database",
    "render_router_config",
    "router_command",
    "router_params",
    "router_params_from_dict",
    "start_kamailio_router",
    "workers_for",
    "write_router_config",
]

KAMAILIO_TABLE_VERSIONS = {"location": 9, "dispatcher": 4, "subscriber": 7}
"""Rows Kamailio (5.6 and 6.x) checks in its ``version`` table (usrloc-create.sql,
dispatcher-create.sql, auth_db-create.sql); ``subscriber`` is a view on ``ps_auths``."""

SUBSCRIBER_VIEW = (
    'CREATE VIEW "subscriber" AS SELECT "id", "username", COALESCE("realm", \'\') AS "domain", '
    '"password", COALESCE("md5_cred", \'\') AS "ha1", \'\' AS "ha1b" FROM "ps_auths"'
)
"""Stock Kamailio's ``subscriber`` table (auth_db defaults: ``username``, ``password``, ``ha1``)
as a read-only view on Asterisk's ``ps_auths``, for a user's cfg that authenticates with
``auth_db`` the usual way (``www_authorize("$td", "subscriber")``); no copy of the users."""

_METHODS = frozenset(
    [
        "REGISTER",
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "SUBSCRIBE",
        "NOTIFY",
        "MESSAGE",
        "INFO",
        "UPDATE",
        "REFER",
        "PRACK",
        "PUBLISH",
    ]
)
_ALGORITHMS = ("MD5", "SHA-256")


@dataclass(frozen=True, slots=True)
class KamailioRouterParams:
    """Kamailio as the router under test (defaults = the reference router's defaults)."""

    listen_ip: str
    """UDP listen address (127.0.0.x); also the host of the forwarded ``Path``."""
    db_url: str | None = None
    """Realtime DB URL as ``router.realtime.connect`` takes it (``sqlite:///...``,
    ``postgresql://...``); converted with :func:`kamailio_db_url`. Required by the registrar."""
    registrar: bool = True
    """Registrar role (auth, usrloc, forwarding, lookup); False = dispatcher only, like the
    reference router without a ``[registrar]`` table (REGISTER answered 405)."""
    listen_port: int = 5060
    destinations: tuple[DispatcherDestination, ...] = ()
    """PBX nodes as a list file; empty = the ``dispatcher`` table of :attr:`dispatcher_db`."""
    dispatcher_db: str | None = None
    """DB holding the ``dispatcher`` table; None = :attr:`db_url`."""
    ds_set: int = 1
    ds_alg: int = 4
    mark_failed: bool = True
    probe_interval_s: int = 10
    probing_mode: int = 1
    probing_threshold: int = 1
    inactive_threshold: int = 1
    ping_reply_codes: str = ""
    ping_from: str = "sip:dispatcher@localhost"
    t1_ms: int = 500
    t2_ms: int = 4000
    fr_timer_ms: int = 2000
    fr_inv_timer_ms: int = 40000
    realm: str = "asterisk"
    nonce_lifetime_s: int = 300
    nonce_secret: str | None = None
    qop: str = "auth"
    algorithm: str = "MD5"
    auth_methods: tuple[str, ...] = ("REGISTER", "INVITE", "SUBSCRIBE", "MESSAGE")
    trusted_sources: tuple[str, ...] = ()
    """IPs or CIDRs that skip auth."""
    failure_window_s: int = 60
    max_failures_per_source: int = 10
    max_failures_per_user: int = 5
    block_time_s: int = 300
    default_expires: int = 3600
    min_expires: int = 60
    min_expires_mode: int = 0
    max_expires: int = 3600
    max_contacts: int = 0
    """0 = per AOR from ``ps_aors.max_contacts`` (0/absent there -> 403, as Asterisk)."""
    cseq_delay_s: int = 20
    forward: str = "all"
    forward_set: int = 1
    domain: str | None = None
    path: bool = True
    usrloc_db_mode: int = 1
    purge_interval_s: int = 60
    children: int = 1
    """SIP workers. With SQLite keep 1: db_sqlite 5.6 sets no busy timeout, so two writers
    colliding get "database is locked" (use PostgreSQL for more workers).
    :func:`router_params` picks :func:`workers_for` the DB."""
    shm_mb: int = 2048
    pkg_mb: int = 16
    debug: int = 1
    extra_defines: tuple[tuple[str, str | None], ...] = field(default=())
    http: str | None = None
    """``IP:PORT`` for JSON-RPC over HTTP (``POST /RPC``): the reference's ``router.http``."""
    tcp: bool = False
    """SIP over TCP on the listen address too (the reference's ``tcp:`` listen entry)."""

    def __post_init__(self) -> None:
        if self.forward not in ("all", "hash", "none"):
            raise ValueError(f"forward must be all, hash or none, got {self.forward!r}")
        if self.usrloc_db_mode not in (1, 3):
            raise ValueError("usrloc_db_mode must be 1 or 3 (the location table stays current)")
        if self.min_expires_mode not in (0, 1):
            raise ValueError("min_expires_mode must be 0 or 1")
        if self.qop not in ("", "auth", "auth-int"):
            raise ValueError(f"qop must be '', 'auth' or 'auth-int', got {self.qop!r}")
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}")
        bad = [m for m in self.auth_methods if m.upper() not in _METHODS]
        if bad:
            raise ValueError(f"unknown auth methods {bad}")
        for source in self.trusted_sources:
            ipaddress.ip_network(source, strict=False)
        for text in (self.realm, self.domain or "", self.nonce_secret or "", self.ping_from):
            if any(c in text for c in '"\\\n\r '):
                raise ValueError(f"{text!r} cannot be written into kamailio.cfg")
        times = (self.failure_window_s, self.block_time_s, self.nonce_lifetime_s)
        if min(times) <= 0 or self.purge_interval_s <= 0:
            raise ValueError("windows, block time, nonce lifetime and purge interval must be > 0")
        if self.registrar and self.db_url is None:
            raise ValueError("the registrar role needs db_url (the realtime DB)")
        if not (self.destinations or self.dispatcher_db or self.db_url):
            raise ValueError("the dispatcher needs destinations, dispatcher_db or db_url")
        for url in (self.db_url, self.dispatcher_db):
            if url is not None:
                kamailio_db_url(url)

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_ip, self.listen_port)

    def kamailio_params(self) -> KamailioParams:
        """The generic :class:`KamailioParams` with every registrar define filled in."""
        db = kamailio_db_url(self.db_url) if self.db_url is not None else None
        ds_db = None
        if not self.destinations:
            ds_db = kamailio_db_url(self.dispatcher_db) if self.dispatcher_db else db
        roles = {KamailioRole.DISPATCHER}
        defines: tuple[tuple[str, str | None], ...] = ()
        if self.registrar and db is not None:
            roles.add(KamailioRole.REGISTRAR)
            defines = self._registrar_defines(db)
        return KamailioParams(
            listen_ip=self.listen_ip,
            listen_port=self.listen_port,
            children=self.children,
            shm_mb=self.shm_mb,
            pkg_mb=self.pkg_mb,
            destinations=self.destinations,
            ds_db_url=ds_db,
            ds_set=self.ds_set,
            ds_alg=self.ds_alg,
            ds_ping_interval=self.probe_interval_s,
            ds_probing_mode=self.probing_mode,
            ds_probing_threshold=self.probing_threshold,
            ds_inactive_threshold=self.inactive_threshold,
            ds_mark_failed=self.mark_failed,
            ds_ping_reply_codes=self.ping_reply_codes,
            db_url=db if self.registrar else None,
            fr_timer_ms=self.fr_timer_ms,
            fr_inv_timer_ms=self.fr_inv_timer_ms,
            t1_ms=self.t1_ms,
            t2_ms=self.t2_ms,
            debug=self.debug,
            roles=frozenset(roles),
            extra_defines=defines + self.extra_defines,
            http=self.http,
            tcp=self.tcp,
        )

    def _registrar_defines(self, db: str) -> tuple[tuple[str, str | None], ...]:
        def q(text: str) -> str:
            return f'"{text}"'

        flags = {"": 0, "auth": 1, "auth-int": 2}[self.qop]
        out: list[tuple[str, str | None]] = [
            ("REALM", q(self.realm)),
            ("NONCE_EXPIRE", str(self.nonce_lifetime_s)),
            ("AUTH_ALGORITHM", q(self.algorithm)),
            ("AUTH_CHALLENGE_FLAGS", str(flags)),
            ("MAX_FAIL_SOURCE", str(self.max_failures_per_source)),
            ("MAX_FAIL_USER", str(self.max_failures_per_user)),
            ("HT_AUTHFAIL", q(f"authfail=>size=10;autoexpire={self.failure_window_s};")),
            ("HT_AUTHBAN", q(f"authban=>size=8;autoexpire={self.block_time_s};")),
            ("SQLCON", q(f"ca=>{db}")),
            ("USRLOC_DB_MODE", str(self.usrloc_db_mode)),
            ("USRLOC_TIMER_INTERVAL", str(self.purge_interval_s)),
            ("CSEQ_DELAY", str(self.cseq_delay_s)),
            ("DEFAULT_EXPIRES", str(self.default_expires)),
            ("MIN_EXPIRES", str(self.min_expires)),
            ("MIN_EXPIRES_MODE", str(self.min_expires_mode)),
            ("MAX_EXPIRES", str(self.max_expires)),
        ]
        if self.auth_methods:
            out.append(("AUTH_METHODS", q("|".join(m.upper() for m in self.auth_methods))))
        if self.nonce_secret:
            out.append(("AUTH_SECRET", q(self.nonce_secret)))
        if self.trusted_sources:
            nets = [str(ipaddress.ip_network(s, strict=False)) for s in self.trusted_sources]
            out.append(("TRUSTED_SOURCES", q(",".join(nets))))
        if self.max_contacts > 0:
            out.append(("MAX_CONTACTS", str(self.max_contacts)))
        if self.forward != "none":
            alg, limit = ("8", "1000") if self.forward == "all" else ("7", "1")
            out += [
                ("FORWARD_SET", q(str(self.forward_set))),
                ("FORWARD_ALG", q(alg)),
                ("FORWARD_LIMIT", q(limit)),
            ]
            if self.path:
                out.append(("FORWARD_PATH", q(f"{self.listen_ip}:{self.listen_port}")))
            if self.domain:
                out.append(("FORWARD_DOMAIN", q(self.domain)))
        return tuple(out)


POSTGRES_CHILDREN = 4
"""SIP workers on PostgreSQL. Every DB call of a worker (auth_db, sqlops, usrloc write-through)
is a blocking round trip to another process; with one worker a REGISTER storm queues behind
them and Kamailio's own retransmissions pile up. Four workers keep the lab machine's two cores
busy while others wait on the DB (measured: 200 REGISTER/s, 1 worker p50 300-700 ms and
forwarded REGISTERs timing out; 4 workers see the table in the lab report)."""


def workers_for(db_url: str | None) -> int:
    """Kamailio ``children`` for a realtime DB: 1 on SQLite (``differences.sqlite_concurrency``),
    :data:`POSTGRES_CHILDREN` on PostgreSQL, 1 without a DB."""
    if db_url is not None and db_url.startswith(("postgresql://", "postgres://")):
        return POSTGRES_CHILDREN
    return 1


def _seconds(value: float) -> int:
    """Kamailio counts these in whole seconds; round up so nothing becomes shorter."""
    return max(1, math.ceil(value))


def router_params(
    config: RouterConfig, settings: RegistrationSettings, **overrides: Any
) -> KamailioRouterParams:
    """The reference router's settings as Kamailio parameters (mapping: module docstring).

    ``overrides`` replace any :class:`KamailioRouterParams` field afterwards (e.g.
    ``shm_mb=64`` for a small lab run, ``debug=3``).

    Without an enabled ``[registrar]`` (``settings.enabled`` False or no ``db``) the result
    renders the dispatcher role only, as the reference router then runs.

    Raises:
        ValueError: no UDP listen address, or a setting Kamailio cannot express.
    """
    from router.features.dispatcher import get_algorithm

    udp = config.listen_by_proto("udp")
    if not udp:
        raise ValueError("Kamailio in the lab listens on UDP: the router config has no udp:")
    registrar = settings.enabled and settings.db is not None
    ds = config.dispatcher
    destinations: tuple[DispatcherDestination, ...] = ()
    if ds.db is None and (ds.list_file is not None or ds.destinations):
        destinations = tuple(
            DispatcherDestination(
                uri=str(row["destination"]),
                setid=int(str(row["setid"])),
                flags=int(str(row["flags"])),
                priority=int(str(row["priority"])),
                attrs=str(row["attrs"]),
            )
            for row in config.dispatcher_rows()
        )
    probing = ds.probing
    t = config.timers
    params = KamailioRouterParams(
        listen_ip=udp[0][0],
        listen_port=udp[0][1],
        db_url=settings.db,
        registrar=registrar,
        destinations=destinations,
        dispatcher_db=ds.db,
        ds_set=ds.setid,
        ds_alg=get_algorithm(ds.algorithm).number,
        mark_failed=ds.mark_failed,
        probe_interval_s=_seconds(probing.interval) if probing.interval > 0 else 0,
        probing_mode=probing.mode,
        probing_threshold=probing.probing_threshold,
        inactive_threshold=probing.inactive_threshold,
        ping_reply_codes=probing.reply_codes,
        ping_from=probing.ping_from,
        t1_ms=round(t.t1 * 1000),
        t2_ms=round(t.t2 * 1000),
        fr_timer_ms=round(t.fr_timer * 1000),
        fr_inv_timer_ms=round(t.fr_inv_timer * 1000),
        realm=settings.realm,
        nonce_lifetime_s=_seconds(settings.nonce_lifetime),
        nonce_secret=settings.nonce_secret,
        qop=settings.qop,
        algorithm=settings.algorithms[0].upper() if settings.algorithms else "MD5",
        auth_methods=tuple(m.upper() for m in settings.auth_methods),
        trusted_sources=tuple(settings.trusted_sources),
        failure_window_s=_seconds(settings.failure_window),
        max_failures_per_source=settings.max_failures_per_source,
        max_failures_per_user=settings.max_failures_per_user,
        block_time_s=_seconds(settings.block_time),
        default_expires=settings.default_expires,
        min_expires=settings.min_expires,
        min_expires_mode=settings.min_expires_mode,
        max_expires=settings.max_expires,
        max_contacts=settings.max_contacts,
        cseq_delay_s=_seconds(settings.cseq_delay),
        forward=settings.forward,
        forward_set=settings.forward_set,
        domain=settings.domain,
        path=settings.path,
        purge_interval_s=_seconds(settings.purge_interval),
        children=workers_for(settings.db if registrar else ds.db),
        http=config.router.http,
        tcp=bool(config.listen_by_proto("tcp")),
    )
    return replace(params, **overrides) if overrides else params


def router_params_from_dict(
    data: dict[str, Any], *, source: str = "<config>", **overrides: Any
) -> KamailioRouterParams:
    """:func:`router_params` from the router TOML as a dict (``[router]``, ``[timers]``,
    ``[dispatcher]``, ``[registrar]``), as ``lab.backends.render`` builds it.

    Raises:
        ConfigError: a bad setting (named as the reference router names it).
        ValueError: see :func:`router_params`.
    """
    from router.config import router_config_from_dict
    from router.registration import RegistrationSettings, load_settings

    config = router_config_from_dict(data, source=source)
    if config.registrar:
        settings = load_settings(config.registrar, file=source)
    else:  # no [registrar] table: the reference router runs without a registrar
        settings = RegistrationSettings(enabled=False)
    return router_params(config, settings, **overrides)


def render_router_config(params: KamailioRouterParams, list_file: Path | None = None) -> str:
    """The full ``kamailio.cfg`` text (``list_file`` only when ``params.destinations``)."""
    return render_config(params.kamailio_params(), list_file)


def prepare_database(db_url: str) -> None:
    """Create the realtime schema if missing and Kamailio's ``version`` rows.

    usrloc and dispatcher refuse to start unless ``version`` says ``location`` 9 and
    ``dispatcher`` 4; siplab's schema does not declare that table (yet), so it is added here
    with Kamailio's own DDL (``utils/kamctl/*/standard-create.sql``). Idempotent.

    Raises:
        RealtimeError: the DB cannot be opened.
    """
    from router.realtime import connect

    db = connect(db_url)
    try:
        db.init_schema()
        with db.transaction():
            db.execute(
                'CREATE TABLE IF NOT EXISTS "version" ('
                '"table_name" VARCHAR(32) NOT NULL, '
                '"table_version" INTEGER DEFAULT 0 NOT NULL, '
                'CONSTRAINT "version_table_name_idx" UNIQUE ("table_name"))'
            )
            if not _has_relation(db, "subscriber"):
                db.execute(SUBSCRIBER_VIEW)
            for table, version in KAMAILIO_TABLE_VERSIONS.items():
                db.execute(
                    'INSERT INTO "version" ("table_name", "table_version") VALUES (?, ?) '
                    'ON CONFLICT ("table_name") DO UPDATE SET '
                    '"table_version" = excluded."table_version"',
                    (table, version),
                )
    finally:
        db.close()


def _has_relation(db: Any, name: str) -> bool:
    from router.realtime.schema import Dialect

    if db.dialect is Dialect.SQLITE:
        sql = "SELECT 1 FROM sqlite_master WHERE name = ?"
    else:
        sql = "SELECT 1 FROM pg_class WHERE relname = ?"
    return bool(db.query(sql, (name,)))


def _prepare(params: KamailioRouterParams) -> None:
    """``version`` rows in every DB this Kamailio will open."""
    urls = {params.db_url if params.registrar else None}
    if not params.destinations:
        urls.add(params.dispatcher_db or params.db_url)
    for url in sorted(u for u in urls if u is not None):
        prepare_database(url)


def write_router_config(params: KamailioRouterParams, workdir: Path) -> Path:
    """Render ``workdir/kamailio.cfg`` (and ``dispatcher.list`` when used); return its path."""
    return write_config(params.kamailio_params(), workdir)


def router_command(
    params: KamailioRouterParams,
    workdir: Path,
    *,
    binary: str | None = None,
    config: Path | None = None,
    launcher: tuple[list[str], list[str]] | None = None,
) -> list[str]:
    """Prepare the DB, check the cfg, return the foreground command line.

    The cfg is ``config`` (a user's kamailio.cfg, run where it lies so Kamailio's messages
    name it) or siplab's own example (copied to ``workdir/kamailio.cfg``); either gets the
    lab's settings as ``-A NAME=VALUE`` defines (:func:`contract_defines`,
    docs/kamailio-contract.md). The command line is also written to ``workdir/kamailio.argv``.
    For launchers that own the process themselves (``lab.backends``). ``launcher``: the
    commands standing for ``kamailio`` when it runs elsewhere (``(run, check)``, e.g. ``docker
    run ... IMAGE``; :mod:`lab.routers.kamailio.image`).

    Raises:
        KamailioConfigError: the cfg does not parse (file, line, Kamailio's message).
        KamailioError: Kamailio missing, or ``config`` is not a readable file.
    """
    exe: str | list[str] | None = launcher[0] if launcher else binary or kamailio_binary()
    if exe is None:
        raise KamailioError("Kamailio is not installed (Debian package kamailio)")
    workdir.mkdir(parents=True, exist_ok=True)
    if config is None:
        cfg = workdir / "kamailio.cfg"
        cfg.write_text(example_config(), encoding="utf-8")
    else:
        cfg = config.resolve()
        if not cfg.is_file():
            raise KamailioError(f"{config}: router config: no such file")
    _prepare(params)
    base = params.kamailio_params()
    list_file = None
    if KamailioRole.DISPATCHER in base.roles and base.ds_db_url is None:
        list_file = workdir / "dispatcher.list"
        list_file.write_text(dispatcher_list(base.destinations), encoding="ascii")
    defines = contract_defines(base, list_file)
    check = launcher[1] if launcher else [exe] if isinstance(exe, str) else exe
    check_config(cfg, base, workdir, defines=defines, launcher=check)
    rundir = workdir / "run"
    rundir.mkdir(parents=True, exist_ok=True)
    argv = [
        *([exe] if isinstance(exe, str) else exe), "-f", str(cfg), "-Y", str(rundir), "-w", str(workdir),
        "-m", str(base.shm_mb), "-M", str(base.pkg_mb), *define_args(defines), "-DD", "-E",
    ]  # fmt: skip
    (workdir / "kamailio.argv").write_text(shlex.join(argv) + "\n", encoding="utf-8")
    return argv


def example_config() -> str:
    """siplab's own kamailio.cfg (``lab/routers/kamailio/kamailio.cfg``): what the lab runs by
    default and the documented starting point of a user's cfg."""
    return resources.files(__package__).joinpath("kamailio.cfg").read_text(encoding="utf-8")


def start_kamailio_router(
    params: KamailioRouterParams,
    workdir: Path,
    *,
    ready_timeout: float = 15.0,
    probe_ip: str = "127.0.0.1",
    binary: str | None = None,
) -> KamailioProcess:
    """Prepare the DB, render, check and start Kamailio; return once it answers OPTIONS.

    Raises:
        KamailioConfigError / KamailioError: as :func:`lab.routers.kamailio.start_kamailio`.
    """
    _prepare(params)
    base = params.kamailio_params()
    cfg = write_config(base, workdir)
    return start_kamailio_config(
        cfg, base, workdir, ready_timeout=ready_timeout, probe_ip=probe_ip, binary=binary
    )
