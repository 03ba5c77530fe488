"""app_queue member selection with explicit state (SIP-REFERENCE §5.8)."""

from __future__ import annotations

import random

import pytest

from lab.pbx.queues import QueueMemory, next_position, select_members
from lab.pbx.store import QueueDef, QueueMember

NOW = 1_700_000_000.0


def _queue(strategy: str, penaltymemberslimit: int = 0) -> QueueDef:
    return QueueDef("q", strategy, None, None, None, None, penaltymemberslimit)


def _members(*penalties: int) -> list[QueueMember]:
    return [
        QueueMember(f"PJSIP/{100 + i}", None, p, False, i + 1, None, None)
        for i, p in enumerate(penalties)
    ]


def _ring(
    strategy: str, members: list[QueueMember], memory: QueueMemory, **kw: object
) -> list[str]:
    selection = select_members(
        _queue(strategy),
        members,
        memory,
        now_epoch=NOW,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )
    return [m.interface for m in selection.ring]


def test_ringall_rings_every_member_of_the_best_penalty_tier() -> None:
    members = _members(0, 1, 0)
    assert _ring("ringall", members, QueueMemory(), skip={}) == ["PJSIP/100", "PJSIP/102"]


def test_ringall_falls_to_the_next_tier_when_the_best_is_unavailable() -> None:
    members = _members(0, 1, 0)
    skip = {"PJSIP/100": "in_use", "PJSIP/102": "paused"}
    assert _ring("ringall", members, QueueMemory(), skip=skip) == ["PJSIP/101"]


def test_penalty_ignored_up_to_penaltymemberslimit() -> None:
    members = _members(5, 0)
    selection = select_members(
        _queue("ringall", penaltymemberslimit=2),
        members,
        QueueMemory(),
        skip={},
        now_epoch=NOW,
        rng=random.Random(1),
    )
    assert [m.interface for m in selection.ring] == ["PJSIP/100", "PJSIP/101"]


def test_linear_rings_in_order_from_the_callers_position() -> None:
    members = _members(0, 0, 0)
    memory = QueueMemory()
    assert _ring("linear", members, memory, skip={}) == ["PJSIP/100"]
    assert _ring("linear", members, memory, skip={}, linpos=2) == ["PJSIP/102"]
    assert _ring("linear", members, memory, skip={}, tried=frozenset({"PJSIP/100"})) == [
        "PJSIP/101"
    ]


def test_rrmemory_remembers_the_position_across_callers() -> None:
    members = _members(0, 0, 0)
    memory = QueueMemory()
    order = []
    for _ in range(4):
        selection = select_members(
            _queue("rrmemory"), members, memory, skip={}, now_epoch=NOW, rng=random.Random(1)
        )
        (rung,) = selection.ring
        order.append(rung.interface)
        memory.rrpos = next_position(selection.metrics, {rung.interface})
    assert order == ["PJSIP/100", "PJSIP/101", "PJSIP/102", "PJSIP/100"]


def test_fewestcalls_prefers_the_member_with_fewest_completed_calls() -> None:
    members = _members(0, 0, 0)
    memory = QueueMemory()
    memory.member("PJSIP/100").calls = 3
    memory.member("PJSIP/101").calls = 1
    memory.member("PJSIP/102").calls = 2
    assert _ring("fewestcalls", members, memory, skip={}) == ["PJSIP/101"]


def test_leastrecent_prefers_never_called_then_longest_idle() -> None:
    members = _members(0, 0, 0)
    memory = QueueMemory()
    memory.member("PJSIP/100").lastcall = NOW - 10
    memory.member("PJSIP/101").lastcall = NOW - 500
    memory.member("PJSIP/102").lastcall = NOW - 50
    assert _ring("leastrecent", members, memory, skip={}) == ["PJSIP/101"]
    memory.members.pop("PJSIP/102")
    assert _ring("leastrecent", members, memory, skip={}) == ["PJSIP/102"]


def test_random_is_seeded_and_picks_one_available_member() -> None:
    members = _members(0, 0, 0, 0)
    picks = {
        tuple(_ring("random", members, QueueMemory(), skip={"PJSIP/100": "paused"}))
        for _ in range(5)
    }
    assert len(picks) == 1  # same seed, same choice
    (pick,) = picks
    assert len(pick) == 1
    assert pick[0] != "PJSIP/100"


@pytest.mark.parametrize(
    "strategy", ["ringall", "linear", "rrmemory", "random", "fewestcalls", "leastrecent"]
)
def test_nobody_rings_when_every_member_is_skipped(strategy: str) -> None:
    members = _members(0, 0)
    skip = {m.interface: "paused" for m in members}
    assert _ring(strategy, members, QueueMemory(), skip=skip) == []
