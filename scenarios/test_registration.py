"""Registration through the router: digest, refusals, stale nonces, expiry, wildcard, contacts,
forwarding to the PBX nodes and a call back to the registered phone.

Topology (own lab for this module): the default one (router, pbx1..3, SQLite, users 100..599,
relays on ua-router and router-pbx1) with the registrar's timing compressed so it can be
watched: nonces live 1 s, ``min_expires`` is 1 s, expired bindings are purged every 0.5 s, an
AOR may hold 3 contacts, and failures from one source are not blocked (every phone of this
module shares one address). Phones are trio UAs behind the ua-router relay.
"""

from __future__ import annotations

import time

import pytest
import trio

from lab.pytest_plugin import Lab, LabSpec
from lab.ua.build import authorize, is_stale, out_of_dialog_request
from router.sip import (
    Request,
    Response,
    Via,
    maybe_select_challenge,
    new_branch,
    new_call_id,
    serialize,
)

# every scenario here registers with digest auth at a registrar
pytestmark = [pytest.mark.router_needs("auth"), pytest.mark.router_needs("registrar")]

NONCE_LIFETIME = 1.0


@pytest.fixture(scope="module")
def lab_topology() -> LabSpec:
    return LabSpec(
        router={
            "registrar": {
                "nonce_lifetime": NONCE_LIFETIME,
                "min_expires": 1,
                "purge_interval": 0.5,
                "max_contacts": 3,
                "max_failures_per_source": 10_000,
            }
        }
    )


def bindings_in_db(lab: Lab, user: str) -> list[str]:
    with lab.db() as db:
        return [b.contact for b in db.location_lookup(user, None, time.time())]


def location_rows(lab: Lab, user: str) -> int:
    with lab.db() as db:
        return int(db.query("SELECT COUNT(*) FROM location WHERE username = ?", (user,))[0][0])


@pytest.mark.kamailio  # CI subset under --router kamailio
async def test_digest_registration_succeeds(lab: Lab) -> None:
    """A phone registers user 110 with its password.

    Must hold: the first REGISTER is challenged (401 with a digest challenge in realm
    "asterisk") and the answer is accepted with 200 listing exactly the phone's contact; the
    binding is in the realtime ``location`` table by the time the 200 arrives.
    """
    async with lab.open_ua("110") as ua:
        with trio.fail_after(5):
            result = await ua.register(expires=600)
    assert result.status == 200, result.response
    assert result.attempts == 2  # 401, then 200
    contact = f"sip:110@{ua.local[0]}:{ua.local[1]}"
    assert [str(c.uri) for c in result.bindings] == [contact]
    assert result.bindings[0].expires is not None
    assert 0 < result.bindings[0].expires <= 600
    assert bindings_in_db(lab, "110") == [contact]


@pytest.mark.kamailio  # CI subset under --router kamailio
async def test_wrong_password_and_unknown_user_get_identical_answers(lab: Lab) -> None:
    """User 111 with a wrong password, and user 9999 (not provisioned), both register.

    Must hold: both are challenged the same way and refused with the same final status and
    reason, and neither answer says which case it was (same header names, same challenge
    parameters apart from the nonce): a scanner cannot enumerate users (RFC 3261 §26.3.2.4
    warns against revealing valid usernames).
    """
    async with lab.open_ua("111", password="not-the-password") as wrong:
        with trio.fail_after(5):
            a = await wrong.register()
    async with lab.open_ua("9999", password="whatever-it-is") as unknown:
        with trio.fail_after(5):
            b = await unknown.register()
    assert a.status in (401, 403), a.response
    assert (a.status, a.response.reason, a.attempts) == (b.status, b.response.reason, b.attempts)
    names_a = sorted({name.lower() for name, _ in a.response.headers})
    names_b = sorted({name.lower() for name, _ in b.response.headers})
    assert names_a == names_b
    if a.status == 401:
        ca = maybe_select_challenge(a.response.headers.get_all("WWW-Authenticate"))
        cb = maybe_select_challenge(b.response.headers.get_all("WWW-Authenticate"))
        assert ca is not None
        assert cb is not None
        assert (ca.realm, ca.algorithm, ca.qop, ca.stale) == (
            cb.realm,
            cb.algorithm,
            cb.qop,
            cb.stale,
        )
    assert bindings_in_db(lab, "111") == []


