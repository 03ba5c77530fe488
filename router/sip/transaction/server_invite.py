"""INVITE server transaction: RFC 3261 §17.2.1, Figure 7, as updated by RFC 6026 Figure 7.

Theory of operation
-------------------
An INVITE arrived that matched no transaction; the layer built us and handed the INVITE to the
TU. Responses come from the TU through ``send_response``; the network gives us retransmitted
INVITEs and ACKs.

* PROCEEDING: "If a request retransmission is received while in the 'Proceeding' state, the
  most recent provisional response that was received from the TU MUST be passed to the
  transport layer for retransmission." Whether a 100 Trying goes out at once is the layer's
  ``auto_100`` choice (§17.2.1: "unless it knows that the TU will generate a provisional or
  final response within 200 ms").
* COMPLETED: a 300-699 went out. On an unreliable transport Timer G resends it at T1, 2*T1 ...
  capped at T2; a retransmitted INVITE gets it again. Timer H (64*T1) gives up on the ACK:
  "If timer H fires while in the 'Completed' state, it implies that the ACK was never
  received. In this case, the server transaction MUST transition to the 'Terminated' state, and
  MUST indicate to the TU that a transaction failure has occurred."
* CONFIRMED: the ACK came; "The purpose of the 'Confirmed' state is to absorb any additional
  ACK messages that arrive, triggered from retransmissions of the final response". Timer I
  (T4, 0 on reliable transports) ends it.
* ACCEPTED (RFC 6026 §8.7): a 2xx went out. The 2xx is retransmitted by the TU (UA core:
  ``router.sip.dialog.Uas2xxRetransmitter``; proxy: each upstream 2xx retransmission), not by
  us: "2xx from TU / send response". INVITE retransmissions are absorbed, an ACK that matches us
  is passed to the TU, and Timer L (64*T1) ends the state.

The machine does not build responses (the TU does, with ``make_response``) and knows nothing
of dialogs. Network inputs the table does not list are absorbed; TU inputs it does not list
raise `TransactionStateError`.
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
from router.sip.transaction.events import Event, RequestReceived, Send, TransactionTimeout
from router.sip.transaction.timers import DEFAULT_TIMERS, Timer, Timers

if TYPE_CHECKING:
    from router.sip.message import Request, Response


class ServerInviteState(enum.Enum):
    """States of Figure 7 (RFC 3261) plus Accepted (RFC 6026)."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class ServerInviteInput(enum.Enum):
    """What can happen to an INVITE server transaction."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    REQUEST = "INVITE from transport"
    ACK = "ACK from transport"
    PROVISIONAL = "101-199 from TU"
    SUCCESS = "2xx from TU"
    FAILURE = "300-699 from TU"
    TIMER_G = "Timer G fires"
    TIMER_H = "Timer H fires"
    TIMER_I = "Timer I fires"
    TIMER_L = "Timer L fires"
    TRANSPORT_ERROR = "Transport Err."


_S = ServerInviteState
_I = ServerInviteInput

TRANSITIONS: dict[ServerInviteState, dict[ServerInviteInput, ServerInviteState]] = {
    _S.PROCEEDING: {
        _I.REQUEST: _S.PROCEEDING,  # resend the last provisional
        _I.PROVISIONAL: _S.PROCEEDING,  # send it
        _I.SUCCESS: _S.ACCEPTED,  # send it (RFC 6026)
        _I.FAILURE: _S.COMPLETED,  # send it, start G and H
        _I.TRANSPORT_ERROR: _S.TERMINATED,  # inform TU
    },
    _S.COMPLETED: {
        _I.REQUEST: _S.COMPLETED,  # resend the final
        _I.TIMER_G: _S.COMPLETED,  # resend the final, G = min(2G, T2)
        _I.ACK: _S.CONFIRMED,  # stop G, start I
        _I.TIMER_H: _S.TERMINATED,  # inform TU: the ACK never came
        _I.TRANSPORT_ERROR: _S.TERMINATED,  # inform TU
    },
    _S.CONFIRMED: {
        _I.TIMER_I: _S.TERMINATED,  # INVITE and ACK repeats are absorbed until then
    },
    _S.ACCEPTED: {
        _I.SUCCESS: _S.ACCEPTED,  # the TU's 2xx retransmission: send it
        _I.ACK: _S.ACCEPTED,  # pass to TU
        _I.TIMER_L: _S.TERMINATED,  # INVITE repeats are absorbed until then
    },
    _S.TERMINATED: {},
}
"""Figure 7 of RFC 3261 with RFC 6026's Accepted state, as data."""

_TU_INPUTS = frozenset({_I.PROVISIONAL, _I.SUCCESS, _I.FAILURE})
_TIMER_INPUT = {Timer.G: _I.TIMER_G, Timer.H: _I.TIMER_H, Timer.I: _I.TIMER_I, Timer.L: _I.TIMER_L}


