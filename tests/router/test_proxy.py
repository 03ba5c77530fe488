"""RFC 3261 §16 proxy rules and Kamailio-style dispatch, through RouterCore with explicit time."""

from __future__ import annotations

from router.sip import Request, Response
from tests.router.harness import PBX, UAC, RouterHarness, answer, invite


def _requests(sent: list, method: str) -> list:
    return [s for s in sent if isinstance(s.message, Request) and s.message.method == method]


def _responses(sent: list, status: int | None = None) -> list:
    return [
        s
        for s in sent
        if isinstance(s.message, Response) and (status is None or s.message.status == status)
    ]


def test_proxy_invite_forwarded_with_100_record_route_and_max_forwards() -> None:
    h = RouterHarness.build()
    out = h.feed(invite())
    trying = _responses(out, 100)
    assert len(trying) == 1 and trying[0].dest == UAC
    fwd = _requests(out, "INVITE")
    assert len(fwd) == 1
    req = fwd[0].message
    # Kamailio order: equal priorities in reverse load order, round robin from index 0.
    assert fwd[0].dest == PBX[1]
    assert req.uri == "sip:600@127.0.0.10:5060"  # ds_select_dst keeps the R-URI
    assert req.max_forwards == 69
    assert req.headers.values("record-route")[0] == "<sip:127.0.0.10:5060;lr>"
    vias = req.vias
    assert (vias[0].host, vias[0].port) == ("127.0.0.10", 5060)
    assert vias[0].branch.startswith("z9hG4bK")
    # The upstream Via was stamped with received/rport (RFC 3581).
    assert vias[1].received == UAC[0] and vias[1].rport == UAC[1]


def test_proxy_max_forwards_zero_is_483_and_missing_is_added() -> None:
    h = RouterHarness.build()
    out = h.feed(invite(max_forwards=0))
    assert [s.message.status for s in _responses(out) if s.message.status >= 200] == [483]
    assert not _requests(out, "INVITE")
    out = h.feed(invite("c2", max_forwards=None))
    assert _requests(out, "INVITE")[0].message.max_forwards == 70


def test_proxy_provisional_forwarded_100_absorbed_and_own_via_removed() -> None:
    h = RouterHarness.build(nodes=1)
    fwd = _requests(h.feed(invite()), "INVITE")[0].message
    assert h.feed(answer(fwd, 100), PBX[0]) == []
    out = h.feed(answer(fwd, 180), PBX[0])
    assert [s.message.status for s in out] == [180]
    assert out[0].dest == UAC
    assert len(out[0].message.vias) == 1
    assert out[0].message.vias[0].host == UAC[0]


def test_proxy_2xx_forwarded_and_ack_routed_by_route_set() -> None:
    h = RouterHarness.build(nodes=1)
    fwd = _requests(h.feed(invite()), "INVITE")[0].message
    ok = h.feed(answer(fwd, 200), PBX[0])
    assert [s.message.status for s in ok] == [200]
    assert ok[0].message.headers.values("record-route") == ["<sip:127.0.0.10:5060;lr>"]
    # The UAC's ACK follows the route set: Route to us, R-URI = remote target.
    ack = invite(
        to_tag="uas1", route="<sip:127.0.0.10:5060;lr>", uri="sip:600@127.0.0.11:5060", method="ACK"
    )
    out = h.feed(ack)
    acks = _requests(out, "ACK")
    assert len(acks) == 1 and acks[0].dest == PBX[0]
    assert acks[0].message.routes == []  # our Route consumed
    bye = invite(
        to_tag="uas1",
        route="<sip:127.0.0.10:5060;lr>",
        uri="sip:600@127.0.0.11:5060",
        method="BYE",
        cseq=2,
    )
    out = h.feed(bye)
    byes = _requests(out, "BYE")
    assert len(byes) == 1 and byes[0].dest == PBX[0]
    out = h.feed(answer(byes[0].message, 200), PBX[0])
    assert [s.message.status for s in out] == [200] and out[0].dest == UAC


