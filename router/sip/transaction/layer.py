"""The transaction layer: owns every transaction, matches messages to them, runs their timers.

Theory of operation
-------------------
The driver feeds parsed messages in (``receive_request`` / ``receive_response``), the TU starts
client transactions (``start_client``) and answers server ones (``respond``), and everybody
drains one queue of events (``drain_events``): `Send` for the transport, the rest for the TU.
Time comes in as ``now``; the driver sleeps until ``next_deadline()`` and calls
``handle_timers(now=...)``.

Matching (kept in two dicts, so each message costs one hash lookup):

* responses, §17.1.3: "the response matches a client transaction if: 1. the response has the
  same value of the branch parameter in the top Via header field as the branch parameter in the
  top Via header field of the request that created the transaction. 2. the method parameter in
  the CSeq header field matches the method of the request that created the transaction." Key:
  ``(branch, method)``. A CANCEL shares the INVITE's branch but not its method, so it is its own
  transaction.
* requests, §17.2.3: "1. the branch parameter in the request is equal to the one in the top Via
  header field of the request that created the transaction, and 2. the sent-by value in the top
  Via of the request is equal to the one in the request that created the transaction, and 3.
  the method of the request matches the one that created the transaction, except for ACK, where
  the method of the request that created the transaction is INVITE." Key: ``(branch, host,
  port, method)`` with ACK mapped to INVITE. §9.2's "the INVITE this CANCEL cancels" is the same
  key with method INVITE.
* a request whose branch lacks the magic cookie ``z9hG4bK`` (RFC 2543 peer, or no branch at
  all): we do not implement §17.2.3's RFC 2543 fallback (Request-URI, To tag, ...). We chose to
  still build a transaction, keyed on ``(branch, sent-by, Call-ID, CSeq number, From tag,
  method)`` with ACK mapped to INVITE: that is what stays equal between an INVITE, its
  retransmissions and the ACK of a non-2xx answer (the To tag is left out on purpose, since the
  ACK carries the tag the INVITE did not have).

Deadlines live in one heap of ``(deadline, seq, transaction)``. Entries are never removed; an
entry is stale when the transaction's ``scheduled_at`` no longer equals it (the machine was
rescheduled or terminated), and stale entries are dropped when they reach the top.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.sip.message import make_response
from router.sip.transaction.base import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    TransactionCounters,
)
from router.sip.transaction.client_invite import ClientInviteTransaction
from router.sip.transaction.client_non_invite import ClientNonInviteTransaction
from router.sip.transaction.events import (
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    Send,
)
from router.sip.transaction.server_invite import ServerInviteTransaction
from router.sip.transaction.server_non_invite import ServerNonInviteTransaction
from router.sip.transaction.timers import DEFAULT_TIMERS, Timers

if TYPE_CHECKING:
    from collections.abc import Hashable

    from router.sip.message import Request, Response

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: "The branch ID inserted by an element compliant with this specification
MUST always begin with the characters 'z9hG4bK'"."""


@dataclass(frozen=True, slots=True)
class TransactionStatistics:
    """A snapshot of the layer (trio-style ``statistics()``)."""

    client_invite: int
    """Live INVITE client transactions."""
    client_non_invite: int
    """Live non-INVITE client transactions."""
    server_invite: int
    """Live INVITE server transactions."""
    server_non_invite: int
    """Live non-INVITE server transactions."""
    retransmissions: int
    """Messages sent again (Timers A, E, G; responses to retransmitted requests; ACK repeats)."""
    timeouts: int
    """Timers B, F and H that fired."""
    transport_errors: int
    """Transactions ended by a transport failure."""
    scheduled_timers: int
    """Entries in the deadline heap, stale ones included (a leak shows up here)."""


def server_key(request: Request) -> Hashable:
    """The §17.2.3 matching key of a received request (ACK maps to its INVITE).

    Raises:
        SipParseError: the top Via (or, without magic cookie, Call-ID/CSeq/From) is malformed.
    """
    via = request.top_via
    method = request.method
    if method == "ACK":
        method = "INVITE"
    branch = via.branch
    host, port = via.sent_by()
    host = host.lower()
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, host, port, method)
    return (branch, host, port, request.call_id, request.cseq.seq, request.from_.tag, method)


def _with_method(key: Hashable, method: str) -> Hashable:
    assert isinstance(key, tuple)
    return (*key[:-1], method)


