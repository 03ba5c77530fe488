"""Digest auth decisions (SIP-REFERENCE §3), with explicit time."""

from __future__ import annotations

import pytest

from router.features.auth import (
    AuthConfig,
    AuthDecision,
    Authenticator,
    AuthOutcome,
    StoredCredential,
    consume_credentials,
)
from router.sip import (
    Headers,
    Request,
    answer_challenge,
    compute_ha1,
    parse_challenge,
)

T0 = 1_700_000_000.0
SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")
USERS = {
    "101": StoredCredential(password="secret101"),
    "102": StoredCredential(
        ha1=compute_ha1("102", "pbx.example", "secret102"), realm="pbx.example"
    ),
}


def lookup(username: str) -> StoredCredential | None:
    return USERS.get(username)


def request(method: str = "REGISTER", user: str = "101", from_user: str | None = None) -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK-a1;rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{from_user or user}@example.com>;tag=f1"),
            ("To", f"<sip:{user}@example.com>"),
            ("Call-ID", "auth-call"),
            ("CSeq", f"1 {method}"),
        ]
    )
    uri = "sip:example.com" if method == "REGISTER" else "sip:200@example.com"
    return Request(method, uri, headers)


def with_answer(
    req: Request, decision: AuthDecision, username: str, password: str, *, nc: int = 1
) -> Request:
    challenge = parse_challenge(decision.headers[0][1])
    creds = answer_challenge(challenge, req.method, req.uri, username, password, nc=nc)
    out = req.copy()
    name = "Authorization" if req.method == "REGISTER" else "Proxy-Authorization"
    out.headers.add(name, str(creds))
    return out


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(AuthConfig(), SECRET)


def test_auth_register_without_credentials_gets_401(auth: Authenticator) -> None:
    d = auth.check(request(), "192.0.2.7", lookup, now=T0)
    assert (d.outcome, d.status) == (AuthOutcome.CHALLENGE, 401)
    ((name, value),) = d.headers
    assert name == "WWW-Authenticate"
    ch = parse_challenge(value)
    assert (ch.realm, ch.qop, ch.stale) == ("asterisk", ("auth",), False)


def test_auth_invite_gets_407_proxy_authenticate(auth: Authenticator) -> None:
    d = auth.check(request("INVITE"), "192.0.2.7", lookup, now=T0)
    assert d.status == 407
    assert d.headers[0][0] == "Proxy-Authenticate"


def test_auth_one_challenge_per_algorithm_same_nonce() -> None:
    auth = Authenticator(AuthConfig(algorithms=("SHA-256", "MD5")), SECRET)
    d = auth.check(request(), "192.0.2.7", lookup, now=T0)
    chs = [parse_challenge(v) for _, v in d.headers]
    assert [c.effective_algorithm.value for c in chs] == ["SHA-256", "MD5"]
    assert chs[0].nonce == chs[1].nonce


def test_auth_correct_password_ok(auth: Authenticator) -> None:
    req = request()
    d = auth.check(req, "192.0.2.7", lookup, now=T0)
    ok = auth.check(with_answer(req, d, "101", "secret101"), "192.0.2.7", lookup, now=T0 + 1)
    assert ok.outcome is AuthOutcome.OK
    assert ok.username == "101"


def test_auth_md5_cred_user_challenged_with_its_realm(auth: Authenticator) -> None:
    req = request(user="102")
    d = auth.check(req, "192.0.2.7", lookup, now=T0)
    assert parse_challenge(d.headers[0][1]).realm == "pbx.example"
    ok = auth.check(with_answer(req, d, "102", "secret102"), "192.0.2.7", lookup, now=T0 + 1)
    assert ok.ok


def test_auth_unknown_user_and_wrong_password_look_identical(auth: Authenticator) -> None:
    def shape(d: AuthDecision) -> tuple[object, ...]:
        ch = parse_challenge(d.headers[0][1])
        return (
            d.status,
            d.reason,
            [n for n, _ in d.headers],
            ch.realm,
            ch.qop,
            ch.stale,
            ch.algorithm,
        )

    wrong_req = request()
    first = auth.check(wrong_req, "192.0.2.7", lookup, now=T0)
    wrong = auth.check(with_answer(wrong_req, first, "101", "nope"), "192.0.2.7", lookup, now=T0)
    ghost_req = request(user="999")
    first = auth.check(ghost_req, "192.0.2.8", lookup, now=T0)
    ghost = auth.check(with_answer(ghost_req, first, "999", "x"), "192.0.2.8", lookup, now=T0)
    assert wrong.outcome is ghost.outcome is AuthOutcome.FAILED
    assert shape(wrong) == shape(ghost)


def test_auth_expired_nonce_gets_stale_true(auth: Authenticator) -> None:
    req = request()
    d = auth.check(req, "192.0.2.7", lookup, now=T0)
    late = auth.check(with_answer(req, d, "101", "secret101"), "192.0.2.7", lookup, now=T0 + 301)
    assert (late.outcome, late.status) == (AuthOutcome.STALE, 401)
    assert parse_challenge(late.headers[0][1]).stale is True


def test_auth_expired_nonce_with_wrong_password_is_not_stale(auth: Authenticator) -> None:
    req = request()
    d = auth.check(req, "192.0.2.7", lookup, now=T0)
    late = auth.check(with_answer(req, d, "101", "bad"), "192.0.2.7", lookup, now=T0 + 301)
    assert late.outcome is AuthOutcome.FAILED
    assert parse_challenge(late.headers[0][1]).stale is False


