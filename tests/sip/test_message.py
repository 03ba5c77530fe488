"""Headers container, Request/Response, make_response and id helpers (router/sip/message.py)."""

from __future__ import annotations

import pytest

from router.sip import (
    Headers,
    Request,
    Response,
    SipParseError,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    reason_phrase,
)


def _invite() -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK3"),
            ("v", "SIP/2.0/TCP 10.0.0.4;branch=z9hG4bK4"),
            ("Max-Forwards", "70"),
            ("Route", "<sip:p1;lr>, <sip:p2;lr>"),
            ("From", "Alice <sip:alice@a.example>;tag=fa"),
            ("To", "<sip:bob@b.example>"),
            ("Call-ID", "cid-1@a.example"),
            ("CSeq", "7 INVITE"),
            ("Contact", "<sip:alice@10.0.0.2>"),
            ("Record-Route", "<sip:rr1;lr>"),
            ("Path", "<sip:edge;lr>"),
            ("Expires", "300"),
            ("Content-Type", "application/sdp"),
        ]
    )
    return Request("INVITE", "sip:bob@b.example", headers, b"v=0\r\n")


def test_message_headers_lookup_any_spelling() -> None:
    h = _invite().headers
    assert "via" in h
    assert "V" in h
    assert "CALL-ID" in h
    assert "Subject" not in h
    assert 5 not in h
    assert h.get("i") == "cid-1@a.example"
    assert h.get("x") is None
    assert h.get_all("VIA") == [
        "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK3",
        "SIP/2.0/TCP 10.0.0.4;branch=z9hG4bK4",
    ]
    assert len(h.values("via")) == 3
    assert list(h)[1] == ("v", "SIP/2.0/TCP 10.0.0.4;branch=z9hG4bK4")
    assert len(h) == 13


def test_message_headers_mutations() -> None:
    h = Headers([("A", "1"), ("Via", "v1"), ("B", "2"), ("via", "v2")])
    h.prepend("Via", "v0")
    assert list(h)[1] == ("Via", "v0")
    h.prepend("Record-Route", "<sip:x>")
    assert next(iter(h)) == ("Record-Route", "<sip:x>")
    h.set("VIA", "only")
    assert h.get_all("via") == ["only"]
    assert list(h)[2] == ("Via", "only")
    h.set("New", "n")
    assert list(h)[-1] == ("New", "n")
    assert h.remove("via") == 1
    assert h.remove("via") == 0
    h.add("Route", '<sip:a;lr>, "x,y" <sip:b;lr>')
    assert h.pop_first_value("route") == "<sip:a;lr>"
    assert h.get("route") == '"x,y" <sip:b;lr>'
    assert h.pop_first_value("route") == '"x,y" <sip:b;lr>'
    assert "route" not in h
    assert h.pop_first_value("route") is None


def test_message_headers_copy_is_independent() -> None:
    h = Headers([("A", "1")])
    c = h.copy()
    c.add("B", "2")
    assert len(h) == 1
    assert c != h
    assert Headers([("A", "1")]) == h


def test_message_typed_accessors() -> None:
    req = _invite()
    assert req.call_id == "cid-1@a.example"
    assert (req.cseq.seq, req.cseq.method) == (7, "INVITE")
    assert req.from_.display == "Alice"
    assert req.from_.tag == "fa"
    assert req.to.tag is None
    assert [v.branch for v in req.vias] == ["z9hG4bK2", "z9hG4bK3", "z9hG4bK4"]
    assert req.top_via.host == "10.0.0.2"
    assert req.max_forwards == 70
    assert [str(r.uri) for r in req.routes] == ["sip:p1;lr", "sip:p2;lr"]
    assert str(req.record_routes[0].uri) == "sip:rr1;lr"
    assert str(req.paths[0].uri) == "sip:edge;lr"
    assert str(req.contacts[0].uri) == "sip:alice@10.0.0.2"
    assert req.expires == 300
    assert req.content_length is None
    assert req.content_type == "application/sdp"
    assert str(req.request_uri) == "sip:bob@b.example"


def test_message_cache_cleared_on_mutation() -> None:
    req = _invite()
    assert req.top_via.branch == "z9hG4bK2"
    assert req.max_forwards == 70
    req.headers.pop_first_value("via")
    req.headers.set("Max-Forwards", "69")
    assert req.top_via.branch == "z9hG4bK3"
    assert req.max_forwards == 69
    returned = req.vias
    returned.clear()
    assert len(req.vias) == 2


def test_message_missing_required_raise_parse_error() -> None:
    req = Request("OPTIONS", "sip:x@y", Headers([("Max-Forwards", "abc")]))
    for attr in ("call_id", "cseq", "from_", "to", "top_via", "max_forwards"):
        with pytest.raises(SipParseError) as info:
            getattr(req, attr)
        assert info.value.status == 400
    assert req.vias == []
    assert req.contacts == []
    assert req.expires is None


def test_message_constructors_validate() -> None:
    with pytest.raises(ValueError, match="token"):
        Request("IN VITE", "sip:a@b", Headers())
    with pytest.raises(ValueError, match="Request-URI"):
        Request("INVITE", "", Headers())
    with pytest.raises(ValueError, match="status"):
        Response(99, "x", Headers())
    with pytest.raises(ValueError, match="CR/LF"):
        Response(200, "OK\r\nX: y", Headers())


def test_message_equality_and_copy() -> None:
    req = _invite()
    dup = req.copy()
    assert dup == req
    dup.headers.add("Subject", "x")
    assert dup != req
    assert "subject" not in req.headers
    dup2 = req.copy()
    dup2.headers.add("Content-Length", "5")
    assert dup2 == req  # Content-Length is framing, not compared
    assert req != "not a message"
    resp = make_response(req, 200)
    assert resp.copy() == resp
    assert resp != make_response(req, 200, "Fine")


def test_message_make_response_copies_rfc3261_8_2_6_2_fields() -> None:
    req = _invite()
    resp = make_response(req, 180, to_tag="tt", headers=[("Contact", "<sip:bob@10.0.0.9>")])
    assert (resp.status, resp.reason) == (180, "Ringing")
    names = [n for n, _ in resp.headers]
    assert names == ["Via", "v", "From", "To", "Call-ID", "CSeq", "Contact"]
    assert resp.vias == req.vias
    assert resp.to.tag == "tt"
    assert resp.from_ == req.from_
    assert resp.cseq == req.cseq
    assert resp.call_id == req.call_id
    assert resp.is_provisional
    assert not resp.is_final


def test_message_make_response_keeps_existing_to_tag() -> None:
    req = _invite()
    req.headers.set("To", "<sip:bob@b.example>;tag=orig")
    resp = make_response(req, 487, to_tag="new")
    assert resp.to.tag == "orig"
    assert resp.reason == "Request Terminated"
    assert resp.is_final
    assert not resp.is_success


def test_message_reason_phrases() -> None:
    assert reason_phrase(200) == "OK"
    assert reason_phrase(483) == "Too Many Hops"
    assert reason_phrase(513) == "Message Too Large"
    assert reason_phrase(499) == "Bad Request"  # unknown: the x00 of its class (§21)
    assert reason_phrase(299) == "OK"


def test_message_ids_are_fresh_and_well_formed() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(b.startswith("z9hG4bK") and len(b) > 7 for b in branches)
    assert new_tag() != new_tag()
    cid = new_call_id("host.example")
    assert cid.endswith("@host.example")
    assert new_call_id("h") != new_call_id("h")
