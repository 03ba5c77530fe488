"""Shared queues: one realtime queue served by several PBX nodes behind the router.

``queue1`` (strategy ringall, members PJSIP/101 and PJSIP/102, ``ringinuse = no`` as the lab
provisions it) lives in the shared realtime DB, and extension 800 runs ``Queue(queue1)`` on every
node. The members are phones registered through the router, which forwards each registration to
every node, so any node can ring them (through the router, by the Path it recorded).

Real Asterisk keeps a member's busy state per node (SIP-REFERENCE §5.9): a member talking on a
call of pbx1 is "not in use" for pbx2, which rings it again. The emulator's ``queue_mode =
"shared"`` (its default) shares that state through the DB; ``per_node`` reproduces Asterisk.

Forcing a call onto a given node. The module's lab dispatches with Kamailio algorithm 1 (hash
over the From URI), so the node a call lands on depends only on the caller: :func:`caller_for`
picks, among the provisioned users, one whose From URI ``sip:<user>@<domain>`` hashes
(Kamailio's ``ds_get_hash``, the router's own implementation) to the wanted node. Every
scenario then checks on the nodes' events that the call really landed there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from lab.evidence import read_events
from lab.pytest_plugin import Lab, LabSpec
from lab.ua import Incoming, UserAgent
from router.features.dispatcher.hashing import ds_get_hash
from router.sip import Request

pytestmark = pytest.mark.lab

HASH_FROM_URI = 1
"""Kamailio dispatcher algorithm 1: hash over the From URI (user@host)."""
TOPOLOGY: dict[str, Any] = {
    "dispatcher": {"algorithm": HASH_FROM_URI},
    "users": {"count": 100},
    "faults": [],
}


@pytest.fixture(scope="module")
def lab_topology() -> LabSpec:
    """This module's lab: 3 nodes, queue1 (101, 102) in shared mode, dispatch by From hash."""
    return LabSpec(TOPOLOGY, pbx={"queue_mode": "shared"})


# -- helpers ----------------------------------------------------------------------------------


def caller_for(lab: Lab, pbx: str) -> str:
    """A provisioned user whose calls the router dispatches to ``pbx``.

    Algorithm 1 picks entry ``hash % n`` of the set in the dispatcher's own order, which the
    router's ``/status`` lists (Kamailio keeps a set in reverse file order)."""
    by_uri = {lab.dispatch_uri(n.name): n.name for n in lab.pbx}
    order = [by_uri[d["uri"]] for d in lab.router_status()["dispatcher"] if d["uri"] in by_uri]
    want = order.index(pbx)
    for user in sorted(lab.users(), key=int):
        if user not in ("101", "102") and ds_get_hash(user, lab.domain) % len(order) == want:
            return user
    raise AssertionError(f"no provisioned user hashes to {pbx}")


def node_events(lab: Lab, node: str, call_id: str | None = None) -> list[dict[str, Any]]:
    path = lab.node(node).events
    if not path or not Path(path).exists():
        return []
    found = [e for e in read_events(path) if call_id is None or e.get("call_id") == call_id]
    return sorted(found, key=lambda e: e["t"])


def landed_on(lab: Lab, call_id: str) -> list[str]:
    """The nodes that ran the INVITE of ``call_id``."""
    return [
        n.name
        for n in lab.pbx
        if any(e.get("event") == "queue_join" for e in node_events(lab, n.name, call_id))
    ]


def rung(lab: Lab, node: str, call_id: str) -> list[str]:
    """Interfaces the queue of ``call_id`` on ``node`` rang."""
    return [
        str(e["interface"])
        for e in node_events(lab, node, call_id)
        if e.get("event") == "queue_ring"
    ]


async def register_members(lab: Lab, *uas: UserAgent) -> None:
    """REGISTER each member through the router, then wait until every node has bound it
    (the router forwards each registration to every node: their ``register`` events)."""
    for ua in uas:
        with trio.fail_after(5):
            # A member phone of an earlier test (another contact) may still be bound, and the
            # AOR takes one contact (max_contacts=1): start from no binding, like a phone that
            # replaces its registration.
            cleared = await ua.register(contact="*", expires=0)
            assert cleared.ok, f"{ua.user}: unregister answered {cleared.status}"
            result = await ua.register()
        assert result.ok, f"{ua.user}: REGISTER answered {result.status}"
    deadline = time.monotonic() + 5
    for node in lab.pbx:
        for ua in uas:
            while not any(
                e.get("event") == "register" and e.get("aor") == ua.user and e.get("status") == 200
                for e in node_events(lab, node.name)
            ):
                assert time.monotonic() < deadline, f"{ua.user} never bound on {node.name}"
                await trio.sleep(0.05)


