"""Endpoint identification and Asterisk's digest check, with explicit time."""

from __future__ import annotations

import pytest

from lab.pbx.security import AuthOutcome, DigestAuthenticator, Identified, IpMatch, identify
from lab.pbx.store import PbxStore
from router.sip import Headers, Request, answer_challenge, parse_challenge

from .helpers import PASSWORDS, PHONE_IP, ROUTER_IP

T0 = 1_700_000_000.0


def _request(method: str = "REGISTER", from_user: str = "101", auth: str | None = None) -> Request:
    fields = [
        ("Via", f"SIP/2.0/UDP {PHONE_IP}:5060;branch=z9hG4bKtest"),
        ("From", f"<sip:{from_user}@{PHONE_IP}>;tag=t"),
        ("To", f"<sip:{from_user}@{PHONE_IP}>"),
        ("Call-ID", "c@x"),
        ("CSeq", f"1 {method}"),
    ]
    if auth is not None:
        fields.append(("Authorization", auth))
    return Request(method, "sip:127.0.0.40", Headers(fields))


@pytest.mark.parametrize(
    ("text", "source", "expected"),
    [
        ("127.0.0.41", ("127.0.0.41", 5060), True),
        ("127.0.0.0/24", ("127.0.0.99", 1), True),
        ("127.0.0.41:5070", ("127.0.0.41", 5060), False),
        ("127.0.0.41:5070", ("127.0.0.41", 5070), True),
        ("[::1]:5060", ("::1", 5060), True),
        ("10.0.0.1", ("127.0.0.41", 5060), False),
    ],
)
def test_ip_match(text: str, source: tuple[str, int], expected: bool) -> None:
    match = IpMatch.parse(text)
    assert match is not None
    assert match.matches(source) is expected


def test_ip_match_refuses_host_names() -> None:
    assert IpMatch.parse("router.example:5060") is None


def test_identify_order_ip_then_username(store: PbxStore) -> None:
    order = ["ip", "username", "anonymous"]
    found = identify(store, _request(), (ROUTER_IP, 5060), order=order, static=[])
    assert found is not None
    assert (found[0].id, found[1]) == ("router", Identified.IP)
    found = identify(store, _request(), (PHONE_IP, 5060), order=order, static=[])
    assert found is not None
    assert (found[0].id, found[1]) == ("101", Identified.USERNAME)
    assert (
        identify(store, _request(from_user="999"), (PHONE_IP, 5060), order=order, static=[]) is None
    )


def test_identify_by_limits_the_methods(store: PbxStore) -> None:
    store.db.execute("UPDATE ps_endpoints SET identify_by = 'username' WHERE id = 'router'")
    found = identify(store, _request(from_user="999"), (ROUTER_IP, 5060), order=["ip"], static=[])
    assert found is None


def test_identify_anonymous(store: PbxStore) -> None:
    store.db.execute("INSERT INTO ps_endpoints (id, context) VALUES ('anonymous', 'default')")
    found = identify(
        store,
        _request(from_user="999"),
        (PHONE_IP, 5060),
        order=["ip", "username", "anonymous"],
        static=[],
    )
    assert found is not None
    assert (found[0].id, found[1]) == ("anonymous", Identified.ANONYMOUS)


def _answer(auth: DigestAuthenticator, source: tuple[str, int], at: float, password: str) -> str:
    challenge = parse_challenge(auth.challenge(None, source, now_epoch=at))
    return str(answer_challenge(challenge, "REGISTER", "sip:127.0.0.40", "101", password))


def test_digest_accepts_the_right_password_within_the_nonce_lifetime(store: PbxStore) -> None:
    authenticator = DigestAuthenticator()
    auths = [a for a in [store.auth("101")] if a is not None]
    source = (PHONE_IP, 5060)
    creds = _answer(authenticator, source, T0, PASSWORDS["101"])
    request = _request(auth=creds)
    assert authenticator.check(_request(), auths, source, now_epoch=T0) is AuthOutcome.CHALLENGE
    assert authenticator.check(request, auths, source, now_epoch=T0 + 31) is AuthOutcome.ACCEPTED
    assert authenticator.check(request, auths, source, now_epoch=T0 + 33) is AuthOutcome.STALE
    assert (
        authenticator.check(request, auths, (ROUTER_IP, 5060), now_epoch=T0) is AuthOutcome.FAILED
    )
    wrong = _request(auth=_answer(authenticator, source, T0, "nope"))
    assert authenticator.check(wrong, auths, source, now_epoch=T0) is AuthOutcome.FAILED


def test_stale_challenge_says_so() -> None:
    value = DigestAuthenticator().challenge(None, (PHONE_IP, 1), now_epoch=T0, stale=True)
    challenge = parse_challenge(value)
    assert challenge.stale
    assert challenge.nonce.startswith(f"{int(T0)}/")
