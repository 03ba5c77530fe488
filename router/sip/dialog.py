"""Dialogs for user agents (RFC 3261 §12), CANCEL building (§9.1), and UAS 2xx retransmission.

A dialog is "a peer-to-peer SIP relationship between two UAs that persists for some time"
(§12), identified by Call-ID, local tag and remote tag. The UA that sent the dialog-creating
request builds it with `Dialog.from_uac` from the request and a 2xx (or a 1xx with a To tag);
the UA that answered builds it with `Dialog.from_uas` from the request and its own tag. Both
then build in-dialog requests with `Dialog.create_request` (new CSeq, route set as Route
headers, Request-URI by loose or strict routing) and the UAC acknowledges 2xx with
`Dialog.build_ack`.

Proxies do not keep dialogs; the Asterisk emulator and the trio UA do. The 2xx of an INVITE is
retransmitted by the UAS *core*, not by the transaction (RFC 6026 Accepted state):
`Uas2xxRetransmitter` is that core duty, on the schedule of §13.3.1.4 which Asterisk/pjsip
follow exactly: resend at T1, 2*T1, 4*T1 ... capped at T2, give up at 64*T1 (the UA then sends
BYE, "the session SHOULD be terminated").

Nothing here does I/O or reads a clock; ``now`` is passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .headers import CSeq, NameAddr, Via
from .message import Headers, Request, Response, new_branch
from .transaction.events import Send
from .transaction.timers import DEFAULT_TIMERS, Timers
from .uri import SipUri, Uri

if TYPE_CHECKING:
    from collections.abc import Iterable


class DialogState(enum.Enum):
    """§12: "A dialog can also be in the 'early' state ... and 'confirmed' after a 2xx"."""

    EARLY = "early"
    CONFIRMED = "confirmed"


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: "A dialog is identified ... by a Call-ID, a local tag and a remote tag"."""

    call_id: str
    """The Call-ID of every request in the dialog."""
    local_tag: str
    """Our tag: From tag for the UAC, To tag for the UAS."""
    remote_tag: str
    """The peer's tag."""


def _require_tag(addr: NameAddr, what: str) -> str:
    tag = addr.tag
    if not tag:
        raise ValueError(f"a dialog needs a {what} tag")
    return tag


def _contact_uri(message: Request | Response) -> Uri:
    contacts = message.contacts
    if not contacts:
        raise ValueError("a dialog-creating message needs a Contact (§12.1.1, §12.1.2)")
    return contacts[0].uri


