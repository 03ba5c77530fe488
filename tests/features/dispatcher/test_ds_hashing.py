"""ds_get_hash and the URI hash keys against Kamailio.

The expected numbers come from compiling Kamailio's ``ds_get_hash`` (dispatch.c) verbatim with
gcc on x86-64 (signed char) and running it on the same inputs.
"""

from __future__ import annotations

import pytest

from router.features.dispatcher import ds_get_hash, hash_uri, uri_hash_keys


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ("abc", None, 7167810),
        ("abcd", None, 1834959896),
        ("a84b4c76e66710@pc33.atlanta.com", None, 2175018094),
        ("alice", "atlanta.com", 1053853112),
        ("bob", "10.0.0.1:5080", 2701604707),
        ("café", "ñandú", 711651847),  # bytes >= 0x80 are sign-extended (C char)
        ("", None, 1),  # h == 0 -> 1
        ("0123456789abcdef", "x", 389381356),
    ],
)
def test_ds_get_hash_matches_kamailio(x: str, y: str | None, expected: int) -> None:
    assert ds_get_hash(x, y) == expected


def test_ds_get_hash_of_nothing_is_zero() -> None:
    assert ds_get_hash(None, None) == 0


def test_ds_get_hash_is_32_bit() -> None:
    assert all(0 < ds_get_hash(f"call-{i}@host") < 2**32 for i in range(500))


@pytest.mark.parametrize(
    ("uri", "keys"),
    [
        ("sip:alice@atlanta.com", ("alice", "atlanta.com")),
        ("sip:alice@atlanta.com:5060", ("alice", "atlanta.com")),
        ("sip:alice@atlanta.com:5080", ("alice", "atlanta.com:5080")),
        ("sip:alice@atlanta.com:5061", ("alice", "atlanta.com:5061")),
        ("sips:alice@atlanta.com:5061", ("alice", "atlanta.com")),
        ("sips:alice@atlanta.com:5060", ("alice", "atlanta.com:5060")),
        ("sip:atlanta.com;transport=tcp", (None, "atlanta.com")),
        ("sip:alice@[2001:db8::1]:5070", ("alice", "[2001:db8::1]:5070")),
    ],
)
def test_uri_hash_keys_user_host_and_non_default_port(
    uri: str, keys: tuple[str | None, str]
) -> None:
    assert uri_hash_keys(uri) == keys


def test_uri_hash_ignores_params_and_default_port() -> None:
    assert hash_uri("sip:alice@atlanta.com;transport=tcp") == hash_uri("sip:alice@atlanta.com:5060")
    assert hash_uri("sip:alice@atlanta.com:5080") != hash_uri("sip:alice@atlanta.com")


def test_uri_hash_user_only_flag() -> None:
    assert uri_hash_keys("sip:alice@atlanta.com:5080", user_only=True) == ("alice", None)
    assert hash_uri("sip:alice@a.com", user_only=True) == hash_uri(
        "sip:alice@b.com", user_only=True
    )


@pytest.mark.parametrize("uri", [None, "tel:+15551234", "not a uri", "http://x"])
def test_uri_hash_without_sip_uri_is_none(uri: str | None) -> None:
    assert hash_uri(uri) is None