def cancel_reason(ua: UserAgent, call_id: str) -> str | None:
    for m in ua.messages:
        if (
            m.direction == "in"
            and isinstance(m.message, Request)
            and m.message.method == "CANCEL"
            and m.message.call_id == call_id
        ):
            return m.message.headers.get("Reason") or ""
    return None


def pbx_cancel_reason(lab: Lab, node: str, call_id: str) -> str:
    """The Reason of the CANCEL ``node`` sent on the member leg ``call_id``."""
    for e in node_events(lab, node, call_id):
        if e.get("dir") == "out" and e.get("method") == "CANCEL" and e.get("status") is None:
            match = re.search(r"^Reason\s*:\s*(.*?)\r?$", e.get("raw", ""), re.I | re.M)
            return match.group(1) if match else ""
    raise AssertionError(f"{node} sent no CANCEL on {call_id}")


def assert_completed_elsewhere(reason: str | None) -> None:
    """RFC 3326 Reason of a queue's losing members: ``SIP;cause=200;text="Call completed
    elsewhere"`` (phones then log no missed call)."""
    assert reason, "CANCEL without Reason"
    assert re.search(r"cause\s*=\s*200", reason), reason
    assert "Call completed elsewhere" in reason, reason


async def next_invite(ua: UserAgent, timeout: float) -> Incoming:  # noqa: ASYNC109
    with trio.fail_after(timeout):
        return await ua.wait_incoming()


async def ring_window(lab: Lab) -> None:
    """Long enough for a ringall attempt to reach every member through the router."""
    await trio.sleep(max(0.3, lab.scaled(2.0)))


async def first_call_answered_on_101(
    lab: Lab, caller: UserAgent, m101: UserAgent, m102: UserAgent
) -> tuple[Any, Incoming]:
    """Call 1 via pbx1: ringall rings 101 and 102; 101 answers; 102 gets CANCEL "Call
    completed elsewhere". Returns the caller's call and 101's leg."""
    call1 = await caller.call("800")
    leg101 = await next_invite(m101, 5)
    leg102 = await next_invite(m102, 5)
    await leg101.ring()
    await leg102.ring()
    await leg101.answer()
    with trio.fail_after(5):
        assert (await call1.wait_answered()).status == 200
        assert await leg102.wait_ended() == "remote"
    assert leg102.cancelled
    assert cancel_reason(m102, leg102.call_id) is not None, "102 got no CANCEL"
    assert landed_on(lab, call1.call_id) == ["pbx1"]
    assert_completed_elsewhere(pbx_cancel_reason(lab, "pbx1", leg102.call_id))
    assert sorted(rung(lab, "pbx1", call1.call_id)) == ["PJSIP/101", "PJSIP/102"]
    return call1, leg101


# -- scenarios --------------------------------------------------------------------------------


async def test_shared_queue_busy_member_is_skipped_on_every_node(lab: Lab) -> None:
    """Topology: router (dispatch by From hash), pbx1..3 in ``queue_mode = "shared"``,
    queue1 = ringall(101, 102), members registered through the router.

    Action: Call 1 from a caller that hashes to pbx1 dials 800; both members ring; 101
    answers. While 101 talks, Call 2 from a caller that hashes to pbx2 dials 800.

    Must hold: 102 got CANCEL with ``Reason: SIP;cause=200;text="Call completed
    elsewhere"``; Call 2 runs on pbx2 and rings 102 only (101 is busy on pbx1, and pbx2 knows
    it through the DB): 101 sees no second INVITE; 102 answers Call 2.
    """
    c1, c2 = caller_for(lab, "pbx1"), caller_for(lab, "pbx2")
    async with (
        lab.open_ua("101", local=(lab.generator_host(0), 0)) as m101,
        lab.open_ua("102", local=(lab.generator_host(1), 0)) as m102,
        lab.open_ua(c1, local=(lab.generator_host(2), 0)) as caller1,
        lab.open_ua(c2, local=(lab.generator_host(3), 0)) as caller2,
    ):
        await register_members(lab, m101, m102)
        call1, leg101 = await first_call_answered_on_101(lab, caller1, m101, m102)

        call2 = await caller2.call("800")
        leg = await next_invite(m102, 5)
        await leg.ring()  # a phone rings at once (the router's fr_timer waits for a 1xx)
        await ring_window(lab)
        assert len(m101.incoming) == 1, "101 rang again while busy on pbx1"
        await leg.answer()
        with trio.fail_after(5):
            assert (await call2.wait_answered()).status == 200
        assert landed_on(lab, call2.call_id) == ["pbx2"]
        assert rung(lab, "pbx2", call2.call_id) == ["PJSIP/102"]
        with trio.fail_after(5):
            await call1.hangup()
            await call2.hangup()
            assert await leg101.wait_ended() == "remote"
            assert await leg.wait_ended() == "remote"