@dataclass(slots=True)
class Dialog:
    """The state of one dialog, from one side (§12.1)."""

    id: DialogId
    """Call-ID and tags."""
    local_uri: NameAddr
    """Our From (UAC) / To (UAS), with our tag; used as From in our requests."""
    remote_uri: NameAddr
    """The peer's address, with its tag; used as To in our requests."""
    remote_target: Uri
    """The peer's Contact: Request-URI of our requests (loose routing)."""
    route_set: list[NameAddr] = field(default_factory=list)
    """Record-Route as seen by us: reversed for the UAC, in order for the UAS."""
    local_seq: int | None = None
    """Last CSeq number we used; None until we send (§12.1.1 "MUST be empty")."""
    remote_seq: int | None = None
    """Last CSeq number the peer used."""
    local_target: Uri | None = None
    """Our Contact, put in requests we send."""
    secure: bool = False
    """§12.1.1: set when the request came over TLS and the Request-URI is sips."""
    state: DialogState = DialogState.CONFIRMED
    """Early (1xx with tag) or confirmed (2xx)."""

    @classmethod
    def from_uac(
        cls,
        request: Request,
        response: Response,
        *,
        local_target: Uri | None = None,
        secure: bool = False,
    ) -> Dialog:
        """The UAC side, from the dialog-creating request and a 2xx or tagged 1xx (§12.1.2).

        "The route set MUST be set to the list of URIs in the Record-Route header field from
        the response, taken in reverse order ... The remote target MUST be set to the URI from
        the Contact header field of the response. The local sequence number MUST be set to the
        value of the sequence number in the CSeq header field of the request. The remote
        sequence number MUST be empty."

        Raises:
            ValueError: the response is not 1xx/2xx, has no To tag or no Contact.
            SipParseError: a header the dialog needs is malformed.
        """
        if not 101 <= response.status < 300:
            raise ValueError(f"a {response.status} does not create a dialog")
        local_tag = _require_tag(request.from_, "From")
        remote_tag = _require_tag(response.to, "To")
        return cls(
            id=DialogId(request.call_id, local_tag, remote_tag),
            local_uri=request.from_,
            remote_uri=response.to,
            remote_target=_contact_uri(response),
            route_set=list(reversed(response.record_routes)),
            local_seq=request.cseq.seq,
            local_target=local_target,
            secure=secure,
            state=DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED,
        )

    @classmethod
    def from_uas(
        cls,
        request: Request,
        local_tag: str,
        *,
        local_target: Uri | None = None,
        secure: bool = False,
        early: bool = False,
    ) -> Dialog:
        """The UAS side, from the dialog-creating request and our To tag (§12.1.1).

        "The route set MUST be set to the list of URIs in the Record-Route header field from
        the request, taken in order ... The remote target MUST be set to the URI from the
        Contact header field of the request. The remote sequence number MUST be set to the
        value of the sequence number in the CSeq header field of the request. The local
        sequence number MUST be empty."

        Raises:
            ValueError: the request has no From tag or no Contact.
            SipParseError: a header the dialog needs is malformed.
        """
        remote_tag = _require_tag(request.from_, "From")
        return cls(
            id=DialogId(request.call_id, local_tag, remote_tag),
            local_uri=request.to.with_tag(local_tag),
            remote_uri=request.from_,
            remote_target=_contact_uri(request),
            route_set=list(request.record_routes),
            remote_seq=request.cseq.seq,
            local_target=local_target,
            secure=secure,
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
        )

    # -- receiving ------------------------------------------------------------------------

    def receive_request(self, request: Request) -> bool:
        """Check and absorb an in-dialog request's CSeq (§12.2.2).

        "If the remote sequence number is empty, it MUST be set to the value of the sequence
        number in the CSeq header field value in the request. If the remote sequence number was
        not empty, but the sequence number of the request is lower than the remote sequence
        number, the request is out of order and MUST be rejected with a 500". ACK and CANCEL
        reuse their INVITE's number, so equal numbers are accepted. A target-refresh request
        (re-INVITE, UPDATE) with a Contact replaces the remote target.

        Returns:
            False when the request is out of order (answer 500), True otherwise.
        """
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return False
        self.remote_seq = seq
        if request.method in ("INVITE", "UPDATE") and request.contacts:
            self.remote_target = request.contacts[0].uri
        return True

    def receive_response(self, response: Response) -> None:
        """A response to a request in this dialog: a 2xx confirms it, a Contact refreshes the
        target for INVITE/UPDATE (§12.2.1.2)."""
        if 200 <= response.status < 300:
            self.state = DialogState.CONFIRMED
            if response.cseq.method in ("INVITE", "UPDATE") and response.contacts:
                self.remote_target = response.contacts[0].uri

    # -- sending --------------------------------------------------------------------------

    def next_hop(self) -> Uri:
        """Where in-dialog requests go: the first route, or the remote target (§12.2.1.1)."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def _routing(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for a request in this dialog (§12.2.1.1).

        Loose: "If the route set is not empty, and the first URI in the route set contains the
        lr parameter ... the UAC MUST place the remote target URI into the Request-URI and MUST
        include a Route header field containing the route set values in order".
        Strict: "the UAC MUST place the first URI from the route set into the Request-URI,
        stripping any parameters that are not allowed in a Request-URI. The UAC MUST add a
        Route header field containing the remainder of the route set values in order ... The
        UAC MUST then place the remote target URI into the Route header field as the last
        value." We strip the URI's header components (never allowed in a Request-URI) and
        keep its parameters (XXX: §19.1.1's table only bars ``method`` and headers).
        """
        if not self.route_set:
            return str(self.remote_target), []
        first = self.route_set[0].uri
        if isinstance(first, SipUri) and first.lr:
            return str(self.remote_target), [str(r) for r in self.route_set]
        ruri = first.with_(headers=()) if isinstance(first, SipUri) else first
        routes = [str(r) for r in self.route_set[1:]]
        routes.append(str(NameAddr(None, self.remote_target)))
        return str(ruri), routes

    def _build(
        self,
        method: str,
        seq: int,
        via: Via,
        extra: Iterable[tuple[str, str]],
        body: bytes,
    ) -> Request:
        ruri, routes = self._routing()
        fields: list[tuple[str, str]] = [("Via", str(via)), ("Max-Forwards", "70")]
        fields.extend(("Route", r) for r in routes)
        fields += [
            ("From", str(self.local_uri)),
            ("To", str(self.remote_uri)),
            ("Call-ID", self.id.call_id),
            ("CSeq", str(CSeq(seq, method))),
        ]
        if self.local_target is not None and method != "ACK":
            fields.append(("Contact", str(NameAddr(None, self.local_target))))
        fields.extend(extra)
        return Request(method, ruri, Headers(fields), body)

    def create_request(
        self,
        method: str,
        via: Via,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Request:
        """A new request in this dialog (BYE, re-INVITE, INFO ...), with the next CSeq.

        Args:
            method: the method; not ACK (use ``build_ack``) nor CANCEL (use ``build_cancel``).
            via: our Via; a fresh branch is put in when it has none.
            headers: extra fields appended at the end.
            body: message body.

        Raises:
            ValueError: ACK or CANCEL.
        """
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} reuses its INVITE's CSeq: use build_ack/build_cancel")
        # §12.2.1.1: "the local sequence number MUST be incremented by one ... If the local
        # sequence number is empty, an initial value MUST be chosen".
        self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
        if via.branch is None:
            via = via.with_param("branch", new_branch())
        return self._build(method, self.local_seq, via, headers, body)

    def build_ack(self, invite: Request, *, branch: str | None = None) -> Request:
        """The ACK for a 2xx to ``invite`` (§13.2.2.4).

        "The header fields of the ACK are constructed in the same way as for any request sent
        within a dialog ... with the exception of the CSeq and the header fields related to
        authentication. The sequence number of the CSeq header field MUST be the same as the
        INVITE being acknowledged, but the CSeq method MUST be ACK." It is a new transaction
        (§17.1.1.3), hence a new branch on the INVITE's Via sent-by.
        """
        via = invite.top_via
        via = Via(via.transport, via.host, via.port, (("branch", branch or new_branch()),))
        return self._build("ACK", invite.cseq.seq, via, (), b"")


