"""ACK loss: what the PBX, the router and the caller do when the ACK for a 2xx never arrives.

RFC 3261 §13.3.1.4: "The 2xx response is passed to the transport with an interval that starts
at T1 seconds and doubles for each retransmission until it reaches T2 seconds ... If the server
retransmits the 2xx response for 64*T1 seconds without receiving an ACK, the dialog is
confirmed, but the session SHOULD be terminated. This is accomplished with a BYE."

Asterisk 22 (pjsip) was measured doing exactly that with T1 = 500 ms, T2 = 4 s: the 200 OK at
+0, then +0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5 s, and at +32.0 s a BYE with
``Reason: SIP ;cause=408 ;text="Request Timeout"`` (SIP-REFERENCE §6.3). The compressed
scenarios scale that measured schedule by the lab's ``time_scale``; the ``slow`` one runs it in
real time.

Where the ACK is dropped. An ACK for a 2xx follows the route set to the router and then the
PBX's Contact. A node behind a ``router-pbxN`` relay advertises the relay in its Contact (the
emulator's ``external_signaling_address``, set by the lab), so that relay sees the ACK and can
drop it. The caller's side drops ACKs at the trio UA (``drop_acks``, or a seeded 30 % through
``on_send``); every drop is an event (``event: "drop"``).
"""

from __future__ import annotations

import random
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from lab.evidence import read_events
from lab.pytest_plugin import Faults, Lab, LabSpec
from lab.ua import Call, UserAgent
from router.sip import Request, Response

pytestmark = pytest.mark.lab

ASTERISK_2XX_SCHEDULE = (0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5)
"""Seconds after the first 200 OK at which Asterisk 22.10.1 retransmitted it (T1 = 500 ms)."""
ASTERISK_BYE_AT = 32.0
"""Seconds after the first 200 OK at which it sent BYE with Reason cause=408 (64*T1)."""
SEED = 4175
"""Seed of the ACK dropper in the storm scenario (printed in the failure message)."""


# -- helpers ----------------------------------------------------------------------------------


def scale(lab: Lab) -> float:
    return lab.time_scale


def tolerance(lab: Lab) -> float:
    """How far a measured event may sit from the scaled Asterisk schedule."""
    return 0.025 + 0.1 * 0.5 * scale(lab)


def node_events(lab: Lab, node: str, call_id: str | None = None) -> list[dict[str, Any]]:
    """One node's events (optionally of one Call-ID), in time order."""
    path = lab.node(node).events
    if not path or not Path(path).exists():
        return []
    found = [e for e in read_events(path) if call_id is None or e.get("call_id") == call_id]
    return sorted(found, key=lambda e: e["t"])


def pbx_of(lab: Lab, call_id: str) -> str:
    """The PBX node that received the INVITE of ``call_id``."""
    for node in lab.pbx:
        if any(
            e.get("method") == "INVITE" and e.get("dir") == "in"
            for e in node_events(lab, node.name, call_id)
        ):
            return node.name
    raise AssertionError(f"no PBX node received the INVITE of {call_id}")


