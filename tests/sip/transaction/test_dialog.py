"""Dialogs (RFC 3261 §12), CANCEL (§9.1), ACK for 2xx (§13.2.2.4), UAS 2xx retransmission."""

from __future__ import annotations

import pytest

from router.sip.dialog import (
    AckTimeout,
    Dialog,
    DialogId,
    DialogState,
    Uas2xxRetransmitter,
    Uas2xxState,
    build_cancel,
)
from router.sip.headers import Via
from router.sip.message import Request, Response, make_response
from router.sip.transaction import Send, Timers
from router.sip.uri import SipUri
from tests.sip.transaction.helpers import ALICE, BOB_CONTACT, request, response

RR = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")  # as the 2xx carries them
ALICE_CONTACT = SipUri(user="alice", host=ALICE[0], port=ALICE[1])
MY_VIA = Via("UDP", ALICE[0], ALICE[1])


def ok_with_record_route(invite: Request, rr: tuple[str, ...] = RR) -> Response:
    headers = [("Record-Route", r) for r in rr] + [("Contact", BOB_CONTACT)]
    return make_response(invite, 200, to_tag="bob-tag", headers=headers)


def uac_dialog(rr: tuple[str, ...] = RR) -> tuple[Request, Dialog]:
    invite = request(cseq=7)
    return invite, Dialog.from_uac(
        invite, ok_with_record_route(invite, rr), local_target=ALICE_CONTACT
    )


def test_dialog_from_uac() -> None:
    _, d = uac_dialog()
    assert d.id == DialogId("call-1@192.0.2.1", "ft1", "bob-tag")
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert str(d.remote_target) == "sip:bob@192.0.2.2:5060"
    assert (d.local_seq, d.remote_seq) == (7, None)
    assert d.state is DialogState.CONFIRMED
    assert str(d.next_hop()) == "sip:p1.example.com;lr"


def test_dialog_from_uac_early_and_refusals() -> None:
    invite = request()
    ringing = make_response(invite, 180, to_tag="b", headers=[("Contact", BOB_CONTACT)])
    d = Dialog.from_uac(invite, ringing)
    assert d.state is DialogState.EARLY
    d.receive_response(ok_with_record_route(invite))
    assert d.state is DialogState.CONFIRMED
    with pytest.raises(ValueError, match="tag"):
        Dialog.from_uac(invite, make_response(invite, 180, headers=[("Contact", BOB_CONTACT)]))
    with pytest.raises(ValueError, match="486"):
        Dialog.from_uac(invite, response(invite, 486))


def test_dialog_from_uas_and_cseq_order() -> None:
    invite = request(cseq=3)
    invite.headers.add("Record-Route", "<sip:p1.example.com;lr>")
    d = Dialog.from_uas(invite, "bob-tag", local_target=SipUri(user="bob", host="192.0.2.2"))
    assert d.id == DialogId("call-1@192.0.2.1", "bob-tag", "ft1")
    assert d.local_uri.tag == "bob-tag"
    assert d.remote_uri.tag == "ft1"
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.com;lr"]
    assert str(d.remote_target) == "sip:alice@192.0.2.1:5060"
    assert (d.local_seq, d.remote_seq) == (None, 3)
    assert d.receive_request(request("BYE", cseq=4))
    assert not d.receive_request(request("INFO", cseq=2))  # out of order: answer 500
    bye = d.create_request("BYE", Via("UDP", "192.0.2.2", 5060))
    assert bye.cseq.seq == 1  # local sequence chosen at first use
    assert bye.headers.get("from") == str(d.local_uri)
    assert bye.uri == "sip:alice@192.0.2.1:5060"