async def test_stale_nonce_is_rechallenged(lab: Lab) -> None:
    """User 112 answers a challenge at once (accepted), then answers with the same nonce
    after the nonce lifetime (1 s here).

    Must hold: the late answer gets 401 with ``stale=true`` and a fresh nonce (RFC 7616 §3.3:
    the credentials were right, only the nonce is too old), and answering that one gives 200.
    """
    password = lab.password("112")
    async with lab.open_ua("112", password=None) as ua:
        call_id = new_call_id(ua.local[0])
        seq = 1

        def register() -> Request:
            return out_of_dialog_request(
                "REGISTER",
                f"sip:{lab.domain}",
                via=Via("UDP", ua.local[0], ua.local[1], (("branch", new_branch()),)),
                domain=lab.domain,
                user="112",
                to_user="112",
                call_id=call_id,
                cseq=seq,
                extra=[("Contact", f"<sip:112@{ua.local[0]}:{ua.local[1]}>"), ("Expires", "60")],
            )

        async def send(request: Request) -> Response:
            await ua.send_raw(serialize(request), lab.entry())
            answer = await ua.expect(
                lambda m: (
                    isinstance(m, Response)
                    and m.cseq.seq == request.cseq.seq
                    and m.call_id == call_id
                    and m.is_final
                )
            )
            assert isinstance(answer, Response)
            return answer

        with trio.fail_after(10):
            first = register()
            challenge = await send(first)
            assert challenge.status == 401
            retry = authorize(first, challenge, "112", password)
            assert retry is not None
            assert (await send(retry)).status == 200
            seq = retry.cseq.seq + 1

            # Kamailio counts nonce expiry in whole seconds (time(0)): a nonce made at x.0 with
            # a 1 s lifetime is still valid at x+1.9, so wait past the next whole second too.
            await trio.sleep(NONCE_LIFETIME + 1.2)
            late = authorize(register(), challenge, "112", password)
            assert late is not None
            late.headers.set("CSeq", f"{seq} REGISTER")
            late.headers.set("Via", str(late.top_via.with_param("branch", new_branch())))
            stale = await send(late)
            assert stale.status == 401, stale
            assert is_stale(stale)
            old = maybe_select_challenge(challenge.headers.get_all("WWW-Authenticate"))
            new = maybe_select_challenge(stale.headers.get_all("WWW-Authenticate"))
            assert old is not None
            assert new is not None
            assert new.nonce != old.nonce
            again = authorize(late, stale, "112", password)
            assert again is not None
            assert (await send(again)).status == 200


async def test_binding_expires_then_reregistration_restores_it(lab: Lab) -> None:
    """User 113 registers for 2 s (``min_expires`` is 1 s here), waits 3 s, then registers
    again.

    Must hold: the 200 grants 2 s; after they pass the registrar lists no binding (a query
    REGISTER answers 200 with no Contact) and the ``location`` row is purged; the new
    registration brings the binding back.
    """
    async with lab.open_ua("113") as ua:
        contact = f"sip:113@{ua.local[0]}:{ua.local[1]}"
        with trio.fail_after(5):
            first = await ua.register(expires=2)
        assert first.ok, first.response
        assert [c.expires for c in first.bindings] == [2]
        assert bindings_in_db(lab, "113") == [contact]

        await trio.sleep(3.0)
        with trio.fail_after(5):
            query = await ua.register(expires=None, contacts=[])
        assert query.ok
        assert query.bindings == []
        assert bindings_in_db(lab, "113") == []
        assert location_rows(lab, "113") == 0  # purged, not only filtered out

        with trio.fail_after(5):
            again = await ua.register(expires=60)
        assert again.ok
        assert [str(c.uri) for c in again.bindings] == [contact]
        assert bindings_in_db(lab, "113") == [contact]


