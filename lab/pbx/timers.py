"""The node's own timers (dialplan waits, queue timeouts, 2xx retransmission) and pjsip's
2xx schedule.

A :class:`Scheduler` is a heap of one-shot :class:`TimerHandle` entries, each naming the
method to call; cancelling marks the handle and the heap drops it lazily. Time is whatever the
core is given as ``now`` (trio's clock in the driver, plain numbers in tests).

The 2xx schedule (SIP-REFERENCE §6.3): pjsip keeps the INVITE server transaction after a 2xx
(``handle_200resp``) and retransmits the 2xx at T1, 2·T1, 4·T1 ... capped at T2; its timeout
``td`` is ``timer_b`` = 64·T1, after which the invite session sends BYE with
``Reason: SIP ;cause=408``. With T1 = 500 ms this gives sends at 0, 0.5, 1.5, 3.5, 7.5, 11.5,
15.5, 19.5, 23.5, 27.5 and 31.5 s and the BYE at 32 s, which is what Asterisk 22.10.1 was
measured to do.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field


def ack_wait_schedule(t1: float, t2: float) -> tuple[list[float], float]:
    """Offsets (from the first 2xx) of every 2xx retransmission, and of the BYE.

    Returns:
        ``(retransmissions, give_up)``: retransmissions strictly before ``give_up = 64*T1``.
    """
    give_up = 64 * t1
    offsets: list[float] = []
    interval = t1
    at = t1
    while at < give_up - 1e-9:
        offsets.append(at)
        interval = min(2 * interval, t2)
        at += interval
    return offsets, give_up


@dataclass(eq=False, slots=True)
class TimerHandle:
    """One scheduled call; ``cancel()`` makes it a no-op."""

    when: float
    action: Callable[[float], None]
    """Called with ``now`` when due."""
    name: str = ""
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(slots=True)
class Scheduler:
    """A heap of timer handles."""

    _heap: list[tuple[float, int, TimerHandle]] = field(default_factory=list)
    _seq: int = 0

    def call_at(self, when: float, action: Callable[[float], None], name: str = "") -> TimerHandle:
        handle = TimerHandle(when, action, name)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, handle))
        return handle

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Run every handle due at ``now`` in deadline order; returns how many ran."""
        ran = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            handle.cancelled = True
            handle.action(now)
            ran += 1
        return ran

    def __len__(self) -> int:
        return sum(not h.cancelled for _, _, h in self._heap)
