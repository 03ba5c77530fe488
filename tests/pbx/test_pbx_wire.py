"""The emulator on loopback UDP: OPTIONS, identification, auth, INVITE, REGISTER."""

from __future__ import annotations

import re
import time

from lab.pbx.core import PbxCore
from lab.pbx.store import PbxStore
from router.sip import Response, SipUri, parse_challenge

from .helpers import PASSWORDS, PHONE_IP, Peer, authorize


async def test_options_from_router_gets_200_with_capabilities(pbx: PbxCore, router: Peer) -> None:
    await router.send(router.request("OPTIONS", f"sip:{pbx.local[0]}"), pbx.local)
    response = await router.recv_response()
    assert response.status == 200
    for name in ("Allow", "Accept", "Supported"):
        assert name in response.headers
    assert "INVITE" in (response.headers.get("Allow") or "")
    assert "Contact" not in response.headers  # Asterisk 22.10 sends none (docs/fidelity.md)


async def test_options_from_unknown_address_gets_asterisk_challenge(pbx: PbxCore) -> None:
    stranger = await Peer.open(PHONE_IP)
    try:
        await stranger.send(stranger.request("OPTIONS", f"sip:{pbx.local[0]}"), pbx.local)
        response = await stranger.recv_response()
    finally:
        stranger.close()
    assert response.status == 401
    challenge = parse_challenge(response.headers.get("WWW-Authenticate") or "")
    assert challenge.realm == "asterisk"
    assert challenge.qop == ("auth",)
    assert challenge.opaque and re.fullmatch(r"[0-9a-f]{16}", challenge.opaque)
    assert challenge.algorithm is not None
    assert challenge.algorithm.value == "MD5"
    ts, _, digest = challenge.nonce.partition("/")
    assert ts.isdigit()
    assert len(digest) == 32


async def test_invite_600_gets_100_then_200_with_sdp(pbx: PbxCore, router: Peer) -> None:
    invite = router.request(
        "INVITE", f"sip:600@{pbx.local[0]}", to_user="600", to_host=pbx.local[0]
    )
    await router.send(invite, pbx.local)
    first = await router.recv_response()
    second = await router.recv_response()
    assert first.status == 100
    assert first.to.tag is None
    assert second.status == 200
    assert second.to.tag
    assert second.content_type == "application/sdp"
    assert second.body.startswith(b"v=0")
    await router.send(router.ack_for(invite, second), pbx.local)
    await router.send(router.in_dialog("BYE", invite, second), pbx.local)
    bye_ok = await router.recv_response()
    assert (bye_ok.status, bye_ok.cseq.method) == (200, "BYE")


async def test_invite_unknown_extension_gets_404_without_100(pbx: PbxCore, router: Peer) -> None:
    # "abc" matches no extension and not the catch-all _X. (Asterisk 22.10: 404, no 100)
    invite = router.request(
        "INVITE", f"sip:abc@{pbx.local[0]}", to_user="abc", to_host=pbx.local[0]
    )
    await router.send(invite, pbx.local)
    response = await router.recv_response()
    assert response.status == 404
    # Without an ACK the 404 is retransmitted (Timer G); a 100 never shows up.
    while not await router.silent(0.1):
        assert isinstance(router.inbox[-1].message, Response)
        assert router.inbox[-1].message.status == 404


async def test_invite_without_contact_gets_400_before_any_100(pbx: PbxCore, router: Peer) -> None:
    # Asterisk 22.10 (pjsip_inv_verify_request): "400 Missing Contact header", no 100.
    invite = router.request(
        "INVITE", f"sip:600@{pbx.local[0]}", to_user="600", to_host=pbx.local[0],
        headers=(("Contact", "<sip:x@127.0.0.1>"),),
    )  # fmt: skip
    invite.headers.remove("Contact")
    await router.send(invite, pbx.local)
    response = await router.recv_response()
    assert (response.status, response.reason) == (400, "Missing Contact header")


