"""A seeded in-memory datagram network for sans-IO tests (no sockets, explicit time).

``FakeNet(seed)`` carries bytes between addresses. Each datagram is delivered, dropped,
duplicated or delayed as ``random.Random(seed)`` decides, so a failing run is replayed by its
seed (print it in the assertion message). ``drop_next`` drops chosen datagrams on purpose
(for example "the first 200 OK"), independent of the dice.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram in flight."""

    data: bytes
    """The payload."""
    source: Address
    """Sender address."""
    dest: Address
    """Receiver address."""


@dataclass(slots=True)
class FakeNetStats:
    """What the network did."""

    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0


@dataclass
class FakeNet:
    """Datagrams with seeded loss, duplication and delay.

    Args:
        seed: seeds the dice.
        loss: probability a datagram is dropped.
        duplicate: probability a delivered datagram arrives twice.
        delay: (min, max) one-way delay in seconds.
    """

    seed: int
    loss: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.001, 0.02)
    stats: FakeNetStats = field(default_factory=FakeNetStats)
    _rng: random.Random = field(init=False)
    _queue: list[tuple[float, int, Datagram]] = field(default_factory=list, init=False)
    _seq: int = field(default=0, init=False)
    _drops: list[Callable[[Datagram], bool]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def drop_next(self, predicate: Callable[[Datagram], bool]) -> None:
        """Drop the next datagram for which ``predicate`` is true (once)."""
        self._drops.append(predicate)

    def send(self, data: bytes, source: Address, dest: Address, *, now: float) -> None:
        """Put a datagram on the wire at ``now``."""
        self.stats.sent += 1
        dgram = Datagram(data, source, dest)
        for i, predicate in enumerate(self._drops):
            if predicate(dgram):
                del self._drops[i]
                self.stats.dropped += 1
                return
        rng = self._rng
        if rng.random() < self.loss:
            self.stats.dropped += 1
            return
        copies = 2 if rng.random() < self.duplicate else 1
        self.stats.duplicated += copies - 1
        for _ in range(copies):
            self._seq += 1
            heapq.heappush(self._queue, (now + rng.uniform(*self.delay), self._seq, dgram))

    def next_arrival(self) -> float | None:
        """When the next datagram arrives, or None when nothing is in flight."""
        return self._queue[0][0] if self._queue else None

    def receive_due(self, now: float) -> list[Datagram]:
        """Every datagram that has arrived by ``now``, in arrival order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        self.stats.delivered += len(out)
        return out
