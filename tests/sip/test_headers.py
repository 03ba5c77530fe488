"""Header names and typed header values (router/sip/headers.py)."""

from __future__ import annotations

import pytest

from router.sip import (
    Contact,
    CSeq,
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    canonical_name,
    parse_contact_list,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_uri,
    parse_via_list,
)


@pytest.mark.parametrize(
    ("name", "canon"),
    [
        ("i", "call-id"),
        ("M", "contact"),
        ("f", "from"),
        ("T", "to"),
        ("v", "via"),
        ("l", "content-length"),
        ("c", "content-type"),
        ("k", "supported"),
        ("x", "session-expires"),
        ("CALL-ID", "call-id"),
        ("X-Custom", "x-custom"),
        ("q", "q"),
    ],
)
def test_headers_canonical_name(name: str, canon: str) -> None:
    assert canonical_name(name) == canon


def test_headers_name_addr_forms() -> None:
    quoted = parse_name_addr(
        '"Alice \\"A\\" Smith" <sip:alice@example.com;transport=tcp>;tag=abc;x'
    )
    assert quoted.display == 'Alice "A" Smith'
    assert isinstance(quoted.uri, SipUri)
    assert quoted.uri.params == (("transport", "tcp"),)
    assert quoted.tag == "abc"
    assert quoted.params == (("tag", "abc"), ("x", None))
    tokens = parse_name_addr("Bob  Jones <sip:bob@example.com>")
    assert tokens.display == "Bob  Jones"
    bare = parse_name_addr("sip:carol@example.com;tag=9")
    assert bare.display is None
    assert bare.tag == "9"
    assert isinstance(bare.uri, SipUri)
    assert bare.uri.params == ()


def test_headers_name_addr_wire_form_round_trips() -> None:
    na = NameAddr('Zoë "Z"', parse_uri("sip:z@example.com;lr"), (("tag", "1"),))
    assert str(na) == '"Zoë \\"Z\\"" <sip:z@example.com;lr>;tag=1'
    assert parse_name_addr(str(na)) == na
    assert na.with_tag("2").tag == "2"
    assert na.without_param("tag").params == ()
    assert na.with_param("x").params == (("tag", "1"), ("x", None))


@pytest.mark.parametrize(
    "value",
    [
        "",
        '"unterminated <sip:a@b>',
        "<sip:a@b",
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        '"x" sip:a@b',
        "<sip:a@b>junk",
        "<sip:a@b>;=x",
        "sip:a@b?x=y",
    ],
)
def test_headers_name_addr_rejects(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(value)


def test_headers_name_addr_list_respects_quotes_and_brackets() -> None:
    routes = parse_name_addr_list('<sip:p1.example.com;lr>, "a,b" <sip:p2;lr>,<sip:p3>')
    assert [str(r.uri) for r in routes] == ["sip:p1.example.com;lr", "sip:p2;lr", "sip:p3"]
    assert routes[1].display == "a,b"


def test_headers_contact_list_and_params() -> None:
    contacts = parse_contact_list(
        '<sip:a@h1>;expires=0600;q=0.7, "B" <sip:b@h2>;+sip.instance="<urn:x>"'
    )
    assert [c.expires for c in contacts] == [600, None]
    assert contacts[0].q == 0.7
    assert contacts[1].params == (("+sip.instance", '"<urn:x>"'),)
    star = parse_contact_list(" * ")
    assert star == [Contact.wildcard()]
    assert star[0].star
    assert str(star[0]) == "*"
    assert str(contacts[0]) == "<sip:a@h1>;expires=0600;q=0.7"
    with pytest.raises(SipParseError):
        _ = parse_contact_list("<sip:a@b>;q=2")[0].q
    with pytest.raises(SipParseError):
        _ = parse_contact_list("<sip:a@b>;expires=soon")[0].expires


def test_headers_contact_huge_expires_clamps() -> None:
    (contact,) = parse_contact_list("<sip:a@b>;expires=280297596632815")
    assert contact.expires == 2**32 - 1


def test_headers_via_forms() -> None:
    vias = parse_via_list(
        "SIP / 2.0 / UDP  host.example.com : 05060 ; branch = z9hG4bK1 ; rport ;received=10.0.0.1,"
        "SIP/2.0/TLS [2001:db8::1];rport=6000;ttl=16;maddr=224.0.0.1"
    )
    first, second = vias
    assert (first.protocol, first.transport, first.host, first.port) == (
        "SIP/2.0",
        "UDP",
        "host.example.com",
        5060,
    )
    assert first.branch == "z9hG4bK1"
    assert first.has_rport
    assert first.rport is None
    assert first.received == "10.0.0.1"
    assert second.sent_by() == ("[2001:db8::1]", 5061)
    assert second.rport == 6000
    assert second.ttl == 16
    assert second.maddr == "224.0.0.1"
    assert first.sent_by() == ("host.example.com", 5060)


def test_headers_via_wire_form_and_with_param() -> None:
    via = Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bKx"), ("rport", None)))
    assert str(via) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport"
    updated = via.with_param("rport", "5070").with_param("received", "192.0.2.1")
    assert str(updated) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport=5070;received=192.0.2.1"
    assert parse_via_list(str(updated)) == [updated]
    assert via.without_param("rport").params == (("branch", "z9hG4bKx"),)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host:99999",
        'SIP/2.0/UDP host;branch="quoted"',
        "SIP/2.0/UDP host, ,",
    ],
)
def test_headers_via_rejects(value: str) -> None:
    def parse_all() -> None:
        for via in parse_via_list(value):
            _ = via.rport, via.ttl

    with pytest.raises(SipParseError):
        parse_all()


def test_headers_cseq() -> None:
    assert parse_cseq(" 0009   INVITE ") == CSeq(9, "INVITE")
    assert str(CSeq(1, "ACK")) == "1 ACK"
    assert parse_cseq(f"{2**31 - 1} BYE").seq == 2**31 - 1
    for bad in ("", "INVITE", "1", "-1 INVITE", f"{2**31} INVITE", "1 INV ITE", "１ INVITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)
