"""RegistrationService inside a RouterCore, no sockets: bytes in, Outgoing out, explicit time.

``WiredRouter`` below is the wiring the coordinator is asked to put into ``router/app.py``:
the part 2 hooks delegate to the service, the service's client transactions get their
responses and timeouts, its timers run, and ``commit()`` runs at the start of every drain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router.app import RouterCore
from router.config import router_config_from_dict
from router.configfile import ConfigError
from router.realtime import Database, UserCredential, connect
from router.registration import RegistrationService, load_settings
from router.sip import (
    Headers,
    Request,
    Response,
    answer_challenge,
    make_response,
    parse_challenge,
    parse_contact_list,
    parse_untrusted,
    serialize,
)
from router.transport.base import Inbound, Outgoing

T0 = 1_700_000_000.0
ROUTER = ("127.0.0.10", 5060)
NODE1, NODE2 = ("127.0.0.11", 5060), ("127.0.0.12", 5060)
PHONE = ("192.0.2.7", 5062)


class WiredRouter(RouterCore):
    """RouterCore whose registration service runs on wall time = driver time (deterministic
    expiry values in the assertions)."""

    def __init__(self, config: Any, db: Database, *, now: float) -> None:
        super().__init__(config, now=now)
        assert self.registration is not None and self.features.registrar
        self.registration.close()
        settings = load_settings(config.registrar)
        self.registration = RegistrationService(self, settings, db, now=now, wall_offset=0.0)


def config(db_url: str, **registrar: Any) -> Any:
    return router_config_from_dict(
        {
            "router": {"listen": [f"udp:{ROUTER[0]}:{ROUTER[1]}"]},
            "dispatcher": {
                "destinations": [{"uri": "sip:127.0.0.11:5060"}, {"uri": "sip:127.0.0.12:5060"}],
                "probing": {"interval": 0},
            },
            "registrar": {"db": db_url, "forward_retry": 30.0, "purge_interval": 60.0, **registrar},
        }
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/realtime.db"


@pytest.fixture
def users(db_url: str) -> list[UserCredential]:
    with connect(db_url) as db:
        db.init_schema()
        return db.provision_users(3, 101, domain="example.com", context="default", seed=7)


@pytest.fixture
def db(db_url: str, users: list[UserCredential]) -> Iterator[Database]:
    database = connect(db_url)
    yield database
    database.close()


def password(users: list[UserCredential], name: str) -> str:
    return next(u.password for u in users if u.username == name)


_seq = iter(range(1, 10**6))


def request(
    method: str,
    uri: str,
    *,
    from_user: str = "101",
    to_user: str = "101",
    src: tuple[str, int] = PHONE,
    call_id: str = "reg-1",
    cseq: int = 1,
    headers: tuple[tuple[str, str], ...] = (),
) -> Request:
    h = Headers(
        [
            ("Via", f"SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK-t{next(_seq)};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{from_user}@example.com>;tag=ft{cseq}"),
            ("To", f"<sip:{to_user}@example.com>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            *headers,
        ]
    )
    return Request(method, uri, h)


def send(
    router: RouterCore, msg: Request | Response, src: tuple[str, int], now: float
) -> list[Outgoing]:
    router.receive_untrusted(serialize(msg), Inbound("udp", src, ROUTER), now=now)
    return router.drain_outgoing()


def parsed(out: list[Outgoing]) -> list[tuple[Request | Response, tuple[str, int]]]:
    return [(parse_untrusted(o.data), o.dest) for o in out]


def responses(out: list[Outgoing]) -> list[Response]:
    return [m for m, _ in parsed(out) if isinstance(m, Response)]


def requests_to(out: list[Outgoing], dest: tuple[str, int]) -> list[Request]:
    return [m for m, d in parsed(out) if isinstance(m, Request) and d == dest]


def register_authenticated(
    router: RouterCore,
    users: list[UserCredential],
    now: float,
    *,
    contact: str = "<sip:101@192.0.2.7:5062>",
    user: str = "101",
    cseq: int = 1,
    call_id: str = "reg-1",
    extra: tuple[tuple[str, str], ...] = (),
) -> list[Outgoing]:
    headers = (("Contact", contact), *extra)
    first = request(
        "REGISTER",
        "sip:example.com",
        from_user=user,
        to_user=user,
        cseq=cseq,
        call_id=call_id,
        headers=headers,
    )
    (challenge,) = responses(send(router, first, PHONE, now))
    assert challenge.status == 401
    ch = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
    creds = answer_challenge(ch, "REGISTER", "sip:example.com", user, password(users, user))
    second = request(
        "REGISTER",
        "sip:example.com",
        from_user=user,
        to_user=user,
        cseq=cseq + 1,
        call_id=call_id,
        headers=(*headers, ("Authorization", str(creds))),
    )
    return send(router, second, PHONE, now)


def test_service_register_is_held_until_commit_then_durable_and_forwarded(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url), db, now=T0)
    first = request(
        "REGISTER", "sip:example.com", headers=(("Contact", "<sip:101@192.0.2.7:5062>"),)
    )
    router.receive_untrusted(serialize(first), Inbound("udp", PHONE, ROUTER), now=T0)
    (challenge,) = responses(router.drain_outgoing())
    ch = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
    creds = answer_challenge(ch, "REGISTER", "sip:example.com", "101", password(users, "101"))
    second = request(
        "REGISTER",
        "sip:example.com",
        cseq=2,
        headers=(("Contact", "<sip:101@192.0.2.7:5062>"), ("Authorization", str(creds))),
    )
    router.receive_untrusted(serialize(second), Inbound("udp", PHONE, ROUTER), now=T0 + 0.1)
    # Nothing leaves the router but through drain_outgoing, which commits first: before it,
    # nothing is in the DB; the 200 that it releases is backed by the row.
    with connect(db_url) as other:
        assert other.location_all() == []
    before: list[Outgoing] = []
    after = router.drain_outgoing()
    (ok,) = responses(after)
    assert ok.status == 200
    assert [str(c.uri) for c in ok.contacts] == ["sip:101@192.0.2.7:5062"]
    assert ok.contacts[0].expires == 3600
    assert ok.headers.get("Date")
    with connect(db_url) as other:
        (row,) = other.location_all()
    assert (row.username, row.contact, row.received, row.cseq) == (
        "101",
        "sip:101@192.0.2.7:5062",
        "sip:192.0.2.7:5062",
        2,
    )
    assert row.expires == int(T0 + 0.1) + 3600
    # The PBX nodes got a router-built REGISTER with Path; the phone's Authorization is gone.
    for node in (NODE1, NODE2):
        (fwd,) = requests_to(before + after, node)
        assert fwd.method == "REGISTER"
        assert fwd.headers.get("Path") == "<sip:127.0.0.10:5060;lr>"
        assert "Authorization" not in fwd.headers
        assert [str(c.uri) for c in fwd.contacts] == ["sip:101@192.0.2.7:5062"]


def test_service_forward_response_and_timeout_retry(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url), db, now=T0)
    out = register_authenticated(router, users, T0)
    (to_node1,) = requests_to(out, NODE1)
    send(router, make_response(to_node1, 200, to_tag="n1"), NODE1, T0 + 0.2)
    stats = router.registration.status()["forward"]
    assert (stats["ok"], stats["failed"]) == (1, 0)
    # Node 2 never answers: Timer F (64*T1 = 32 s) -> counted failure, retried 30 s later.
    t = T0
    while (deadline := router.next_deadline()) is not None and deadline <= T0 + 40:
        t = deadline
        router.handle_timers(now=t)
        router.drain_outgoing()
    assert router.registration.status()["forward"]["failed"] == 1
    assert router.registration.forwarder.next_deadline() == pytest.approx(t + 30, abs=1)
    router.handle_timers(now=t + 30)
    (retry,) = requests_to(router.drain_outgoing(), NODE2)
    assert retry.cseq.seq == 2
    assert router.registration.status()["forward"]["retried"] == 1
    # The phone is registered all along.
    assert router.registration.status()["bindings"] == 1


def test_service_lookup_relays_node_invite_to_the_phone(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url), db, now=T0)
    register_authenticated(router, users, T0)
    invite = request(
        "INVITE",
        "sip:101@192.0.2.7:5062",
        from_user="200",
        src=NODE1,
        call_id="call-from-pbx",
        headers=(("Route", "<sip:127.0.0.10:5060;lr>"), ("Contact", "<sip:200@127.0.0.11>")),
    )
    out = send(router, invite, NODE1, T0 + 5)
    (fwd,) = requests_to(out, PHONE)
    assert fwd.method == "INVITE"
    assert fwd.uri == "sip:101@192.0.2.7:5062"
    assert fwd.routes == []
    assert [r.status for r in responses(out)] == [100]
    # By AOR as well (R-URI user), and 404 for nobody.
    by_aor = request(
        "INVITE", "sip:101@127.0.0.10", src=NODE1, call_id="c2", headers=(("Contact", "<sip:x@h>"),)
    )
    assert requests_to(send(router, by_aor, NODE1, T0 + 6), PHONE)
    nobody = request(
        "INVITE", "sip:999@127.0.0.10", src=NODE1, call_id="c3", headers=(("Contact", "<sip:x@h>"),)
    )
    assert [r.status for r in responses(send(router, nobody, NODE1, T0 + 7))][-1] == 404


def test_service_lookup_forks_to_every_contact(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url, max_contacts=5), db, now=T0)
    register_authenticated(
        router, users, T0, contact="<sip:101@192.0.2.7:5062>, <sip:101@192.0.2.8:5070>"
    )
    invite = request(
        "INVITE",
        "sip:101@127.0.0.10",
        src=NODE1,
        call_id="fork",
        headers=(("Contact", "<sip:x@h>"),),
    )
    out = send(router, invite, NODE1, T0 + 1)
    invites = [
        (m.uri, d) for m, d in parsed(out) if isinstance(m, Request) and m.method == "INVITE"
    ]
    # Both contacts registered from the same source: the received address is the next hop.
    assert sorted(invites) == [("sip:101@192.0.2.7:5062", PHONE), ("sip:101@192.0.2.8:5070", PHONE)]


def test_service_restart_reloads_bindings(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url), db, now=T0)
    register_authenticated(router, users, T0)
    restarted = WiredRouter(config(db_url), connect(db_url), now=T0 + 100)
    assert restarted.registration.status()["bindings"] == 1
    invite = request(
        "INVITE",
        "sip:101@127.0.0.10",
        src=NODE1,
        call_id="after",
        headers=(("Contact", "<sip:x@h>"),),
    )
    assert requests_to(send(restarted, invite, NODE1, T0 + 101), PHONE)
    restarted.registration.close()


def test_service_purges_expired_bindings_and_unregisters_nodes(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url, forward="hash"), db, now=T0)
    out = register_authenticated(router, users, T0, contact="<sip:101@192.0.2.7:5062>;expires=60")
    ((fwd, node),) = [(m, d) for m, d in parsed(out) if isinstance(m, Request)]
    assert node in (NODE1, NODE2)  # forward = "hash": exactly one node
    send(router, make_response(fwd, 200, to_tag="n"), node, T0 + 0.1)
    router.handle_timers(now=T0 + 61)
    out = router.drain_outgoing()
    (unreg,) = requests_to(out, node)
    assert unreg.headers.get("Contact") == "*"
    assert unreg.expires == 0
    assert db.location_all() == []


def test_service_unregister_star_removes_rows(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url, forward="none"), db, now=T0)
    register_authenticated(router, users, T0)
    out = register_authenticated(
        router, users, T0 + 5, contact="*", cseq=10, extra=(("Expires", "0"),)
    )
    assert [r.status for r in responses(out)] == [200]
    assert db.location_all() == []


def test_service_phone_invite_needs_proxy_auth_and_credentials_are_consumed(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url), db, now=T0)
    invite = request(
        "INVITE",
        "sip:200@example.com",
        to_user="200",
        call_id="out-1",
        headers=(("Contact", "<sip:101@192.0.2.7:5062>"),),
    )
    trying, challenge = responses(send(router, invite, PHONE, T0))
    assert (trying.status, challenge.status) == (100, 407)
    ch = parse_challenge(challenge.headers.get("Proxy-Authenticate") or "")
    creds = answer_challenge(ch, "INVITE", "sip:200@example.com", "101", password(users, "101"))
    again = request(
        "INVITE",
        "sip:200@example.com",
        to_user="200",
        call_id="out-1",
        cseq=2,
        headers=(("Contact", "<sip:101@192.0.2.7:5062>"), ("Proxy-Authorization", str(creds))),
    )
    out = send(router, again, PHONE, T0 + 1)
    relayed = [m for m, d in parsed(out) if isinstance(m, Request) and d in (NODE1, NODE2)]
    assert len(relayed) == 1
    assert "Proxy-Authorization" not in relayed[0].headers


def test_service_blocks_after_failures_and_logs_event(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url, max_failures_per_user=2), db, now=T0)
    seen: list[dict[str, Any]] = []
    router.events.listeners.append(seen.append)
    statuses = []
    for i in range(3):
        first = request(
            "REGISTER", "sip:example.com", call_id=f"bad-{i}", headers=(("Contact", "<sip:101@h>"),)
        )
        (challenge,) = responses(send(router, first, PHONE, T0 + i))
        if challenge.status != 401:
            statuses.append(challenge.status)
            continue
        ch = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
        creds = answer_challenge(ch, "REGISTER", "sip:example.com", "101", "wrong")
        again = request(
            "REGISTER",
            "sip:example.com",
            call_id=f"bad-{i}",
            cseq=2,
            headers=(("Contact", "<sip:101@h>"), ("Authorization", str(creds))),
        )
        statuses.append(responses(send(router, again, PHONE, T0 + i))[0].status)
    assert statuses == [401, 403, 403]
    assert [e["key"] for e in seen if e.get("event") == "auth_blocked"] == ["user:101"]
    assert router.registration.status()["auth"]["blocked"] == 1


def test_service_max_contacts_from_ps_aors(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url), db, now=T0)  # provisioned with max_contacts=1
    register_authenticated(router, users, T0)
    out = register_authenticated(
        router, users, T0 + 1, contact="<sip:101@192.0.2.99:5060>", call_id="reg-2"
    )
    (resp,) = responses(out)
    assert resp.status == 503
    assert resp.headers.get("P-Registrar-Error") == "Too many registered contacts"


def test_service_min_expires_mode_423(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url, min_expires_mode=1), db, now=T0)
    out = register_authenticated(router, users, T0, contact="<sip:101@192.0.2.7:5062>;expires=10")
    (resp,) = responses(out)
    assert (resp.status, resp.headers.get("Min-Expires")) == (423, "60")


def test_service_db_failure_answers_500(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url), db, now=T0)
    first = request(
        "REGISTER", "sip:example.com", headers=(("Contact", "<sip:101@192.0.2.7:5062>"),)
    )
    (challenge,) = responses(send(router, first, PHONE, T0))
    ch = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
    creds = answer_challenge(ch, "REGISTER", "sip:example.com", "101", password(users, "101"))
    second = request(
        "REGISTER",
        "sip:example.com",
        cseq=2,
        headers=(("Contact", "<sip:101@192.0.2.7:5062>"), ("Authorization", str(creds))),
    )
    router.receive_untrusted(serialize(second), Inbound("udp", PHONE, ROUTER), now=T0 + 1)
    db.execute("DROP TABLE location")
    (resp,) = responses(router.drain_outgoing())
    assert resp.status == 500
    assert router.registration.status()["commit_failures"] == 1


def test_service_query_lists_bindings(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url), db, now=T0)
    register_authenticated(router, users, T0)
    first = request("REGISTER", "sip:example.com", cseq=20)
    (challenge,) = responses(send(router, first, PHONE, T0 + 100))
    ch = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
    creds = answer_challenge(ch, "REGISTER", "sip:example.com", "101", password(users, "101"))
    query = request(
        "REGISTER", "sip:example.com", cseq=21, headers=(("Authorization", str(creds)),)
    )
    (resp,) = responses(send(router, query, PHONE, T0 + 100))
    assert resp.status == 200
    (c,) = parse_contact_list(resp.headers.get("Contact") or "")
    assert c.expires == 3500


def test_service_settings_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"registrar\.forward: must be all, hash or none"):
        load_settings({"db": "sqlite:///x.db", "forward": "some"})
    with pytest.raises(ConfigError, match=r"registrar\.db: required"):
        load_settings({})
    with pytest.raises(ConfigError, match=r"registrar\.nonce_secret"):
        load_settings({"db": "sqlite:///x.db", "nonce_secret": "zz"})
    settings = load_settings(
        {"db": "sqlite:///x.db", "nonce-secret": "00ff", "trusted_sources": ["10.0.0.1"]}
    )
    assert (settings.realm, settings.max_expires, settings.trusted_sources) == (
        "asterisk",
        3600,
        ["10.0.0.1"],
    )


def test_service_shared_nonce_secret_lets_routers_verify_each_other(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    secret = {"nonce_secret": "0123456789abcdef0123456789abcdef", "forward": "none"}
    a = WiredRouter(config(db_url, **secret), db, now=T0)
    b = WiredRouter(config(db_url, **secret), connect(db_url), now=T0)
    first = request(
        "REGISTER", "sip:example.com", headers=(("Contact", "<sip:101@192.0.2.7:5062>"),)
    )
    (challenge,) = responses(send(a, first, PHONE, T0))
    ch = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
    creds = answer_challenge(ch, "REGISTER", "sip:example.com", "101", password(users, "101"))
    second = request(
        "REGISTER",
        "sip:example.com",
        cseq=2,
        headers=(("Contact", "<sip:101@192.0.2.7:5062>"), ("Authorization", str(creds))),
    )
    assert [r.status for r in responses(send(b, second, PHONE, T0 + 1))] == [200]
    b.registration.close()


def _register_with(router: RouterCore, secret: str, now: float, cseq: int) -> int:
    """REGISTER -> 401 -> REGISTER with digest for user 101 and ``secret``; the final status."""
    contact = (("Contact", "<sip:101@192.0.2.7:5062>"),)
    first = request("REGISTER", "sip:example.com", cseq=cseq, call_id="cache", headers=contact)
    (challenge,) = responses(send(router, first, PHONE, now))
    assert challenge.status == 401
    ch = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
    creds = answer_challenge(ch, "REGISTER", "sip:example.com", "101", secret)
    second = request(
        "REGISTER",
        "sip:example.com",
        cseq=cseq + 1,
        call_id="cache",
        headers=(*contact, ("Authorization", str(creds))),
    )
    return responses(send(router, second, PHONE, now))[-1].status


def test_service_credential_cache_serves_repeats_and_follows_a_password_change(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url, credential_cache_ttl=30.0), db, now=T0)
    service = router.registration
    assert service is not None
    assert _register_with(router, password(users, "101"), T0, 1) == 200
    # Challenge and answer asked the DB once, the answer was served from the cache.
    assert service.counts["credential_cache_hits"] == 1
    assert _register_with(router, password(users, "101"), T0 + 1, 3) == 200
    assert service.counts["credential_cache_hits"] == 3
    # The password changes in the DB while the old one is cached: the first answer with the
    # new password fails against the cache, which drops the entry; the next attempt reads the
    # DB and succeeds (one extra challenge, as a UA retries after a 401 anyway).
    db.execute("UPDATE ps_auths SET password = ? WHERE id = ?", ("changed-secret", "101"))
    assert _register_with(router, "changed-secret", T0 + 2, 5) == 401
    assert _register_with(router, "changed-secret", T0 + 3, 7) == 200
    # Past the time to live the DB is asked again: the old password no longer works at all.
    assert _register_with(router, password(users, "101"), T0 + 40, 9) == 401


def test_service_credential_cache_off_and_unknown_users_never_cached(
    db_url: str, db: Database, users: list[UserCredential]
) -> None:
    router = WiredRouter(config(db_url, credential_cache_ttl=0), db, now=T0)
    service = router.registration
    assert service is not None
    assert _register_with(router, password(users, "101"), T0, 1) == 200
    assert _register_with(router, password(users, "101"), T0 + 1, 3) == 200
    assert service.counts["credential_cache_hits"] == 0
    router = WiredRouter(config(db_url), db, now=T0)  # default: cache on
    service = router.registration
    assert service is not None
    assert service._credential("nobody") is None
    assert "nobody" not in service._credentials
    with pytest.raises(ConfigError, match="credential_cache_ttl"):
        load_settings({"db": db_url, "credential_cache_ttl": -1})
