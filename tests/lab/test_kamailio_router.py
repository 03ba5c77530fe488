"""Kamailio in the router's seat: the reference router's settings, the shared realtime DB.

One Kamailio (dispatcher + registrar roles) runs for the module against a SQLite realtime DB
provisioned by ``router.realtime``; two SIPp UAS stand in for the PBX nodes (answering
REGISTER, OPTIONS and INVITE, listed in the ``dispatcher`` table). Addresses 127.0.0.80-89 are
this file's: .80 Kamailio, .81 phones (untrusted), .82 trusted caller, .83/.84 PBX stand-ins,
.85 attacker, .86 a phone that answers calls, .87 a second Kamailio (forward="hash").
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from lab.engines import (
    SippProcess,
    SippResult,
    SippRun,
    SippScenario,
    run_sipp,
    sipp_binary,
    start_sipp,
    start_sipp_uas,
    uac_call,
    uac_register,
    uas_answer,
    wait_sip_ready,
)
from lab.requires import missing_tool, needs
from lab.routers.kamailio import (
    DIFFERENCES,
    POSTGRES_CHILDREN,
    KamailioParams,
    KamailioProcess,
    KamailioRole,
    KamailioRouterParams,
    check_config,
    difference,
    kamailio_binary,
    kamailio_db_url,
    prepare_database,
    render_router_config,
    router_params_from_dict,
    start_kamailio_router,
    workers_for,
    write_router_config,
)
from router.realtime import DispatcherRow, UserCredential, connect, write_sipp_csv
from router.realtime.schema import LOCATION
from router.sip import Request, Response, answer_challenge, parse_challenge, parse_untrusted

needs_kamailio = needs(
    kamailio_binary() is not None, "Kamailio not installed (Debian package kamailio)"
)
needs_sipp = needs(sipp_binary() is not None, "SIPp not installed (Debian package sip-tester)")

ROUTER, PHONES, TRUSTED, PBX1, PBX2, ATTACKER, CALLEE, HASH_ROUTER = (
    f"127.0.0.{n}" for n in range(80, 88)
)
PORT = 5060
DOMAIN = "example.test"
REALM = "asterisk"
SOURCE_LIMIT = 4

# usrloc 5.6 location columns (utils/kamctl/sqlite/usrloc-create.sql, version 9).
USRLOC_COLUMNS = [
    "id",
    "ruid",
    "username",
    "domain",
    "contact",
    "received",
    "path",
    "expires",
    "q",
    "callid",
    "cseq",
    "last_modified",
    "flags",
    "cflags",
    "user_agent",
    "socket",
    "methods",
    "instance",
    "reg_id",
    "server_id",
    "connection_id",
    "keepalive",
    "partition",
]


def _router_dict(db_url: str) -> dict[str, object]:
    """The reference router's TOML, as lab.backends.render builds it."""
    return {
        "router": {"listen": [f"udp:{ROUTER}:{PORT}"]},
        "timers": {"fr_timer": 1.0, "fr_inv_timer": 10.0},
        "dispatcher": {"algorithm": "4", "db": db_url, "probing": {"interval": 0.5, "mode": 1}},
        "registrar": {
            "db": db_url,
            "realm": REALM,
            "trusted_sources": [TRUSTED],
            "max_failures_per_source": SOURCE_LIMIT,
            "min_expires": 30,
        },
    }


# -- rendering (no Kamailio needed) --------------------------------------------------------------


