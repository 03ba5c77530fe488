"""Two trio UAs talking directly over loopback (no router): calls, CANCEL, ACK loss, raw input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from lab.ua import open_ua
from router.sip import Request, Response
from router.sip.transaction.timers import Timers

A = ("127.0.0.91", 0)
B = ("127.0.0.92", 0)
FAST = Timers(t1=0.02, t2=0.16, t4=0.2)


def methods(ua: object, direction: str) -> list[str]:
    out = []
    for entry in ua.messages:  # type: ignore[attr-defined]
        if entry.direction != direction or entry.message is None or entry.dropped:
            continue
        m = entry.message
        out.append(m.method if isinstance(m, Request) else str(m.status))
    return out


async def test_ua_call_rings_answers_acks_and_hangs_up(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    async with (
        open_ua(local=B, user="b", timers=FAST, events_path=events) as b,
        open_ua(local=A, user="a", timers=FAST, events_path=events) as a,
    ):
        b.auto_answer(200, ring=True)
        call = await a.call(f"sip:b@{b.local[0]}:{b.local[1]}")
        with trio.fail_after(2):
            final = await call.wait_answered()
        assert final.status == 200
        assert call.status == 200
        assert [r.status for r in call.provisionals] == [180]
        assert call.setup_delay is not None
        assert call.setup_delay >= 0
        assert call.ack is not None
        assert call.ack.cseq.method == "ACK"
        (incoming,) = b.incoming
        with trio.fail_after(2):
            await incoming.wait_acked()
        with trio.fail_after(2):
            bye = await call.hangup()
            assert await incoming.wait_ended() == "remote"
        assert bye is not None
        assert bye.status == 200
        assert call.ended_by == "local"
    assert methods(a, "out") == ["INVITE", "ACK", "BYE"]
    assert methods(b, "out") == ["180", "200", "200"]
    # Both UAs wrote their leg to the same events file under their own node names.
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    sip = [(r["node"], r["dir"], r["method"], r["status"]) for r in lines if r["event"] == "sip"]
    assert ("uaa", "out", "INVITE", None) in sip
    assert ("uab", "in", "ACK", None) in sip
    assert ("uab", "out", "BYE", 200) in sip


async def test_ua_cancel_gets_487() -> None:
    async with (
        open_ua(local=B, user="b", timers=FAST) as b,
        open_ua(local=A, user="a", timers=FAST) as a,
    ):
        call = await a.call(f"sip:b@{b.local[0]}:{b.local[1]}")
        with trio.fail_after(2):
            incoming = await b.wait_incoming()
        await incoming.ring()
        with trio.fail_after(2):
            cancel_response = await call.cancel()
            final = await call.wait_answered()
            assert await incoming.wait_ended() == "remote"
        assert cancel_response is not None
        assert cancel_response.status == 200
        assert final.status == 487
        assert incoming.cancelled
        assert incoming.status == 487
        assert call.ended_by == "cancelled"
        # Too late to answer now.
        assert not await incoming.answer()
    # The 487 was ACKed by the INVITE client transaction (§17.1.1.3), hop by hop.
    assert methods(a, "out") == ["INVITE", "CANCEL", "ACK"]


async def test_ua_reject_and_wait_incoming() -> None:
    async with (
        open_ua(local=B, user="b", timers=FAST) as b,
        open_ua(local=A, user="a", timers=FAST) as a,
    ):
        call = await a.call(f"sip:b@{b.local[0]}:{b.local[1]}", headers=[("X-Test", "1")])
        with trio.fail_after(2):
            incoming = await b.wait_incoming()
        assert incoming.request.headers.get("X-Test") == "1"
        assert incoming.request.body.startswith(b"v=0")
        await incoming.reject(486)
        with trio.fail_after(2):
            final = await call.wait_answered()
        assert final.status == 486
        assert call.ended_by == "failed"


async def test_ua_dropped_ack_makes_the_peer_retransmit_2xx_then_bye() -> None:
    async with (
        open_ua(local=B, user="b", timers=FAST) as b,
        open_ua(local=A, user="a", timers=FAST, drop_acks=True) as a,
    ):
        b.auto_answer(200, ring=False)
        call = await a.call(f"sip:b@{b.local[0]}:{b.local[1]}")
        with trio.fail_after(2):
            assert (await call.wait_answered()).status == 200
        (incoming,) = b.incoming
        # 64*T1 = 1.28 s of 2xx retransmissions, then the UAS gives up with a BYE (§13.3.1.4).
        with trio.fail_after(3):
            assert await call.wait_ended() == "remote"
            assert await incoming.wait_ended() == "local"
    assert call.retransmissions >= 5
    stats = a.statistics()
    assert stats.retransmissions_received == call.retransmissions
    assert stats.dropped_out == 1 + call.retransmissions  # every ACK, re-ACKs included
    assert b.statistics().retransmissions_sent >= call.retransmissions
    resent = [e for e in b.messages if e.direction == "out" and e.retransmission]
    assert all(isinstance(e.message, Response) and e.message.status == 200 for e in resent)


async def test_ua_on_send_hook_drops_chosen_messages() -> None:
    async with (
        open_ua(local=B, user="b", timers=FAST) as b,
        open_ua(
            local=A,
            user="a",
            timers=FAST,
            on_send=lambda m: not (isinstance(m, Request) and m.method == "INVITE"),
        ) as a,
    ):
        b.auto_answer()
        call = await a.call(f"sip:b@{b.local[0]}:{b.local[1]}")
        with trio.fail_after(3):
            final = await call.wait_answered()
        assert final.status == 408  # Timer B = 64*T1 with every INVITE copy dropped
        assert b.incoming == []
    assert len([e for e in a.messages if e.dropped]) >= 5


async def test_ua_send_raw_and_expect_a_400() -> None:
    async with (
        open_ua(local=B, user="b", timers=FAST) as b,
        open_ua(local=A, user="a", timers=FAST) as a,
    ):
        raw = (
            f"OPTIONS sip:b@{b.local[0]}:{b.local[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {a.local[0]}:{a.local[1]};branch=z9hG4bK-raw1\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: raw-1\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        await a.send_raw(raw.encode(), b.local)
        answer = await a.expect(lambda m: isinstance(m, Response) and m.call_id == "raw-1", 2)
        assert isinstance(answer, Response)
        assert answer.status == 200
        await a.send_raw(b"garbage\r\n\r\n", b.local)
        with pytest.raises(trio.TooSlowError):
            await a.expect(lambda m: True, 0.2)
        assert b.statistics().unparsable_in == 1