class TransactionLayer:
    """All transactions of one SIP element, with matching and one timer heap.

    Args:
        timers: T1/T2/T4 and the derived timers.
        auto_100: answer every new INVITE with 100 Trying at once (§17.2.1; proxies and the
            Asterisk emulator want this, a UA that answers within 200 ms does not).
    """

    def __init__(self, timers: Timers = DEFAULT_TIMERS, *, auto_100: bool = False) -> None:
        self.timers = timers
        self.auto_100 = auto_100
        self._events: list[Event] = []
        self._counters = TransactionCounters()
        self._server: dict[Hashable, ServerTransaction] = {}
        self._client: dict[Hashable, ClientTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = 0

    # -- events and time ------------------------------------------------------------------

    def drain_events(self) -> list[Event]:
        """Return every queued event, oldest first, and clear the queue."""
        # Copy and clear: every transaction holds a reference to this very list.
        events = self._events[:]
        self._events.clear()
        return events

    def next_deadline(self) -> float | None:
        """When ``handle_timers`` must next be called, or None when no timer is armed."""
        heap = self._heap
        while heap:
            deadline, _, tx = heap[0]
            if tx.scheduled_at == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def handle_timers(self, *, now: float) -> None:
        """Fire every timer due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, tx = heapq.heappop(heap)
            if tx.scheduled_at != deadline:
                continue  # stale entry
            tx.scheduled_at = None
            tx.handle_timers(now=now)
            self._settle(tx)

    def _settle(self, tx: Transaction) -> None:
        """After any input: forget a terminated transaction or queue its new deadline."""
        if tx.terminated:
            tx.scheduled_at = None
            if isinstance(tx, ServerTransaction):
                if self._server.get(tx.key) is tx:
                    del self._server[tx.key]
            elif self._client.get(tx.key) is tx:
                del self._client[tx.key]
            return
        deadline = tx.next_deadline()
        if deadline != tx.scheduled_at:
            tx.scheduled_at = deadline
            if deadline is not None:
                self._seq += 1
                heapq.heappush(self._heap, (deadline, self._seq, tx))

    # -- server side ----------------------------------------------------------------------

    def receive_request(
        self, request: Request, source: tuple[str, int], *, now: float, reliable: bool = False
    ) -> None:
        """A parsed request arrived from ``source``.

        Matches it to a server transaction (retransmissions and ACKs are handled there), or
        creates one and emits `RequestReceived` / `CancelReceived`. ACKs that match nothing
        (ACK for 2xx, stray ACK) are passed up with no transaction.

        Raises:
            SipParseError: the top Via (or the fields a key needs) is malformed.
        """
        key = server_key(request)
        tx = self._server.get(key)
        method = request.method
        if method == "ACK":
            if isinstance(tx, ServerInviteTransaction):
                tx.receive_ack(request, source, now=now)
                self._settle(tx)
            else:
                self._events.append(RequestReceived(request, source, None))
            return
        if tx is not None:
            tx.receive_request(request, now=now)
            self._settle(tx)
            return
        events = self._events
        timers, counters = self.timers, self._counters
        if method == "INVITE":
            invite = ServerInviteTransaction(
                request,
                source,
                now=now,
                timers=timers,
                reliable=reliable,
                sink=events,
                counters=counters,
            )
            invite.key = key
            self._server[key] = invite
            events.append(RequestReceived(request, source, invite))
            if self.auto_100:
                invite.send_response(make_response(request, 100), now=now)
            self._settle(invite)
            return
        server = ServerNonInviteTransaction(
            request,
            source,
            now=now,
            timers=timers,
            reliable=reliable,
            sink=events,
            counters=counters,
        )
        server.key = key
        self._server[key] = server
        if method == "CANCEL":
            cancelled = self._server.get(_with_method(key, "INVITE"))
            events.append(
                CancelReceived(
                    request,
                    source,
                    server,
                    cancelled if isinstance(cancelled, ServerInviteTransaction) else None,
                )
            )
        else:
            events.append(RequestReceived(request, source, server))
        self._settle(server)

    def respond(self, transaction: ServerTransaction, response: Response, *, now: float) -> None:
        """The TU sends ``response`` through ``transaction``.

        Raises:
            TransactionStateError: the transaction's state takes no such response.
        """
        transaction.send_response(response, now=now)
        self._settle(transaction)

    def find_server(self, request: Request) -> ServerTransaction | None:
        """The live server transaction ``request`` matches (§17.2.3), if any."""
        return self._server.get(server_key(request))

    # -- client side ----------------------------------------------------------------------

    def start_client(
        self, request: Request, dest: tuple[str, int], *, now: float, reliable: bool = False
    ) -> ClientTransaction:
        """Send ``request`` to ``dest`` in a new client transaction.

        The top Via must already carry a unique branch (``new_branch()``).

        Raises:
            ValueError: ACK (never a transaction), a branch without the magic cookie, or a
                branch/method already in use.
        """
        method = request.method
        if method == "ACK":
            raise ValueError("ACK is not sent in a transaction: use send_stateless")
        branch = request.top_via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise ValueError(f"client branch must start with {MAGIC_COOKIE}: {branch!r}")
        key = (branch, method)
        if key in self._client:
            raise ValueError(f"a client transaction {key} already exists")
        tx: ClientTransaction
        if method == "INVITE":
            tx = ClientInviteTransaction(
                request,
                dest,
                now=now,
                timers=self.timers,
                reliable=reliable,
                sink=self._events,
                counters=self._counters,
            )
        else:
            tx = ClientNonInviteTransaction(
                request,
                dest,
                now=now,
                timers=self.timers,
                reliable=reliable,
                sink=self._events,
                counters=self._counters,
            )
        tx.key = key
        self._client[key] = tx
        self._settle(tx)
        return tx

    def receive_response(
        self, response: Response, source: tuple[str, int] | None = None, *, now: float
    ) -> None:
        """A parsed response arrived; match it (§17.1.3) or pass it up as stray.

        Raises:
            SipParseError: the top Via or CSeq is malformed.
        """
        tx = self._client.get((response.top_via.branch, response.cseq.method))
        if tx is None:
            self._events.append(ResponseReceived(response, None, source))
            return
        tx.receive_response(response, now=now, source=source)
        self._settle(tx)

    def abandon(self, transaction: ClientTransaction, *, now: float) -> None:
        """Stop a client transaction that never got a reply, without a CANCEL.

        A proxy's failure timer (Kamailio tm ``fr_timer``) may fire before any provisional
        arrived; §9.1 forbids a CANCEL then, so the branch is simply given up: retransmissions
        stop, the transaction ends (`TransactionTerminated`), and a late response to it arrives
        as a stray `ResponseReceived` with no transaction.
        """
        del now  # part of the entry-point contract; nothing here depends on time
        if not transaction.terminated:
            transaction._terminate()
            self._settle(transaction)

    def find_client(self, branch: str, method: str) -> ClientTransaction | None:
        """The live client transaction with that branch and method, if any."""
        return self._client.get((branch, method))

    # -- both -----------------------------------------------------------------------------

    def send_stateless(
        self, message: Request | Response, dest: tuple[str, int], *, reliable: bool = False
    ) -> None:
        """Queue a `Send` outside any transaction (2xx ACK, stateless forwarding)."""
        self._events.append(Send(message, dest, None, False, reliable))

    def transport_failed(self, target: Transaction | tuple[str, int], *, now: float) -> None:
        """The transport failed to deliver (§17.1.4, §17.2.4: ICMP error, refused connection).

        Args:
            target: the transaction whose `Send` failed, or a destination: every transaction
                sending to it (client requests to it, server responses to it) is told.
        """
        if isinstance(target, Transaction):
            victims = [target]
        else:
            victims = [tx for tx in self._client.values() if tx.dest == target]
            victims.extend(tx for tx in self._server.values() if tx.dest == target)
        for tx in victims:
            tx.transport_failed(now=now)
            self._settle(tx)

    def statistics(self) -> TransactionStatistics:
        """Counts of live transactions by kind and the layer's counters."""
        ci = sum(isinstance(tx, ClientInviteTransaction) for tx in self._client.values())
        si = sum(isinstance(tx, ServerInviteTransaction) for tx in self._server.values())
        c = self._counters
        return TransactionStatistics(
            client_invite=ci,
            client_non_invite=len(self._client) - ci,
            server_invite=si,
            server_non_invite=len(self._server) - si,
            retransmissions=c.retransmissions,
            timeouts=c.timeouts,
            transport_errors=c.transport_errors,
            scheduled_timers=len(self._heap),
        )
