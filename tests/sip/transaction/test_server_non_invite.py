"""Non-INVITE server transaction (RFC 3261 Figure 8), stepped through explicit times."""

from __future__ import annotations

import pytest

from router.sip.transaction import (
    Send,
    ServerNonInviteState,
    ServerNonInviteTransaction,
    TransactionStateError,
    TransactionTerminated,
    TransportError,
)
from router.sip.transaction.server_non_invite import TRANSITIONS
from tests.sip.transaction.helpers import ALICE, request, response, sends

S = ServerNonInviteState


def serve(method: str = "REGISTER", *, reliable: bool = False) -> ServerNonInviteTransaction:
    return ServerNonInviteTransaction(request(method), ALICE, now=0.0, reliable=reliable)


def test_server_non_invite_table_names_every_state() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.TERMINATED] == {}


def test_server_non_invite_trying_discards_retransmissions() -> None:
    tx = serve()
    tx.receive_request(tx.request, now=0.5)
    assert tx.drain_events() == []
    assert tx.state is S.TRYING
    assert tx.next_deadline() is None


def test_server_non_invite_full_life_with_retransmissions_and_timer_j() -> None:
    tx = serve()
    trying = response(tx.request, 100)
    tx.send_response(trying, now=0.1)
    assert tx.state is S.PROCEEDING
    tx.receive_request(tx.request, now=0.5)
    assert [(s.message, s.retransmission) for s in sends(tx.drain_events())] == [
        (trying, False),
        (trying, True),
    ]
    ok = response(tx.request, 200)
    tx.send_response(ok, now=1.0)
    assert tx.state is S.COMPLETED
    assert tx.next_deadline() == 33.0  # Timer J = 64*T1
    for t in (1.5, 2.5, 4.5):
        tx.receive_request(tx.request, now=t)
    assert [(s.message, s.retransmission) for s in sends(tx.drain_events())] == [
        (ok, False),
        (ok, True),
        (ok, True),
        (ok, True),
    ]
    assert tx.counters.retransmissions == 4
    tx.handle_timers(now=32.9)
    assert tx.drain_events() == []
    tx.handle_timers(now=33.0)
    assert tx.drain_events() == [TransactionTerminated(tx)]


def test_server_non_invite_one_final_only() -> None:
    tx = serve()
    tx.send_response(response(tx.request, 200), now=0.0)
    with pytest.raises(TransactionStateError):
        tx.send_response(response(tx.request, 500), now=0.1)
    with pytest.raises(TransactionStateError):
        tx.send_response(response(tx.request, 100), now=0.1)


def test_server_non_invite_reliable_terminates_with_the_final() -> None:
    tx = serve("OPTIONS", reliable=True)
    ok = response(tx.request, 200)
    tx.send_response(ok, now=0.0)
    events = tx.drain_events()
    assert isinstance(events[0], Send)
    assert events[0].reliable
    assert events[1:] == [TransactionTerminated(tx)]


def test_server_non_invite_transport_error_in_completed() -> None:
    tx = serve()
    tx.send_response(response(tx.request, 200), now=0.0)
    tx.drain_events()
    tx.transport_failed(now=0.3)
    assert tx.drain_events() == [TransportError(tx), TransactionTerminated(tx)]
    assert tx.counters.transport_errors == 1


@pytest.mark.parametrize("method", ["INVITE", "ACK"])
def test_server_non_invite_rejects_invite_and_ack(method: str) -> None:
    with pytest.raises(ValueError, match=method):
        ServerNonInviteTransaction(request(method), ALICE, now=0.0)
