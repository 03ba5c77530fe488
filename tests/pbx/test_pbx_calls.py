"""B2BUA legs over loopback UDP: Dial through Path, Queue ringall, shared busy state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from lab.pbx.core import PbxCore
from lab.pbx.store import PbxStore
from router.sip import Request, Response

from .conftest import node_config, start_node
from .helpers import PBX2_IP, Peer, Received

PHONE_101_IP = "127.0.0.44"
PHONE_102_IP = "127.0.0.45"
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


@pytest.fixture
async def phones() -> AsyncIterator[dict[str, Peer]]:
    peers = {"101": await Peer.open(PHONE_101_IP), "102": await Peer.open(PHONE_102_IP)}
    yield peers
    for peer in peers.values():
        peer.close()


async def register(
    router: Peer, pbx: PbxCore, user: str, contact: Peer, *, path: bool = False
) -> None:
    headers: tuple[tuple[str, str], ...] = (
        ("Contact", f"<sip:{user}@{contact.addr[0]}:{contact.addr[1]}>"),
        ("Expires", "300"),
    )
    if path:
        headers += (("Path", f"<sip:{router.addr[0]}:{router.addr[1]};lr>"), ("Supported", "path"))
    await router.send(
        router.request(
            "REGISTER", f"sip:{pbx.local[0]}", from_user=user, to_user=user, headers=headers
        ),
        pbx.local,
    )
    assert (await router.recv_response()).status == 200


async def call(router: Peer, pbx: PbxCore, exten: str) -> Request:
    invite = router.request(
        "INVITE", f"sip:{exten}@{pbx.local[0]}", to_user=exten, to_host=pbx.local[0]
    )
    await router.send(invite, pbx.local)
    while (first := await router.recv_response()).call_id != invite.call_id:
        pass  # responses of an earlier call of the same test
    assert first.status == 100
    return invite


async def ring(phone: Peer, tag: str) -> Received:
    got = await phone.recv_request("INVITE")
    assert isinstance(got.message, Request)
    await phone.send(phone.answer(got.message, 180, to_tag=tag), got.source)
    return got


async def pick_up(phone: Peer, got: Received, tag: str) -> None:
    assert isinstance(got.message, Request)
    await phone.send(phone.answer(got.message, 200, to_tag=tag, body=b"v=0\r\n"), got.source)
    ack = await phone.recv_request("ACK")
    assert ack.message.call_id == got.message.call_id


async def refuse_cancel(phone: Peer, got: Received, tag: str) -> Request:
    """Answer the emulator's CANCEL: 200 to it, 487 to the INVITE, then take the ACK."""
    cancel = await phone.recv_request("CANCEL")
    assert isinstance(cancel.message, Request)
    assert isinstance(got.message, Request)
    await phone.send(phone.answer(cancel.message, 200, to_tag=tag), cancel.source)
    await phone.send(phone.answer(got.message, 487, to_tag=tag), got.source)
    await phone.recv_request("ACK")
    return cancel.message


async def test_dial_user_goes_through_path_and_bridges(
    pbx: PbxCore, router: Peer, phones: dict[str, Peer]
) -> None:
    await register(router, pbx, "101", phones["101"], path=True)
    invite = await call(router, pbx, "101")
    # The callee leg comes back to the router: Route = the Path, R-URI = the contact.
    leg = await router.recv_request("INVITE")
    assert isinstance(leg.message, Request)
    assert leg.message.uri == f"sip:101@{phones['101'].addr[0]}:{phones['101'].addr[1]}"
    assert [str(r.uri) for r in leg.message.routes] == [f"sip:{router.addr[0]}:{router.addr[1]};lr"]
    await router.send(router.answer(leg.message, 180, to_tag="callee"), leg.source)
    assert (await router.recv_response()).status == 180
    await router.send(router.answer(leg.message, 200, to_tag="callee", body=b"v=0\r\n"), leg.source)
    got_ack = got_ok = None
    while got_ack is None or got_ok is None:
        item = await router.recv()
        if isinstance(item.message, Request) and item.message.method == "ACK":
            got_ack = item.message
        elif isinstance(item.message, Response) and item.message.status == 200:
            got_ok = item.message
    assert got_ack.call_id == leg.message.call_id
    assert got_ok.call_id == invite.call_id
    await router.send(router.ack_for(invite, got_ok), pbx.local)
    # The caller hangs up: the callee leg gets a BYE.
    await router.send(router.in_dialog("BYE", invite, got_ok), pbx.local)
    byes = []
    while len(byes) < 2:
        item = await router.recv()
        if isinstance(item.message, Response) and item.message.cseq.method == "BYE":
            byes.append("ok")
        elif isinstance(item.message, Request) and item.message.method == "BYE":
            assert item.message.call_id == leg.message.call_id
            byes.append("bye")
    assert sorted(byes) == ["bye", "ok"]


