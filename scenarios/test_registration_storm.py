"""Registration storm: every provisioned user registers at once, then again after a router
restart (the re-registration avalanche that follows a crash or an upgrade).

Topology (own lab for this module, so the ``location`` table starts empty): the default one
(router, pbx1..3, SQLite, users 100..599). SIPp registers the lab's ``users.csv`` (digest:
REGISTER, 401, REGISTER with credentials, 200) straight to the router (not through the Python
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

from lab.engines import SippResult, uac_register
from lab.pytest_plugin import Lab, LabSpec

USERS = 500
RATE = 250.0
"""REGISTER attempts started per second (500 in 2 s: "at once" for a registrar)."""
P95_BOUND_MS = 8000.0
"""Regression guard on the p95 RRD, not a capacity claim (the numbers are reported). On the
2-core reference machine the first storm (every binding new: 1500 forwarded REGISTERs and the
nodes' ``ps_contacts`` writes on top) measured p95 ~2.6 s with SIPp retransmitting; the
refresh storm after a restart (nothing forwarded) between 0.2 s and 2.4 s. A phone gives up after Timer F
(64*T1 = 32 s)."""


@pytest.fixture(scope="module")
def lab_topology() -> LabSpec:
    return LabSpec({"faults": []})


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


async def test_reregistration_avalanche_after_router_restart(
    lab: Lab, measurements: dict[str, Any]
) -> None:
    """The router is restarted (bindings stay in the DB), then all 500 users register again
    at once.

    Must hold: the restarted router reloads every binding the DB holds (nothing acknowledged
    is lost); the avalanche succeeds completely; there are still exactly 500 bindings (the
    same contacts refreshed, not duplicated); the p95 RRD is reported and bounded.
    """
    before = bindings(lab)[0]
    lab.restart("router")
    # Reloaded from the DB. The reference router loads before it answers SIP; Kamailio's
    # usrloc may still be loading when it already answers OPTIONS, so allow it a few seconds.
    deadline = time.monotonic() + 10.0
    while bindings(lab) != (before, before) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another process
        await trio.sleep(0.2)
    assert bindings(lab) == (before, before)
    result = await storm(lab, "reregister-after-restart", measurements)
    assert (result.successful, result.failed) == (USERS, 0), result.errors
    assert bindings(lab) == (USERS, USERS)
    assert result.p95_ms is not None
    assert result.p95_ms <= P95_BOUND_MS
