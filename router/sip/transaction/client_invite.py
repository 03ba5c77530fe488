"""INVITE client transaction: RFC 3261 §17.1.1, Figure 5, as updated by RFC 6026 Figure 5.

Theory of operation
-------------------
The TU hands us an INVITE and a destination; we send it and own it until a final response.

* CALLING: the INVITE is out. On an unreliable transport Timer A retransmits it at T1, 2*T1,
  4*T1 ... (§17.1.1.2: "the client transaction MUST start timer A with a value of T1 ... When
  timer A fires, the client transaction MUST retransmit the request ... and MUST reset the timer
  with a value of 2*T1"; no T2 cap for INVITE). Timer B (64*T1) is the give-up: "If the client
  transaction is still in the 'Calling' state when timer B fires, the client transaction SHOULD
  inform the TU that a timeout has occurred" (the TU synthesizes the 408).
* PROCEEDING: a 1xx arrived, retransmissions stop, and Timer B no longer applies (only the
  proxy's Timer C, a TU concern, bounds this state).
* COMPLETED: a 300-699 arrived. "The client transaction MUST pass the received response up to
  the TU, and the client transaction MUST generate an ACK request" (§17.1.1.3); retransmitted
  finals are answered with the same ACK and not passed up; Timer D (0 on reliable transports)
  absorbs them before TERMINATED.
* ACCEPTED (RFC 6026 §8.4): a 2xx arrived. The ACK for a 2xx is the TU's business (a new
  transaction, §13.2.2.4); we stay for Timer M (64*T1) so that "any 2xx responses that match
  this client transaction are passed up to the TU" instead of looking stray.

The machine knows nothing of dialogs, forking or Timer C; it never inspects bodies.
Inputs the table does not list for a state are absorbed (e.g. a 1xx in COMPLETED).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, assert_never

from router.sip.message import Headers, Request
from router.sip.transaction.base import ClientTransaction, TransactionCounters
from router.sip.transaction.events import (
    Event,
    ResponseReceived,
    Send,
    TransactionTimeout,
)
from router.sip.transaction.timers import DEFAULT_TIMERS, Timer, Timers

if TYPE_CHECKING:
    from router.sip.message import Response


class ClientInviteState(enum.Enum):
    """States of Figure 5 (RFC 3261) plus Accepted (RFC 6026)."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class ClientInviteInput(enum.Enum):
    """What can happen to an INVITE client transaction."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    PROVISIONAL = "1xx from transport"
    SUCCESS = "2xx from transport"
    FAILURE = "300-699 from transport"
    TIMER_A = "Timer A fires"
    TIMER_B = "Timer B fires"
    TIMER_D = "Timer D fires"
    TIMER_M = "Timer M fires"
    TRANSPORT_ERROR = "Transport Err."


_S = ClientInviteState
_I = ClientInviteInput

TRANSITIONS: dict[ClientInviteState, dict[ClientInviteInput, ClientInviteState]] = {
    _S.CALLING: {
        _I.TIMER_A: _S.CALLING,  # retransmit, double A
        _I.TIMER_B: _S.TERMINATED,  # inform TU of the timeout
        _I.PROVISIONAL: _S.PROCEEDING,  # 1xx to TU
        _I.SUCCESS: _S.ACCEPTED,  # 2xx to TU (RFC 6026)
        _I.FAILURE: _S.COMPLETED,  # to TU, send ACK
        _I.TRANSPORT_ERROR: _S.TERMINATED,  # inform TU
    },
    _S.PROCEEDING: {
        _I.PROVISIONAL: _S.PROCEEDING,  # 1xx to TU
        _I.SUCCESS: _S.ACCEPTED,  # 2xx to TU (RFC 6026)
        _I.FAILURE: _S.COMPLETED,  # to TU, send ACK
    },
    _S.COMPLETED: {
        _I.FAILURE: _S.COMPLETED,  # retransmitted final: send ACK again, not to TU
        _I.TIMER_D: _S.TERMINATED,
        _I.TRANSPORT_ERROR: _S.TERMINATED,  # the ACK could not be sent: inform TU
    },
    _S.ACCEPTED: {
        _I.SUCCESS: _S.ACCEPTED,  # 2xx retransmission (or another fork's 2xx) to TU
        _I.TIMER_M: _S.TERMINATED,
    },
    _S.TERMINATED: {},
}
"""Figure 5 of RFC 3261 with RFC 6026's Accepted state, as data."""

_TIMER_INPUT = {
    Timer.A: _I.TIMER_A,
    Timer.B: _I.TIMER_B,
    Timer.D: _I.TIMER_D,
    Timer.M: _I.TIMER_M,
}


