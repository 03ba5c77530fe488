"""parse_untrusted / serialize: framing, folding, required headers, statuses."""

from __future__ import annotations

import pytest

from router.sip import (
    Headers,
    Request,
    Response,
    SipParseError,
    new_branch,
    parse_untrusted,
    serialize,
)


def _request(*extra: tuple[str, str], method: str = "OPTIONS", body: bytes = b"") -> Request:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "abc@192.0.2.1"),
            ("CSeq", f"1 {method}"),
            *extra,
        ]
    )
    return Request(method, "sip:bob@example.com", headers, body)


def _wire(*extra: tuple[str, str], method: str = "OPTIONS", body: bytes = b"") -> bytes:
    return serialize(_request(*extra, method=method, body=body))


def test_parser_round_trip_request() -> None:
    req = _request(("Content-Type", "application/sdp"), method="INVITE", body=b"v=0\r\n")
    parsed = parse_untrusted(serialize(req))
    assert parsed == req
    assert isinstance(parsed, Request)
    assert parsed.content_length == 5
    assert parsed.content_type == "application/sdp"


def test_parser_serialize_writes_content_length_once_and_correct() -> None:
    req = _request(("Content-Length", "99"), ("l", "3"), body=b"abc")
    wire = serialize(req)
    assert wire.count(b"Content-Length") == 1
    assert b"Content-Length: 3\r\n" in wire
    assert b"\r\nl:" not in wire
    assert wire.endswith(b"\r\n\r\nabc")


def test_parser_serialize_keeps_leading_zero_length_when_correct() -> None:
    wire = serialize(_request(("Content-Length", "0003"), body=b"abc"))
    assert b"Content-Length: 0003\r\n" in wire


def test_parser_skips_leading_crlf() -> None:
    assert isinstance(parse_untrusted(b"\r\n\r\n" + _wire()), Request)


def test_parser_unfolds_continuation_lines() -> None:
    wire = _wire(("Subject", "first")).replace(b"Subject: first", b"Subject: first\r\n \t second")
    assert parse_untrusted(wire).headers.get("subject") == "first second"


def test_parser_body_longer_than_content_length_is_truncated() -> None:
    wire = _wire(body=b"abc") + b"garbage"
    assert parse_untrusted(wire).body == b"abc"


def test_parser_body_shorter_than_content_length_is_400() -> None:
    wire = _wire(body=b"abcdef")[:-2]
    with pytest.raises(SipParseError) as info:
        parse_untrusted(wire)
    assert info.value.status == 400
    assert info.value.trigger == "body_truncated"
    assert info.value.can_reply


def test_parser_without_content_length_takes_rest_of_datagram() -> None:
    req = _request(body=b"xyz")
    wire = serialize(req).replace(b"Content-Length: 3\r\n", b"")
    parsed = parse_untrusted(wire)
    assert parsed.body == b"xyz"
    assert parsed.content_length is None


def test_parser_body_bytes_need_not_be_utf8() -> None:
    assert parse_untrusted(_wire(body=b"\xff\x00\xfe")).body == b"\xff\x00\xfe"


def test_parser_bad_utf8_in_headers_is_400() -> None:
    wire = _wire(("Subject", "x")).replace(b"Subject: x", b"Subject: \xff\xfe")
    with pytest.raises(SipParseError) as info:
        parse_untrusted(wire)
    assert info.value.trigger == "bad_utf8"


def test_parser_utf8_display_name() -> None:
    wire = _wire().replace(b"From: <sip:alice", 'From: "Zoë Ünïcode" <sip:alice'.encode())
    assert parse_untrusted(wire).from_.display == "Zoë Ünïcode"


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_parser_missing_required_header_is_400(missing: str) -> None:
    req = _request()
    req.headers.remove(missing)
    with pytest.raises(SipParseError) as info:
        parse_untrusted(serialize(req))
    assert info.value.status == 400
    assert info.value.trigger == "missing_header"
    assert not info.value.can_reply