async def test_wildcard_contact_removes_every_binding(lab: Lab) -> None:
    """User 114 registers two contacts, then sends ``Contact: *`` with ``Expires: 0``.

    Must hold: the 200 to the wildcard lists no binding and the DB holds none for 114
    (RFC 3261 §10.2.2: "*" removes all bindings of the AOR).
    """
    host = lab.generator_host(0)
    contacts = [f"<sip:114@{host}:7100>", f"<sip:114@{host}:7102>"]
    async with lab.open_ua("114") as ua:
        with trio.fail_after(5):
            both = await ua.register(contacts=contacts, expires=300)
            assert both.ok
            assert len(both.bindings) == 2
            assert len(bindings_in_db(lab, "114")) == 2
            cleared = await ua.register(contact="*", expires=0)
    assert cleared.status == 200, cleared.response
    assert cleared.bindings == []
    assert bindings_in_db(lab, "114") == []


async def test_several_contacts_up_to_the_limit(lab: Lab) -> None:
    """User 115 registers two contacts in one REGISTER, a third in another, then a fourth
    (the AOR limit is 3 here).

    Must hold: each 200 lists every current binding (RFC 3261 §10.3 step 8), the DB holds the
    same set, and the fourth contact is not added beyond the limit (refused, or the oldest
    replaced: never four bindings).
    """
    host = lab.generator_host(0)
    c = [f"sip:115@{host}:{7200 + 2 * i}" for i in range(4)]
    async with lab.open_ua("115") as ua:
        with trio.fail_after(10):
            two = await ua.register(contacts=[f"<{c[0]}>", f"<{c[1]}>"], expires=300)
            assert two.ok, two.response
            assert sorted(str(b.uri) for b in two.bindings) == sorted(c[:2])
            three = await ua.register(contacts=[f"<{c[2]}>"], expires=300)
            assert three.ok, three.response
            assert sorted(str(b.uri) for b in three.bindings) == sorted(c[:3])
            assert sorted(bindings_in_db(lab, "115")) == sorted(c[:3])
            four = await ua.register(contacts=[f"<{c[3]}>"], expires=300)
    assert len(bindings_in_db(lab, "115")) <= 3
    if four.ok:
        assert len(four.bindings) <= 3
    else:
        assert four.status in (403, 503), four.response
        assert sorted(bindings_in_db(lab, "115")) == sorted(c[:3])


async def test_forwarded_registration_reaches_the_nodes_and_a_node_calls_back(lab: Lab) -> None:
    """User 120 registers; user 121 then calls extension 120 through the router.

    Must hold: the registration is forwarded to the PBX nodes, which keep the contact in the
    shared ``ps_contacts`` table (``reg_server`` = the node that stored it last: the AORs have
    ``max_contacts`` 1 and ``remove_existing``) with a Path naming the router; the
    call is dispatched to a node, whose dialplan dials PJSIP/120 through that Path back to
    the router, which relays it to the registered phone: the phone rings and answers, and the
    caller gets 200.
    """
    async with lab.open_ua("120") as callee, lab.open_ua("121") as caller:
        callee.auto_answer(200, ring=True, delay=0.05)
        with trio.fail_after(5):
            assert (await callee.register(expires=600)).ok

        rows = []
        with trio.fail_after(5):
            while True:
                with lab.db() as db:
                    rows = db.contacts_for_aor("120", time.time())
                if rows and {r.reg_server for r in rows} <= {n.name for n in lab.pbx}:
                    break
                await trio.sleep(0.05)
        for row in rows:
            assert row.path is not None, row
            assert lab.router.host in row.path, row
            assert f"{callee.local[0]}:{callee.local[1]}" in row.uri, row

        with trio.fail_after(10):
            call = await caller.call("120")
            final = await call.wait_answered()
        assert final.status == 200, final
        (incoming,) = callee.incoming
        assert incoming.request.headers.get("Record-Route") is not None
        with trio.fail_after(5):
            await incoming.wait_acked()
            bye = await call.hangup()
        assert bye is not None
        assert bye.status == 200
