"""Digest authentication: grammar, RFC vectors, nonces, replay, stored HA1."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.sip.digest import (
    Algorithm,
    Challenge,
    Credentials,
    NonceCounter,
    NonceManager,
    NonceState,
    answer_challenge,
    compute_ha1,
    compute_response,
    maybe_select_challenge,
    parse_challenge,
    parse_credentials,
    verify,
)
from router.sip.errors import SipParseError

# RFC 2617 §3.5 (the realm is "testrealm@host.com", password "Circle Of Life").
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
    'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

# RFC 7616 §3.9.1 (password "Circle of Life", lowercase "of").
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_digest_rfc2617_example_response() -> None:
    creds = parse_credentials(RFC2617_AUTHORIZATION)
    assert creds.username == "Mufasa"
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.nc_value == 1
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert verify(creds, "GET", password="Circle Of Life")
    assert not verify(creds, "GET", password="Circle of Life")
    assert not verify(creds, "POST", password="Circle Of Life")


def test_digest_rfc2617_challenge_answer_reproduces_vector() -> None:
    challenge = parse_challenge(RFC2617_CHALLENGE)
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.effective_algorithm is Algorithm.MD5
    creds = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds.qop == "auth"
    assert creds.opaque == challenge.opaque
    assert parse_credentials(str(creds)) == creds


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_digest_rfc7616_example(algorithm: str, expected: str) -> None:
    value = (
        f'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        f'algorithm={algorithm}, nonce="{RFC7616_NONCE}", nc=00000001, '
        f'cnonce="{RFC7616_CNONCE}", qop=auth, response="{expected}", opaque="{RFC7616_OPAQUE}"'
    )
    creds = parse_credentials(value)
    assert verify(creds, "GET", password="Circle of Life")
    challenge = Challenge(
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        algorithm=Algorithm.from_token(algorithm),
        qop=("auth", "auth-int"),
        opaque=RFC7616_OPAQUE,
    )
    answer = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC7616_CNONCE
    )
    assert answer.response == expected


def test_digest_legacy_response_without_qop() -> None:
    # RFC 2617 §3.2.2.1: response = KD(H(A1), nonce ":" H(A2)) when no qop was offered.
    challenge = parse_challenge('Digest realm="asterisk", nonce="abc"')
    creds = answer_challenge(challenge, "REGISTER", "sip:example.com", "101", "pw")
    assert creds.qop is None
    assert creds.nc is None
    assert creds.cnonce is None
    ha1 = compute_ha1("101", "asterisk", "pw")
    ha2 = hashlib.md5(b"REGISTER:sip:example.com").hexdigest()
    assert creds.response == hashlib.md5(f"{ha1}:abc:{ha2}".encode()).hexdigest()
    assert verify(parse_credentials(str(creds)), "REGISTER", password="pw")


def test_digest_auth_int_hashes_body() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth-int",))
    creds = answer_challenge(challenge, "INVITE", "sip:a@b", "u", "p", body=b"v=0\r\n")
    assert creds.qop == "auth-int"
    assert verify(creds, "INVITE", password="p", body=b"v=0\r\n")
    assert not verify(creds, "INVITE", password="p", body=b"v=1\r\n")


@pytest.mark.parametrize(
    "algorithm",
    [Algorithm.MD5_SESS, Algorithm.SHA256_SESS, Algorithm.SHA512_256, Algorithm.SHA512_256_SESS],
)
def test_digest_other_algorithms_round_trip(algorithm: Algorithm) -> None:
    challenge = Challenge(realm="r", nonce="n", algorithm=algorithm, qop=("auth",))
    creds = answer_challenge(challenge, "REGISTER", "sip:r", "u", "secret", nc=7)
    parsed = parse_credentials(str(creds))
    assert parsed.algorithm is algorithm
    assert parsed.nc == "00000007"
    assert verify(parsed, "REGISTER", password="secret")
    assert not verify(parsed, "REGISTER", password="Secret")


def test_digest_session_ha1_differs_from_plain() -> None:
    ha1 = compute_ha1("u", "r", "p")
    plain = compute_response(
        ha1=ha1, method="M", uri="u", nonce="n", qop="auth", nc="00000001", cnonce="c"
    )
    sess = compute_response(
        ha1=ha1,
        method="M",
        uri="u",
        nonce="n",
        qop="auth",
        nc="00000001",
        cnonce="c",
        algorithm=Algorithm.MD5_SESS,
    )
    assert plain != sess
    with pytest.raises(ValueError, match="cnonce"):
        compute_response(ha1=ha1, method="M", uri="u", nonce="n", algorithm=Algorithm.MD5_SESS)


def test_digest_algorithm_tokens_case_insensitive() -> None:
    assert Algorithm.from_token("md5-SESS") is Algorithm.MD5_SESS
    assert Algorithm.from_token("sha-256") is Algorithm.SHA256
    assert parse_challenge('Digest realm="r", nonce="n", algorithm=sha-256-SESS').algorithm is (
        Algorithm.SHA256_SESS
    )
    with pytest.raises(SipParseError) as info:
        Algorithm.from_token("SHA-1")
    assert info.value.status == 400
    assert info.value.trigger == "unsupported_algorithm"


def test_digest_parse_any_order_escapes_and_unknown_params() -> None:
    value = (
        'digest  nonce="n\\"1", charset=UTF-8,realm="a \\\\ b" , ,qop=auth, '
        'stale=TRUE, domain="sip:x sip:y", userhash="false"'
    )
    challenge = parse_challenge(value)
    assert challenge.nonce == 'n"1'
    assert challenge.realm == "a \\ b"
    assert challenge.qop == ("auth",)
    assert challenge.stale
    assert challenge.domain == "sip:x sip:y"
    assert challenge.extra == (("charset", "UTF-8"), ("userhash", "false"))
    assert parse_challenge(str(challenge)) == challenge


def test_digest_challenge_str_shape() -> None:
    challenge = Challenge(realm="example.com", nonce="xyz", qop=("auth",), stale=True)
    assert str(challenge) == 'Digest realm="example.com", nonce="xyz", stale=true, qop="auth"'
    md5 = Challenge(realm="r", nonce="n", algorithm=Algorithm.MD5)
    assert str(md5) == 'Digest realm="r", nonce="n", algorithm=MD5'


def test_digest_credentials_quoted_qop_and_uppercase_nc_accepted() -> None:
    creds = parse_credentials(
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="00", '
        'qop="auth", nc=0000000A, cnonce="c"'
    )
    assert creds.qop == "auth"
    assert creds.nc_value == 10


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic dXNlcjpwYXNz",
        "Digest",
        'Digest realm="r"',
        'Digest realm="r", nonce="unterminated',
        'Digest realm="r" nonce="n"',
        'Digest realm="r", nonce="n", realm="s"',
        'Digest realm="r", nonce="n", =x',
        'Digest realm="r", nonce="n", algorithm=AKAv1-MD5',
        'Digest realm=r"x", nonce="n"',
    ],
)
def test_digest_parse_challenge_garbage_raises_400(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_challenge(value)
    assert info.value.status == 400


_GOOD = 'Digest username="u", realm="r", nonce="n", uri="sip:r", response="0"'


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r", nonce="n", uri="sip:r", response="0"',
        _GOOD + ", qop=auth",
        _GOOD + ', qop=auth, nc=1, cnonce="c"',
        _GOOD + ', qop=auth-conf, nc=00000001, cnonce="c"',
        _GOOD + ", nc=00000001",
        _GOOD + ", algorithm=MD5-sess",
        _GOOD + ", response=x",
        "Digest username=\u00e9\x00",
    ],
)
def test_digest_parse_credentials_garbage_raises_400(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_credentials(value)
    assert info.value.status == 400


def test_digest_verify_non_ascii_response_is_false_not_error() -> None:
    creds = parse_credentials(_GOOD.replace('response="0"', 'response="\u00e9"'))
    assert not verify(creds, "REGISTER", password="p")


def test_digest_verify_needs_exactly_one_secret() -> None:
    creds = parse_credentials(_GOOD)
    with pytest.raises(ValueError, match="exactly one"):
        verify(creds, "REGISTER")
    with pytest.raises(ValueError, match="exactly one"):
        verify(creds, "REGISTER", password="p", ha1="00")


def test_digest_md5_cred_ha1_path() -> None:
    # Asterisk ps_auths.md5_cred = MD5("user:realm:password") for one realm.
    md5_cred = compute_ha1("101", "asterisk", "s3cret")
    challenge = Challenge(realm="asterisk", nonce="n1", qop=("auth",))
    creds = answer_challenge(challenge, "REGISTER", "sip:asterisk", "101", "s3cret")
    assert verify(creds, "REGISTER", ha1=md5_cred)
    assert verify(creds, "REGISTER", ha1=md5_cred.upper(), realm="asterisk")
    assert not verify(creds, "REGISTER", ha1=md5_cred, realm="other")
    # Same password, other realm: the stored HA1 cannot serve it.
    other = answer_challenge(
        Challenge(realm="other", nonce="n1"), "REGISTER", "sip:x", "101", "s3cret"
    )
    assert verify(other, "REGISTER", password="s3cret")
    assert not verify(other, "REGISTER", ha1=md5_cred)
    # MD5-sess derives from the base HA1, so the stored form still works.
    sess = answer_challenge(
        Challenge(realm="asterisk", nonce="n", algorithm=Algorithm.MD5_SESS),
        "REGISTER",
        "sip:x",
        "101",
        "s3cret",
    )
    assert verify(sess, "REGISTER", ha1=md5_cred)
    # A SHA-256 response cannot be checked against an MD5 HA1.
    sha = answer_challenge(
        Challenge(realm="asterisk", nonce="n", algorithm=Algorithm.SHA256),
        "REGISTER",
        "sip:x",
        "101",
        "s3cret",
    )
    assert not verify(sha, "REGISTER", ha1=md5_cred)
    assert verify(sha, "REGISTER", password="s3cret")


def test_digest_select_challenge_prefers_first_supported() -> None:
    headers = [
        'Digest realm="r", nonce="n", algorithm=SHA-512',
        "Basic realm=x",
        'Digest realm="r", nonce="n", algorithm=SHA-256',
        'Digest realm="r", nonce="n"',
    ]
    chosen = maybe_select_challenge(headers)
    assert chosen is not None
    assert chosen.algorithm is Algorithm.SHA256
    assert maybe_select_challenge(["Basic realm=x"]) is None


# --- Nonces -----------------------------------------------------------------------------------


def test_nonce_valid_then_stale() -> None:
    manager = NonceManager(b"k" * 32, lifetime=30.0)
    nonce = manager.new_nonce(1000.0)
    assert manager.check(nonce, 1000.0) is NonceState.VALID
    assert manager.check(nonce, 1030.0) is NonceState.VALID
    assert manager.check(nonce, 1030.5) is NonceState.STALE
    assert manager.check(nonce, 99999.0) is NonceState.STALE


def test_nonce_shared_secret_verifies_on_other_instance() -> None:
    nonce = NonceManager(b"shared", 60).new_nonce(5.0)
    assert NonceManager(b"shared", 60).check(nonce, 6.0) is NonceState.VALID
    assert NonceManager(b"other", 60).check(nonce, 6.0) is NonceState.INVALID


def test_nonce_unique() -> None:
    manager = NonceManager(b"k", 30)
    assert len({manager.new_nonce(1.0) for _ in range(100)}) == 100


def test_nonce_tampered_is_invalid() -> None:
    manager = NonceManager(b"k", 30)
    nonce = manager.new_nonce(100.0)
    for i in range(len(nonce)):
        flipped = "A" if nonce[i] != "A" else "B"
        tampered = nonce[:i] + flipped + nonce[i + 1 :]
        # The last character carries only 2 significant bits of the MAC: a flip there may
        # decode to the same bytes, which is then (correctly) still the same nonce.
        if manager.check(tampered, 100.0) is not NonceState.INVALID:
            assert i == len(nonce) - 1
    for garbage in ["", "x", "!!!!", "\u00e9" * 43, nonce + "AAAA", nonce[:-4]]:
        assert manager.check(garbage, 100.0) is NonceState.INVALID


def test_nonce_bound_to_extra() -> None:
    manager = NonceManager(b"k", 30)
    nonce = manager.new_nonce(0.0, extra="call-id-1|10.0.0.1")
    assert manager.check(nonce, 1.0, extra="call-id-1|10.0.0.1") is NonceState.VALID
    assert manager.check(nonce, 1.0, extra="call-id-2|10.0.0.1") is NonceState.INVALID
    assert manager.check(nonce, 1.0) is NonceState.INVALID


def test_nonce_from_the_future_is_invalid() -> None:
    manager = NonceManager(b"k", 30)
    nonce = manager.new_nonce(100.0)
    assert manager.check(nonce, 98.0) is NonceState.VALID  # within MAX_DRIFT
    assert manager.check(nonce, 90.0) is NonceState.INVALID


def test_nonce_manager_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="secret"):
        NonceManager(b"", 30)
    with pytest.raises(ValueError, match="lifetime"):
        NonceManager(b"k", 0)


def test_nonce_counter_replay_rejected() -> None:
    counter = NonceCounter(ttl=30)
    assert counter.advance("n1", 1, now=0.0)
    assert counter.advance("n1", 2, now=1.0)
    assert not counter.advance("n1", 2, now=2.0)
    assert not counter.advance("n1", 1, now=2.0)
    assert counter.advance("n1", 5, now=3.0)
    assert counter.advance("n2", 1, now=3.0)
    stats = counter.statistics()
    assert stats.replays == 2
    assert stats.tracked == 2


def test_nonce_counter_expires_idle_entries() -> None:
    counter = NonceCounter(ttl=10)
    counter.advance("a", 1, now=0.0)
    counter.advance("b", 1, now=5.0)
    assert counter.prune(10.0) == 0
    assert counter.prune(10.5) == 1
    assert counter.statistics().tracked == 1
    # "a" was forgotten (its nonce would be STALE by now anyway): nc 1 is accepted again.
    assert counter.advance("a", 1, now=11.0)


def test_nonce_counter_bounded_lru() -> None:
    counter = NonceCounter(ttl=1000, max_entries=3)
    for i, name in enumerate("abc"):
        counter.advance(name, 1, now=float(i))
    counter.advance("a", 2, now=3.0)  # "a" becomes most recent; "b" is now the oldest
    counter.advance("d", 1, now=4.0)
    stats = counter.statistics()
    assert stats.tracked == 3
    assert stats.evicted == 1
    assert not counter.advance("a", 2, now=5.0)
    assert counter.advance("b", 1, now=5.0)  # evicted: history lost (documented window)


def test_digest_server_flow_end_to_end() -> None:
    """Challenge -> answer -> parse -> nonce check -> nc check -> verify."""
    manager = NonceManager(b"secret", lifetime=30)
    counter = NonceCounter(ttl=30)
    challenge = Challenge(realm="siplab", nonce=manager.new_nonce(10.0), qop=("auth",))
    wire = str(parse_challenge(str(challenge)))
    creds: Credentials = answer_challenge(
        parse_challenge(wire), "REGISTER", "sip:siplab", "100", "pw"
    )
    received = parse_credentials(str(creds))
    assert manager.check(received.nonce, 12.0) is NonceState.VALID
    assert received.nc_value is not None
    assert counter.advance(received.nonce, received.nc_value, 12.0)
    assert verify(received, "REGISTER", password="pw", realm="siplab")
    # The same Authorization replayed: the counter refuses it.
    assert not counter.advance(received.nonce, received.nc_value, 13.0)
    # After the lifetime the nonce is STALE: the server re-challenges with stale=true.
    assert manager.check(received.nonce, 41.0) is NonceState.STALE


# --- Untrusted input: parse or raise SipParseError, nothing else ---------------------------------

_DIGEST_TEXT = st.text(
    alphabet=st.sampled_from(list('Digest realm="nonce=,\\ \t;:/@qop=auth-int ncMD5\u00e9\x00')),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), _DIGEST_TEXT.map(lambda s: "Digest " + s)))
def test_digest_parsers_raise_only_sip_parse_error(value: str) -> None:
    statuses = []
    for parse in (parse_challenge, parse_credentials):
        try:
            parsed = parse(value)
        except SipParseError as exc:
            statuses.append(exc.status)
        else:
            assert parse(str(parsed)) == parsed
    assert set(statuses) <= {400}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_nonce_check_never_raises(nonce: str) -> None:
    assert NonceManager(b"k", 30).check(nonce, 0.0) is NonceState.INVALID