def test_parser_max_forwards_is_optional() -> None:
    req = _request()
    req.headers.remove("Max-Forwards")
    assert parse_untrusted(serialize(req)).max_forwards is None


def test_parser_cseq_method_must_match() -> None:
    req = _request()
    req.headers.set("CSeq", "1 INVITE")
    with pytest.raises(SipParseError) as info:
        parse_untrusted(serialize(req))
    assert info.value.trigger == "cseq_method"
    assert info.value.can_reply


def test_parser_version_other_than_2_0_is_505() -> None:
    wire = _wire().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    with pytest.raises(SipParseError) as info:
        parse_untrusted(wire)
    assert info.value.status == 505
    assert info.value.reason == "Version Not Supported"


def test_parser_version_is_case_insensitive() -> None:
    wire = _wire().replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1)
    assert parse_untrusted(wire).version == "sip/2.0"


@pytest.mark.parametrize(
    "start",
    [
        b"OPTIONS sip:bob@example.com",
        b"OPTIONS  sip:bob@example.com SIP/2.0",
        b"OPT<IONS x SIP/2.0",
    ],
)
def test_parser_bad_request_line_is_400(start: bytes) -> None:
    wire = _wire()
    wire = start + wire[wire.index(b"\r\n") :]
    with pytest.raises(SipParseError) as info:
        parse_untrusted(wire)
    assert info.value.status == 400


def test_parser_unknown_request_uri_scheme_still_parses() -> None:
    wire = _wire().replace(b"sip:bob@example.com SIP/2.0", b"urn:service:sos SIP/2.0", 1)
    parsed = parse_untrusted(wire)
    assert isinstance(parsed, Request)
    assert parsed.uri == "urn:service:sos"


def test_parser_response_round_trip_and_status_checks() -> None:
    resp = Response(180, "Ringing", _request().headers.copy())
    parsed = parse_untrusted(serialize(resp))
    assert isinstance(parsed, Response)
    assert parsed == resp
    assert parsed.is_provisional
    assert not parsed.is_final
    for bad in (b"SIP/2.0 1800 Ringing", b"SIP/2.0 099 Low", b"SIP/2.0 abc OK"):
        wire = serialize(resp)
        with pytest.raises(SipParseError) as info:
            parse_untrusted(bad + wire[wire.index(b"\r\n") :])
        assert not info.value.can_reply


def test_parser_ipv6_via_and_uri() -> None:
    req = _request()
    req.headers.set("Via", "SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKx;received=2001:db8::2")
    req.uri = "sip:bob@[::1]:5062;transport=tcp"
    parsed = parse_untrusted(serialize(req))
    assert parsed.top_via.sent_by() == ("[2001:db8::1]", 5070)
    assert parsed.top_via.received == "2001:db8::2"
    assert isinstance(parsed, Request)
    assert parsed.request_uri.host_port() == ("[::1]", 5062)  # type: ignore[union-attr]


def test_parser_header_name_case_and_compact_forms() -> None:
    wire = (
        _wire().replace(b"Call-ID:", b"i:").replace(b"Via:", b"VIA:").replace(b"CSeq:", b"cseq  :")
    )
    parsed = parse_untrusted(wire)
    assert parsed.call_id == "abc@192.0.2.1"
    assert parsed.cseq.seq == 1


def test_parser_repeated_and_comma_separated_vias() -> None:
    req = _request()
    req.headers.add("Via", "SIP/2.0/TCP b.example.com;branch=z9hG4bK2, SIP/2.0/TLS c.example.com")
    parsed = parse_untrusted(serialize(req))
    assert [v.transport for v in parsed.vias] == ["UDP", "TCP", "TLS"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n: novalue\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n folded-first\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nX: a\nb\r\n\r\n",
    ],
)
def test_parser_garbage_raises_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_untrusted(data)