async def test_dial_unregistered_user_gets_404_cause_3(pbx: PbxCore, router: Peer) -> None:
    # Asterisk 22.10, measured: Dial(PJSIP/<user>) with no contact -> 100, then 404 with
    # "Reason: Q.850;cause=3" (scenarios/test_asterisk_usecases.py shows it on a real node).
    await call(router, pbx, "102")
    response = await router.recv_response()
    assert response.status == 404
    assert response.headers.get("Reason") == "Q.850;cause=3"


async def test_queue_ringall_cancels_the_others_with_reason(
    pbx: PbxCore, router: Peer, phones: dict[str, Peer]
) -> None:
    for user, phone in phones.items():
        await register(router, pbx, user, phone)
    invite = await call(router, pbx, "800")
    got101 = await ring(phones["101"], "a101")
    got102 = await ring(phones["102"], "a102")
    assert (await router.recv_response()).status == 180
    await pick_up(phones["101"], got101, "a101")
    cancel = await refuse_cancel(phones["102"], got102, "a102")
    assert cancel.headers.get("Reason") == COMPLETED_ELSEWHERE
    ok = await router.recv_response()
    assert (ok.status, ok.call_id) == (200, invite.call_id)
    await router.send(router.ack_for(invite, ok), pbx.local)
    await router.send(router.in_dialog("BYE", invite, ok), pbx.local)
    assert (await router.recv_response()).status == 200
    assert (await phones["101"].recv_request("BYE")).message.method == "BYE"


@pytest.mark.parametrize(
    ("mode", "second_rings"), [("shared", ["102"]), ("per_node", ["101", "102"])]
)
async def test_queue_busy_state_across_two_nodes(
    nursery: trio.Nursery,
    pbx: PbxCore,
    store: PbxStore,
    db_url: str,
    router: Peer,
    phones: dict[str, Peer],
    mode: str,
    second_rings: list[str],
) -> None:
    pbx1 = pbx
    if mode == "per_node":
        pbx1 = await start_node(nursery, node_config(db_url, name="pbx1b", queue_mode="per_node"))
    pbx2 = await start_node(nursery, node_config(db_url, name="pbx2", ip=PBX2_IP, queue_mode=mode))
    for user, phone in phones.items():
        await register(router, pbx1, user, phone)
    # Call 1 via pbx1: both ring, 101 answers, 102 is cancelled.
    await call(router, pbx1, "800")
    got101 = await ring(phones["101"], "c1a")
    got102 = await ring(phones["102"], "c1b")
    await pick_up(phones["101"], got101, "c1a")
    await refuse_cancel(phones["102"], got102, "c1b")
    # Call 2 via pbx2 while 101 is on call 1.
    await call(router, pbx2, "800")
    rang = []
    for user in second_rings:
        got = await phones[user].recv_request("INVITE")
        assert got.source[0] == PBX2_IP
        rang.append(user)
    assert rang == second_rings
    if mode == "shared":
        assert await phones["101"].silent(0.2)
