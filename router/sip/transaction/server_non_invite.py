"""Non-INVITE server transaction: RFC 3261 §17.2.2, Figure 8.

Theory of operation
-------------------
A non-INVITE request (not ACK) arrived that matched no transaction; the layer built us and
handed the request to the TU. A CANCEL is such a request too: it gets its own transaction and
its own 200, whatever happens to the INVITE it cancels (§9.2).

* TRYING: waiting for the TU. "While in the 'Trying' state, if the request is retransmitted,
  the request MUST be discarded by the transport" (nothing was sent yet).
* PROCEEDING: the TU sent a 1xx. "If a retransmission of the request is received while in the
  'Proceeding' state, the most recent provisional response that was received from the TU MUST
  be passed to the transport layer for retransmission."
* COMPLETED: the TU sent its final (200-699). "While in the 'Completed' state, the server
  transaction MUST pass the final response to the transport layer for retransmission whenever a
  retransmission of the request is received." Timer J (64*T1, 0 on reliable transports) ends
  it. There is no server-side retransmission timer: the client's Timer E drives the repeats.

Network inputs the table does not list are absorbed; TU inputs it does not list raise
`TransactionStateError`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, assert_never

from router.sip.routing import response_destination
from router.sip.transaction.base import (
    ServerTransaction,
    TransactionCounters,
    TransactionStateError,
)
from router.sip.transaction.events import Event, Send
from router.sip.transaction.timers import DEFAULT_TIMERS, Timer, Timers

if TYPE_CHECKING:
    from router.sip.message import Request, Response


class ServerNonInviteState(enum.Enum):
    """States of Figure 8 (RFC 3261)."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class ServerNonInviteInput(enum.Enum):
    """What can happen to a non-INVITE server transaction."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    REQUEST = "Request from transport"
    PROVISIONAL = "1xx from TU"
    FINAL = "200-699 from TU"
    TIMER_J = "Timer J fires"
    TRANSPORT_ERROR = "Transport Err."


_S = ServerNonInviteState
_I = ServerNonInviteInput

TRANSITIONS: dict[ServerNonInviteState, dict[ServerNonInviteInput, ServerNonInviteState]] = {
    _S.TRYING: {
        _I.PROVISIONAL: _S.PROCEEDING,  # send it
        _I.FINAL: _S.COMPLETED,  # send it, start J
        # a request retransmission is discarded (not listed: absorbed)
    },
    _S.PROCEEDING: {
        _I.REQUEST: _S.PROCEEDING,  # resend the last provisional
        _I.PROVISIONAL: _S.PROCEEDING,  # send it
        _I.FINAL: _S.COMPLETED,  # send it, start J
        _I.TRANSPORT_ERROR: _S.TERMINATED,  # inform TU
    },
    _S.COMPLETED: {
        _I.REQUEST: _S.COMPLETED,  # resend the final
        _I.TIMER_J: _S.TERMINATED,
        _I.TRANSPORT_ERROR: _S.TERMINATED,  # inform TU
    },
    _S.TERMINATED: {},
}
"""Figure 8 of RFC 3261, as data."""


class ServerNonInviteTransaction(ServerTransaction):
    """The non-INVITE server transaction. Sends nothing until the TU responds."""

    __slots__ = ("last_response", "source", "state")

    def __init__(
        self,
        request: Request,
        source: tuple[str, int],
        *,
        now: float,
        timers: Timers = DEFAULT_TIMERS,
        reliable: bool = False,
        sink: list[Event] | None = None,
        counters: TransactionCounters | None = None,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"a non-INVITE server transaction cannot serve {request.method}")
        # §18.2.2: over a reliable transport "the response MUST be sent using the existing
        # connection to the source of the original request"; over UDP, Via rules (RFC 3581).
        dest = source if reliable else response_destination(request.top_via, source)
        super().__init__(
            request, dest, now=now, timers=timers, reliable=reliable, sink=sink, counters=counters
        )
        self.source = source
        """(ip, port) the request came from."""
        self.state = ServerNonInviteState.TRYING
        """Current state of Figure 8."""
        self.last_response: Response | None = None
        """The most recent response the TU sent through us."""

    @property
    def state_name(self) -> str:
        return self.state.name

    def send_response(self, response: Response, *, now: float) -> None:
        """The TU answers the request.

        Raises:
            TransactionStateError: a final was already sent (or the machine terminated).
        """
        inp = _I.PROVISIONAL if response.status < 200 else _I.FINAL
        self._step(inp, now, response)

    def receive_request(self, request: Request, *, now: float) -> None:
        """A retransmission of the request matched this transaction (§17.2.3)."""
        self._step(_I.REQUEST, now, None)

    def transport_failed(self, *, now: float) -> None:
        self._step(_I.TRANSPORT_ERROR, now, None)

    def _on_timer(self, timer: Timer, now: float) -> None:
        if timer is not Timer.J:
            raise TransactionStateError(f"{self!r} has no timer {timer.name}")
        self._step(_I.TIMER_J, now, None)

    def _step(self, inp: ServerNonInviteInput, now: float, response: Response | None) -> None:
        target = TRANSITIONS[self.state].get(inp)
        if target is None:
            if inp is _I.PROVISIONAL or inp is _I.FINAL:
                raise TransactionStateError(f"{self!r} cannot send a {inp.value}")
            return  # absorbed
        self.state = target
        match inp:
            case _I.PROVISIONAL:
                assert response is not None
                self.last_response = response
                self.sink.append(Send(response, self.dest, self, False, self.reliable))
            case _I.FINAL:
                assert response is not None
                self.last_response = response
                self.sink.append(Send(response, self.dest, self, False, self.reliable))
                j = self.timers.j(reliable=self.reliable)
                if j == 0:
                    self.state = _S.TERMINATED  # "Timer J ... 0s for TCP/SCTP"
                else:
                    self._arm_lifetime(Timer.J, j, now)
            case _I.REQUEST:
                assert self.last_response is not None
                self.counters.retransmissions += 1
                self.sink.append(Send(self.last_response, self.dest, self, True, self.reliable))
            case _I.TIMER_J:
                pass
            case _I.TRANSPORT_ERROR:
                self._report_transport_error()
            case _:
                assert_never(inp)
        if self.state is _S.TERMINATED:
            self._terminate()
