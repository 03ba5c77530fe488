"""Output events of the transaction layer (RFC 3261 §17), for the transport and the TU.

Every machine appends these to a sink (a plain list owned by the `TransactionLayer`, or by the
machine itself when it runs alone). They are frozen slotted dataclasses, like h11's and
aioquic's events: the driver matches on their type and never asks the machine what happened.

Who consumes what:

* `Send` goes to the transport: serialize ``message`` and write it to ``dest``.
* everything else goes to the transaction user (proxy core, UA core, registrar ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.sip.message import Request, Response
    from router.sip.transaction.base import ClientTransaction, ServerTransaction, Transaction
    from router.sip.transaction.server_invite import ServerInviteTransaction
    from router.sip.transaction.server_non_invite import ServerNonInviteTransaction
    from router.sip.transaction.timers import Timer


@dataclass(frozen=True, slots=True)
class Send:
    """A message for the transport to serialize and send (first copy or retransmission)."""

    message: Request | Response
    """The request or response to write."""
    dest: tuple[str, int]
    """Where to send it: (host, port); responses use the RFC 3261 §18.2.2 / RFC 3581 address."""
    transaction: Transaction | None
    """The transaction that sent it; None for stateless sends and UA-core 2xx retransmissions."""
    retransmission: bool = False
    """True when this is a repeat of a message already sent (Timers A, E, G, or absorbed repeats)."""
    reliable: bool = False
    """True when the transaction runs over a reliable transport (TCP/TLS): use the connection."""


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request for the TU: a new transaction, an ACK for a 2xx, or a stray request.

    An ACK whose INVITE transaction answered 2xx (RFC 3261 §13.2.2.4: a new branch) or matches
    no transaction at all arrives with ``transaction=None``; so does an ACK that matches an INVITE
    server transaction in RFC 6026's Accepted state ("ACK ... pass to TU").
    """

    request: Request
    """The request as parsed."""
    source: tuple[str, int]
    """(ip, port) it came from."""
    transaction: ServerTransaction | None
    """The new server transaction that the TU must answer through, or None (ACK)."""


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL: its own non-INVITE server transaction plus the INVITE it cancels (§9.2).

    "the CANCEL [matches] the transaction ... using the same matching as 17.2.3 ... except the
    method": ``invite`` is that INVITE server transaction, or None when there is none (the TU
    then answers 481, or a proxy forwards the CANCEL statelessly, §16.10).
    """

    request: Request
    """The CANCEL request."""
    source: tuple[str, int]
    """(ip, port) it came from."""
    transaction: ServerNonInviteTransaction
    """The CANCEL's own server transaction; the TU answers 200 (or 481) through it."""
    invite: ServerInviteTransaction | None
    """The INVITE server transaction being cancelled, if it still exists."""


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU. Retransmissions a transaction absorbs never show up here.

    2xx retransmissions to an INVITE client transaction in Accepted (RFC 6026) are passed up,
    and so are responses that match no transaction (``transaction=None``): a proxy forwards
    those statelessly (RFC 3261 §16.7 "the element MUST process the response ... as a stateless
    proxy"), a UA drops them (§18.1.2).
    """

    response: Response
    """The response as parsed."""
    transaction: ClientTransaction | None
    """The client transaction it belongs to, None for a stray response."""
    source: tuple[str, int] | None = None
    """(ip, port) it came from, when the caller told the layer."""


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F or H fired: the TU learns of the timeout (and synthesizes a 408 for B/F)."""

    transaction: Transaction
    """The transaction that timed out (it terminates right after this event)."""
    timer: Timer
    """Which timer fired: B (INVITE client), F (non-INVITE client) or H (ACK never came)."""


@dataclass(frozen=True, slots=True)
class TransportError:
    """RFC 3261 §17.1.4 / §17.2.4: the transport failed to deliver; the TU is informed."""

    transaction: Transaction
    """The transaction whose send failed (it terminates right after this event)."""


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached TERMINATED and has been forgotten by the layer."""

    transaction: Transaction
    """The transaction that ended."""


Event = (
    Send
    | RequestReceived
    | CancelReceived
    | ResponseReceived
    | TransactionTimeout
    | TransportError
    | TransactionTerminated
)
"""Everything a transaction or the layer can emit."""