def test_settings_map_onto_kamailio_params(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rt.db"
    params = router_params_from_dict(_router_dict(url), shm_mb=64)
    assert (params.listen_ip, params.listen_port, params.db_url) == (ROUTER, PORT, url)
    assert params.probe_interval_s == 1  # 0.5 s rounded up to Kamailio's whole seconds
    assert (params.fr_timer_ms, params.fr_inv_timer_ms, params.t1_ms) == (1000, 10000, 500)
    assert params.trusted_sources == (TRUSTED,)
    assert params.auth_methods == ("REGISTER", "INVITE", "SUBSCRIBE", "MESSAGE")
    assert (params.min_expires, params.max_expires, params.forward) == (30, 3600, "all")
    assert params.shm_mb == 64
    text = render_router_config(params)
    for line in (
        "#!define WITH_DISPATCHER",
        "#!define WITH_REGISTRAR",
        "#!define DB_SQLITE",
        f'#!define DB_URL "{url}"',
        f'#!define DS_DB_URL "{url}"',
        f'#!define REALM "{REALM}"',
        "#!define AUTH_CHALLENGE_FLAGS 1",
        f'#!define TRUSTED_SOURCES "{TRUSTED}/32"',
        '#!define AUTH_METHODS "REGISTER|INVITE|SUBSCRIBE|MESSAGE"',
        f"#!define MAX_FAIL_SOURCE {SOURCE_LIMIT}",
        '#!define HT_AUTHBAN "authban=>size=8;autoexpire=300;"',
        "#!define USRLOC_DB_MODE 1",
        "#!define MIN_EXPIRES 30",
        '#!define FORWARD_ALG "8"',
        f'#!define FORWARD_PATH "{ROUTER}:{PORT}"',
        "#!define DS_PING_INTERVAL 1",
        "#!define RETR_T1 500",
    ):
        assert line + "\n" in text, line
    # ps_auths by column mapping, plaintext password, no copy of the users
    assert 'modparam("auth_db", "user_column", "username")' in text
    assert 'modparam("auth_db", "calculate_ha1", yes)' in text
    assert 'www_authorize(REALM, "ps_auths")' in text
    assert 'modparam("usrloc", "expires_type", 1)' in text


def test_workers_follow_the_database(tmp_path: Path) -> None:
    # SQLite: one worker (db_sqlite sets no busy timeout, differences.sqlite_concurrency);
    # PostgreSQL: POSTGRES_CHILDREN, so DB round trips of one worker do not stall the others.
    assert workers_for(f"sqlite:///{tmp_path}/rt.db") == 1
    assert workers_for(None) == 1
    assert workers_for("postgresql://k@127.0.0.5/rt") == POSTGRES_CHILDREN == 4
    sqlite = router_params_from_dict(_router_dict(f"sqlite:///{tmp_path}/rt.db"))
    pg = router_params_from_dict(_router_dict("postgresql://k:k@127.0.0.5:5432/rt"))
    assert (sqlite.children, pg.children) == (1, POSTGRES_CHILDREN)
    text = render_router_config(pg)
    assert "#!define CHILDREN 4\n" in text
    assert '#!define DB_URL "postgres://k:k@127.0.0.5:5432/rt"\n' in text
    assert "#!define DB_POSTGRES\n" in text
    assert "#!define DB_SQLITE\n" not in text
    assert router_params_from_dict(_router_dict("postgresql://k@h/rt"), children=2).children == 2


def test_without_registrar_table_only_the_dispatcher_is_rendered(tmp_path: Path) -> None:
    data = _router_dict(f"sqlite:///{tmp_path}/rt.db")
    del data["registrar"]
    params = router_params_from_dict(data)
    assert (params.registrar, params.db_url) == (False, None)
    text = render_router_config(params)
    assert "#!define WITH_DISPATCHER\n" in text
    assert "#!define WITH_REGISTRAR\n" not in text
    assert f'#!define DS_DB_URL "sqlite:///{tmp_path}/rt.db"' in text


def test_router_params_validation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rt.db"
    with pytest.raises(ValueError, match="forward"):
        KamailioRouterParams(listen_ip=ROUTER, db_url=url, forward="some")
    with pytest.raises(ValueError, match="db_mode"):
        KamailioRouterParams(listen_ip=ROUTER, db_url=url, usrloc_db_mode=2)
    with pytest.raises(ValueError, match="auth methods"):
        KamailioRouterParams(listen_ip=ROUTER, db_url=url, auth_methods=("FROB",))
    with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
        KamailioRouterParams(listen_ip=ROUTER, db_url="mysql://x/y")
    both = frozenset({KamailioRole.REGISTRAR, KamailioRole.DISPATCHER})
    with pytest.raises(ValueError, match="registrar role needs db_url"):
        KamailioParams(listen_ip=ROUTER, ds_db_url=kamailio_db_url(url), roles=both)
    assert kamailio_db_url("postgresql://u:p@127.0.0.1/rt?sslmode=disable") == (
        "postgres://u:p@127.0.0.1/rt"
    )
    assert kamailio_db_url(str(tmp_path / "x.db")) == f"sqlite://{tmp_path / 'x.db'}"
    assert kamailio_db_url(f"{url}?busy_timeout_ms=5") == url


def test_location_table_has_the_usrloc_columns() -> None:
    # usrloc 5.6 reads and writes exactly these; expires/last_modified as BIGINT epoch
    # (expires_type=1), which db_sqlite maps to DB1_BIGINT by the declared type.
    assert list(LOCATION.column_names()) == USRLOC_COLUMNS
    types = {c.name: c.type.value for c in LOCATION.columns}
    assert types["expires"] == types["last_modified"] == "bigint"


def test_prepare_database_writes_kamailio_versions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rt.db"
    prepare_database(url)
    prepare_database(url)  # idempotent
    db = connect(url)
    try:
        db.provision_users(2, 100, domain="lab", context="from-users", seed=1)
        rows = dict(db.query('SELECT table_name, table_version FROM "version"'))
        subscribers = db.query('SELECT username, password FROM "subscriber" ORDER BY username')
        auths = db.query('SELECT username, password FROM "ps_auths" ORDER BY username')
    finally:
        db.close()
    assert rows == {"location": 9, "dispatcher": 4, "subscriber": 7}
    # stock auth_db reads `subscriber`: the view shows every ps_auths user and password
    assert len(subscribers) == 2
    assert subscribers == auths


def test_differences_table_names_reasons() -> None:
    assert {"stale_flag", "qop_default", "min_expires", "forward_retry"} <= set(DIFFERENCES)
    assert all(len(reason) > 40 for reason in DIFFERENCES.values())
    assert "flag 16" in difference("stale_flag")
    with pytest.raises(KeyError, match="unknown Kamailio difference"):
        difference("nope")


@pytest.mark.kamailio
@needs_kamailio
def test_rendered_router_config_passes_kamailio_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rt.db"
    prepare_database(url)
    variants: tuple[dict[str, Any], ...] = (
        {},
        {"forward": "hash", "max_contacts": 2, "usrloc_db_mode": 3},
        {"forward": "none", "qop": "", "auth_methods": (), "trusted_sources": ()},
        {"registrar": False},
    )
    for changes in variants:
        params = router_params_from_dict(_router_dict(url), **changes)
        cfg = write_router_config(params, tmp_path / "kam")
        check_config(cfg, params.kamailio_params(), tmp_path / "kam")
    # PostgreSQL: the same cfg with db_postgres (kamailio -c does not connect)
    params = router_params_from_dict(_router_dict("postgresql://k:k@127.0.0.1/rt"))
    cfg = write_router_config(params, tmp_path / "pg")
    assert "#!define DB_POSTGRES\n" in cfg.read_text()
    check_config(cfg, params.kamailio_params(), tmp_path / "pg")


# -- Kamailio + SIPp against the shared DB --------------------------------------------------------


def _pbx_standin() -> SippScenario:
    """uas_answer plus a REGISTER branch: 200 OK echoing the Contact (a PBX registrar)."""
    base = uas_answer()
    reg = (
        '  <nop next="end"/>\n  <label id="register"/>\n  <send>\n    <![CDATA[\n\n'
        "SIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]P[call_number]\n"
        "[last_Call-ID:]\n[last_CSeq:]\n[last_Contact:]\nContent-Length: 0\n\n    ]]>\n"
        "  </send>\n"
    )
    xml = base.xml.replace(
        '  <recv request="OPTIONS"',
        '  <recv request="REGISTER" optional="true" next="register"/>\n  <recv request="OPTIONS"',
        1,
    ).replace('  <label id="end"/>\n', reg + '  <label id="end"/>\n', 1)
    return SippScenario("pbx_standin", base.role, xml)


def _start_pbx(ip: str, workdir: Path) -> SippProcess:
    run = SippRun(
        _pbx_standin(), local_ip=ip, local_port=PORT, name="pbx", timeout_s=3600, trace_msg=True
    )
    handle = start_sipp(run, workdir)
    try:
        wait_sip_ready(ip, PORT, timeout=10, alive=handle.is_running)
    except TimeoutError:
        handle.stop()
        raise
    return handle


@dataclass
class Lab:
    kam: KamailioProcess
    pbx: tuple[SippProcess, SippProcess]
    users: list[UserCredential]
    db_url: str
    workdir: Path

    def location_count(self) -> int:
        db = connect(self.db_url)
        try:
            return db.location_count()
        finally:
            db.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if kamailio_binary() is None or sipp_binary() is None:
        missing_tool("needs Kamailio (Debian kamailio) and SIPp (Debian sip-tester)")
    workdir = tmp_path_factory.mktemp("kamrouter")
    url = f"sqlite:///{workdir}/realtime.db"
    db = connect(url)
    try:
        db.init_schema()
        users = db.provision_users(50, 1000, domain=DOMAIN, context="from-phones", seed=9)
        users += db.provision_users(3, 2000, domain=DOMAIN, context="from-phones", seed=10)
        # Asterisk refuses an AOR with max_contacts 0 (403): so must the router
        db.execute("UPDATE ps_aors SET max_contacts = 0 WHERE id = '2002'")
        db.dispatcher_set(
            [DispatcherRow(1, f"sip:{PBX1}:{PORT}"), DispatcherRow(1, f"sip:{PBX2}:{PORT}")]
        )
    finally:
        db.close()
    pbx1 = _start_pbx(PBX1, workdir / "pbx1")
    try:
        pbx2 = _start_pbx(PBX2, workdir / "pbx2")
        try:
            params = router_params_from_dict(_router_dict(url), shm_mb=128)
            kam = start_kamailio_router(params, workdir / "kamailio", probe_ip=TRUSTED)
            try:
                yield Lab(kam, (pbx1, pbx2), users, url, workdir)
            finally:
                kam.stop()
        finally:
            pbx2.stop()
    finally:
        pbx1.stop()


class _Phone:
    """A raw UDP UAC for exact status checks (one request, its final answer)."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(3.0)
        self.ip, self.port = self.sock.getsockname()
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(3)
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def send(
        self,
        method: str,
        user: str,
        *,
        auth: tuple[str, str] | None = None,
        dialog: Response | None = None,
        expires: int = 60,
    ) -> Response | None:
        """Send one request; return its final response (None for ACK).

        ``dialog``: the 2xx of an INVITE; the request then goes to its Contact through its
        Record-Route (RFC 3261 §12.2.1.1), with its To tag.
        """
        if method != "ACK":
            self.cseq += 1
        uri = f"sip:{ROUTER}" if method == "REGISTER" else f"sip:service@{ROUTER}"
        to = f"<sip:{user}@{DOMAIN}>" if method == "REGISTER" else f"<{uri}>"
        extra: list[str] = []
        if dialog is not None:
            to = dialog.headers.get("To") or to
            uri = str(dialog.contacts[0].uri)
            extra = [f"Route: {r}" for r in reversed(dialog.headers.values("Record-Route"))]
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"From: <sip:{user}@{DOMAIN}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{user}@{self.ip}:{self.port}>",
            f"Expires: {expires}",
            "Max-Forwards: 70",
            *extra,
        ]
        if auth is not None:
            lines.append(f"{auth[0]}: {auth[1]}")
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (ROUTER, PORT))
        if method == "ACK":
            return None
        while True:
            message = parse_untrusted(self.sock.recvfrom(65535)[0])
            assert not isinstance(message, Request)
            if message.status >= 200 and message.cseq.method == method:
                return message

    def final(self, method: str, user: str, **kw: object) -> Response:
        answer = self.send(method, user, **kw)  # type: ignore[arg-type]
        assert answer is not None
        return answer

    def register_with(self, user: str, password: str, expires: int = 60) -> Response:
        """REGISTER, answer the 401 with ``password``; the second answer."""
        first = self.final("REGISTER", user, expires=expires)
        assert first.status == 401, first
        challenge = parse_challenge(first.headers.get("WWW-Authenticate") or "")
        creds = answer_challenge(challenge, "REGISTER", f"sip:{ROUTER}", user, password)
        return self.final("REGISTER", user, auth=("Authorization", str(creds)), expires=expires)


def _received(pbx: SippProcess) -> list[str]:
    """Messages a PBX stand-in received, from its SIPp ``-trace_msg`` log."""
    log = pbx.workdir / f"{pbx.run.stem}_messages.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    out = []
    for block in text.split("-" * 47):
        head, _, message = block.partition("\n\n")
        if "message received" in head:
            out.append(message.strip("\n"))
    return out


def _trace_count(pbx: SippProcess, start_line: str, *containing: str) -> int:
    """Received requests whose start line begins with ``start_line`` holding all ``containing``."""
    return sum(
        1
        for m in _received(pbx)
        if m.startswith(start_line) and all(text in m for text in containing)
    )


def _wait_for(read: Callable[[], list[int]], total: int = 100, timeout: float = 3.0) -> list[int]:
    """Poll ``read`` until its sum reaches ``total`` (or the deadline); the last reading."""
    deadline = time.monotonic() + timeout
    values = read()
    while sum(values) < total and time.monotonic() < deadline:
        time.sleep(0.05)
        values = read()
    return values


def _register_all(
    lab: Lab,
    users: list[UserCredential],
    name: str,
    ip: str = PHONES,
    remote: tuple[str, int] | None = None,
    **run: object,
) -> SippResult:
    csv = lab.workdir / f"{name}.csv"
    write_sipp_csv(csv, users)
    sipp = SippRun(
        uac_register(120),
        local_ip=ip,
        remote=remote or lab.kam.address,
        rate=100,
        max_calls=len(users),
        injection=csv,
        timeout_s=15,
        name=name,
        **run,  # type: ignore[arg-type]
    )
    return run_sipp(sipp, lab.workdir / name)


@pytest.mark.kamailio
@pytest.mark.sipp
@needs_kamailio
@needs_sipp
def test_fifty_users_register_with_digest_and_are_forwarded_with_path(lab: Lab) -> None:
    users = lab.users[:50]
    result = _register_all(lab, users, "register50")
    assert (result.successful, result.failed) == (50, 0)
    assert result.count("401") == 50
    assert lab.location_count() == 50
    db = connect(lab.db_url)
    try:
        rows = db.query("SELECT username, contact, expires, callid FROM location")
    finally:
        db.close()
    assert {r[0] for r in rows} == {u.username for u in users}
    # expires is epoch seconds (expires_type=1): now + the 120 s the phones asked for
    assert all(abs(r[2] - (time.time() + 120)) < 20 for r in rows)

    # each forwarded REGISTER reached both PBX stand-ins, with the router's Path
    def forwarded(*containing: str) -> list[int]:
        return [_trace_count(p, "REGISTER sip:", "\nTo: <sip:10", *containing) for p in lab.pbx]

    assert _wait_for(forwarded, 100) == [50, 50]
    assert forwarded(f"\nPath: <sip:{ROUTER}:{PORT};lr>\nSupported: path") == [50, 50]
    for pbx in lab.pbx:
        # From/To = the AOR at the node's host, Contact = the phone's binding with its expiry
        aor = f"\nTo: <sip:1000@{pbx.run.local_ip}>\n"
        assert _trace_count(pbx, "REGISTER sip:", aor) == 1
        assert _trace_count(pbx, "REGISTER sip:", f"\nContact: <sip:1000@{PHONES}:") == 1


@pytest.mark.kamailio
@needs_kamailio
def test_registrar_rules_and_unregistration_reach_the_nodes(lab: Lab) -> None:
    password = {u.username: u.password for u in lab.users}
    phone = _Phone(PHONES)
    try:
        # below min_expires (30 here): raised, as the reference does with min_expires_mode 0
        ok = phone.register_with("2000", password["2000"], expires=10)
        assert ok.status == 200
        assert ok.headers.get("Contact") == f"<sip:2000@{PHONES}:{phone.port}>;expires=30"
        # ps_aors.max_contacts 0: refused like Asterisk would
        refused = phone.register_with("2002", password["2002"])
        assert (refused.status, refused.headers.get("P-Registrar-Error")) == (
            403,
            "No configured max_contacts",
        )
        # Expires 0 removes the binding and the nodes are told "Contact: *" (RFC 3261 §10.2.2)
        gone = phone.register_with("2000", password["2000"], expires=0)
        assert gone.status == 200
        assert gone.headers.get("Contact") is None
    finally:
        phone.close()
    db = connect(lab.db_url)
    try:
        assert db.location_lookup("2000", None, time.time()) == []
        assert db.location_lookup("2002", None, time.time()) == []
    finally:
        db.close()

    def unregisters() -> list[int]:
        return [_trace_count(p, "REGISTER sip:", "\nContact: *\nExpires: 0\n") for p in lab.pbx]

    assert _wait_for(unregisters, 2) == [1, 1]


@pytest.mark.kamailio
@needs_kamailio
def test_wrong_password_is_challenged_again_then_the_source_is_blocked(lab: Lab) -> None:
    attacker, other = _Phone(ATTACKER), _Phone(PHONES)
    try:
        first = attacker.final("REGISTER", "2000")
        assert first.status == 401
        challenge = first.headers.get("WWW-Authenticate") or ""
        assert f'realm="{REALM}"' in challenge
        assert 'qop="auth"' in challenge
        # wrong password: 401 again with a fresh challenge (not 403), SOURCE_LIMIT-1 times
        for n in range(SOURCE_LIMIT - 1):
            answer = attacker.register_with(f"{2000 + n % 2}", "not-the-password")
            assert (answer.status, answer.reason) == (401, "Unauthorized"), n
        # the failure that reaches the per-source limit is answered 403 and blocks the IP
        assert attacker.register_with("2000", "still-wrong").status == 403
        blocked = attacker.final("REGISTER", "2001")
        assert (blocked.status, blocked.reason) == (403, "Blocked")
        # other sources are not affected
        assert other.final("REGISTER", "2001").status == 401
    finally:
        attacker.close()
        other.close()


@pytest.mark.kamailio
@needs_kamailio
def test_untrusted_invite_gets_407_then_is_dispatched_with_credentials(lab: Lab) -> None:
    phone = _Phone(PHONES)
    try:
        answer = phone.final("INVITE", "1001")
        assert answer.status == 407
        assert f'realm="{REALM}"' in (answer.headers.get("Proxy-Authenticate") or "")
        # the 407 came from sl (stateless): no ACK is needed, a new INVITE answers it
        challenge = parse_challenge(answer.headers.get("Proxy-Authenticate") or "")
        password = next(u.password for u in lab.users if u.username == "1001")
        creds = answer_challenge(challenge, "INVITE", f"sip:service@{ROUTER}", "1001", password)
        ok = phone.final("INVITE", "1001", auth=("Proxy-Authorization", str(creds)))
        assert ok.status == 200
        assert ok.headers.values("Record-Route") == [f"<sip:{ROUTER};lr>"]
        phone.send("ACK", "1001", dialog=ok)
        bye = phone.final("BYE", "1001", dialog=ok)
        assert bye.status == 200  # in-dialog: loose_route through the router to the PBX
    finally:
        phone.close()


@pytest.mark.kamailio
@pytest.mark.sipp
@needs_kamailio
@needs_sipp
def test_calls_are_dispatched_over_both_pbx_nodes(lab: Lab) -> None:
    run = SippRun(
        uac_call(0), local_ip=TRUSTED, remote=lab.kam.address, rate=100, max_calls=100,
        timeout_s=15, service="dispatched",
    )  # fmt: skip
    result = run_sipp(run, lab.workdir / "calls")
    assert (result.successful, result.failed) == (100, 0)
    # the stand-ins' message traces (SIPp writes them as it goes; wait for the last lines)
    offered = _wait_for(lambda: [_trace_count(p, "INVITE sip:dispatched@") for p in lab.pbx])
    assert sum(offered) == 100
    assert min(offered) >= 45  # round robin (alg 4) over the two nodes
    assert all(_trace_count(p, "BYE sip:") >= n for p, n in zip(lab.pbx, offered, strict=True))
    # OPTIONS keepalives (ds_probing_mode 1 every second) reach both nodes
    assert all(_trace_count(p, "OPTIONS sip:") >= 1 for p in lab.pbx)


@pytest.mark.kamailio
@pytest.mark.sipp
@needs_kamailio
@needs_sipp
def test_call_from_a_pbx_node_reaches_the_registered_phone(lab: Lab) -> None:
    phone_port = 5072
    user = next(u for u in lab.users if u.username == "2001")
    reg = _register_all(lab, [user], "register_callee", ip=CALLEE, local_port=phone_port)
    assert (reg.successful, reg.failed) == (1, 0)
    # the phone that registered sip:2001@CALLEE:5072 now answers calls on that contact
    callee = start_sipp_uas(CALLEE, phone_port, lab.workdir, name="callee")
    try:
        # from a dispatcher node (ds_is_from_list): no auth, lookup("location"), relay
        run = SippRun(
            uac_call(0, to_user="2001"), local_ip=PBX1, remote=lab.kam.address, rate=10,
            max_calls=3, timeout_s=10, name="from_pbx",
        )  # fmt: skip
        result = run_sipp(run, lab.workdir / "from_pbx")
    finally:
        answered = callee.stop()
    assert (result.successful, result.failed) == (3, 0)
    assert answered.count("INVITE") == 3
    assert answered.count("BYE") == 3
    # a user without a binding: 404 from lookup
    run = SippRun(
        uac_call(0, to_user="1999"), local_ip=PBX1, remote=lab.kam.address, max_calls=1,
        timeout_s=5, name="unknown",
    )  # fmt: skip
    missing = run_sipp(run, lab.workdir / "unknown")
    assert missing.failed == 1


@pytest.mark.kamailio
@pytest.mark.sipp
@needs_kamailio
@needs_sipp
def test_hash_forwarding_sends_each_user_to_one_node(lab: Lab, tmp_path: Path) -> None:
    # A second Kamailio (own DB: SQLite writers must not collide) over the same PBX stand-ins.
    url = f"sqlite:///{tmp_path}/hash.db"
    db = connect(url)
    try:
        db.init_schema()
        users = db.provision_users(10, 3000, domain=DOMAIN, context="from-phones", seed=11)
        db.dispatcher_set(
            [DispatcherRow(1, f"sip:{PBX1}:{PORT}"), DispatcherRow(1, f"sip:{PBX2}:{PORT}")]
        )
    finally:
        db.close()
    data = _router_dict(url)
    data["router"] = {"listen": [f"udp:{HASH_ROUTER}:{PORT}"]}
    params = router_params_from_dict(data, shm_mb=64, forward="hash", probe_interval_s=0)
    with start_kamailio_router(params, tmp_path / "kam", probe_ip=TRUSTED) as kam:
        result = _register_all(lab, users, "register_hash", remote=kam.address)
    assert (result.successful, result.failed) == (10, 0)

    def per_node() -> list[int]:
        return [_trace_count(p, "REGISTER sip:", "\nTo: <sip:30") for p in lab.pbx]

    counts = _wait_for(per_node, 10)
    assert sum(counts) == 10  # each user went to exactly one node
    assert min(counts) >= 1  # and the hash spread them over both
    for user in users:
        to = f"\nTo: <sip:{user.username}@"
        assert sum(_trace_count(p, "REGISTER sip:", to) for p in lab.pbx) == 1


def test_http_endpoint_renders_xhttp_jsonrpc_on_its_own_tcp_listener(tmp_path: Path) -> None:
    params = KamailioRouterParams(
        listen_ip="127.0.0.80", db_url=f"sqlite:///{tmp_path}/rt.db", http="127.0.0.80:8080"
    )
    text = render_router_config(params)
    assert "#!define HTTP_LISTEN tcp:127.0.0.80:8080" in text
    assert "#!define WITH_HTTP" in text
    without = render_router_config(replace(params, http=None))
    assert "WITH_HTTP" not in without.split("\n\n", 1)[0]


def test_kamailio_status_has_the_reference_shape() -> None:
    from lab.routers.kamailio.status import kamailio_status

    answers = {
        "dispatcher.list": {
            "RECORDS": [
                {"SET": {"ID": 1, "TARGETS": [
                    {"DEST": {"URI": "sip:127.0.0.83:5060", "FLAGS": "IP", "PRIORITY": 0,
                              "ATTRS": {"BODY": "duid=pbx1"}}},
                ]}}
            ]
        },
        "stats.get_statistics": ["usrloc:location_contacts = 7", "core:bad_msg_hdr = 2"],
    }  # fmt: skip
    status = kamailio_status(lambda method, *params: answers[method])
    assert status["dispatcher"] == [
        {"set": 1, "uri": "sip:127.0.0.83:5060", "flags": "IP", "priority": 0,
         "attrs": "duid=pbx1", "latency": None}
    ]  # fmt: skip
    assert status["registrar"]["bindings"] == 7
    assert sum(status["drops"].values()) == 2
