"""INVITE server transaction (RFC 3261 Figure 7 + RFC 6026), stepped through explicit times."""

from __future__ import annotations

import pytest

from router.sip.transaction import (
    RequestReceived,
    Send,
    ServerInviteState,
    ServerInviteTransaction,
    Timer,
    TransactionStateError,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from router.sip.transaction.server_invite import TRANSITIONS
from tests.sip.transaction.helpers import ALICE, ack_for, request, response, sends

S = ServerInviteState
SOURCE = ("198.51.100.7", 40000)


def serve(*, reliable: bool = False, rport: bool = False) -> ServerInviteTransaction:
    return ServerInviteTransaction(
        request(rport=rport), SOURCE if rport else ALICE, now=0.0, reliable=reliable
    )


def test_server_invite_table_names_every_state() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.TERMINATED] == {}


def test_server_invite_sends_nothing_until_tu_answers() -> None:
    tx = serve()
    assert tx.drain_events() == []
    assert tx.next_deadline() is None
    tx.receive_request(tx.request, now=0.1)  # retransmission before any response: nothing
    assert tx.drain_events() == []


def test_server_invite_resends_last_provisional_on_retransmission() -> None:
    tx = serve()
    trying, ringing = response(tx.request, 100), response(tx.request, 180)
    tx.send_response(trying, now=0.0)
    tx.send_response(ringing, now=0.1)
    assert [s.message for s in sends(tx.drain_events())] == [trying, ringing]
    tx.receive_request(tx.request, now=0.6)
    [send] = tx.drain_events()
    assert isinstance(send, Send)
    assert send.message is ringing
    assert send.retransmission
    assert send.dest == ALICE


def test_server_invite_response_goes_to_rport_source() -> None:
    tx = serve(rport=True)
    tx.send_response(response(tx.request, 100), now=0.0)
    [send] = sends(tx.drain_events())
    assert send.dest == SOURCE


def test_server_invite_timer_g_backs_off_and_timer_h_reports_missing_ack() -> None:
    tx = serve()
    busy = response(tx.request, 486)
    tx.send_response(busy, now=0.0)
    tx.drain_events()
    assert tx.state is S.COMPLETED
    resent = []
    while (deadline := tx.next_deadline()) is not None and deadline < 32.0:
        tx.handle_timers(now=deadline)
        events = tx.drain_events()
        assert [s.message for s in sends(events)] == [busy]
        resent.append(deadline)
    # G: T1, 2T1, 4T1, then capped at T2.
    assert resent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    tx.handle_timers(now=32.0)
    assert tx.drain_events() == [TransactionTimeout(tx, Timer.H), TransactionTerminated(tx)]
    assert tx.counters.timeouts == 1


def test_server_invite_ack_confirms_and_absorbs_until_timer_i() -> None:
    tx = serve()
    busy = response(tx.request, 486)
    tx.send_response(busy, now=0.0)
    tx.handle_timers(now=0.5)  # the final is lost once: Timer G resends it
    assert [s.retransmission for s in sends(tx.drain_events())] == [False, True]
    ack = ack_for(tx.request)
    tx.receive_ack(ack, ALICE, now=0.7)
    assert tx.drain_events() == []  # absorbed: the ACK of a non-2xx never reaches the TU
    assert tx.state is S.CONFIRMED
    assert tx.next_deadline() == pytest.approx(5.7)  # Timer I = T4; G and H are gone
    tx.receive_ack(ack, ALICE, now=1.0)
    tx.receive_request(tx.request, now=1.1)
    assert tx.drain_events() == []
    tx.handle_timers(now=5.7)
    assert tx.drain_events() == [TransactionTerminated(tx)]


def test_server_invite_retransmitted_invite_in_completed_gets_final_again() -> None:
    tx = serve()
    busy = response(tx.request, 404)
    tx.send_response(busy, now=0.0)
    tx.drain_events()
    tx.receive_request(tx.request, now=0.2)
    [send] = sends(tx.drain_events())
    assert send.message is busy
    assert send.retransmission


def test_server_invite_accepted_absorbs_invites_and_passes_ack_up() -> None:
    tx = serve()
    ok = response(tx.request, 200)
    tx.send_response(ok, now=0.0)
    tx.drain_events()
    assert tx.state is S.ACCEPTED
    assert tx.next_deadline() == 32.0  # Timer L; no Timer G for 2xx (the TU resends it)
    tx.receive_request(tx.request, now=0.5)
    assert tx.drain_events() == []
    tx.send_response(ok, now=0.5)  # the TU's own 2xx retransmission goes out
    assert [s.message for s in sends(tx.drain_events())] == [ok]
    ack = ack_for(tx.request)
    tx.receive_ack(ack, ALICE, now=0.6)
    assert tx.drain_events() == [RequestReceived(ack, ALICE, None)]
    with pytest.raises(TransactionStateError):
        tx.send_response(response(tx.request, 180), now=0.7)
    tx.handle_timers(now=32.0)
    assert tx.drain_events() == [TransactionTerminated(tx)]
    with pytest.raises(TransactionStateError):
        tx.send_response(ok, now=33.0)


def test_server_invite_reliable_no_timer_g_and_ack_terminates() -> None:
    tx = serve(reliable=True)
    tx.send_response(response(tx.request, 486), now=0.0)
    [send] = tx.drain_events()
    assert isinstance(send, Send)
    assert send.reliable
    assert tx.next_deadline() == 32.0  # Timer H only
    tx.receive_ack(ack_for(tx.request), ALICE, now=0.1)
    assert tx.drain_events() == [TransactionTerminated(tx)]


def test_server_invite_transport_error_while_completed() -> None:
    tx = serve()
    tx.send_response(response(tx.request, 500), now=0.0)
    tx.drain_events()
    tx.transport_failed(now=0.5)
    assert tx.drain_events() == [TransportError(tx), TransactionTerminated(tx)]


def test_server_invite_second_final_is_a_tu_error() -> None:
    tx = serve()
    tx.send_response(response(tx.request, 486), now=0.0)
    with pytest.raises(TransactionStateError):
        tx.send_response(response(tx.request, 200), now=0.1)


def test_server_invite_rejects_other_methods() -> None:
    with pytest.raises(ValueError, match="BYE"):
        ServerInviteTransaction(request("BYE"), ALICE, now=0.0)
