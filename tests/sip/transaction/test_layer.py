"""TransactionLayer: matching (§17.1.3, §17.2.3, §9.2), timers through the heap, and a UA pair
over a seeded lossy FakeNet."""

from __future__ import annotations

import pytest

from router.sip.dialog import Dialog, Uas2xxRetransmitter, Uas2xxState
from router.sip.message import Request, Response, new_branch
from router.sip.parser import parse_untrusted, serialize
from router.sip.transaction import (
    DEFAULT_TIMERS,
    CancelReceived,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    Send,
    ServerInviteState,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Timer,
    Timers,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from tests.sip.fakenet import FakeNet
from tests.sip.transaction.helpers import ALICE, BOB, ack_for, others, request, response, sends


def only(events: list[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


# -- server side matching -----------------------------------------------------------------


def test_layer_new_invite_creates_server_transaction() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive_request(invite, ALICE, now=0.0)
    [event] = layer.drain_events()
    assert isinstance(event, RequestReceived)
    assert isinstance(event.transaction, ServerInviteTransaction)
    assert event.request is invite
    assert layer.statistics().server_invite == 1


def test_layer_auto_100_answers_new_invite_only() -> None:
    layer = TransactionLayer(auto_100=True)
    invite = request()
    layer.receive_request(invite, ALICE, now=0.0)
    events = layer.drain_events()
    assert isinstance(events[0], RequestReceived)
    [trying] = sends(events)
    assert isinstance(trying.message, Response)
    assert trying.message.status == 100
    assert trying.dest == ALICE
    layer.receive_request(request("OPTIONS"), ALICE, now=0.0)
    assert sends(layer.drain_events()) == []


def test_layer_retransmitted_request_matches_branch_and_sent_by() -> None:
    layer = TransactionLayer(auto_100=True)
    invite = request()
    layer.receive_request(invite, ALICE, now=0.0)
    layer.drain_events()
    layer.receive_request(invite, ALICE, now=0.5)
    [resent] = layer.drain_events()  # the 100 again, and no new RequestReceived
    assert isinstance(resent, Send)
    assert resent.retransmission
    # Same branch from another sent-by is another transaction (§17.2.3 rule 2).
    twin = request(branch=invite.top_via.branch, sent_by=("192.0.2.99", 5060))
    layer.receive_request(twin, ("192.0.2.99", 5060), now=0.6)
    assert len(only(layer.drain_events(), RequestReceived)) == 1
    assert layer.statistics().server_invite == 2


def test_layer_ack_for_non_2xx_is_absorbed_by_the_invite_transaction() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive_request(invite, ALICE, now=0.0)
    [event] = layer.drain_events()
    assert isinstance(event, RequestReceived)
    tx = event.transaction
    assert isinstance(tx, ServerInviteTransaction)
    layer.respond(tx, response(invite, 486), now=0.1)
    layer.drain_events()
    layer.receive_request(ack_for(invite), ALICE, now=0.2)
    assert layer.drain_events() == []
    assert tx.state is ServerInviteState.CONFIRMED


def test_layer_ack_for_2xx_and_stray_ack_reach_tu_without_transaction() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive_request(invite, ALICE, now=0.0)
    [event] = layer.drain_events()
    assert isinstance(event, RequestReceived)
    assert event.transaction is not None
    layer.respond(event.transaction, response(invite, 200), now=0.1)
    layer.drain_events()
    ack = ack_for(invite, branch=new_branch())  # §13.2.2.4: the 2xx ACK has its own branch
    layer.receive_request(ack, ALICE, now=0.2)
    assert layer.drain_events() == [RequestReceived(ack, ALICE, None)]
    stray = ack_for(request(call_id="other"), branch=new_branch())
    layer.receive_request(stray, ALICE, now=0.3)
    assert layer.drain_events() == [RequestReceived(stray, ALICE, None)]


def test_layer_cancel_is_its_own_transaction_and_finds_its_invite() -> None:
    layer = TransactionLayer(auto_100=True)
    invite = request()
    layer.receive_request(invite, ALICE, now=0.0)
    invite_tx = layer.drain_events()[0]
    assert isinstance(invite_tx, RequestReceived)
    cancel = request("CANCEL", branch=invite.top_via.branch)
    layer.receive_request(cancel, ALICE, now=1.0)
    [event] = layer.drain_events()
    assert isinstance(event, CancelReceived)
    assert event.invite is invite_tx.transaction
    assert isinstance(event.transaction, ServerNonInviteTransaction)
    layer.respond(event.transaction, response(cancel, 200), now=1.0)
    layer.respond(event.invite, response(invite, 487), now=1.0)
    assert [s.message.cseq.method for s in sends(layer.drain_events())] == ["CANCEL", "INVITE"]
    # A retransmitted CANCEL hits the CANCEL transaction, not the INVITE one.
    layer.receive_request(cancel, ALICE, now=1.5)
    [again] = layer.drain_events()
    assert isinstance(again, Send)
    assert again.message.cseq.method == "CANCEL"


def test_layer_cancel_without_invite() -> None:
    layer = TransactionLayer()
    layer.receive_request(request("CANCEL"), ALICE, now=0.0)
    [event] = layer.drain_events()
    assert isinstance(event, CancelReceived)
    assert event.invite is None


def test_layer_branch_without_magic_cookie_still_matches_retransmission_and_ack() -> None:
    layer = TransactionLayer()
    invite = request(branch="old-2543-branch")
    layer.receive_request(invite, ALICE, now=0.0)
    [event] = layer.drain_events()
    assert isinstance(event, RequestReceived)
    tx = event.transaction
    assert isinstance(tx, ServerInviteTransaction)
    layer.respond(tx, response(invite, 404), now=0.0)
    layer.drain_events()
    layer.receive_request(invite, ALICE, now=0.3)
    assert [s.retransmission for s in sends(layer.drain_events())] == [True]
    layer.receive_request(ack_for(invite), ALICE, now=0.4)
    assert layer.drain_events() == []
    assert tx.state is ServerInviteState.CONFIRMED
    # Another CSeq under the same non-cookie branch is a different transaction.
    layer.receive_request(request(branch="old-2543-branch", cseq=2), ALICE, now=0.5)
    assert len(only(layer.drain_events(), RequestReceived)) == 1


# -- client side matching -----------------------------------------------------------------


def test_layer_client_response_matches_branch_and_method() -> None:
    layer = TransactionLayer()
    invite = request()
    tx = layer.start_client(invite, BOB, now=0.0)
    assert isinstance(tx, ClientInviteTransaction)
    cancel = request("CANCEL", branch=invite.top_via.branch)
    ctx = layer.start_client(cancel, BOB, now=1.0)
    assert isinstance(ctx, ClientNonInviteTransaction)
    layer.drain_events()
    ok_cancel = response(cancel, 200)
    layer.receive_response(ok_cancel, BOB, now=1.1)
    assert layer.drain_events() == [ResponseReceived(ok_cancel, ctx, BOB)]
    terminated = response(invite, 487)
    layer.receive_response(terminated, BOB, now=1.2)
    assert only(layer.drain_events(), ResponseReceived) == [ResponseReceived(terminated, tx, BOB)]
    assert layer.find_client(invite.top_via.branch or "", "INVITE") is tx


def test_layer_stray_response_goes_up_without_transaction() -> None:
    layer = TransactionLayer()
    stray = response(request(), 200)
    layer.receive_response(stray, BOB, now=0.0)
    assert layer.drain_events() == [ResponseReceived(stray, None, BOB)]


def test_layer_start_client_refuses_ack_bad_branch_and_duplicates() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError, match="ACK"):
        layer.start_client(request("ACK"), BOB, now=0.0)
    with pytest.raises(ValueError, match="z9hG4bK"):
        layer.start_client(request(branch="nocookie"), BOB, now=0.0)
    req = request("OPTIONS")
    layer.start_client(req, BOB, now=0.0)
    with pytest.raises(ValueError, match="already"):
        layer.start_client(req, BOB, now=0.0)


# -- timers -------------------------------------------------------------------------------


def test_layer_timer_b_through_the_heap_and_cleanup() -> None:
    layer = TransactionLayer()
    tx = layer.start_client(request(), BOB, now=0.0)
    layer.drain_events()
    times = []
    while (deadline := layer.next_deadline()) is not None:
        layer.handle_timers(now=deadline)
        times.append(deadline)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 32.0]
    events = layer.drain_events()
    assert others(events) == [TransactionTimeout(tx, Timer.B), TransactionTerminated(tx)]
    stats = layer.statistics()
    assert (stats.client_invite, stats.retransmissions, stats.timeouts) == (0, 6, 1)
    assert stats.scheduled_timers == 0


def test_layer_stale_heap_entries_are_skipped() -> None:
    layer = TransactionLayer()
    tx = layer.start_client(request("OPTIONS"), BOB, now=0.0)  # E at 0.5, F at 32
    layer.receive_response(response(tx.request, 200), BOB, now=0.1)  # now only K at 5.1
    layer.drain_events()
    assert layer.next_deadline() == pytest.approx(5.1)
    layer.handle_timers(now=5.1)
    assert layer.drain_events() == [TransactionTerminated(tx)]
    assert layer.next_deadline() is None


def test_layer_many_transactions_fire_in_deadline_order() -> None:
    layer = TransactionLayer()
    for i in range(50):
        layer.start_client(request("OPTIONS"), BOB, now=i * 0.01)
    layer.drain_events()
    layer.handle_timers(now=40.0)
    events = layer.drain_events()
    assert len(only(events, TransactionTimeout)) == 50
    assert layer.statistics().client_non_invite == 0


def test_layer_transport_failed_by_destination() -> None:
    layer = TransactionLayer()
    to_bob = layer.start_client(request("OPTIONS"), BOB, now=0.0)
    layer.start_client(request("OPTIONS"), ("203.0.113.5", 5060), now=0.0)
    layer.drain_events()
    layer.transport_failed(BOB, now=0.1)
    assert layer.drain_events() == [TransportError(to_bob), TransactionTerminated(to_bob)]
    assert layer.statistics().client_non_invite == 1
    assert layer.statistics().transport_errors == 1


def test_layer_send_stateless() -> None:
    layer = TransactionLayer()
    ack = request("ACK")
    layer.send_stateless(ack, BOB)
    assert layer.drain_events() == [Send(ack, BOB, None)]


# -- a UA pair over a lossy network -------------------------------------------------------


class UaPair:
    """Alice (UAC) calls Bob (UAS, auto 100, answers 200 at once) over a FakeNet."""

    def __init__(self, net: FakeNet, timers: Timers = DEFAULT_TIMERS) -> None:
        self.net = net
        self.alice = TransactionLayer(timers)
        self.bob = TransactionLayer(timers, auto_100=True)
        self.timers = timers
        self.now = 0.0
        self.invite = request()
        self.ack: Request | None = None
        self.alice_finals: list[int] = []
        self.bob_invites = 0
        self.retx: Uas2xxRetransmitter | None = None
        self.timeouts: list[Event] = []
        self.ack_timeouts = 0

    def flush(self) -> None:
        """Let both TUs react until no event is left (a reaction may queue more events)."""
        busy = True
        while busy:
            busy = False
            for layer, addr in ((self.alice, ALICE), (self.bob, BOB)):
                for ev in layer.drain_events():
                    busy = True
                    self.handle(ev, addr)
            if self.retx is not None:
                for rev in self.retx.drain_events():
                    if isinstance(rev, Send):
                        self.handle(rev, BOB)
                    else:
                        self.ack_timeouts += 1

    def handle(self, ev: Event, addr: tuple[str, int]) -> None:
        match ev:
            case Send(message=message, dest=dest):
                self.net.send(serialize(message), addr, dest, now=self.now)
            case RequestReceived(request=req, transaction=tx) if req.method == "INVITE":
                assert tx is not None
                self.bob_invites += 1
                ok = response(req, 200)
                self.bob.respond(tx, ok, now=self.now)
                self.retx = Uas2xxRetransmitter(ok, tx.dest, now=self.now, timers=self.timers)
            case RequestReceived(request=req, transaction=None) if req.method == "ACK":
                assert self.retx is not None
                assert self.retx.is_ack_for(req)
                self.retx.ack_received(now=self.now)
            case ResponseReceived(response=resp) if resp.status >= 200:
                self.alice_finals.append(resp.status)
                if self.ack is None:
                    self.ack = Dialog.from_uac(self.invite, resp).build_ack(self.invite)
                self.alice.send_stateless(self.ack, BOB)  # every 2xx copy is ACKed again
            case TransactionTimeout() | TransportError():
                self.timeouts.append(ev)
            case _:
                pass

    def run(self, until: float = 100.0) -> None:
        self.alice.start_client(self.invite, BOB, now=0.0)
        self.flush()
        while True:
            candidates = [
                t
                for t in (
                    self.net.next_arrival(),
                    self.alice.next_deadline(),
                    self.bob.next_deadline(),
                    None if self.retx is None else self.retx.next_deadline(),
                )
                if t is not None
            ]
            if not candidates or min(candidates) > until:
                return
            self.now = min(candidates)
            for dgram in self.net.receive_due(self.now):
                msg = parse_untrusted(dgram.data)
                layer = self.alice if dgram.dest == ALICE else self.bob
                if isinstance(msg, Request):
                    layer.receive_request(msg, dgram.source, now=self.now)
                else:
                    layer.receive_response(msg, dgram.source, now=self.now)
            self.alice.handle_timers(now=self.now)
            self.bob.handle_timers(now=self.now)
            if self.retx is not None:
                self.retx.handle_timers(now=self.now)
            self.flush()

    def assert_call_established(self) -> None:
        seed = self.net.seed
        assert self.timeouts == [], f"seed={seed}"
        assert self.bob_invites == 1, f"seed={seed}"
        assert self.alice_finals, f"seed={seed}"
        assert set(self.alice_finals) == {200}, f"seed={seed}"
        assert self.retx is not None
        assert self.retx.state is Uas2xxState.ACKED, f"seed={seed}"
        for layer in (self.alice, self.bob):
            stats = layer.statistics()
            assert stats.client_invite + stats.server_invite == 0, f"seed={seed}"


def test_layer_pair_call_on_a_clean_network() -> None:
    pair = UaPair(FakeNet(seed=1))
    pair.run()
    pair.assert_call_established()
    assert pair.alice.statistics().retransmissions == 0
    assert pair.alice_finals == [200]


def test_layer_pair_survives_lost_invite() -> None:
    net = FakeNet(seed=2)
    net.drop_next(lambda d: d.data.startswith(b"INVITE "))
    pair = UaPair(net)
    pair.run()
    pair.assert_call_established()
    assert pair.alice.statistics().retransmissions == 1  # Timer A


def test_layer_pair_survives_lost_200() -> None:
    net = FakeNet(seed=3)
    net.drop_next(lambda d: d.data.startswith(b"SIP/2.0 200 "))
    pair = UaPair(net)
    pair.run()
    pair.assert_call_established()  # Bob's core resent the 2xx at +T1


def test_layer_pair_survives_lost_ack() -> None:
    net = FakeNet(seed=4)
    net.drop_next(lambda d: d.data.startswith(b"ACK "))
    pair = UaPair(net)
    pair.run()
    pair.assert_call_established()
    assert pair.alice_finals == [200, 200]  # the resent 2xx reached Alice's TU in ACCEPTED


@pytest.mark.parametrize("seed", range(12))
def test_layer_pair_survives_random_loss_and_duplication(seed: int) -> None:
    pair = UaPair(FakeNet(seed=seed, loss=0.25, duplicate=0.15))
    pair.run()
    pair.assert_call_established()


def test_layer_pair_ack_never_arrives_gives_up_at_64_t1() -> None:
    net = FakeNet(seed=5)
    for _ in range(20):
        net.drop_next(lambda d: d.data.startswith(b"ACK "))
    pair = UaPair(net)
    pair.run()
    assert pair.retx is not None
    assert pair.retx.state is Uas2xxState.TIMED_OUT
    assert pair.ack_timeouts == 1
    assert pair.alice_finals == [200] * 11  # first copy + 10 resends, each ACKed in vain