def test_proxy_non_2xx_acked_hop_by_hop_and_upstream_ack_absorbed() -> None:
    h = RouterHarness.build(nodes=1)
    fwd = _requests(h.feed(invite(branch="z9hG4bKup1")), "INVITE")[0].message
    out = h.feed(answer(fwd, 486), PBX[0])
    acks = _requests(out, "ACK")
    assert len(acks) == 1 and acks[0].dest == PBX[0]
    assert acks[0].message.top_via.branch == fwd.top_via.branch  # §17.1.1.3
    assert [s.message.status for s in _responses(out)] == [486]
    upstream_ack = invite(branch="z9hG4bKup1", method="ACK", to_tag="uas1")
    assert _requests(h.feed(upstream_ack), "ACK") == []


def test_proxy_503_fails_over_to_next_node_then_200() -> None:
    h = RouterHarness.build(nodes=2)
    first = _requests(h.feed(invite()), "INVITE")[0]
    out = h.feed(answer(first.message, 503), first.dest)
    retry = _requests(out, "INVITE")
    assert len(retry) == 1 and retry[0].dest != first.dest
    assert not [s for s in _responses(out) if s.message.status >= 200 and s.dest == UAC]
    out = h.feed(answer(retry[0].message, 200, to_tag="uas2"), retry[0].dest)
    assert [s.message.status for s in _responses(out) if s.dest == UAC] == [200]
    # A node that answered 503 is alive: it stays in the set (only silent nodes are marked).
    states = {row["uri"]: row["flags"] for row in h.core.status()["dispatcher"]}
    assert states[f"sip:{first.dest[0]}:{first.dest[1]}"].startswith("A")


def test_proxy_503_from_only_node_goes_upstream_as_500() -> None:
    h = RouterHarness.build(nodes=1)
    first = _requests(h.feed(invite()), "INVITE")[0]
    out = h.feed(answer(first.message, 503), first.dest)
    assert [s.message.status for s in _responses(out) if s.dest == UAC] == [500]


def test_proxy_silent_node_fails_over_after_fr_timer() -> None:
    h = RouterHarness.build(nodes=2, fr_timer=2.0)
    first = _requests(h.feed(invite()), "INVITE")[0]
    out = h.advance(1.9)
    assert not [s for s in _requests(out, "INVITE") if s.dest != first.dest]
    out = h.advance(0.2)
    retry = [s for s in _requests(out, "INVITE") if s.dest != first.dest]
    assert len(retry) == 1
    # The silent node was marked inactive at once (ds_mark_dst("ip")).
    states = {row["uri"]: row["flags"] for row in h.core.status()["dispatcher"]}
    assert states[f"sip:{first.dest[0]}:{first.dest[1]}"].startswith("I")


def test_proxy_cancel_after_provisional_forwards_cancel_and_487() -> None:
    h = RouterHarness.build(nodes=1)
    inv = invite(branch="z9hG4bKc1")
    fwd = _requests(h.feed(inv), "INVITE")[0].message
    h.feed(answer(fwd, 180), PBX[0])
    cancel = invite(branch="z9hG4bKc1", method="CANCEL")
    out = h.feed(cancel)
    assert [s.message.status for s in _responses(out)] == [200]
    cancels = _requests(out, "CANCEL")
    assert len(cancels) == 1 and cancels[0].dest == PBX[0]
    assert cancels[0].message.top_via.branch == fwd.top_via.branch  # §9.1
    out = h.feed(answer(fwd, 487), PBX[0])
    assert [s.message.status for s in _responses(out) if s.dest == UAC] == [487]


def test_proxy_cancel_before_provisional_waits_for_one() -> None:
    h = RouterHarness.build(nodes=1)
    fwd = _requests(h.feed(invite(branch="z9hG4bKc2")), "INVITE")[0].message
    out = h.feed(invite(branch="z9hG4bKc2", method="CANCEL"))
    assert _requests(out, "CANCEL") == []  # §9.1: not before a provisional
    out = h.feed(answer(fwd, 100), PBX[0])
    assert len(_requests(out, "CANCEL")) == 1


