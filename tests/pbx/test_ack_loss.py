"""pjsip's behaviour when the ACK for a 2xx never comes (SIP-REFERENCE §6.3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from lab.pbx.config import TimersConfig
from lab.pbx.core import PbxCore
from lab.pbx.store import PbxStore
from lab.pbx.timers import ack_wait_schedule
from router.sip import Request, Response, parse_untrusted, serialize
from router.transport.base import Inbound

from .conftest import node_config, start_node
from .helpers import PBX1_IP, ROUTER_IP, Peer, provision

MEASURED = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
"""Asterisk 22.10.1: retransmissions of the 200 after the first one, seconds."""


def test_ack_wait_schedule_matches_asterisk() -> None:
    offsets, give_up = ack_wait_schedule(0.5, 4.0)
    assert offsets == pytest.approx(MEASURED)
    assert give_up == 32.0


def test_ack_wait_schedule_scales_with_t1() -> None:
    offsets, give_up = ack_wait_schedule(0.02, 0.16)
    assert offsets == pytest.approx([t * 0.04 for t in MEASURED])
    assert give_up == pytest.approx(1.28)


def _drive(core: PbxCore, until: float) -> list[tuple[float, Request | Response]]:
    """Step the core's timers deadline by deadline; return (time, message) of every send."""
    sent: list[tuple[float, Request | Response]] = []
    now = 0.0
    sent.extend((now, parse_untrusted(o.data)) for o in core.drain_outgoing())
    while (deadline := core.next_deadline()) is not None and deadline <= until:
        now = deadline
        core.handle_timers(now=now)
        sent.extend((now, parse_untrusted(o.data)) for o in core.drain_outgoing())
    return sent


def test_no_ack_retransmits_200_then_byes_at_64_t1(tmp_path: Path) -> None:
    store = PbxStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    provision(store)
    config = node_config(store.db.url, timers=TimersConfig(t1=0.5, t2=4.0, t4=5.0))
    core = PbxCore(config, store, wall_offset=1.7e9)
    peer = Peer.__new__(Peer)  # only its message builder is used: no socket here
    peer.addr, peer.cseq, peer.inbox = (ROUTER_IP, 5060), 1, []
    invite = peer.request("INVITE", f"sip:600@{PBX1_IP}", to_user="600", to_host=PBX1_IP)
    core.receive_untrusted(
        serialize(invite), Inbound("udp", (ROUTER_IP, 5060), (PBX1_IP, 5060)), now=0.0
    )
    sent = _drive(core, until=40.0)
    oks = [t for t, m in sent if isinstance(m, Response) and m.status == 200]
    assert oks == pytest.approx([0.0, *MEASURED])
    byes = [(t, m) for t, m in sent if isinstance(m, Request) and m.method == "BYE"]
    # One BYE transaction (the rest are its Timer E retransmissions: the peer never answers).
    assert len({m.top_via.branch for _, m in byes}) == 1
    assert byes[0][0] == pytest.approx(32.0)
    bye = byes[0][1]
    assert bye.headers.get("Reason") == 'SIP ;cause=408 ;text="Request Timeout"'
    assert bye.uri == str(invite.contacts[0].uri)
    assert bye.cseq.method == "BYE"
    assert bye.call_id == invite.call_id
    after = [t for t, m in sent if t > 32.0 and not (isinstance(m, Request) and m.method == "BYE")]
    assert after == []  # nothing after the BYE but its own retransmissions
    assert core.calls.channels == 0
    store.close()


async def test_no_ack_over_udp_with_compressed_t1(
    nursery: object, store: PbxStore, db_url: str, router: Peer
) -> None:
    import trio

    assert isinstance(nursery, trio.Nursery)
    core = await start_node(nursery, node_config(db_url))
    invite = router.request(
        "INVITE", f"sip:600@{core.local[0]}", to_user="600", to_host=core.local[0]
    )
    await router.send(invite, core.local)
    assert (await router.recv_response()).status == 100
    times: list[float] = []
    bye_at = None
    while bye_at is None:
        got = await router.recv(within=3)
        if isinstance(got.message, Response) and got.message.status == 200:
            times.append(got.at)
            assert core.calls.channels == 1  # the channel is up until the BYE
        elif isinstance(got.message, Request) and got.message.method == "BYE":
            bye_at = got.at
            reason = got.message.headers.get("Reason")
            ok = router.answer(got.message, 200, to_tag=got.message.from_.tag or "")
            await router.send(ok, got.source)
    relative = [t - times[0] for t in times]
    expected = [0.0, *(t * 0.04 for t in MEASURED)]
    assert len(relative) == 11
    assert relative == pytest.approx(expected, abs=0.025)
    assert bye_at - times[0] == pytest.approx(1.28, abs=0.025)
    assert reason == 'SIP ;cause=408 ;text="Request Timeout"'
    assert await router.silent(0.2)


async def test_no_ack_over_udp_at_asterisk_t1_under_autojump_clock(
    autojump_clock: object, nursery: trio.Nursery, store: PbxStore, db_url: str, router: Peer
) -> None:
    """The real schedule (T1 = 500 ms) on real sockets; trio's MockClock skips the waits."""
    config = node_config(db_url, timers=TimersConfig(t1=0.5, t2=4.0, t4=5.0), time_scale=1.0)
    core = await start_node(nursery, config)
    invite = router.request(
        "INVITE", f"sip:600@{core.local[0]}", to_user="600", to_host=core.local[0]
    )
    await router.send(invite, core.local)
    assert (await router.recv_response()).status == 100
    times: list[float] = []
    while True:
        got = await router.recv(within=10)
        if isinstance(got.message, Request) and got.message.method == "BYE":
            break
        times.append(got.at)
    start = times[0]
    assert [t - start for t in times] == pytest.approx([0.0, *MEASURED], abs=1e-3)
    assert got.at - start == pytest.approx(32.0, abs=1e-3)
    assert got.message.headers.get("Reason") == 'SIP ;cause=408 ;text="Request Timeout"'