def test_dialog_loose_routing_request() -> None:
    _, d = uac_dialog()
    bye = d.create_request("BYE", MY_VIA)
    assert bye.cseq.seq == 8
    assert bye.uri == "sip:bob@192.0.2.2:5060"  # R-URI = remote target
    assert bye.headers.get_all("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.to.tag == "bob-tag"
    assert bye.from_.tag == "ft1"
    assert (bye.top_via.branch or "").startswith("z9hG4bK")
    assert bye.headers.get("contact") == f"<{ALICE_CONTACT}>"
    assert d.create_request("INFO", MY_VIA).cseq.seq == 9


def test_dialog_strict_routing_request() -> None:
    _, d = uac_dialog(("<sip:p2.example.com>", "<sip:p1.example.com>"))
    bye = d.create_request("BYE", MY_VIA)
    # §12.2.1.1: first route into the R-URI, the rest then the remote target as Route.
    assert bye.uri == "sip:p1.example.com"
    assert bye.headers.get_all("route") == ["<sip:p2.example.com>", "<sip:bob@192.0.2.2:5060>"]


def test_dialog_without_route_set() -> None:
    _, d = uac_dialog(())
    bye = d.create_request("BYE", MY_VIA)
    assert bye.uri == "sip:bob@192.0.2.2:5060"
    assert "route" not in bye.headers
    with pytest.raises(ValueError, match="build_ack"):
        d.create_request("ACK", MY_VIA)


def test_dialog_build_ack_for_2xx() -> None:
    invite, d = uac_dialog()
    ack = d.build_ack(invite)
    assert ack.method == "ACK"
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.top_via.branch != invite.top_via.branch  # a new transaction
    assert ack.top_via.sent_by() == invite.top_via.sent_by()
    assert ack.uri == "sip:bob@192.0.2.2:5060"
    assert ack.headers.get_all("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert d.local_seq == 7  # the ACK does not consume a CSeq number


def test_build_cancel_per_9_1() -> None:
    invite = request(cseq=5, routes=("<sip:p1.example.com;lr>",))
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    for name in ("call-id", "from", "to"):
        assert cancel.headers.get(name) == invite.headers.get(name)
    assert (cancel.cseq.seq, cancel.cseq.method) == (5, "CANCEL")
    assert cancel.headers.get_all("via") == [str(invite.top_via)]
    assert cancel.headers.get_all("route") == ["<sip:p1.example.com;lr>"]
    with pytest.raises(ValueError, match="INVITE"):
        build_cancel(request("BYE"))


def run(retx: Uas2xxRetransmitter, until: float) -> list[float]:
    sent = []
    while (deadline := retx.next_deadline()) is not None and deadline <= until:
        retx.handle_timers(now=deadline)
        for ev in retx.drain_events():
            if isinstance(ev, Send):
                assert ev.retransmission
                sent.append(deadline)
    return sent


def test_uas_2xx_retransmitter_asterisk_schedule_and_give_up() -> None:
    ok = response(request(), 200)
    retx = Uas2xxRetransmitter(ok, ALICE, now=0.0)
    assert run(retx, 31.9) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert retx.next_deadline() == 32.0
    retx.handle_timers(now=32.0)
    assert retx.drain_events() == [AckTimeout(retx)]
    assert retx.state is Uas2xxState.TIMED_OUT
    assert retx.next_deadline() is None


def test_uas_2xx_retransmitter_stops_on_ack() -> None:
    invite = request()
    ok = response(invite, 200)
    retx = Uas2xxRetransmitter(ok, ALICE, now=10.0)
    assert run(retx, 12.0) == [10.5, 11.5]
    ack = request("ACK", branch="z9hG4bKnew", to_tag="tt1")
    assert retx.is_ack_for(ack)
    assert not retx.is_ack_for(request("ACK", to_tag="other"))
    assert not retx.is_ack_for(request("ACK", cseq=2, to_tag="tt1"))
    retx.ack_received(now=12.1)
    assert retx.state is Uas2xxState.ACKED
    assert retx.next_deadline() is None
    assert run(retx, 100.0) == []


def test_uas_2xx_retransmitter_scales_with_t1() -> None:
    retx = Uas2xxRetransmitter(
        response(request(), 200), ALICE, now=0.0, timers=Timers(t1=0.05, t2=0.4, t4=0.5)
    )
    assert run(retx, 3.19) == pytest.approx(
        [0.05, 0.15, 0.35, 0.75, 1.15, 1.55, 1.95, 2.35, 2.75, 3.15]
    )
    with pytest.raises(ValueError, match="2xx"):
        Uas2xxRetransmitter(response(request(), 486), ALICE, now=0.0)