def sent_2xx(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 200 OKs to the INVITE a node sent (first one and retransmissions)."""
    return [
        e
        for e in events
        if e.get("dir") == "out"
        and e.get("status") == 200
        and e.get("method") == "INVITE"
        and e.get("event") in ("sip", "retransmit")
    ]


def header(raw: str, name: str) -> str | None:
    match = re.search(rf"^{name}\s*:\s*(.*?)\r?$", raw, re.IGNORECASE | re.MULTILINE)
    return match.group(1) if match else None


def router_metrics(lab: Lab) -> str:
    with urllib.request.urlopen(f"http://{lab.router.http}/metrics", timeout=2.0) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def wait_router_clean(lab: Lab, timeout: float) -> dict[str, Any]:
    """Poll the router until no INVITE transaction and no proxy context is left.

    Returns the last ``/status``. The lab runs one scenario at a time, so "none left" is "none
    left for this call"; keepalive OPTIONS are non-INVITE and do not count.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = lab.router_status()
        tx = status["transactions"]
        contexts = metric(router_metrics(lab), "siplab_proxy_contexts")
        if tx["client_invite"] == 0 and tx["server_invite"] == 0 and contexts == 0:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(
                f"router not clean {timeout:g} s after the call: transactions {tx}, "
                f"proxy contexts {contexts}"
            )
        time.sleep(0.05)


def phone(lab: Lab, user: str, index: int, **options: Any) -> Any:
    """A trio phone for ``user`` on its own generator address, through the lab's entry."""
    return lab.open_ua(user, local=(lab.generator_host(index), 0), **options)


def received(ua: UserAgent, method: str, call_id: str) -> list[Request]:
    return [
        m.message
        for m in ua.messages
        if m.direction == "in"
        and isinstance(m.message, Request)
        and m.message.method == method
        and m.message.call_id == call_id
    ]


def assert_asterisk_schedule(lab: Lab, pbx: str, call: Call) -> float:
    """The PBX retransmitted the 200 on the scaled Asterisk schedule and sent BYE cause=408
    at 64*T1. Returns the time of the first 200 (unix seconds)."""
    s, tol = scale(lab), tolerance(lab)
    events = node_events(lab, pbx, call.call_id)
    oks = sent_2xx(events)
    assert oks, f"{pbx} never sent a 200 for {call.call_id}"
    t0 = oks[0]["t"]
    offsets = [round(e["t"] - t0, 4) for e in oks[1:]]
    expected = [round(x * s, 4) for x in ASTERISK_2XX_SCHEDULE]
    assert len(offsets) == len(expected), f"2xx retransmissions at {offsets}, want {expected}"
    for got, want in zip(offsets, expected, strict=True):
        assert abs(got - want) <= tol, f"2xx retransmissions at {offsets}, want {expected}"
    byes = [e for e in events if e.get("dir") == "out" and e.get("method") == "BYE"]
    assert byes, f"{pbx} sent no BYE for {call.call_id}"
    bye_at = byes[0]["t"] - t0
    assert abs(bye_at - ASTERISK_BYE_AT * s) <= tol, f"BYE at +{bye_at:.3f} s"
    reason = header(byes[0].get("raw", ""), "Reason") or ""
    assert re.search(r"cause\s*=\s*408", reason), f"BYE Reason {reason!r}"
    assert "Request Timeout" in reason
    # Nothing acknowledged the 2xx on the PBX side: the channel timed out waiting for it.
    kinds = {e.get("event") for e in events}
    assert "ack" not in kinds
    assert "ack_timeout" in kinds
    return float(t0)


# -- scenarios --------------------------------------------------------------------------------


async def test_ack_loss_every_ack_dropped_pbx_retransmits_then_byes_408(lab: Lab) -> None:
    """Topology: the default lab (router, pbx1..3, T1 = 500 ms x time_scale).

    Action: user 150 calls 600 (Answer, wait) through the router and never sends an ACK.

    Must hold:
    - the answering PBX retransmits the 200 OK on the Asterisk schedule (+0.5, 1.5, 3.5, 7.5,
      11.5 ... 31.5 s, scaled) and sends BYE with Reason cause=408 at 64*T1 (32 s, scaled);
    - the router passes every one of them: the caller sees each retransmitted 200 and the BYE
      (with its Reason), and the PBX gets the caller's 200 to the BYE;
    - afterwards the router holds no INVITE transaction and no proxy context, and no
      transaction of the router timed out on the way.
    """
    before = lab.router_status()["transactions"]["timeouts"]
    give_up = ASTERISK_BYE_AT * scale(lab)
    async with phone(lab, "150", 0, drop_acks=True) as ua:
        call = await ua.call("600")
        with trio.fail_after(5):
            final = await call.wait_answered()
        assert final.status == 200
        with trio.fail_after(give_up + 3):
            assert await call.wait_ended() == "remote"
        await trio.sleep(0.1)  # the 200 to the BYE reaches the PBX's log
    pbx = pbx_of(lab, call.call_id)
    assert_asterisk_schedule(lab, pbx, call)

    # The router relayed every 2xx retransmission to the caller, and the BYE with its Reason.
    assert call.retransmissions == len(ASTERISK_2XX_SCHEDULE)
    dropped = [m for m in ua.messages if m.dropped]
    assert len(dropped) == 1 + len(ASTERISK_2XX_SCHEDULE)  # the ACK and every re-ACK
    (bye,) = received(ua, "BYE", call.call_id)
    assert "cause=408" in (bye.headers.get("Reason") or "").replace(" ", "")
    pbx_in = node_events(lab, pbx, call.call_id)
    assert any(
        e.get("dir") == "in" and e.get("method") == "BYE" and e.get("status") == 200 for e in pbx_in
    ), "the PBX never got the 200 to its BYE"

    if lab.topology.router.kind == "reference":
        status = wait_router_clean(lab, timeout=give_up + 2)
        assert status["transactions"]["timeouts"] == before


async def test_ack_loss_30_percent_of_acks_dropped_every_call_completes(lab: Lab) -> None:
    """Topology: the default lab.

    Action: 24 calls to 600 from two phones at once; each phone drops 30 % of its ACKs
    (``random.Random(SEED)``, re-ACKs included), holds the call for 32*T1, then hangs up.

    Must hold: every call is answered and ends with a 200 to the BYE; on the PBX every call
    got an ACK in the end (its channel confirmed, no ACK timeout); every call whose first ACK
    was dropped was rescued by a 2xx retransmission that the caller re-ACKed.
    """
    s = scale(lab)
    rng = random.Random(SEED)

    def lossy(message: Request | Response) -> bool:
        if isinstance(message, Request) and message.method == "ACK":
            return rng.random() >= 0.3
        return True

    calls: list[Call] = []
    byes: dict[str, int | None] = {}

    async def one(ua: UserAgent, callee: str) -> None:
        call = await ua.call(callee)
        calls.append(call)
        final = await call.wait_answered()
        if final.status != 200:
            return
        await trio.sleep(32 * 0.5 * s)
        response = await call.hangup()
        byes[call.call_id] = response.status if response is not None else None

    async with (
        phone(lab, "151", 1, on_send=lossy) as a,
        phone(lab, "152", 2, on_send=lossy) as b,
    ):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(24):
                    nursery.start_soon(one, (a, b)[i % 2], "600")
                    await trio.sleep(0.01)
        uas = (a, b)
    await trio.sleep(0.1)
    note = f"(seed {SEED})"
    assert [c.status for c in calls] == [200] * 24, note
    assert all(byes.get(c.call_id) == 200 for c in calls), f"BYE answers {byes} {note}"

    dropped = [
        m.message for ua in uas for m in ua.messages if m.dropped and isinstance(m.message, Request)
    ]
    sent = [
        m.message
        for ua in uas
        for m in ua.messages
        if m.direction == "out" and isinstance(m.message, Request) and m.message.method == "ACK"
    ]
    assert {m.method for m in dropped} == {"ACK"}
    assert 0.1 < len(dropped) / len(sent) < 0.6, f"{len(dropped)}/{len(sent)} ACKs dropped {note}"
    first_lost = set()
    for ua in uas:
        seen: set[str] = set()
        for m in ua.messages:
            if (
                m.direction == "out"
                and isinstance(m.message, Request)
                and m.message.method == "ACK"
            ):
                if m.message.call_id not in seen and m.dropped:
                    first_lost.add(m.message.call_id)
                seen.add(m.message.call_id)
    assert first_lost, f"no call lost its first ACK: nothing was tested {note}"
    for call in calls:
        pbx = pbx_of(lab, call.call_id)
        events = node_events(lab, pbx, call.call_id)
        kinds = [e.get("event") for e in events]
        assert "ack" in kinds, f"{call.call_id} on {pbx}: never ACKed {note}"
        assert "ack_timeout" not in kinds, f"{call.call_id} on {pbx}: ACK timeout {note}"
        if call.call_id in first_lost:
            assert len(sent_2xx(events)) >= 2, f"{call.call_id}: no 2xx retransmission {note}"
            assert call.retransmissions >= 1, f"{call.call_id}: caller saw no retransmission"


@pytest.mark.kamailio  # the router's legs come from the capture
async def test_ack_loss_between_router_and_pbx_only(lab: Lab, faults: Faults) -> None:
    """Topology: the default lab with its fault relay on router-pbx1.

    Action: every ACK on the router-pbx1 link is dropped by the relay; user 153 places calls
    to 600 until one lands on pbx1 (round robin: within three calls).

    Must hold: the caller's ACK reaches the router and the router forwards it to the relay
    (both legs read from the lab's capture, whatever router runs), the relay drops it (no ACK
    on the relay-pbx1 leg), pbx1 retransmits the 200 (the router passes each to the caller,
    who re-ACKs) and at 64*T1 sends BYE cause=408, which reaches the caller.
    """
    if "router-pbx1" not in faults.links():
        pytest.skip("no fault relay on router-pbx1 (--lab-faults)")
    faults.add("router-pbx1", "drop", method="ACK", direction="a2b")
    since = time.time()
    async with phone(lab, "153", 3) as ua:
        target: Call | None = None
        for _ in range(3):
            call = await ua.call("600")
            with trio.fail_after(5):
                assert (await call.wait_answered()).status == 200
            if pbx_of(lab, call.call_id) == "pbx1":
                target = call
                break
            await call.hangup()
        assert target is not None, "round robin never chose pbx1 in three calls"
        await trio.sleep(3 * 0.5 * scale(lab))
        drops = faults.decisions("router-pbx1", "drop", since)
        assert any(d.get("call_id") == target.call_id for d in drops), (
            "the router-pbx1 relay never saw the ACK (it went to pbx1's Contact directly)"
        )
        with trio.fail_after(ASTERISK_BYE_AT * scale(lab) + 3):
            assert await target.wait_ended() == "remote"
    assert_asterisk_schedule(lab, "pbx1", target)
    assert target.retransmissions == len(ASTERISK_2XX_SCHEDULE)
    acks = [r for r in lab.packets(since) if r.call_id == target.call_id and r.method == "ACK"]
    router, relay = lab.router.address, lab.dispatch_uri("pbx1").removeprefix("sip:")
    pbx1 = lab.node("pbx1").address
    into_router = [r for r in acks if r.dst == router]
    forwarded = [r for r in acks if r.src.rpartition(":")[0] == lab.router.host and r.dst == relay]
    assert into_router, "the caller's ACK never reached the router"
    assert forwarded, "the router never forwarded the ACK towards pbx1"
    assert len(forwarded) >= len(into_router) - 1, (into_router, forwarded)
    assert not [r for r in acks if r.dst == pbx1], "an ACK reached pbx1 despite the relay"
    assert all(r.note == "drop" for r in forwarded), [r.note for r in forwarded]


# -- real time ----------------------------------------------------------------------------------


@pytest.fixture
def realtime_lab(make_lab: Callable[..., Lab]) -> Lab:
    """A second, small lab in real time (T1 = 500 ms): router + one PBX, no relays."""
    return make_lab(LabSpec({"pbx_count": 1, "users": {"count": 60}}, time_scale=1.0, faults=[]))


@pytest.mark.slow
async def test_ack_loss_real_time_schedule_matches_asterisk(realtime_lab: Lab) -> None:
    """Topology: router + pbx1 in real time (T1 = 500 ms, T2 = 4 s).

    Action: user 150 calls 600 and never ACKs.

    Must hold: pbx1 sends the 200 at +0 and again at +0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5,
    23.5, 27.5 and 31.5 s, then BYE with Reason cause=408 at +32.0 s (Asterisk 22.10.1, within
    75 ms); the caller sees all of it through the router.
    """
    lab = realtime_lab
    assert scale(lab) == 1.0
    async with phone(lab, "150", 0, drop_acks=True) as ua:
        call = await ua.call("600")
        with trio.fail_after(5):
            assert (await call.wait_answered()).status == 200
        with trio.fail_after(ASTERISK_BYE_AT + 5):
            assert await call.wait_ended() == "remote"
    assert_asterisk_schedule(lab, "pbx1", call)
    assert call.retransmissions == len(ASTERISK_2XX_SCHEDULE)
    (bye,) = received(ua, "BYE", call.call_id)
    assert "Request Timeout" in (bye.headers.get("Reason") or "")


def test_ack_loss_schedule_constants_are_the_rfc_rule() -> None:
    """The measured Asterisk numbers are RFC 3261 §13.3.1.4 with T1 = 0.5, T2 = 4: intervals
    T1, 2T1, 4T1 ... capped at T2, all strictly before 64*T1 (guards the oracle itself)."""
    at, interval, want = 0.5, 0.5, []
    while at < 64 * 0.5:
        want.append(at)
        interval = min(2 * interval, 4.0)
        at += interval
    assert tuple(want) == ASTERISK_2XX_SCHEDULE
    assert ASTERISK_BYE_AT == 64 * 0.5
