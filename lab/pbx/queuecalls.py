"""Queue(): one caller waiting in a realtime queue, ringing members by strategy.

The loop of app_queue's ``queue_exec`` / ``try_calling`` / ``wait_for_answer`` for one
caller (SIP-REFERENCE §5.8, §5.9):

1. Join: the queue row and its members are re-read from realtime ("Realtime queues are
   re-read ... each time a caller joins"); an unknown queue ends the call.
2. Attempt: ``can_ring_entry`` drops paused members, members in use when ``ringinuse=no``,
   members in wrap-up; ``calc_metric`` orders the rest (``queues.select_members``). Ringall
   rings the whole best tier, the other strategies one member, and the next best when that
   one fails before the timeout. Each attempt lasts the queue ``timeout``.
3. No answer: ringing members are cancelled, the round-robin / linear position moves on
   (``store_next_rr``), and after ``retry`` seconds the members are re-read and 2. runs again.
   The caller waits until a member answers or the caller hangs up.
4. Answer: the other ringing members get CANCEL "Call completed elsewhere" (``calls``).

Busy state. Real Asterisk knows only its own channels (device state, ``pending_members``), so
two nodes sharing one DB can ring the same agent (§5.9); ``queue_mode = "per_node"`` keeps
exactly that. ``queue_mode = "shared"`` (the emulator's default) additionally claims the
member's ``queue_member_state`` row before ringing and frees it when the leg ends, so a member
ringing or talking on one node counts as in use on every node; wrap-up and leastrecent then
use the shared ``last_call_end`` as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .queues import (
    QueueMemory,
    member_ringinuse,
    member_wrapuptime,
    next_position,
    select_members,
)

if TYPE_CHECKING:
    from .calls import Call, CallManager
    from .legs import Leg
    from .store import QueueDef, QueueMember
    from .timers import TimerHandle


class QueueRunner:
    """The queue entry of one caller."""

    def __init__(self, manager: CallManager, call: Call, name: str) -> None:
        self.manager = manager
        self.call = call
        self.name = name
        self.linpos = 0
        self.queue: QueueDef | None = None
        self.members: list[QueueMember] = []
        self.legs: list[Leg] = []
        self.tried: set[str] = set()
        self.skipped: dict[str, str] = {}
        self.metrics: dict[str, int] = {}
        self.timer: TimerHandle | None = None
        self.attempts = 0
        self.stopped = False

    @property
    def memory(self) -> QueueMemory:
        return self.manager.queue_memory.setdefault(self.name, QueueMemory())

    @property
    def shared(self) -> bool:
        return self.manager.core.config.queue_mode == "shared"

    def _log(self, kind: str, **fields: object) -> None:
        self.manager.core.log.event(
            kind, call=self.call.number, call_id=self.call.caller.call_id, queue=self.name, **fields
        )

    def _scaled(self, seconds: float) -> float:
        return seconds * self.manager.core.config.time_scale

    def _reload(self) -> bool:
        store = self.manager.core.store
        self.queue = store.queue(self.name)
        if self.queue is None:
            return False
        self.members = store.queue_members(self.name)
        return True

    # -- the loop -------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if not self._reload():
            self._log("queue_unknown")
            self.manager._fail_caller(self.call, 480, now)  # XXX: "Unable to join queue"
            return
        assert self.queue is not None
        self._log(
            "queue_join", strategy=self.queue.strategy, members=[m.interface for m in self.members]
        )
        self.attempt(now)

    def attempt(self, now: float) -> None:
        if self.stopped or self.call.ended:
            return
        if not self._reload():
            self._log("queue_unknown")
            self.manager._fail_caller(self.call, 480, now)
            return
        self.attempts += 1
        self.legs = []
        self.tried = set()
        self.skipped = self._can_ring(now)
        self._ring_best(now)
        if not self._live_legs():
            self._schedule_retry(now)
            return
        assert self.queue is not None
        self.timer = self.manager.core.scheduler.call_at(
            now + self._scaled(self.queue.timeout), self._attempt_timeout, "queue_timeout"
        )

    def _ring_best(self, now: float) -> None:
        """Ring the best candidates; on a failed ring, move to the next best at once."""
        assert self.queue is not None
        core = self.manager.core
        while True:
            selection = select_members(
                self.queue,
                self.members,
                self.memory,
                skip=self.skipped,
                tried=frozenset(self.tried),
                linpos=self.linpos,
                now_epoch=core.epoch(now),
                rng=core.rng,
            )
            self.metrics = selection.metrics
            self._log(
                "queue_select",
                attempt=self.attempts,
                metrics=selection.metrics,
                skipped=selection.skipped,
                ring=[m.interface for m in selection.ring],
            )
            if not selection.ring:
                return
            rang = False
            for member in selection.ring:
                self.tried.add(member.interface)
                if self._ring(member, now):
                    rang = True
            if rang:
                return

    def _ring(self, member: QueueMember, now: float) -> bool:
        assert self.queue is not None
        manager = self.manager
        core = manager.core
        tech, _, user = member.interface.partition("/")
        if tech.upper() != "PJSIP" or not user:
            self._log("queue_member_unavailable", interface=member.interface, reason="not PJSIP")
            return False
        claimed = False
        if self.shared:
            claimed = core.store.claim_member(
                member.interface,
                node=core.config.name,
                call_id=self.call.caller.call_id,
                now_epoch=core.epoch(now),
            )
            if not claimed and not member_ringinuse(self.queue, member):
                self.skipped[member.interface] = "in_use"
                self._log("queue_member_busy", interface=member.interface, where="shared")
                return False
        leg = manager.dial(self.call, user, now, interface=member.interface)
        if leg is None:
            if claimed:
                core.store.release_member(
                    member.interface,
                    call_id=self.call.caller.call_id,
                    now_epoch=core.epoch(now),
                    completed=False,
                )
            self.skipped[member.interface] = "unavailable"
            return False
        leg.claimed = claimed
        self.legs.append(leg)
        self._log("queue_ring", interface=member.interface, leg_call_id=leg.call_id)
        return True

    def _can_ring(self, now: float) -> dict[str, str]:
        """can_ring_entry for every member: interface -> why it cannot ring."""
        assert self.queue is not None
        core = self.manager.core
        epoch = core.epoch(now)
        states = (
            core.store.member_states([m.interface for m in self.members]) if self.shared else {}
        )
        skip: dict[str, str] = {}
        for m in self.members:
            state = states.get(m.interface)
            busy_here = self.manager.device_use.get(m.interface, 0) > 0
            busy_shared = state is not None and state.in_call
            last = self.memory.member(m.interface).lastcall
            if state is not None and state.last_call_end is not None:
                last = max(last or 0.0, state.last_call_end)
            wrapup = self._scaled(member_wrapuptime(self.queue, m))
            if m.paused:
                skip[m.interface] = "paused"
            elif not member_ringinuse(self.queue, m) and (busy_here or busy_shared):
                skip[m.interface] = "in_use"
            elif wrapup and last is not None and epoch - last < wrapup:
                skip[m.interface] = "wrapup"
        return skip

    def _live_legs(self) -> list[Leg]:
        from .legs import LegState

        return [leg for leg in self.legs if leg.state in (LegState.CALLING, LegState.EARLY)]

    def _advance(self) -> None:
        """store_next_rr / store_next_lin after an attempt."""
        assert self.queue is not None
        done = self.tried | set(self.skipped)
        position = next_position(self.metrics, done)
        if self.queue.strategy in ("rrmemory", "rrordered"):
            self.memory.rrpos = position
        elif self.queue.strategy == "linear":
            self.linpos = position

    def _schedule_retry(self, now: float) -> None:
        assert self.queue is not None
        self._advance()
        delay = self._scaled(self.queue.retry)
        self._log("queue_retry", after=delay)
        self.timer = self.manager.core.scheduler.call_at(now + delay, self.attempt, "queue_retry")

    def _attempt_timeout(self, now: float) -> None:
        if self.stopped or self.call.ended or self.call.bridged is not None:
            return
        for leg in self._live_legs():
            self._log("queue_member_timeout", interface=leg.interface)
            self.manager.cancel_leg(leg, now)
        self._schedule_retry(now)

    # -- from the channel layer -----------------------------------------------------------

    def member_failed(self, leg: Leg, now: float) -> None:
        """A member's leg ended without answering (busy, error, no response)."""
        if self.stopped or self.call.ended or self.call.bridged is not None:
            return
        if leg not in self.legs or self._live_legs():
            return
        assert self.queue is not None
        if self.queue.strategy != "ringall":
            self._ring_best(now)
            if self._live_legs():
                return
        if self.timer is not None:
            self.timer.cancel()
        self._schedule_retry(now)

    def answered(self, leg: Leg, now: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self._advance()
        self._log("queue_answered", interface=leg.interface, attempt=self.attempts)

    def leg_released(self, leg: Leg, now: float, *, completed: bool) -> None:
        core = self.manager.core
        if leg.interface is None:
            return
        if completed:
            mem = self.memory.member(leg.interface)
            mem.calls += 1
            mem.lastcall = core.epoch(now)
        if leg.claimed:
            leg.claimed = False
            core.store.release_member(
                leg.interface,
                call_id=self.call.caller.call_id,
                now_epoch=core.epoch(now),
                completed=completed,
            )

    def stop(self, now: float) -> None:
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
