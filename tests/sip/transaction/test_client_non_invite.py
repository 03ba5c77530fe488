"""Non-INVITE client transaction (RFC 3261 Figure 6), stepped through explicit times."""

from __future__ import annotations

import pytest

from router.sip.transaction import (
    ClientNonInviteState,
    ClientNonInviteTransaction,
    ResponseReceived,
    Timer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from router.sip.transaction.client_non_invite import TRANSITIONS
from tests.sip.transaction.helpers import BOB, request, response, sends

S = ClientNonInviteState


def start(method: str = "OPTIONS", *, reliable: bool = False) -> ClientNonInviteTransaction:
    tx = ClientNonInviteTransaction(request(method), BOB, now=0.0, reliable=reliable)
    [send] = sends(tx.drain_events())
    assert send.message is tx.request
    assert not send.retransmission
    return tx


def run_until_quiet(tx: ClientNonInviteTransaction, until: float) -> list[float]:
    """Step every deadline up to ``until``; return the times a retransmission went out."""
    fired = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        tx.handle_timers(now=deadline)
        if sends(tx.sink):
            fired.append(deadline)
        tx.sink.clear()
    return fired


def test_client_non_invite_table_names_every_state() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.TERMINATED] == {}


def test_client_non_invite_timer_e_backs_off_to_t2_then_timer_f() -> None:
    tx = start()
    fired = run_until_quiet(tx, 31.9)
    assert fired == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    tx.handle_timers(now=32.0)
    assert tx.drain_events() == [TransactionTimeout(tx, Timer.F), TransactionTerminated(tx)]
    assert tx.counters.retransmissions == 10
    assert tx.next_deadline() is None


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    tx = start("REGISTER")
    tx.handle_timers(now=0.5)  # first retransmission, next E at 1.5
    tx.drain_events()
    trying = response(tx.request, 100)
    tx.receive_response(trying, now=0.7)
    assert tx.drain_events() == [ResponseReceived(trying, tx)]
    assert tx.state is S.PROCEEDING
    # "If Timer E fires while in the 'Proceeding' state ... reset with a value of T2".
    assert run_until_quiet(tx, 14.0) == [1.5, 5.5, 9.5, 13.5]
    assert tx.state is S.PROCEEDING


def test_client_non_invite_final_goes_to_tu_once_then_timer_k() -> None:
    tx = start()
    ok = response(tx.request, 200)
    tx.receive_response(ok, now=0.2)
    assert tx.drain_events() == [ResponseReceived(ok, tx)]
    assert tx.state is S.COMPLETED
    assert tx.next_deadline() == pytest.approx(5.2)  # Timer K = T4
    tx.receive_response(ok, now=0.9)  # retransmitted final: absorbed
    tx.handle_timers(now=1.0)  # Timer E no longer armed
    assert tx.drain_events() == []
    tx.handle_timers(now=5.2)
    assert tx.drain_events() == [TransactionTerminated(tx)]


def test_client_non_invite_reliable_no_retransmissions_and_zero_timer_k() -> None:
    tx = start(reliable=True)
    assert tx.next_deadline() == 32.0  # only Timer F
    forbidden = response(tx.request, 403)
    tx.receive_response(forbidden, now=0.1)
    assert tx.drain_events() == [ResponseReceived(forbidden, tx), TransactionTerminated(tx)]


def test_client_non_invite_transport_error_in_proceeding() -> None:
    tx = start()
    tx.receive_response(response(tx.request, 100), now=0.1)
    tx.drain_events()
    tx.transport_failed(now=0.5)
    assert tx.drain_events() == [TransportError(tx), TransactionTerminated(tx)]


def test_client_non_invite_transport_error_after_final_is_ignored() -> None:
    tx = start()
    tx.receive_response(response(tx.request, 200), now=0.1)
    tx.drain_events()
    tx.transport_failed(now=0.5)
    assert tx.drain_events() == []
    assert tx.state is S.COMPLETED


@pytest.mark.parametrize("method", ["INVITE", "ACK"])
def test_client_non_invite_rejects_invite_and_ack(method: str) -> None:
    with pytest.raises(ValueError, match=method):
        ClientNonInviteTransaction(request(method), BOB, now=0.0)
