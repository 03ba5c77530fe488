"""Non-INVITE client transaction: RFC 3261 §17.1.2, Figure 6.

Theory of operation
-------------------
The TU hands us a non-INVITE request (never ACK: an ACK has no transaction) and a destination.

* TRYING: the request is out. Timer F (64*T1) bounds the whole transaction: "If Timer F fires
  while the client transaction is still in the 'Trying' state, the client transaction SHOULD
  inform the TU about the timeout". On an unreliable transport Timer E retransmits at T1, then
  "MUST reset the timer with a value of MIN(2*T1, T2)" and so on, doubling up to T2.
* PROCEEDING: a 1xx arrived. Timer E keeps firing but "MUST be reset with a value of T2
  seconds"; Timer F still applies.
* COMPLETED: a final (200-699) arrived and went to the TU. Timer K (T4, 0 on reliable
  transports) absorbs retransmitted finals: "Once the client transaction enters the 'Completed'
  state, it MUST set Timer K ... any retransmissions of the final response that are received
  while in the 'Completed' state MUST be absorbed".

The machine does not interpret responses beyond their class (a 401 is the TU's problem).
Inputs the table does not list for a state are absorbed.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, assert_never

from router.sip.transaction.base import ClientTransaction, TransactionCounters
from router.sip.transaction.events import Event, ResponseReceived, Send, TransactionTimeout
from router.sip.transaction.timers import DEFAULT_TIMERS, Timer, Timers

if TYPE_CHECKING:
    from router.sip.message import Request, Response


class ClientNonInviteState(enum.Enum):
    """States of Figure 6 (RFC 3261)."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class ClientNonInviteInput(enum.Enum):
    """What can happen to a non-INVITE client transaction."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    PROVISIONAL = "1xx from transport"
    FINAL = "200-699 from transport"
    TIMER_E = "Timer E fires"
    TIMER_F = "Timer F fires"
    TIMER_K = "Timer K fires"
    TRANSPORT_ERROR = "Transport Err."


_S = ClientNonInviteState
_I = ClientNonInviteInput

TRANSITIONS: dict[ClientNonInviteState, dict[ClientNonInviteInput, ClientNonInviteState]] = {
    _S.TRYING: {
        _I.TIMER_E: _S.TRYING,  # retransmit, E = min(2E, T2)
        _I.TIMER_F: _S.TERMINATED,  # inform TU of the timeout
        _I.PROVISIONAL: _S.PROCEEDING,  # 1xx to TU
        _I.FINAL: _S.COMPLETED,  # to TU
        _I.TRANSPORT_ERROR: _S.TERMINATED,  # inform TU
    },
    _S.PROCEEDING: {
        _I.TIMER_E: _S.PROCEEDING,  # retransmit, E = T2
        _I.TIMER_F: _S.TERMINATED,  # inform TU of the timeout
        _I.PROVISIONAL: _S.PROCEEDING,  # 1xx to TU
        _I.FINAL: _S.COMPLETED,  # to TU
        _I.TRANSPORT_ERROR: _S.TERMINATED,  # inform TU
    },
    _S.COMPLETED: {
        _I.TIMER_K: _S.TERMINATED,  # retransmitted finals are absorbed until then
    },
    _S.TERMINATED: {},
}
"""Figure 6 of RFC 3261, as data."""

_TIMER_INPUT = {Timer.E: _I.TIMER_E, Timer.F: _I.TIMER_F, Timer.K: _I.TIMER_K}


class ClientNonInviteTransaction(ClientTransaction):
    """The non-INVITE client transaction; sends the request on construction."""

    __slots__ = ("last_response", "state")

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
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"a non-INVITE client transaction cannot send {request.method}")
        super().__init__(
            request, dest, now=now, timers=timers, reliable=reliable, sink=sink, counters=counters
        )
        self.state = ClientNonInviteState.TRYING
        """Current state of Figure 6."""
        self.last_response: Response | None = None
        """The last response passed to the TU."""
        self.sink.append(Send(request, dest, self, reliable=reliable))
        if not reliable:
            self._arm_retransmit(Timer.E, timers.e, now)
        self._arm_lifetime(Timer.F, timers.f, now)

    @property
    def state_name(self) -> str:
        return self.state.name

    def receive_response(
        self, response: Response, *, now: float, source: tuple[str, int] | None = None
    ) -> None:
        """A response matched this transaction (§17.1.3); ``source`` is where it came from."""
        inp = _I.PROVISIONAL if response.status < 200 else _I.FINAL
        self._step(inp, now, response, source)

    def transport_failed(self, *, now: float) -> None:
        self._step(_I.TRANSPORT_ERROR, now, None)

    def _on_timer(self, timer: Timer, now: float) -> None:
        self._step(_TIMER_INPUT[timer], now, None)

    def _step(
        self,
        inp: ClientNonInviteInput,
        now: float,
        response: Response | None,
        source: tuple[str, int] | None = None,
    ) -> None:
        target = TRANSITIONS[self.state].get(inp)
        if target is None:
            return  # absorbed
        previous = self.state
        self.state = target
        match inp:
            case _I.TIMER_E:
                self.counters.retransmissions += 1
                self.sink.append(Send(self.request, self.dest, self, True, self.reliable))
                if previous is _S.PROCEEDING:
                    interval = self.timers.t2
                else:
                    interval = self.timers.backoff(self._rt_interval)
                self._arm_retransmit(Timer.E, interval, now)
            case _I.TIMER_F:
                self.counters.timeouts += 1
                self.sink.append(TransactionTimeout(self, Timer.F))
            case _I.PROVISIONAL:
                assert response is not None
                self.last_response = response
                self.sink.append(ResponseReceived(response, self, source))
            case _I.FINAL:
                assert response is not None
                self.last_response = response
                self.sink.append(ResponseReceived(response, self, source))
                self._disarm_all()
                k = self.timers.k(reliable=self.reliable)
                if k == 0:
                    self.state = _S.TERMINATED  # "Timer K ... 0s for TCP/SCTP"
                else:
                    self._arm_lifetime(Timer.K, k, now)
            case _I.TIMER_K:
                pass
            case _I.TRANSPORT_ERROR:
                self._report_transport_error()
            case _:
                assert_never(inp)
        if self.state is _S.TERMINATED:
            self._terminate()
