"""RFC 3261 timer values (Table 4 / Appendix A) and RFC 6026 Timers L and M.

Every timer of the transaction layer is derived from three base values:

* T1 (500 ms): "an estimate of the round-trip time (RTT)";
* T2 (4 s): "the maximum retransmit interval for non-INVITE requests and INVITE responses";
* T4 (5 s): "maximum duration a message will remain in the network".

They are configuration (ARCHITECTURE: "Timers ... are configuration, so suites can run with
compressed time"), so every derived value scales with them. The one judgement call is Timer D:
RFC 3261 asks for "> 32s for UDP" as an absolute figure; an absolute floor would defeat time
compression, so we chose ``64*T1`` (exactly 32 s at the default T1), the same value as Timers
B, F, H, J, L and M.

Timers that exist only to absorb retransmissions (D, I, J, K) are zero on a reliable transport:
"Timer D: 0s for TCP/SCTP" and likewise for I, J, K (RFC 3261 Table 4). A zero timer means the
machine moves on immediately; machines never arm a zero-length timer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Timer(enum.Enum):
    """The named timers of RFC 3261 §17 (A-K) and RFC 6026 §8 (L, M)."""

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is a Python-level call on every transition-table lookup).
    __hash__ = object.__hash__

    A = "A"  # INVITE request retransmit, client, unreliable only
    B = "B"  # INVITE client transaction timeout
    D = "D"  # client INVITE waits for retransmitted non-2xx finals
    E = "E"  # non-INVITE request retransmit, client, unreliable only
    F = "F"  # non-INVITE client transaction timeout
    G = "G"  # INVITE final response retransmit, server, unreliable only
    H = "H"  # server INVITE waits for the ACK
    I = "I"  # noqa: E741 -- the RFC's name; server INVITE absorbs ACK retransmissions
    J = "J"  # non-INVITE server absorbs request retransmissions
    K = "K"  # non-INVITE client absorbs response retransmissions
    L = "L"  # RFC 6026: server INVITE in Accepted absorbs INVITE retransmissions
    M = "M"  # RFC 6026: client INVITE in Accepted passes 2xx retransmissions up


@dataclass(frozen=True, slots=True)
class Timers:
    """Base values T1, T2, T4 (seconds) and the timers derived from them.

    ``Timers()`` gives the RFC defaults; ``Timers(t1=0.05, t2=0.4, t4=0.5)`` compresses
    time tenfold for test suites.
    """

    t1: float = 0.5
    """Round-trip time estimate (RFC 3261 §17.1.1.1)."""
    t2: float = 4.0
    """Retransmission interval cap for non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """Maximum time a message stays in the network."""

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0:
            raise ValueError(f"need 0 < T1 <= T2 and T4 > 0, got {self.t1}, {self.t2}, {self.t4}")

    @property
    def a(self) -> float:
        """Initial INVITE retransmission interval; doubles each time (§17.1.1.2)."""
        return self.t1

    @property
    def b(self) -> float:
        """INVITE client transaction timeout, 64*T1."""
        return 64 * self.t1

    @property
    def e(self) -> float:
        """Initial non-INVITE retransmission interval; doubles up to T2 (§17.1.2.2)."""
        return self.t1

    @property
    def f(self) -> float:
        """Non-INVITE client transaction timeout, 64*T1."""
        return 64 * self.t1

    @property
    def g(self) -> float:
        """Initial INVITE final response retransmission interval; doubles up to T2."""
        return self.t1

    @property
    def h(self) -> float:
        """Wait time for the ACK after a non-2xx final, 64*T1."""
        return 64 * self.t1

    @property
    def l(self) -> float:  # noqa: E743 -- RFC 6026's name
        """RFC 6026 Timer L: server INVITE lingers in Accepted, 64*T1."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """RFC 6026 Timer M: client INVITE lingers in Accepted, 64*T1."""
        return 64 * self.t1

    def d(self, *, reliable: bool) -> float:
        """Timer D: 64*T1 (see module docstring) on unreliable transports, 0 on reliable."""
        return 0.0 if reliable else 64 * self.t1

    def i(self, *, reliable: bool) -> float:
        """Timer I: T4 on unreliable transports, 0 on reliable."""
        return 0.0 if reliable else self.t4

    def j(self, *, reliable: bool) -> float:
        """Timer J: 64*T1 on unreliable transports, 0 on reliable."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, *, reliable: bool) -> float:
        """Timer K: T4 on unreliable transports, 0 on reliable."""
        return 0.0 if reliable else self.t4

    def backoff(self, interval: float) -> float:
        """Next retransmission interval for E and G: ``min(2*interval, T2)``."""
        return min(2 * interval, self.t2)


DEFAULT_TIMERS = Timers()
"""The RFC 3261 defaults (T1 = 0.5 s, T2 = 4 s, T4 = 5 s)."""
