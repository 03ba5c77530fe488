"""Storm mode against the in-process router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from lab.ua import StormProgress, open_ua
from lab.ua.storm import run_storm
from router.sip.transaction.timers import Timers

from .conftest import DOMAIN, PBX, ROUTER, Lab

FAST = Timers(t1=0.05, t2=0.4, t4=0.5)


async def test_storm_200_registrations_all_succeed(lab: Lab, tmp_path: Path) -> None:
    users = [(u.username, u.password) for u in lab.users[:200]]
    ticks: list[StormProgress] = []
    out = tmp_path / "storm.json"
    with trio.fail_after(15):
        result = await run_storm(
            "register",
            ROUTER,
            rate=400,
            count=200,
            users=users,
            local_ips=["127.0.0.93", "127.0.0.94"],
            domain=DOMAIN,
            timers=FAST,
            progress=ticks.append,
            progress_interval=0.2,
            output=out,
        )
    assert (result.attempted, result.succeeded, result.failed) == (200, 200, 0)
    assert not result.timed_out
    assert len(result.rrd) == 200
    assert all(d > 0 for d in result.rrd)
    assert ticks
    assert ticks[-1].succeeded == 200
    assert ticks[-1].in_flight == 0
    saved = json.loads(out.read_text())
    assert saved["succeeded"] == 200
    assert saved["failures_by_status"] == {}
    assert (
        0 < saved["rrd"]["p50"] <= saved["rrd"]["p95"] <= saved["rrd"]["p99"] <= saved["rrd"]["max"]
    )
    assert lab.router.core.registration is not None
    assert lab.router.core.registration.status()["bindings"] >= 200


async def test_storm_calls_to_pbx_stand_in_with_failures_by_status(lab: Lab) -> None:
    users = [(u.username, u.password) for u in lab.users[:10]]
    async with open_ua(local=PBX, user="600", timers=FAST) as pbx:
        pbx.auto_answer(200, ring=True)
        with trio.fail_after(15):
            ok = await run_storm(
                "call",
                ROUTER,
                rate=50,
                count=20,
                users=users,
                local_ips=["127.0.0.93"],
                domain=DOMAIN,
                hold=0.05,
                timers=FAST,
            )
        assert (ok.succeeded, ok.failed) == (20, 0)
        assert len(ok.srd) == 20
        pbx.auto_answer(486, ring=False)
        with trio.fail_after(15):
            busy = await run_storm(
                "mixed",
                ROUTER,
                rate=50,
                count=10,
                users=users,
                local_ips=["127.0.0.93"],
                domain=DOMAIN,
                timers=FAST,
            )
        assert (busy.succeeded, busy.failed) == (5, 5)  # registrations pass, calls get 486
        assert dict(busy.failures) == {486: 5}
        assert all(not leg.dialog for leg in pbx.incoming[-5:])


async def test_storm_is_bounded_in_time(lab: Lab) -> None:
    # Nobody answers at the PBX address: every INVITE retransmits until the storm bound.
    users = [(u.username, u.password) for u in lab.users[:5]]
    with trio.fail_after(10):
        result = await run_storm(
            "call",
            ROUTER,
            rate=100,
            count=5,
            users=users,
            local_ips=["127.0.0.93"],
            domain=DOMAIN,
            timers=FAST,
            max_duration=0.5,
        )
    assert result.timed_out
    assert result.attempted == 5
    assert result.succeeded == 0
    assert result.failed == 5  # unfinished at the bound: counted with status 0
    assert sum(result.failures.values()) == 5


def test_storm_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scenario"):
        trio.run(lambda: run_storm("flood", ROUTER, rate=1, count=1, users=[("a", "b")]))  # type: ignore[arg-type]
