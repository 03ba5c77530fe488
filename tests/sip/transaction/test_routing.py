"""Response addressing (RFC 3261 §18.2.2, RFC 3581) and URI targets (RFC 3263 §4 minus DNS)."""

from __future__ import annotations

import pytest

from router.sip.headers import Via, parse_via_list
from router.sip.routing import add_received_rport, response_destination, uri_destination
from router.sip.uri import SipUri, parse_uri

SRC = ("198.51.100.7", 40000)


def via(text: str) -> Via:
    [v] = parse_via_list(text)
    return v


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain sent-by, default port 5060 (§18.2.2)
        ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", ("192.0.2.1", 5060)),
        ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1", ("192.0.2.1", 5070)),
        ("SIP/2.0/TLS example.com;branch=z9hG4bK1", ("example.com", 5061)),
        # received wins over the sent-by host, port still from sent-by
        (
            "SIP/2.0/UDP pc.example.com:5070;received=203.0.113.1;branch=z9hG4bK1",
            ("203.0.113.1", 5070),
        ),
        # RFC 3581: stamped rport -> received ip, rport port
        (
            "SIP/2.0/UDP 10.0.0.1:5060;received=198.51.100.7;rport=40000;branch=z9hG4bK1",
            ("198.51.100.7", 40000),
        ),
        # RFC 3581: bare rport, not stamped yet -> the packet's source
        ("SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1", SRC),
        # maddr first, port from sent-by
        (
            "SIP/2.0/UDP 10.0.0.1:5062;maddr=239.255.255.1;rport;branch=z9hG4bK1",
            ("239.255.255.1", 5062),
        ),
        # IPv6 sent-by loses its brackets
        ("SIP/2.0/UDP [2001:db8::1]:5080;branch=z9hG4bK1", ("2001:db8::1", 5080)),
    ],
)
def test_routing_response_destination(text: str, expected: tuple[str, int]) -> None:
    assert response_destination(via(text), SRC) == expected


def test_routing_add_received_rport_stamps_nat_client() -> None:
    stamped = add_received_rport(via("SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1"), SRC)
    assert stamped.received == "198.51.100.7"
    assert stamped.rport == 40000
    assert response_destination(stamped, ("192.0.2.200", 1)) == SRC


def test_routing_add_received_rport_only_received_when_host_differs() -> None:
    v = via("SIP/2.0/UDP pc.example.com:5060;branch=z9hG4bK1")
    stamped = add_received_rport(v, SRC)
    assert stamped.received == "198.51.100.7"
    assert not stamped.has_rport


def test_routing_add_received_rport_leaves_matching_via_alone() -> None:
    v = via("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1")
    assert add_received_rport(v, ("198.51.100.7", 5060)) is v


def test_routing_add_received_rport_with_rport_always_adds_received() -> None:
    # RFC 3581 §4: received is added "even if it is identical to the value of the sent-by".
    v = via("SIP/2.0/UDP 198.51.100.7:40000;rport;branch=z9hG4bK1")
    stamped = add_received_rport(v, SRC)
    assert stamped.received == "198.51.100.7"
    assert stamped.rport == 40000
    assert str(stamped).endswith(";rport=40000;branch=z9hG4bK1;received=198.51.100.7")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:bob@example.com", ("example.com", 5060, "udp")),
        ("sip:bob@192.0.2.2:5070;transport=TCP", ("192.0.2.2", 5070, "tcp")),
        ("sips:bob@example.com", ("example.com", 5061, "tls")),
        ("sip:bob@example.com;transport=tls", ("example.com", 5061, "tls")),
        ("sip:bob@example.com;maddr=192.0.2.9", ("192.0.2.9", 5060, "udp")),
        ("sip:[2001:db8::2]:5064", ("2001:db8::2", 5064, "udp")),
    ],
)
def test_routing_uri_destination(text: str, expected: tuple[str, int, str]) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert uri_destination(uri) == expected