def build_cancel(invite: Request) -> Request:
    """The CANCEL for a client INVITE (§9.1).

    "The Request-URI, Call-ID, To, the numeric part of CSeq, and From header fields in the
    CANCEL request MUST be identical to those in the request being cancelled, including tags. A
    CANCEL constructed by a client MUST have only a single Via header field value matching the
    top Via value in the request being cancelled ... If the request being cancelled contains a
    Route header field, the CANCEL request MUST include that Route header field's values."

    Raises:
        ValueError: ``invite`` is not an INVITE.
    """
    if invite.method != "INVITE":
        raise ValueError(f"only an INVITE can be cancelled, not {invite.method}")
    h = invite.headers
    fields: list[tuple[str, str]] = [("Via", h.values("via")[0])]
    fields.extend(("Route", value) for value in h.get_all("route"))
    fields.append(("Max-Forwards", "70"))
    for name in ("From", "To", "Call-ID"):
        value = h.get(name)
        if value is None:
            raise ValueError(f"cannot cancel a request without {name}")
        fields.append((name, value))
    fields.append(("CSeq", str(CSeq(invite.cseq.seq, "CANCEL"))))
    return Request("CANCEL", invite.uri, Headers(fields))


# -- UAS 2xx retransmission ---------------------------------------------------------------


