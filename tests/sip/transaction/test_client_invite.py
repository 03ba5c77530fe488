"""INVITE client transaction (RFC 3261 Figure 5 + RFC 6026), stepped through explicit times."""

from __future__ import annotations

import pytest

from router.sip.transaction import (
    ClientInviteInput,
    ClientInviteState,
    ClientInviteTransaction,
    ResponseReceived,
    Send,
    Timer,
    Timers,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from router.sip.transaction.client_invite import TRANSITIONS
from tests.sip.transaction.helpers import BOB, others, request, response, sends

S = ClientInviteState


def start(*, reliable: bool = False, timers: Timers | None = None) -> ClientInviteTransaction:
    return ClientInviteTransaction(
        request(routes=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")),
        BOB,
        now=0.0,
        reliable=reliable,
        timers=timers or Timers(),
    )


def test_client_invite_table_names_every_state() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.TERMINATED] == {}
    # Timer B only bounds CALLING (§17.1.1.2).
    assert [s for s, row in TRANSITIONS.items() if ClientInviteInput.TIMER_B in row] == [S.CALLING]


def test_client_invite_sends_on_construction() -> None:
    tx = start()
    [send] = tx.drain_events()
    assert isinstance(send, Send)
    assert send.message is tx.request
    assert send.dest == BOB
    assert not send.retransmission
    assert tx.state is S.CALLING
    assert tx.next_deadline() == 0.5


def test_client_invite_timer_a_doubles_then_timer_b_times_out() -> None:
    tx = start()
    tx.drain_events()
    fired = []
    while (deadline := tx.next_deadline()) is not None:
        tx.handle_timers(now=deadline)
        events = tx.drain_events()
        if sends(events):
            fired.append(deadline)
            assert all(s.retransmission and s.message is tx.request for s in sends(events))
    # A: T1, 2T1, 4T1 ... uncapped for INVITE; B at 64*T1 ends it.
    assert fired == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.state is S.TERMINATED
    assert tx.counters.retransmissions == 6
    assert tx.counters.timeouts == 1


def test_client_invite_timer_b_reports_timeout_then_terminated() -> None:
    tx = start()
    tx.handle_timers(now=31.9)
    tx.drain_events()
    assert tx.state is S.CALLING
    tx.handle_timers(now=32.0)
    assert tx.drain_events() == [TransactionTimeout(tx, Timer.B), TransactionTerminated(tx)]
    assert tx.next_deadline() is None


def test_client_invite_provisional_stops_retransmission_and_timer_b() -> None:
    tx = start()
    tx.drain_events()
    ringing = response(tx.request, 180)
    tx.receive_response(ringing, now=0.2)
    assert tx.drain_events() == [ResponseReceived(ringing, tx)]
    assert tx.state is S.PROCEEDING
    assert tx.next_deadline() is None
    tx.handle_timers(now=100.0)
    assert tx.drain_events() == []


def test_client_invite_failure_builds_ack_per_17_1_1_3() -> None:
    tx = start()
    tx.drain_events()
    busy = response(tx.request, 486, to_tag="bob-tag")
    tx.receive_response(busy, now=1.0)
    events = tx.drain_events()
    assert others(events) == [ResponseReceived(busy, tx)]
    [send] = sends(events)
    ack = send.message
    assert send.dest == BOB
    assert ack is tx.ack
    assert ack.method == "ACK"
    assert ack.uri == tx.request.uri
    assert ack.call_id == tx.request.call_id
    assert ack.headers.get("from") == tx.request.headers.get("from")
    assert ack.to.tag == "bob-tag"
    assert ack.headers.get_all("via") == [str(tx.request.top_via)]
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert ack.headers.get_all("route") == tx.request.headers.get_all("route")
    assert tx.state is S.COMPLETED
    assert tx.next_deadline() == 1.0 + 32.0


def test_client_invite_completed_reacks_retransmitted_final_without_passing_it_up() -> None:
    tx = start()
    tx.drain_events()
    busy = response(tx.request, 486)
    tx.receive_response(busy, now=1.0)
    tx.drain_events()
    tx.receive_response(busy, now=1.6)
    [send] = tx.drain_events()
    assert isinstance(send, Send)
    assert send.message is tx.ack
    assert send.retransmission
    # A late 1xx or 2xx in COMPLETED is absorbed.
    tx.receive_response(response(tx.request, 180), now=2.0)
    assert tx.drain_events() == []
    tx.handle_timers(now=33.0)
    assert tx.drain_events() == [TransactionTerminated(tx)]


def test_client_invite_success_enters_accepted_and_passes_2xx_retransmissions_up() -> None:
    tx = start()
    tx.drain_events()
    ok = response(tx.request, 200)
    tx.receive_response(ok, now=0.3)
    assert tx.drain_events() == [ResponseReceived(ok, tx)]
    assert tx.state is S.ACCEPTED
    assert tx.next_deadline() == pytest.approx(0.3 + 32.0)  # Timer M
    tx.handle_timers(now=0.5)  # Timer A must be gone
    assert tx.drain_events() == []
    tx.receive_response(ok, now=0.8)
    assert tx.drain_events() == [ResponseReceived(ok, tx)]
    tx.receive_response(response(tx.request, 486), now=0.9)
    assert tx.drain_events() == []
    tx.handle_timers(now=32.3)
    assert tx.drain_events() == [TransactionTerminated(tx)]


def test_client_invite_reliable_has_no_timer_a_and_zero_timer_d() -> None:
    tx = start(reliable=True)
    [send] = tx.drain_events()
    assert isinstance(send, Send)
    assert send.reliable
    assert tx.next_deadline() == 32.0  # only Timer B
    tx.receive_response(response(tx.request, 603), now=1.0)
    events = tx.drain_events()
    assert [type(e) for e in events] == [ResponseReceived, Send, TransactionTerminated]
    assert tx.state is S.TERMINATED


def test_client_invite_transport_error_terminates() -> None:
    tx = start()
    tx.drain_events()
    tx.transport_failed(now=0.1)
    assert tx.drain_events() == [TransportError(tx), TransactionTerminated(tx)]
    assert tx.counters.transport_errors == 1


def test_client_invite_compressed_timers_scale() -> None:
    tx = start(timers=Timers(t1=0.05, t2=0.4, t4=0.5))
    tx.drain_events()
    assert tx.next_deadline() == pytest.approx(0.05)
    tx.handle_timers(now=3.2)  # a very late driver still ends with Timer B
    events = tx.drain_events()
    assert events[-2:] == [TransactionTimeout(tx, Timer.B), TransactionTerminated(tx)]


def test_client_invite_rejects_other_methods() -> None:
    with pytest.raises(ValueError, match="INVITE"):
        ClientInviteTransaction(request("OPTIONS"), BOB, now=0.0)


def test_timers_derive_from_t1_t2_t4() -> None:
    t = Timers(t1=0.5, t2=4.0, t4=5.0)
    assert (t.a, t.b, t.e, t.f, t.g, t.h, t.l, t.m) == (0.5, 32, 0.5, 32, 0.5, 32, 32, 32)
    assert (t.d(reliable=False), t.i(reliable=False), t.j(reliable=False), t.k(reliable=False)) == (
        32,
        5,
        32,
        5,
    )
    assert (t.d(reliable=True), t.i(reliable=True), t.j(reliable=True), t.k(reliable=True)) == (
        0,
        0,
        0,
        0,
    )
    assert [t.backoff(x) for x in (0.5, 1, 2, 4)] == [1, 2, 4, 4]
    with pytest.raises(ValueError, match="T1"):
        Timers(t1=5.0, t2=4.0)