async def test_invite_numeric_unknown_extension_gets_100_then_404_cause_3(
    pbx: PbxCore, router: Peer
) -> None:
    # 999 matches the catch-all _X. -> Dial(PJSIP/999) fails: Asterisk 22.10 sends 100, then
    # 404 with "Reason: Q.850;cause=3"; an OPTIONS to 999 gets 200 (the extension exists).
    invite = router.request(
        "INVITE", f"sip:999@{pbx.local[0]}", to_user="999", to_host=pbx.local[0]
    )
    await router.send(invite, pbx.local)
    assert (await router.recv_response()).status == 100
    final = await router.recv_response()
    assert (final.status, final.headers.get("Reason")) == (404, "Q.850;cause=3")
    options = router.request(
        "OPTIONS", f"sip:999@{pbx.local[0]}", to_user="999", to_host=pbx.local[0]
    )
    await router.send(options, pbx.local)
    assert (await router.recv_response()).status == 200


async def test_invite_cancel_gets_487(pbx: PbxCore, router: Peer, store: PbxStore) -> None:
    # 700 dials 101, who is not registered: register a contact that never answers.
    phone = await Peer.open(PHONE_IP)
    try:
        reg = router.request(
            "REGISTER",
            f"sip:{pbx.local[0]}",
            from_user="101",
            to_user="101",
            headers=(("Contact", f"<sip:101@{phone.addr[0]}:{phone.addr[1]}>"), ("Expires", "300")),
        )
        await router.send(reg, pbx.local)
        assert (await router.recv_response()).status == 200
        invite = router.request(
            "INVITE", f"sip:700@{pbx.local[0]}", to_user="700", to_host=pbx.local[0]
        )
        await router.send(invite, pbx.local)
        assert (await router.recv_response()).status == 100
        leg = await phone.recv_request("INVITE")
        assert isinstance(leg.message, type(invite))
        await phone.send(phone.answer(leg.message, 180, to_tag="ph1"), leg.source)
        ringing = await router.recv_response()
        assert ringing.status == 180
        cancel = invite.copy()
        cancel.method = "CANCEL"
        cancel.headers.set("CSeq", f"{invite.cseq.seq} CANCEL")
        cancel.headers.remove("Contact")
        await router.send(cancel, pbx.local)
        statuses = {
            (r.status, r.cseq.method)
            for r in [await router.recv_response(), await router.recv_response()]
        }
        assert statuses == {(200, "CANCEL"), (487, "INVITE")}
        callee_cancel = await phone.recv_request("CANCEL")
        assert callee_cancel.message.headers.get("Reason") is None
    finally:
        phone.close()


async def test_register_from_router_is_accepted_without_challenge(
    pbx: PbxCore, router: Peer, store: PbxStore
) -> None:
    reg = router.request(
        "REGISTER",
        f"sip:{pbx.local[0]}",
        from_user="101",
        to_user="101",
        headers=(
            ("Contact", "<sip:101@127.0.0.99:5070>"),
            ("Path", f"<sip:{router.addr[0]}:{router.addr[1]};lr>"),
            ("Supported", "path"),
            ("Expires", "10"),
            (
                "Authorization",
                'Digest username="101", realm="x", nonce="n", uri="sip:x", response="00"',
            ),
        ),
    )
    await router.send(reg, pbx.local)
    response = await router.recv_response()
    assert response.status == 200
    assert "Date" in response.headers
    assert response.expires == 60  # clamped up to minimum_expiration, never 423
    (contact,) = response.contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.port == 5070
    assert contact.expires is not None
    assert 55 <= contact.expires <= 60
    rows = store.contacts("101", now_epoch=time.time())
    assert len(rows) == 1
    assert rows[0].reg_server == "pbx1"
    assert rows[0].paths == [f"<sip:{router.addr[0]}:{router.addr[1]};lr>"]


async def test_register_unknown_aor_via_router_gets_404(pbx: PbxCore, router: Peer) -> None:
    reg = router.request(
        "REGISTER",
        f"sip:{pbx.local[0]}",
        from_user="555",
        to_user="555",
        headers=(("Contact", "<sip:555@127.0.0.99>"),),
    )
    await router.send(reg, pbx.local)
    assert (await router.recv_response()).status == 404


