"""Registration storm: every provisioned user registers at once, then again after a router
restart (the re-registration avalanche that follows a crash or an upgrade).

Topology (own lab for this module, so the ``location`` table starts empty): the default one
(router, pbx1..3, SQLite) with users 1000..1502. SIPp registers the first 500 of the lab's
``users.csv`` (digest: REGISTER, 401, REGISTER with credentials, 200) straight to the router (not through the Python
relay, which would be the bottleneck). The forwarded REGISTERs go to every PBX node.

Reported (printed in the "siplab measurements" summary and written to
``<run>/tests/<test>/measurements.json``): RFC 6076 Registration Request Delay p50/p95/p99,
as SIPp measured it and as the router saw it (from its events), and the rate achieved.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from lab.backends import NodeState
from lab.engines import SippResult, uac_register
from lab.pytest_plugin import Lab, LabSpec
from lab.ua.ua import UserAgent

USERS = 500
FIRST_USER = 1000
"""Users 1000..1499 register in the storms (above the dialplan's own 600-800 extensions)."""
PHONES = ("1500", "1501")
"""Trio phones that stay registered across the router's kill -9 (users after the storm's)."""
CALLER = "1502"
RATE = 250.0
"""REGISTER attempts started per second (500 in 2 s: "at once" for a registrar)."""
P95_BOUND_MS = 8000.0
"""Regression guard on the p95 RRD, not a capacity claim (the numbers are reported). On the
2-core reference machine the first storm (every binding new: 1500 forwarded REGISTERs and the
nodes' ``ps_contacts`` writes on top) measured p95 ~2.6 s with SIPp retransmitting; the
refresh storm after a restart (nothing forwarded) between 0.2 s and 2.4 s. A phone gives up after Timer F
(64*T1 = 32 s)."""


PASSWORD_SEED = 111
"""Users' password seed. 500 users are too few to meet, by chance, a password SIPp misreads
(``password=0x...`` is hex to SIPp: about 1 user in 4,096); with this seed the plain random
draw gives two of them (the 140th and the 456th user), so the zero-failure checks below cover that case
on every run (``siplab users add`` draws such passwords again, tests/realtime)."""


@pytest.fixture(scope="module")
def lab_topology() -> LabSpec:
    users = {
        "first": FIRST_USER,
        "count": USERS + len(PHONES) + 1,
        "password_seed": PASSWORD_SEED,
    }
    return LabSpec({"faults": [], "users": users})


def router_rrd(lab: Lab, since: float) -> dict[str, Any]:
    """RRD percentiles (ms) of the registrations the router answered since ``since``, at the
    router's address as the lab's capture saw them (whatever router runs)."""
    from reports.metrics import events_from_records, registrations

    events = events_from_records(lab.packets(since), {lab.router.host: "router"})
    regs = registrations(events, node="router", requests_dir="in")
    ok = regs[regs["outcome"] == "success"]["rrd_ms"]
    if ok.empty:
        return {"count": 0}
    return {
        "count": len(ok),
        "failures": int((regs["outcome"] != "success").sum()),
        "p50_ms": round(float(ok.quantile(0.5)), 2),
        "p95_ms": round(float(ok.quantile(0.95)), 2),
        "p99_ms": round(float(ok.quantile(0.99)), 2),
    }


async def storm(lab: Lab, name: str, measurements: dict[str, Any]) -> SippResult:
    since = time.time()
    result = await lab.run_sipp_async(
        uac_register(expires=3600),
        name=name,
        max_calls=USERS,
        rate=RATE,
        timeout_s=60.0,
    )
    seen = router_rrd(lab, since)  # lab.packets waits for the capture's flush barrier
    measurements[name] = {
        "successful": result.successful,
        "failed": result.failed,
        "failed_by_reason": result.failed_by_reason,
        "retransmissions": result.retransmissions,
        "achieved_per_s": round(result.achieved_cps, 1),
        "sipp_rrd_ms": {"p50": result.p50_ms, "p95": result.p95_ms, "p99": result.p99_ms},
        "router_rrd_ms": seen,
    }
    measurements[f"{name}_rrd_p95_ms"] = result.p95_ms
    print(f"{name}: {measurements[name]}")
    return result


def bindings(lab: Lab) -> tuple[int, int]:
    """(location rows in the DB, bindings the router holds)."""
    with lab.db() as db:
        rows = db.location_count()
    return rows, int(lab.router_status()["registrar"]["bindings"])


async def test_500_users_register_at_once(lab: Lab, measurements: dict[str, Any]) -> None:
    """All 500 users register within ~2 s.

    Must hold: every registration succeeds (SIPp: 500 successful, none failed); the router
    holds 500 bindings and the DB has 500 ``location`` rows; the router's view agrees (500
    successful digest registrations in its events); the p95 RRD is reported and under
    ``P95_BOUND_MS``.
    """
    result = await storm(lab, "register-storm", measurements)
    assert (result.successful, result.failed) == (USERS, 0), result.errors
    assert bindings(lab) == (USERS, USERS)
    assert measurements["register-storm"]["router_rrd_ms"]["count"] == USERS
    assert result.p95_ms is not None
    assert result.p95_ms <= P95_BOUND_MS


async def registered(lab: Lab, measurements: dict[str, Any]) -> None:
    """Every storm user registered: true after the first test; run alone (``-k``), this test
    makes it true itself, so its avalanche is one of refreshes either way."""
    if bindings(lab)[0] >= USERS:
        return
    result = await storm(lab, "register-before-kill", measurements)
    assert (result.successful, result.failed) == (USERS, 0), result.errors


async def register_on_the_nodes(lab: Lab, phone: UserAgent) -> None:
    """Register ``phone`` until the router's forwarded REGISTER has put its contact in the
    nodes' shared ``ps_contacts`` (a node dials it from there). Right after a storm the
    router may hold the nodes unusable for forwarding (Kamailio marks a node that timed out
    a forwarded REGISTER inactive until its probing brings it back); a phone's next refresh
    is forwarded again, which this repeats."""
    deadline = time.monotonic() + 15.0
    while True:
        with trio.fail_after(5):
            assert (await phone.register(expires=3600)).ok
        with trio.move_on_after(1.0):
            while True:
                with lab.db() as db:
                    if db.contacts_for_aor(phone.user, time.time()):
                        return
                await trio.sleep(0.05)
        assert time.monotonic() < deadline, f"{phone.user}'s contact never reached a node"


@pytest.mark.kamailio  # CI subset under --router kamailio (registers the users itself)
@pytest.mark.router_needs("auth", "durable")  # digest registrations; bindings kept in the DB
async def test_bindings_survive_kill_9_are_served_and_the_avalanche_succeeds(
    lab: Lab, measurements: dict[str, Any]
) -> None:
    """Every user registered, plus two trio phones (users beyond the storm's); the router is
    SIGKILLed (no chance to flush anything) and started again, then all 500 users register
    again at once.

    Must hold: the restarted router reloads every binding the DB holds (nothing acknowledged
    is lost), and *serves* them: a call to each phone, dispatched to a PBX node that dials it
    back through the router (location lookup), rings that phone and is answered, although
    the phones did not register again; the avalanche succeeds completely; the binding count
    is unchanged (the same contacts refreshed, not duplicated); the p95 RRD is reported and
    bounded.
    """
    await registered(lab, measurements)
    async with (
        lab.open_ua(PHONES[0]) as phone_a,
        lab.open_ua(PHONES[1]) as phone_b,
        lab.open_ua(CALLER) as caller,
    ):
        for phone in (phone_a, phone_b):
            phone.auto_answer(200, ring=True, delay=0.05)
            await register_on_the_nodes(lab, phone)
        before = bindings(lab)
        assert before == (USERS + len(PHONES), USERS + len(PHONES))

        pid = lab.router.pid
        lab.kill("router")
        assert lab.state("router") is NodeState.DOWN
        lab.restart("router")
        assert lab.router.pid != pid
        # Reloaded from the DB. The reference router loads before it answers SIP; Kamailio's
        # usrloc may still be loading when it already answers OPTIONS, so allow it a few
        # seconds.
        deadline = time.monotonic() + 10.0
        while bindings(lab) != before and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another process
            await trio.sleep(0.2)
        assert bindings(lab) == before

        for phone in (phone_a, phone_b):
            with trio.fail_after(10):
                call = await caller.call(phone.user)
                final = await call.wait_answered()
            assert final.status == 200, final
            assert len(phone.incoming) == 1  # the PBX node's leg to the phone
            with trio.fail_after(5):
                await phone.incoming[0].wait_acked()
                bye = await call.hangup()
            assert bye is not None and bye.status == 200

    result = await storm(lab, "reregister-after-kill", measurements)
    assert (result.successful, result.failed) == (USERS, 0), result.errors
    assert bindings(lab) == before
    assert result.p95_ms is not None
    assert result.p95_ms <= P95_BOUND_MS