async def test_shared_queue_per_node_mode_double_rings_like_asterisk(
    make_lab: Callable[..., Lab],
) -> None:
    """Topology: as above, but every node in ``queue_mode = "per_node"`` (real Asterisk:
    member state is per node, SIP-REFERENCE §5.9).

    Action: Call 1 via pbx1, answered by 101; then Call 2 via pbx2 while 101 talks.

    Must hold: Call 2 rings both 101 (again: pbx2 does not know 101 is busy on pbx1, the
    double ring real Asterisk shows) and 102; when 102 answers, 101's second leg gets CANCEL
    "Call completed elsewhere" and 101's first call is untouched.
    """
    lab = make_lab(LabSpec(TOPOLOGY, pbx={"queue_mode": "per_node"}))
    lab.reset()
    c1, c2 = caller_for(lab, "pbx1"), caller_for(lab, "pbx2")
    async with (
        lab.open_ua("101", local=(lab.generator_host(0), 0)) as m101,
        lab.open_ua("102", local=(lab.generator_host(1), 0)) as m102,
        lab.open_ua(c1, local=(lab.generator_host(2), 0)) as caller1,
        lab.open_ua(c2, local=(lab.generator_host(3), 0)) as caller2,
    ):
        await register_members(lab, m101, m102)
        call1, leg101 = await first_call_answered_on_101(lab, caller1, m101, m102)

        call2 = await caller2.call("800")
        second101 = await next_invite(m101, 5)
        leg102 = await next_invite(m102, 5)
        await second101.ring()
        await leg102.ring()
        await leg102.answer()
        with trio.fail_after(5):
            assert (await call2.wait_answered()).status == 200
            assert await second101.wait_ended() == "remote"
        assert landed_on(lab, call2.call_id) == ["pbx2"]
        assert sorted(rung(lab, "pbx2", call2.call_id)) == ["PJSIP/101", "PJSIP/102"]
        assert cancel_reason(m101, second101.call_id) is not None, "101 got no CANCEL"
        assert_completed_elsewhere(pbx_cancel_reason(lab, "pbx2", second101.call_id))
        assert not leg101.ended, "101's first call was torn down by the second ring"
        with trio.fail_after(5):
            await call1.hangup()
            await call2.hangup()
            assert await leg101.wait_ended() == "remote"


async def test_shared_queue_losing_member_phone_sees_completed_elsewhere(lab: Lab) -> None:
    """Topology: as above (shared mode).

    Action: Call 1 via pbx1 rings 101 and 102; 101 answers.

    Must hold: the CANCEL that reaches *the phone* 102 (through the router) carries
    ``Reason: SIP;cause=200;text="Call completed elsewhere"``, as pbx1 sent it.
    """
    async with (
        lab.open_ua("101", local=(lab.generator_host(0), 0)) as m101,
        lab.open_ua("102", local=(lab.generator_host(1), 0)) as m102,
        lab.open_ua(caller_for(lab, "pbx1"), local=(lab.generator_host(2), 0)) as caller,
    ):
        await register_members(lab, m101, m102)
        call, leg101 = await first_call_answered_on_101(lab, caller, m101, m102)
        with trio.fail_after(5):
            await call.hangup()
            await leg101.wait_ended()
        (leg102,) = m102.incoming
        assert_completed_elsewhere(cancel_reason(m102, leg102.call_id))