async def test_register_max_contacts_0_gets_403(
    pbx: PbxCore, router: Peer, store: PbxStore
) -> None:
    store.db.execute("UPDATE ps_aors SET max_contacts = 0 WHERE id = '102'")
    reg = router.request(
        "REGISTER",
        f"sip:{pbx.local[0]}",
        from_user="102",
        to_user="102",
        headers=(("Contact", "<sip:102@127.0.0.99>"),),
    )
    await router.send(reg, pbx.local)
    assert (await router.recv_response()).status == 403


async def test_register_from_phone_is_challenged_then_checked(pbx: PbxCore) -> None:
    phone = await Peer.open(PHONE_IP)
    try:
        reg = phone.request(
            "REGISTER",
            f"sip:{pbx.local[0]}",
            from_user="101",
            to_user="101",
            headers=(("Contact", f"<sip:101@{phone.addr[0]}:{phone.addr[1]}>"),),
        )
        await phone.send(reg, pbx.local)
        challenged = await phone.recv_response()
        assert challenged.status == 401
        value = challenged.headers.get("WWW-Authenticate") or ""
        good = authorize(reg, value, "101", PASSWORDS["101"])
        await phone.send(good, pbx.local)
        ok = await phone.recv_response()
        assert ok.status == 200
        assert len(ok.contacts) == 1
        bad = authorize(good, value, "101", "wrong")
        await phone.send(bad, pbx.local)
        refused: Response = await phone.recv_response()
        assert refused.status == 401
        assert "WWW-Authenticate" in refused.headers
    finally:
        phone.close()


async def test_star_contact_removes_bindings(pbx: PbxCore, router: Peer, store: PbxStore) -> None:
    reg = router.request(
        "REGISTER",
        f"sip:{pbx.local[0]}",
        from_user="101",
        to_user="101",
        headers=(("Contact", "<sip:101@127.0.0.99>"),),
    )
    await router.send(reg, pbx.local)
    assert (await router.recv_response()).status == 200
    star = router.request(
        "REGISTER",
        f"sip:{pbx.local[0]}",
        from_user="101",
        to_user="101",
        headers=(("Contact", "*"), ("Expires", "0")),
    )
    await router.send(star, pbx.local)
    ok = await router.recv_response()
    assert ok.status == 200
    assert ok.contacts == []
    assert store.contacts("101", now_epoch=time.time()) == []
    bad = router.request(
        "REGISTER",
        f"sip:{pbx.local[0]}",
        from_user="101",
        to_user="101",
        headers=(("Contact", "*"),),
    )
    await router.send(bad, pbx.local)
    assert (await router.recv_response()).status == 400


async def _register(router: Peer, pbx: PbxCore, contact: str, *extra: tuple[str, str]) -> Response:
    reg = router.request(
        "REGISTER",
        f"sip:{pbx.local[0]}",
        from_user="101",
        to_user="101",
        headers=(("Contact", contact), *extra),
    )
    await router.send(reg, pbx.local)
    return await router.recv_response()


async def test_register_path_without_supported_path_gets_420(pbx: PbxCore, router: Peer) -> None:
    response = await _register(router, pbx, "<sip:101@127.0.0.99>", ("Path", "<sip:127.0.0.41;lr>"))
    assert response.status == 420


async def test_register_over_max_contacts(pbx: PbxCore, router: Peer, store: PbxStore) -> None:
    assert (await _register(router, pbx, "<sip:101@127.0.0.98>")).status == 200
    # remove_existing=yes: the new contact replaces the old one.
    replaced = await _register(router, pbx, "<sip:101@127.0.0.99>")
    assert [str(c.uri) for c in replaced.contacts] == ["sip:101@127.0.0.99"]
    assert "Expires" not in replaced.headers
    store.db.execute("UPDATE ps_aors SET remove_existing = 'no' WHERE id = '101'")
    assert (await _register(router, pbx, "<sip:101@127.0.0.97>")).status == 403
    # Expiry clamped down to maximum_expiration (7200).
    clamped = await _register(router, pbx, "<sip:101@127.0.0.99>;expires=999999")
    (contact,) = clamped.contacts
    assert contact.expires is not None
    assert 7195 <= contact.expires <= 7200