def test_proxy_unknown_cancel_gets_481() -> None:
    h = RouterHarness.build()
    out = h.feed(invite(method="CANCEL"))
    assert [s.message.status for s in _responses(out)] == [481]


def test_proxy_retransmitted_invite_absorbed() -> None:
    h = RouterHarness.build()
    inv = invite(branch="z9hG4bKr1")
    assert len(_requests(h.feed(inv), "INVITE")) == 1
    out = h.feed(invite(branch="z9hG4bKr1"))
    assert _requests(out, "INVITE") == []
    assert [s.message.status for s in out] == [100]


def test_proxy_round_robin_alternates_nodes() -> None:
    h = RouterHarness.build(algorithm="round_robin", nodes=3)
    dests = [_requests(h.feed(invite(f"rr{i}")), "INVITE")[0].dest for i in range(6)]
    assert len(set(dests[:3])) == 3
    assert dests[:3] == dests[3:]


def test_proxy_keepalive_options_to_router_answered() -> None:
    h = RouterHarness.build()
    out = h.feed(invite(method="OPTIONS", uri="sip:127.0.0.10:5060"))
    assert [s.message.status for s in out] == [200]


def test_proxy_loop_detected_482() -> None:
    h = RouterHarness.build(nodes=1)
    fwd = _requests(h.feed(invite("loop")), "INVITE")[0].message
    # The same request comes back to us (e.g. a misconfigured node sends it back).
    fwd.headers.remove("record-route")
    out = h.feed(fwd, PBX[0])
    assert [s.message.status for s in _responses(out) if s.message.status >= 200] == [482]


def test_proxy_garbage_dropped_and_counted_bad_request_answered_400() -> None:
    h = RouterHarness.build()
    assert h.feed(b"\x00\xffnot sip at all\r\n\r\n") == []
    assert sum(h.core.drops.values()) >= 1
    bad = (
        b"INVITE sip:600@127.0.0.10 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKb1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:600@x>\r\nCall-ID: x1\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 50\r\n\r\nshort"
    )
    out = h.feed(bad)
    assert [s.message.status for s in out] == [400]


def test_proxy_dialogs_counted_from_2xx_until_bye() -> None:
    h = RouterHarness.build(nodes=1)
    fwd = _requests(h.feed(invite("d1")), "INVITE")[0].message
    assert h.core.status()["dialogs"]["active"] == 0
    h.feed(answer(fwd, 200), PBX[0])
    status = h.core.status()["dialogs"]
    assert status["active"] == 1
    assert status["per_destination"] == {f"sip:{PBX[0][0]}:{PBX[0][1]}": 1}
    bye = invite(
        "d1",
        to_tag="uas1",
        route="<sip:127.0.0.10:5060;lr>",
        uri="sip:600@127.0.0.11:5060",
        method="BYE",
        cseq=2,
    )
    h.feed(bye)
    assert h.core.status()["dialogs"]["active"] == 0
    assert h.core.status()["dialogs"]["ended_total"] == 1


def test_proxy_call_load_counts_calls_until_they_end() -> None:
    h = RouterHarness.build(algorithm="call_load", nodes=2)
    first = _requests(h.feed(invite("l1")), "INVITE")[0]
    second = _requests(h.feed(invite("l2")), "INVITE")[0]
    # Least-loaded: the second call goes to the other node.
    assert first.dest != second.dest
    h.feed(answer(first.message, 200), first.dest)
    # The second call fails: its load is released when its transaction ends.
    h.feed(answer(second.message, 486), second.dest)
    h.feed(invite("l2", method="ACK", to_tag="uas1", branch=second.message.vias[1].branch))
    h.advance(40.0)
    assert h.core.dispatcher.load("pbx1") + h.core.dispatcher.load("pbx2") == 1
    third = _requests(h.feed(invite("l3")), "INVITE")[0]
    assert third.dest == second.dest  # the node whose call ended is the least loaded
