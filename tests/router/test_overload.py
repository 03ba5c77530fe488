"""Overload control: the core sheds new INVITEs (503 + Retry-After) when the driver says it is
behind, keeps serving what it already accepted; the driver measures its real receive queue."""

from __future__ import annotations

import socket

import trio

from router.app import RETRY_AFTER
from router.sip import Request, Response
from router.transport.driver import SipDriver
from tests.router.harness import PBX, UAC, RouterHarness, answer, invite


def _statuses(sent: list) -> list[int]:
    return [s.message.status for s in sent if isinstance(s.message, Response)]


def test_behind_new_invite_gets_503_with_retry_after_and_is_not_relayed() -> None:
    h = RouterHarness.build()
    h.core.set_overload(1.0)
    out = h.feed(invite("shed1"))
    assert len(out) == 1 and out[0].dest == UAC
    resp = out[0].message
    assert isinstance(resp, Response) and resp.status == 503
    assert resp.headers.get("retry-after") == str(RETRY_AFTER)
    assert resp.to.tag is not None  # a final response carries a To tag (§8.2.6.2)
    assert h.core.shed["invite_503"] == 1
    assert h.core.status()["overload"] == {"level": 1.0, "shed": {"invite_503": 1}}


def test_pressure_sheds_that_share_of_new_invites() -> None:
    h = RouterHarness.build()
    h.core.set_overload(0.25)
    shed = 0
    for n in range(40):
        out = h.feed(invite(f"share{n}"))
        shed += 503 in _statuses(out)
    assert shed == 10
    h.core.set_overload(0.0)
    assert 503 not in _statuses(h.feed(invite("calm")))


def test_behind_accepted_call_completes_and_retransmission_is_not_shed() -> None:
    h = RouterHarness.build()
    first = invite("kept", branch="z9hG4bK-kept")
    out = h.feed(first)
    fwd = next(s for s in out if isinstance(s.message, Request))
    h.core.set_overload(1.0)
    # The INVITE retransmitted after the overload began matches its transaction: 100 again,
    # never a 503 that would contradict the call already proxied.
    assert _statuses(h.feed(invite("kept", branch="z9hG4bK-kept"))) == [100]
    ok = h.feed(answer(fwd.message, 200), fwd.dest)
    assert _statuses(ok) == [200] and ok[0].dest == UAC
    # A re-INVITE (To tag) is not a new call either: it goes to the policy, not to the shedder.
    reinvite = h.feed(invite("kept", to_tag="uas1", cseq=2, route="<sip:127.0.0.10:5060;lr>"))
    assert 503 not in _statuses(reinvite)
    assert h.core.shed["invite_503"] == 0
    h.core.set_overload(0.0)
    out = h.feed(invite("after"))
    assert any(isinstance(s.message, Request) and s.dest in PBX for s in out)


def test_backlog_level_reads_the_real_receive_queue() -> None:
    h = RouterHarness.build()
    driver = SipDriver(h.core, udp=[("127.77.0.20", 0)])
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        rx.bind(("127.77.0.20", 0))
        rx.setblocking(False)
        assert driver._backlog_level(rx) == 0
        levels = []
        for _ in range(4000):  # until the kernel refuses more: the buffer is full
            tx.sendto(b"INVITE " + b"x" * 500, rx.getsockname())
            levels.append(driver._backlog_level(rx))
        assert levels[0] == 0.0 and any(0.0 < x < 1.0 for x in levels) and levels[-1] == 1.0
        assert levels == sorted(levels)  # pressure grows with the queue
        while True:
            try:
                rx.recv(65535)
            except BlockingIOError:
                break
        assert driver._backlog_level(rx) == 0
    finally:
        rx.close()
        tx.close()


def test_driver_reports_overload_to_a_core_that_can_shed() -> None:
    h = RouterHarness.build()
    driver = SipDriver(h.core, udp=[("127.77.0.21", 0)])
    assert driver._set_overload is not None
    driver._change_overload(0.5)
    assert h.core.overload == 0.5
    driver._change_overload(0.0)
    assert h.core.overload == 0.0

    async def serve_once() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.serve)
            nursery.cancel_scope.cancel()

    trio.run(serve_once)
