"""What the four RFC 3261 §17 machines share: two timer slots, the event sink and counters.

Every machine holds at most two armed timers at once, so the base class keeps two slots:

* the *retransmit* slot (Timers A, E, G): fires repeatedly with a growing interval;
* the *lifetime* slot (Timers B, D, F, H, I, J, K, L, M): fires once and usually terminates.

A machine reports ``next_deadline()`` (the earlier slot) and the driver calls
``handle_timers(now=...)`` at or after it; the machine fires every due timer in deadline order.
A retransmission is rescheduled from ``now``, like pjsip does, so a late driver never causes a
burst of catch-up retransmissions.

Outputs go to ``sink``, a list shared with the `TransactionLayer` (one list for all
transactions: no per-transaction queues to poll). A machine built alone gets its own list and
exposes it through ``drain_events()``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.sip.transaction.events import Event, TransactionTerminated, TransportError
from router.sip.transaction.timers import DEFAULT_TIMERS, Timer, Timers

if TYPE_CHECKING:
    from collections.abc import Hashable

    from router.sip.message import Request, Response


class TransactionStateError(RuntimeError):
    """The TU asked for something the machine's state forbids (our bug, not the peer's).

    For example a second final response on a non-INVITE server transaction, or a 1xx after a
    2xx. Network inputs never raise this: a message the state does not expect is absorbed.
    """


@dataclass(slots=True)
class TransactionCounters:
    """Mutable counters shared by the transactions of one layer (see ``statistics()``)."""

    retransmissions: int = 0
    """Requests and responses sent again by Timers A, E, G or on a retransmitted request."""
    timeouts: int = 0
    """Timers B, F and H that fired."""
    transport_errors: int = 0
    """Transactions that ended by a transport failure."""


class Transaction(abc.ABC):
    """Base of the four machines: request, addressing, timer slots and output plumbing."""

    __slots__ = (
        "_life_at",
        "_life_timer",
        "_rt_at",
        "_rt_interval",
        "_rt_timer",
        "counters",
        "created_at",
        "dest",
        "key",
        "reliable",
        "request",
        "scheduled_at",
        "sink",
        "terminated",
        "timers",
    )

    def __init__(
        self,
        request: Request,
        dest: tuple[str, int],
        *,
        now: float,
        timers: Timers = DEFAULT_TIMERS,
        reliable: bool = False,
        sink: list[Event] | None = None,
        counters: TransactionCounters | None = None,
    ) -> None:
        self.request = request
        """The request that created the transaction (INVITE, BYE, CANCEL ...)."""
        self.dest = dest
        """Client: where requests go. Server: where responses go (§18.2.2, RFC 3581)."""
        self.reliable = reliable
        """Reliable transport (TCP/TLS): no retransmissions and zero-length D, I, J, K."""
        self.timers = timers
        self.sink: list[Event] = [] if sink is None else sink
        self.counters = TransactionCounters() if counters is None else counters
        self.created_at = now
        self.key: Hashable = None
        """Matching key, set and owned by the layer."""
        self.terminated = False
        """True once the machine reached TERMINATED (a plain slot: the layer reads it often)."""
        self.scheduled_at: float | None = None
        """The deadline the layer last queued for this transaction (lazy heap deletion)."""
        self._rt_timer: Timer | None = None
        self._rt_at: float | None = None
        self._rt_interval = 0.0
        self._life_timer: Timer | None = None
        self._life_at: float | None = None

    # -- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The time of the next timer, or None when none is armed."""
        rt, life = self._rt_at, self._life_at
        if rt is None:
            return life
        if life is None or rt < life:
            return rt
        return life

    def handle_timers(self, *, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while True:
            rt, life = self._rt_at, self._life_at
            if rt is not None and rt <= now and (life is None or rt <= life):
                timer = self._rt_timer
                self._rt_at = self._rt_timer = None
            elif life is not None and life <= now:
                timer = self._life_timer
                self._life_at = self._life_timer = None
            else:
                return
            assert timer is not None
            self._on_timer(timer, now)

    def _arm_retransmit(self, timer: Timer, interval: float, now: float) -> None:
        self._rt_timer = timer
        self._rt_interval = interval
        self._rt_at = now + interval

    def _disarm_retransmit(self) -> None:
        self._rt_timer = self._rt_at = None

    def _arm_lifetime(self, timer: Timer, duration: float, now: float) -> None:
        self._life_timer = timer
        self._life_at = now + duration

    def _disarm_all(self) -> None:
        self._rt_timer = self._rt_at = None
        self._life_timer = self._life_at = None

    @abc.abstractmethod
    def _on_timer(self, timer: Timer, now: float) -> None:
        """Feed the fired timer to the machine's transition table."""

    @abc.abstractmethod
    def transport_failed(self, *, now: float) -> None:
        """The transport could not deliver a message of this transaction (§17.1.4, §17.2.4)."""

    # -- shared outputs -------------------------------------------------------------------

    def _terminate(self) -> None:
        self.terminated = True
        self._disarm_all()
        self.sink.append(TransactionTerminated(self))

    def _report_transport_error(self) -> None:
        self.counters.transport_errors += 1
        self.sink.append(TransportError(self))

    def drain_events(self) -> list[Event]:
        """Return and clear the queued events (only meaningful when the machine owns its sink)."""
        events = self.sink[:]
        self.sink.clear()
        return events

    @property
    def branch(self) -> str | None:
        """The branch of the request's top Via (the transaction id, §17)."""
        return self.request.top_via.branch

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.branch} {self.state_name}>"

    @property
    @abc.abstractmethod
    def state_name(self) -> str:
        """The RFC name of the current state (for logs and traces)."""


class ClientTransaction(Transaction):
    """Base of the client machines (§17.1): they send the request and receive responses."""

    __slots__ = ()

    @abc.abstractmethod
    def receive_response(
        self, response: Response, *, now: float, source: tuple[str, int] | None = None
    ) -> None:
        """A response matched this transaction (§17.1.3); ``source`` is where it came from."""


class ServerTransaction(Transaction):
    """Base of the server machines (§17.2): they receive the request and send responses."""

    __slots__ = ()

    @abc.abstractmethod
    def receive_request(self, request: Request, *, now: float) -> None:
        """A retransmission of the request matched this transaction (§17.2.3)."""

    @abc.abstractmethod
    def send_response(self, response: Response, *, now: float) -> None:
        """The TU answers through this transaction.

        Raises:
            TransactionStateError: the state takes no response of that class.
        """
