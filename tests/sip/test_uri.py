"""URIs and parameter lists (router/sip/uri.py)."""

from __future__ import annotations

import pytest

from router.sip import (
    AbsoluteUri,
    SipParseError,
    SipUri,
    TelUri,
    del_param,
    get_param,
    has_param,
    parse_uri,
    set_param,
)


def test_uri_sip_all_parts() -> None:
    uri = parse_uri(
        "sips:alice:secret@Example.COM:5061;transport=TCP;lr;maddr=10.0.0.1?Subject=hi&X=1"
    )
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "Example.COM",
        5061,
    )
    assert uri.params == (("transport", "TCP"), ("lr", None), ("maddr", "10.0.0.1"))
    assert uri.headers == (("Subject", "hi"), ("X", "1"))
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.maddr == "10.0.0.1"
    assert (
        str(uri)
        == "sips:alice:secret@Example.COM:5061;transport=TCP;lr;maddr=10.0.0.1?Subject=hi&X=1"
    )


def test_uri_defaults_and_host_port() -> None:
    plain = parse_uri("sip:example.com")
    assert isinstance(plain, SipUri)
    assert plain.user is None
    assert plain.transport == "udp"
    assert not plain.lr
    assert plain.host_port() == ("example.com", 5060)
    secure = parse_uri("SIPS:example.com")
    assert isinstance(secure, SipUri)
    assert secure.scheme == "sips"
    assert secure.transport == "tls"
    assert secure.host_port() == ("example.com", 5061)


def test_uri_ipv6_reference_keeps_brackets() -> None:
    uri = parse_uri("sip:[2001:db8::10]:5070;transport=udp")
    assert isinstance(uri, SipUri)
    assert uri.host == "[2001:db8::10]"
    assert uri.port == 5070
    assert str(uri) == "sip:[2001:db8::10]:5070;transport=udp"
    bare = parse_uri("sip:bob@[::1]")
    assert isinstance(bare, SipUri)
    assert bare.host_port() == ("[::1]", 5060)


def test_uri_leading_zero_port() -> None:
    uri = parse_uri("sip:a@b:05060")
    assert isinstance(uri, SipUri)
    assert uri.port == 5060


def test_uri_escaped_user() -> None:
    uri = parse_uri("sip:%61lice%20x@example.com")
    assert isinstance(uri, SipUri)
    assert uri.user == "%61lice%20x"
    assert uri.user_unescaped == "alice x"


def test_uri_tel_and_absolute() -> None:
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert tel == TelUri("+1-201-555-0123", (("phone-context", "example.com"),))
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com"
    other = parse_uri("urn:service:sos")
    assert other == AbsoluteUri("urn", "urn:service:sos")
    assert str(other) == "urn:service:sos"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "example.com",
        ":x",
        "sip:",
        "sip:a@",
        "sip:@example.com",
        "sip:a@b@c",
        "sip:a b@c",
        "sip:a@b:port",
        "sip:a@b:70000",
        "sip:a@[::1",
        "sip:a@[::1]x",
        "sip:a@-bad-",
        "sip:a@b;=x",
        "sip:a@b?x",
        "sip:%zz@b",
        "sip:<a@b>",
        "1sip:a@b",
        "tel:",
    ],
)
def test_uri_rejects_malformed(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


def test_uri_with_changes() -> None:
    uri = parse_uri("sip:alice@example.com:5070")
    assert isinstance(uri, SipUri)
    changed = uri.with_(host="10.0.0.1", clear_port=True).with_param("lr")
    assert str(changed) == "sip:alice@10.0.0.1;lr"
    assert str(changed.without_param("LR")) == "sip:alice@10.0.0.1"
    with pytest.raises(ValueError, match="host"):
        SipUri("sip", host="")


def test_params_helpers_are_case_insensitive_and_ordered() -> None:
    params = (("Tag", "1"), ("lr", None))
    assert get_param(params, "tag") == "1"
    assert get_param(params, "lr") is None
    assert has_param(params, "LR")
    assert not has_param(params, "x")
    assert set_param(params, "TAG", "2") == (("Tag", "2"), ("lr", None))
    assert set_param(params, "new", None) == (("Tag", "1"), ("lr", None), ("new", None))
    assert del_param(params, "tag") == (("lr", None),)
