"""The contract between the trio drivers and a sans-IO SIP core.

The drivers in this package are the only I/O of the router (and of the emulator and the trio UA,
which run on the same drivers). They know nothing of SIP beyond framing: a datagram or a framed
TCP message goes in through :meth:`SipCore.receive_untrusted`, and whatever the core wants sent
comes out of :meth:`SipCore.drain_outgoing`. Time goes in as ``now`` from ``trio.current_time()``,
so tests can run the whole stack under ``trio.testing.MockClock``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Address = tuple[str, int]
TransportName = Literal["udp", "tcp"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """Where a message came from."""

    transport: TransportName
    """"udp" or "tcp"."""
    source: Address
    """The peer's address (IP as text, port)."""
    local: Address
    """The local address the message arrived on."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for the driver to put on the wire."""

    data: bytes
    """Serialized SIP message."""
    dest: Address
    """Where to send it."""
    transport: TransportName = "udp"
    """Which transport; TCP reuses an open connection to ``dest`` or opens one."""
    local: Address | None = None
    """Send from this local address (the socket the request came in on); None = the first one."""


class SipCore(Protocol):
    """What a driver needs of the thing it feeds."""

    def receive_untrusted(self, data: bytes, inbound: Inbound, *, now: float) -> None:
        """Take raw bytes from the network. Must never raise for any input."""

    def handle_timers(self, *, now: float) -> None:
        """Fire every timer due at or before ``now``."""

    def next_deadline(self) -> float | None:
        """The earliest time ``handle_timers`` has work, or None."""

    def drain_outgoing(self) -> list[Outgoing]:
        """Messages queued for sending since the last call, in order."""

    def transport_failed(self, dest: Address, transport: TransportName, *, now: float) -> None:
        """A send to ``dest`` failed (ICMP unreachable, connection refused/reset): RFC 3261 §17.1.4."""