def test_auth_nonce_count_must_increase(auth: Authenticator) -> None:
    req = request("INVITE")
    d = auth.check(req, "192.0.2.7", lookup, now=T0)
    assert auth.check(with_answer(req, d, "101", "secret101", nc=1), "192.0.2.7", lookup, now=T0).ok
    replay = auth.check(with_answer(req, d, "101", "secret101", nc=1), "192.0.2.7", lookup, now=T0)
    assert replay.outcome is AuthOutcome.STALE
    assert auth.check(with_answer(req, d, "101", "secret101", nc=2), "192.0.2.7", lookup, now=T0).ok


def test_auth_routers_sharing_the_secret_accept_each_others_nonces() -> None:
    a, b = Authenticator(AuthConfig(), SECRET), Authenticator(AuthConfig(), SECRET)
    other = Authenticator(AuthConfig(), b"another secret")
    req = request()
    d = a.check(req, "192.0.2.7", lookup, now=T0)
    answered = with_answer(req, d, "101", "secret101")
    assert b.check(answered, "192.0.2.7", lookup, now=T0 + 1).ok
    assert other.check(answered, "192.0.2.7", lookup, now=T0 + 1).outcome is AuthOutcome.CHALLENGE


def test_auth_username_must_match_to_user_for_register(auth: Authenticator) -> None:
    req = request(user="102")
    d = auth.check(req, "192.0.2.7", lookup, now=T0)
    # 101's valid password, but for AOR 102 -> 403 (Kamailio auth_check flag 1).
    chal = parse_challenge(d.headers[0][1])
    creds = answer_challenge(chal, "REGISTER", req.uri, "101", "secret101")
    req.headers.add("Authorization", str(creds))
    assert auth.check(req, "192.0.2.7", lookup, now=T0).status == 403


def test_auth_username_must_match_from_user_for_invite(auth: Authenticator) -> None:
    req = request("INVITE", user="200", from_user="102")
    d = auth.check(req, "192.0.2.7", lookup, now=T0)
    chal = parse_challenge(d.headers[0][1])
    assert chal.realm == "pbx.example"  # the From user's (102) md5 realm
    creds = answer_challenge(chal, "INVITE", req.uri, "101", "secret101")
    req.headers.add("Proxy-Authorization", str(creds))
    assert auth.check(req, "192.0.2.7", lookup, now=T0).status == 403


def test_auth_malformed_credentials_400(auth: Authenticator) -> None:
    req = request()
    req.headers.add("Authorization", 'Digest username="101", realm=')
    assert auth.check(req, "192.0.2.7", lookup, now=T0).status == 400


def test_auth_ack_cancel_and_trusted_sources_skip(auth: Authenticator) -> None:
    for method in ("ACK", "CANCEL"):
        assert auth.check(request(method), "192.0.2.7", lookup, now=T0).ok
        assert not auth.requires_auth(method, "192.0.2.7")
    trusted = Authenticator(AuthConfig(trusted_sources=frozenset({"10.0.0.1"})), SECRET)
    assert trusted.check(request("INVITE"), "10.0.0.1", lookup, now=T0).ok
    assert not trusted.requires_auth("INVITE", "10.0.0.1")
    assert trusted.requires_auth("INVITE", "10.0.0.2")
    assert not trusted.requires_auth("OPTIONS", "10.0.0.2")


def _fail(auth: Authenticator, user: str, ip: str, now: float) -> AuthDecision:
    req = request(user=user)
    d = auth.check(req, ip, lookup, now=now)
    if d.status != 401:
        return d
    return auth.check(with_answer(req, d, user, "wrong"), ip, lookup, now=now)


def test_auth_user_blocked_after_failures_then_released(auth: Authenticator) -> None:
    results = [_fail(auth, "101", f"192.0.2.{i}", T0 + i) for i in range(5)]
    assert [r.status for r in results] == [401, 401, 401, 401, 403]
    assert results[-1].blocked == ("user:101",)
    # Blocked: even the right password from a fresh address is refused.
    req = request()
    assert auth.check(req, "198.51.100.1", lookup, now=T0 + 10).status == 403
    assert auth.statistics(T0 + 10).blocked_now == 1
    assert auth.next_deadline() == T0 + 4 + 300
    later = T0 + 305
    d = auth.check(req, "198.51.100.1", lookup, now=later)
    assert d.status == 401
    assert auth.check(with_answer(req, d, "101", "secret101"), "198.51.100.1", lookup, now=later).ok


def test_auth_failures_outside_window_do_not_add_up(auth: Authenticator) -> None:
    statuses = [_fail(auth, "101", "192.0.2.1", T0 + 61 * i).status for i in range(8)]
    assert statuses == [401] * 8


def test_auth_source_blocked_after_failures_across_users(auth: Authenticator) -> None:
    statuses = [_fail(auth, f"9{i:02d}", "203.0.113.9", T0 + i).status for i in range(10)]
    assert statuses == [401] * 9 + [403]
    assert auth.check(request(), "203.0.113.9", lookup, now=T0 + 11).status == 403
    assert auth.check(request(), "203.0.113.10", lookup, now=T0 + 11).status == 401


def test_auth_consume_credentials_keeps_other_realms(auth: Authenticator) -> None:
    req = request("INVITE")
    d = auth.check(req, "192.0.2.7", lookup, now=T0)
    answered = with_answer(req, d, "101", "secret101")
    answered.headers.add(
        "Proxy-Authorization",
        'Digest username="x", realm="elsewhere", nonce="n", uri="sip:a", response="0"',
    )
    ok = auth.check(answered, "192.0.2.7", lookup, now=T0)
    assert ok.credentials is not None
    assert consume_credentials(answered, ok.credentials) == 1
    assert [v for v in answered.headers.get_all("Proxy-Authorization") if "elsewhere" in v]
    assert len(answered.headers.get_all("Proxy-Authorization")) == 1
