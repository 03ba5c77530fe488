"""The trio UA against siplab's reference router, in-process on loopback."""

from __future__ import annotations

import json

import trio

from lab.ua import open_ua
from router.sip.transaction.timers import Timers

from .conftest import DOMAIN, PBX, ROUTER, Lab

FAST = Timers(t1=0.05, t2=0.4, t4=0.5)


async def test_ua_registers_with_digest_then_unregisters(lab: Lab) -> None:
    async with open_ua(
        local=("127.0.0.91", 0),
        proxy=ROUTER,
        user="1000",
        password=lab.password("1000"),
        domain=DOMAIN,
        timers=FAST,
    ) as ua:
        with trio.fail_after(5):
            result = await ua.register(expires=600)
        assert result.status == 200, result.response
        assert result.attempts == 2  # 401 then 200
        assert [str(c.uri) for c in result.bindings] == [f"sip:1000@{ua.local[0]}:{ua.local[1]}"]
        assert 0 < result.delay < 5
        with trio.fail_after(5):
            gone = await ua.unregister()
        assert gone.status == 200
        assert gone.bindings == []


async def test_ua_wrong_password_is_refused(lab: Lab) -> None:
    async with open_ua(
        local=("127.0.0.91", 0),
        proxy=ROUTER,
        user="1001",
        password="not-it",
        domain=DOMAIN,
        timers=FAST,
    ) as ua:
        with trio.fail_after(5):
            result = await ua.register()
        assert result.status in (401, 403)
        assert not result.ok


async def test_ua_wildcard_unregister(lab: Lab) -> None:
    async with open_ua(
        local=("127.0.0.91", 0),
        proxy=ROUTER,
        user="1002",
        password=lab.password("1002"),
        domain=DOMAIN,
        timers=FAST,
    ) as ua:
        with trio.fail_after(5):
            assert (
                await ua.register(
                    contacts=["<sip:1002@127.0.0.91:7000>", "<sip:1002@127.0.0.91:7002>"]
                )
            ).ok
            cleared = await ua.register(contact="*", expires=0)
        assert cleared.status == 200
        assert cleared.bindings == []


async def test_ua_call_through_router_to_pbx_stand_in(lab: Lab) -> None:
    async with (
        open_ua(local=PBX, user="600", timers=FAST, node="pbx-standin") as pbx,
        open_ua(
            local=("127.0.0.92", 0),
            proxy=ROUTER,
            user="1003",
            password=lab.password("1003"),
            domain=DOMAIN,
            timers=FAST,
            events_path=lab.events,
        ) as phone,
    ):
        pbx.auto_answer(200, ring=True, delay=0.05)
        with trio.fail_after(5):
            assert (await phone.register()).ok
            call = await phone.call("600")
            final = await call.wait_answered()
        assert final.status == 200
        assert [r.status for r in call.provisionals][-1] == 180
        # The INVITE was challenged (407) and resent with credentials.
        invites = [
            e.message
            for e in phone.messages
            if e.direction == "out"
            and e.message
            and e.message.cseq.method == "INVITE"
            and not e.retransmission
        ]
        assert len(invites) >= 2
        assert "Proxy-Authorization" in invites[-1].headers
        # In-dialog requests follow the Record-Route of the router (§12.2.1.1).
        assert call.dialog is not None
        assert call.dialog.route_set
        assert call.ack_dest == ROUTER
        (incoming,) = pbx.incoming
        with trio.fail_after(5):
            await incoming.wait_acked()
            bye = await call.hangup()
            assert await incoming.wait_ended() == "remote"
        assert bye is not None
        assert bye.status == 200
    # The router's and the phone's events share one file: the ladder has both legs.
    nodes = {json.loads(line)["node"] for line in lab.events.read_text().splitlines()}
    assert "ua1003" in nodes
    assert len(nodes) >= 2
