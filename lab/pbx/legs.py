"""Call legs: the dialog half of each channel the emulator holds (RFC 3261 §12).

A *leg* is one SIP dialog of a channel. The emulator is a B2BUA, like Asterisk: a caller's
INVITE makes an inbound leg (we are the UAS), ``Dial``/``Queue`` make outbound legs (we are
the UAC), and the channels are bridged when a callee answers.

Dialog state kept per leg (§12.1.1 for the UAS, §12.1.2 for the UAC):

* local and remote URI and tag; the Call-ID;
* the remote target: the Contact of the INVITE (UAS) or of the 2xx (UAC);
* the route set: "the route set MUST be set to the list of URIs in the Record-Route header
  field from the request, taken in order" (UAS) / "from the response, taken in reverse order"
  (UAC). Before a UAC leg is answered its route set is the preloaded one (the Path of the
  callee's registration, RFC 3327 §5.3: "the registrar ... uses [the Path] as a preloaded Route
  set");
* the local CSeq: pjsip starts a dialog's CSeq at a random 15-bit number.

In-dialog requests follow §12.2.1.1: Request-URI = remote target, Route = route set, next hop
= the first Route when it is a loose router, else the Request-URI.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.sip import (
    Headers,
    NameAddr,
    Request,
    Response,
    SipError,
    SipUri,
    new_branch,
    parse_name_addr,
    parse_uri,
)
from router.sip.routing import uri_destination

if TYPE_CHECKING:
    from router.sip.transaction.base import ClientTransaction, ServerTransaction

    from .timers import TimerHandle


class LegState(enum.Enum):
    """Where a leg is (pjsip invite session states, simplified)."""

    CALLING = "calling"
    """INVITE in flight, nothing back yet (UAC) / being processed (UAS)."""
    EARLY = "early"
    """A provisional went out/came in."""
    CONNECTING = "connecting"
    """2xx sent, ACK not yet received (UAS) / 2xx received (UAC sends ACK at once)."""
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def _strip_tag(value: NameAddr) -> str:
    return str(value.without_param("tag"))


@dataclass(eq=False, slots=True)
class Leg:
    """One dialog of a channel."""

    inbound: bool
    """True: we are the UAS (caller leg); False: we placed the call (callee leg)."""
    invite: Request
    """The INVITE that created the leg (as received, or as we sent it)."""
    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    remote_tag: str | None
    remote_target: str
    route_set: list[str]
    local_cseq: int
    transport: str = "udp"
    state: LegState = LegState.CALLING
    server_tx: ServerTransaction | None = None
    client_tx: ClientTransaction | None = None
    interface: str | None = None
    """``PJSIP/<endpoint>`` for callee legs (device state, queue members)."""
    last_2xx: Response | None = None
    """Inbound: the 2xx we answered with (retransmitted until the ACK)."""
    retransmit_timer: TimerHandle | None = None
    ack_timer: TimerHandle | None = None
    ring_timer: TimerHandle | None = None
    provisional_seen: bool = False
    """Outbound: a 1xx came back, so a CANCEL may be sent (§9.1)."""
    cancel_reason: str | None = None
    """Outbound: CANCEL wanted (with this Reason, '' for none) once a provisional arrives."""
    cancelled: bool = False
    answered_at: float | None = None
    response_dest: tuple[str, int] | None = None
    """Inbound: where responses to the INVITE go (the server transaction's §18.2.2 address)."""
    ack: Request | None = None
    """Outbound: the ACK we sent for the 2xx (re-sent on a 2xx retransmission)."""
    claimed: bool = False
    """Outbound queue leg: we hold the member's row in queue_member_state."""

    @property
    def key(self) -> tuple[str, str]:
        """Dialog lookup key: (Call-ID, our tag)."""
        return (self.call_id, self.local_tag)

    @classmethod
    def from_invite(cls, invite: Request, local_tag: str, local_cseq: int, transport: str) -> Leg:
        """The UAS leg of a received INVITE (§12.1.1).

        Raises:
            SipError: From/To/Contact/Record-Route unreadable.
        """
        contacts = invite.contacts
        target = str(contacts[0].uri) if contacts else str(invite.from_.uri)
        return cls(
            inbound=True,
            invite=invite,
            call_id=invite.call_id,
            local_tag=local_tag,
            local_uri=_strip_tag(invite.to),
            remote_uri=_strip_tag(invite.from_),
            remote_tag=invite.from_.tag,
            remote_target=target,
            route_set=[str(r) for r in invite.record_routes],
            local_cseq=local_cseq,
            transport=transport,
        )

    def learn_answer(self, response: Response) -> None:
        """UAC: take remote tag, target and route set from a 2xx (§12.1.2)."""
        try:
            self.remote_tag = response.to.tag
            contacts = response.contacts
            if contacts:
                self.remote_target = str(contacts[0].uri)
            self.route_set = [str(r) for r in reversed(response.record_routes)]
        except SipError:
            pass

    def next_hop(self, request_uri: str) -> tuple[str, int, str]:
        """(host, port, transport) of the first hop for a request with this route set."""
        target = request_uri
        if self.route_set:
            first = parse_name_addr(self.route_set[0]).uri
            if isinstance(first, SipUri):
                target = str(first)
        uri = parse_uri(target)
        if not isinstance(uri, SipUri):
            raise SipError(f"cannot send to {target}", status=416)
        return uri_destination(uri)

    def build_request(
        self,
        method: str,
        *,
        via_host: str,
        via_port: int,
        user_agent: str,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        """An in-dialog request (§12.2.1.1) with a new CSeq and a fresh branch."""
        self.local_cseq += 1
        to = self.remote_uri + (f";tag={self.remote_tag}" if self.remote_tag else "")
        transport = self.transport.upper()
        fields = [
            ("Via", f"SIP/2.0/{transport} {via_host}:{via_port};rport;branch={new_branch()}"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.local_cseq} {method}"),
            *(("Route", r) for r in self.route_set),
            ("Max-Forwards", "70"),
            ("User-Agent", user_agent),
            *extra,
        ]
        return Request(method, self.remote_target, Headers(fields))


def build_cancel(invite: Request, reason: str | None) -> Request:
    """CANCEL for our INVITE (§9.1): same R-URI, Call-ID, From, To, CSeq number, top Via and
    Route; "the CANCEL ... MUST have a single Via header field value matching the top Via value
    in the request being cancelled"."""
    h = invite.headers
    fields: list[tuple[str, str]] = [("Via", h.values("Via")[0])]
    for name in ("From", "To", "Call-ID"):
        value = h.get(name)
        if value is not None:
            fields.append((name, value))
    fields.append(("CSeq", f"{invite.cseq.seq} CANCEL"))
    fields.extend(("Route", r) for r in h.get_all("Route"))
    fields.append(("Max-Forwards", "70"))
    if reason:
        fields.append(("Reason", reason))
    return Request("CANCEL", invite.uri, Headers(fields))


def build_2xx_ack(leg: Leg, response: Response, *, via_host: str, via_port: int) -> Request:
    """ACK for a 2xx (§13.2.2.4): a new transaction, CSeq number of the INVITE, route set."""
    leg.learn_answer(response)
    to = response.headers.get("To") or ""
    fields = [
        (
            "Via",
            f"SIP/2.0/{leg.transport.upper()} {via_host}:{via_port};rport;branch={new_branch()}",
        ),
        ("From", leg.invite.headers.get("From") or ""),
        ("To", to),
        ("Call-ID", leg.call_id),
        ("CSeq", f"{leg.invite.cseq.seq} ACK"),
        *(("Route", r) for r in leg.route_set),
        ("Max-Forwards", "70"),
    ]
    return Request("ACK", leg.remote_target, Headers(fields))