def build_non2xx_ack(request: Request, response: Response) -> Request:
    """Build the hop-by-hop ACK for a 300-699 answer to ``request`` (RFC 3261 §17.1.1.3).

    "The ACK request constructed by the client transaction MUST contain values for the Call-ID,
    From, and Request-URI that are equal to the values of those header fields in the request
    ... The To header field in the ACK MUST equal the To header field in the response being
    acknowledged ... The ACK MUST contain a single Via header field, and this MUST be equal to
    the top Via header field of the original request. The CSeq header field in the ACK MUST
    contain the same value for the sequence number ... but the method parameter MUST be equal to
    'ACK'. If the INVITE request whose response is being acknowledged had Route header fields,
    those header fields MUST appear in the ACK."

    Args:
        request: the INVITE as sent by the client transaction.
        response: the 300-699 response being acknowledged.

    Returns:
        The ACK request (raw header values are copied, so it matches byte for byte).
    """
    rh = request.headers
    fields: list[tuple[str, str]] = [("Via", rh.values("via")[0])]
    fields.extend(("Route", value) for value in rh.get_all("route"))
    max_forwards = rh.get("max-forwards")
    fields.append(("Max-Forwards", "70" if max_forwards is None else max_forwards))
    fields.append(("From", _required(rh, "from")))
    fields.append(("To", _required(response.headers, "to")))
    fields.append(("Call-ID", _required(rh, "call-id")))
    fields.append(("CSeq", f"{request.cseq.seq} ACK"))
    return Request("ACK", request.uri, Headers(fields))


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        # Unreachable for messages that got this far: CSeq/Via were parsed to match them.
        raise ValueError(f"cannot build an ACK without {name}")
    return value


class ClientInviteTransaction(ClientTransaction):
    """The INVITE client transaction; sends the INVITE on construction."""

    __slots__ = ("ack", "last_response", "state")

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
        if request.method != "INVITE":
            raise ValueError(f"an INVITE client transaction cannot send {request.method}")
        super().__init__(
            request, dest, now=now, timers=timers, reliable=reliable, sink=sink, counters=counters
        )
        self.state = ClientInviteState.CALLING
        """Current state of Figure 5."""
        self.ack: Request | None = None
        """The ACK we built for a 300-699 final, once there is one."""
        self.last_response: Response | None = None
        """The last response passed to the TU."""
        self.sink.append(Send(request, dest, self, reliable=reliable))
        # "For any transport, the client transaction MUST start timer B"; Timer A only when
        # "an unreliable transport protocol is being used" (§17.1.1.2).
        if not reliable:
            self._arm_retransmit(Timer.A, timers.a, now)
        self._arm_lifetime(Timer.B, timers.b, now)

    @property
    def state_name(self) -> str:
        return self.state.name

    def receive_response(
        self, response: Response, *, now: float, source: tuple[str, int] | None = None
    ) -> None:
        """A response matched this transaction (§17.1.3); ``source`` is where it came from."""
        status = response.status
        if status < 200:
            inp = _I.PROVISIONAL
        elif status < 300:
            inp = _I.SUCCESS
        else:
            inp = _I.FAILURE
        self._step(inp, now, response, source)

    def transport_failed(self, *, now: float) -> None:
        self._step(_I.TRANSPORT_ERROR, now, None)

    def _on_timer(self, timer: Timer, now: float) -> None:
        self._step(_TIMER_INPUT[timer], now, None)

    def _step(
        self,
        inp: ClientInviteInput,
        now: float,
        response: Response | None,
        source: tuple[str, int] | None = None,
    ) -> None:
        target = TRANSITIONS[self.state].get(inp)
        if target is None:
            return  # absorbed: nothing in Figure 5 for this input in this state
        previous = self.state
        self.state = target
        match inp:
            case _I.TIMER_A:
                self.counters.retransmissions += 1
                self.sink.append(Send(self.request, self.dest, self, True, self.reliable))
                self._arm_retransmit(Timer.A, 2 * self._rt_interval, now)
            case _I.TIMER_B:
                self.counters.timeouts += 1
                self.sink.append(TransactionTimeout(self, Timer.B))
            case _I.PROVISIONAL:
                assert response is not None
                self._disarm_all()  # no more A; B only bounds CALLING
                self.last_response = response
                self.sink.append(ResponseReceived(response, self, source))
            case _I.SUCCESS:
                assert response is not None
                if previous is not _S.ACCEPTED:
                    self._disarm_all()
                    self._arm_lifetime(Timer.M, self.timers.m, now)
                self.last_response = response
                self.sink.append(ResponseReceived(response, self, source))
            case _I.FAILURE:
                assert response is not None
                if previous is _S.COMPLETED:
                    assert self.ack is not None
                    self.counters.retransmissions += 1
                    self.sink.append(Send(self.ack, self.dest, self, True, self.reliable))
                else:
                    self.last_response = response
                    self.sink.append(ResponseReceived(response, self, source))
                    self.ack = build_non2xx_ack(self.request, response)
                    self.sink.append(Send(self.ack, self.dest, self, False, self.reliable))
                    self._disarm_all()
                    d = self.timers.d(reliable=self.reliable)
                    if d == 0:
                        self.state = _S.TERMINATED  # "Timer D ... 0s for TCP/SCTP"
                    else:
                        self._arm_lifetime(Timer.D, d, now)
            case _I.TIMER_D | _I.TIMER_M:
                pass
            case _I.TRANSPORT_ERROR:
                self._report_transport_error()
            case _:
                assert_never(inp)
        if self.state is _S.TERMINATED:
            self._terminate()