class Uas2xxState(enum.Enum):
    """Life of a 2xx waiting for its ACK."""

    WAITING = "waiting"
    ACKED = "acked"
    TIMED_OUT = "timed out"


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """No ACK came within 64*T1: "the session SHOULD be terminated" (§13.3.1.4): send BYE."""

    retransmitter: Uas2xxRetransmitter
    """The retransmitter that gave up."""


class Uas2xxRetransmitter:
    """Resends a 2xx to INVITE until its ACK arrives (RFC 3261 §13.3.1.4).

    "the 2xx response is passed to the transport with an interval that starts at T1 seconds
    and doubles for each retransmission until it reaches T2 seconds ... The response MUST be
    retransmitted ... If the server retransmits the 2xx response for 64*T1 seconds without
    receiving an ACK, the dialog is confirmed, but the session SHOULD be terminated." With
    T1 = 0.5 s and T2 = 4 s the resends fall at +0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5 s and the
    give-up at 32 s, exactly as Asterisk (pjsip) does.

    The first copy is the caller's to send (through the INVITE server transaction).
    """

    __slots__ = (
        "_at",
        "_events",
        "_giveup_at",
        "_interval",
        "_timers",
        "dest",
        "reliable",
        "response",
        "state",
    )

    def __init__(
        self,
        response: Response,
        dest: tuple[str, int],
        *,
        now: float,
        timers: Timers = DEFAULT_TIMERS,
        reliable: bool = False,
    ) -> None:
        if not 200 <= response.status < 300:
            raise ValueError(f"only a 2xx is retransmitted by the UA core, not {response.status}")
        self.response = response
        """The 2xx being retransmitted."""
        self.dest = dest
        """Where it goes (the INVITE server transaction's response address)."""
        self.reliable = reliable
        """Passed on in `Send` (RFC 3261 retransmits the 2xx on every transport)."""
        self.state = Uas2xxState.WAITING
        """Waiting, acknowledged, or given up."""
        self._timers = timers
        self._interval = timers.t1
        self._at: float | None = now + timers.t1
        self._giveup_at = now + 64 * timers.t1
        self._events: list[Send | AckTimeout] = []

    def is_ack_for(self, ack: Request) -> bool:
        """True when ``ack`` acknowledges our 2xx: ACK, same Call-ID, CSeq number, To tag."""
        return (
            ack.method == "ACK"
            and ack.call_id == self.response.call_id
            and ack.cseq.seq == self.response.cseq.seq
            and ack.to.tag == self.response.to.tag
        )

    def ack_received(self, *, now: float) -> None:
        """The ACK came: stop (retransmissions "cease when an ACK request ... is received")."""
        if self.state is Uas2xxState.WAITING:
            self.state = Uas2xxState.ACKED
            self._at = None

    def next_deadline(self) -> float | None:
        """The next resend or the give-up time; None once acknowledged or given up."""
        if self._at is None:
            return None
        return min(self._at, self._giveup_at)

    def handle_timers(self, *, now: float) -> None:
        """Resend the 2xx if due, or give up at 64*T1."""
        while self._at is not None:
            if self._giveup_at <= now and self._giveup_at <= self._at:
                self._at = None
                self.state = Uas2xxState.TIMED_OUT
                self._events.append(AckTimeout(self))
            elif self._at <= now:
                self._events.append(Send(self.response, self.dest, None, True, self.reliable))
                self._interval = self._timers.backoff(self._interval)
                self._at = now + self._interval
            else:
                return

    def drain_events(self) -> list[Send | AckTimeout]:
        """Return and clear the queued `Send` and `AckTimeout` events."""
        events = self._events
        self._events = []
        return events
