"""Member selection of app_queue (SIP-REFERENCE §5.8), as pure functions of explicit state.

``calc_metric`` in apps/app_queue.c gives every member a number; lower rings first. Ringall
rings every available member of the best metric (the penalty tier); the other strategies ring
the single best one and, when it fails before the queue timeout, the next best.

====================  =========================================================
strategy              metric (``pos`` = member position, uniqueid order)
====================  =========================================================
ringall               0
linear                ``pos`` if ``pos >= linpos`` else ``1000 + pos`` (per caller)
rrmemory, rrordered   ``pos`` if ``pos >= rrpos`` else ``1000 + pos`` (per queue)
random                ``random() % 1000``
wrandom               ``random() % ((1 + penalty) * 1000)`` (no penalty tier)
fewestcalls           completed calls of the member from this queue
leastrecent           0 if never called, else ``1000000 - (now - lastcall)``
====================  =========================================================

Every strategy but wrandom adds ``penalty * 1000000`` when the queue has more members than
``penaltymemberslimit``. ``can_ring_entry`` (paused, in use with ringinuse=no, in wrap-up)
is decided by the caller of :func:`select_members` and passed in as ``skip``.

What is per node in Asterisk and what the emulator shares is the caller's business too: the
memories here (``rrpos``, call counts, last call) are this node's (§5.9 "Kept per node in
memory only").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .store import QueueDef, QueueMember

STRATEGIES = (
    "ringall",
    "linear",
    "rrmemory",
    "rrordered",
    "random",
    "wrandom",
    "fewestcalls",
    "leastrecent",
)


@dataclass(slots=True)
class MemberMemory:
    """Per-node counters of one member (app_queue ``struct member``)."""

    calls: int = 0
    """Calls this member completed from this queue (fewestcalls)."""
    lastcall: float | None = None
    """When its last call from this queue ended (leastrecent, wrapuptime), epoch seconds."""


@dataclass(slots=True)
class QueueMemory:
    """Per-node state of one queue."""

    rrpos: int = 0
    """Round-robin position (rrmemory, rrordered)."""
    members: dict[str, MemberMemory] = field(default_factory=dict)

    def member(self, interface: str) -> MemberMemory:
        return self.members.setdefault(interface, MemberMemory())


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome of one selection round."""

    ring: list[QueueMember]
    """Members to ring now (all of one tier for ringall, else one)."""
    metrics: dict[str, int]
    """Metric of every member considered, by interface (for the event log)."""
    skipped: dict[str, str]
    """Why a member could not be rung, by interface."""


def calc_metric(
    queue: QueueDef,
    member: QueueMember,
    pos: int,
    member_count: int,
    memory: QueueMemory,
    *,
    linpos: int,
    now_epoch: float,
    rng: random.Random,
) -> int:
    """app_queue ``calc_metric`` for one member."""
    strategy = queue.strategy
    use_penalty = member_count > queue.penaltymemberslimit
    penalty = member.penalty * 1_000_000 if use_penalty else 0
    mem = memory.member(member.interface)
    match strategy:
        case "ringall":
            metric = 0
        case "linear":
            metric = pos if pos >= linpos else 1000 + pos
        case "rrmemory" | "rrordered":
            metric = pos if pos >= memory.rrpos else 1000 + pos
        case "random":
            metric = rng.randrange(1000)
        case "wrandom":
            return rng.randrange((1 + member.penalty) * 1000)
        case "fewestcalls":
            metric = mem.calls
        case "leastrecent":
            metric = 0 if mem.lastcall is None else 1_000_000 - int(now_epoch - mem.lastcall)
        case _:
            # app_queue refuses an unknown strategy at load and falls back to ringall.
            metric = 0
    return metric + penalty


def select_members(
    queue: QueueDef,
    members: list[QueueMember],
    memory: QueueMemory,
    *,
    skip: dict[str, str],
    tried: frozenset[str] = frozenset(),
    linpos: int = 0,
    now_epoch: float,
    rng: random.Random,
) -> Selection:
    """Who rings now.

    Args:
        skip: members ``can_ring_entry`` refuses, with the reason.
        tried: members already rung in this attempt (not rung again until the next one).
        linpos: the caller's linear position.
    """
    metrics = {
        m.interface: calc_metric(
            queue, m, pos, len(members), memory, linpos=linpos, now_epoch=now_epoch, rng=rng
        )
        for pos, m in enumerate(members)
    }
    candidates = [m for m in members if m.interface not in skip and m.interface not in tried]
    if not candidates:
        return Selection([], metrics, dict(skip))
    best = min(metrics[m.interface] for m in candidates)
    if queue.strategy == "ringall":
        ring = [m for m in candidates if metrics[m.interface] == best]
    else:
        ring = [next(m for m in candidates if metrics[m.interface] == best)]
    return Selection(ring, metrics, dict(skip))


def next_position(selection_metrics: dict[str, int], rung: set[str]) -> int:
    """``store_next_rr`` / ``store_next_lin``: the position of the best member not yet rung.

    app_queue sets ``rrpos = best->metric % 1000`` over the attempts still unrung; when every
    member was rung it starts over at 0.
    """
    rest = [metric for interface, metric in selection_metrics.items() if interface not in rung]
    if not rest:
        return 0
    return min(rest) % 1000


def member_ringinuse(queue: QueueDef, member: QueueMember) -> bool:
    """A member's ringinuse, defaulting to the queue's [AQs]."""
    if member.ringinuse_value is None or member.ringinuse_value == "":
        return queue.ringinuse
    return member.ringinuse_value.strip().lower() in ("yes", "true", "on", "1", "y", "t")


def member_wrapuptime(queue: QueueDef, member: QueueMember) -> int:
    """A member's wrapuptime, defaulting to the queue's."""
    return queue.wrapuptime if member.wrapuptime is None else member.wrapuptime