class ServerInviteTransaction(ServerTransaction):
    """The INVITE server transaction. Sends nothing until the TU responds."""

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
        if request.method != "INVITE":
            raise ValueError(f"an INVITE server transaction cannot serve {request.method}")
        # §18.2.2: over a reliable transport "the response MUST be sent using the existing
        # connection to the source of the original request"; over UDP, Via rules (RFC 3581).
        dest = source if reliable else response_destination(request.top_via, source)
        super().__init__(
            request, dest, now=now, timers=timers, reliable=reliable, sink=sink, counters=counters
        )
        self.source = source
        """(ip, port) the INVITE came from."""
        self.state = ServerInviteState.PROCEEDING
        """Current state of Figure 7."""
        self.last_response: Response | None = None
        """The most recent response the TU sent through us."""

    @property
    def state_name(self) -> str:
        return self.state.name

    def send_response(self, response: Response, *, now: float) -> None:
        """The TU answers the INVITE (any 1xx-6xx; 2xx again for a 2xx retransmission).

        Raises:
            TransactionStateError: the state takes no response of that class (e.g. a 1xx
                after the final, or anything after TERMINATED).
        """
        status = response.status
        if status < 200:
            inp = _I.PROVISIONAL
        elif status < 300:
            inp = _I.SUCCESS
        else:
            inp = _I.FAILURE
        self._step(inp, now, response, None)

    def receive_request(self, request: Request, *, now: float) -> None:
        """A retransmission of the INVITE matched this transaction (§17.2.3)."""
        self._step(_I.REQUEST, now, None, None)

    def receive_ack(self, ack: Request, source: tuple[str, int], *, now: float) -> None:
        """An ACK matched this transaction (same branch and sent-by as the INVITE)."""
        self._step(_I.ACK, now, None, (ack, source))

    def transport_failed(self, *, now: float) -> None:
        self._step(_I.TRANSPORT_ERROR, now, None, None)

    def _on_timer(self, timer: Timer, now: float) -> None:
        self._step(_TIMER_INPUT[timer], now, None, None)

    def _resend_last(self) -> None:
        if self.last_response is not None:
            self.counters.retransmissions += 1
            self.sink.append(Send(self.last_response, self.dest, self, True, self.reliable))

    def _step(
        self,
        inp: ServerInviteInput,
        now: float,
        response: Response | None,
        ack: tuple[Request, tuple[str, int]] | None,
    ) -> None:
        target = TRANSITIONS[self.state].get(inp)
        if target is None:
            if inp in _TU_INPUTS:
                raise TransactionStateError(f"{self!r} cannot send a {inp.value}")
            return  # absorbed
        self.state = target
        match inp:
            case _I.PROVISIONAL | _I.SUCCESS:
                assert response is not None
                self.last_response = response
                self.sink.append(Send(response, self.dest, self, False, self.reliable))
                if inp is _I.SUCCESS and self._life_timer is not Timer.L:
                    self._arm_lifetime(Timer.L, self.timers.l, now)
            case _I.FAILURE:
                assert response is not None
                self.last_response = response
                self.sink.append(Send(response, self.dest, self, False, self.reliable))
                # "For unreliable transports, timer G is set to fire in T1 seconds ... For any
                # transport, timer H MUST be set to fire in 64*T1 seconds."
                if not self.reliable:
                    self._arm_retransmit(Timer.G, self.timers.g, now)
                self._arm_lifetime(Timer.H, self.timers.h, now)
            case _I.REQUEST:
                self._resend_last()
            case _I.TIMER_G:
                self._resend_last()
                self._arm_retransmit(Timer.G, self.timers.backoff(self._rt_interval), now)
            case _I.ACK:
                assert ack is not None
                if target is _S.ACCEPTED:
                    # RFC 6026 Figure 7: "ACK from transport / pass to TU"; like every 2xx ACK
                    # it reaches the TU without a transaction.
                    self.sink.append(RequestReceived(ack[0], ack[1], None))
                else:
                    self._disarm_all()
                    i = self.timers.i(reliable=self.reliable)
                    if i == 0:
                        self.state = _S.TERMINATED  # "Timer I ... 0s for TCP/SCTP"
                    else:
                        self._arm_lifetime(Timer.I, i, now)
            case _I.TIMER_H:
                self.counters.timeouts += 1
                self.sink.append(TransactionTimeout(self, Timer.H))
            case _I.TIMER_I | _I.TIMER_L:
                pass
            case _I.TRANSPORT_ERROR:
                self._report_transport_error()
            case _:
                assert_never(inp)
        if self.state is _S.TERMINATED:
            self._terminate()
