"""Evidence from the wire: a call's ladder shows the phone-router and router-PBX legs.

The lab captures every packet between its addresses (``lab/capture.py``), whatever runs in the
router's seat: the ladder of a call is built from that capture, not from what the router says
about itself, so a Kamailio run shows its legs exactly as a reference-router run does.
"""

from __future__ import annotations

import time

import pytest
import trio

from lab.evidence import build_ladder, ladder_text
from lab.pytest_plugin import Lab

pytestmark = pytest.mark.lab


@pytest.mark.kamailio
async def test_evidence_ladder_of_a_call_shows_every_leg(lab: Lab) -> None:
    """Action: user 104 calls 600 (answered by a PBX node) and hangs up.

    Must hold: the capture holds the INVITE on the phone's leg (to the lab's entry), on the
    router's leg towards a PBX node (from the router's address), the PBX's 200 back to the
    router and the router's 200 to the phone side, and the BYE on both sides; the ladder has a
    lane for the router and one for the PBX side.
    """
    since = time.time()
    async with lab.open_ua("104") as ua:
        with trio.fail_after(5):
            assert (await ua.register()).ok
            call = await ua.call("600")
            assert (await call.wait_answered()).status == 200
            await call.hangup()
    records = [r for r in lab.packets(since) if r.call_id == call.call_id]
    router = lab.router.address
    pbx_side = {
        n.address for n in lab.labfile.nodes if n.role == "pbx" or n.link.startswith("router-")
    }

    def seen(method: str, status: int | None, src: set[str], dst: set[str]) -> bool:
        return any(
            r.method == method and r.status == status and r.src in src and r.dst in dst
            for r in records
        )

    # The router may send from an ephemeral port towards the PBX (Kamailio uses its listener).
    router_any = {r.src for r in records if r.src.rpartition(":")[0] == lab.router.host}
    router_any.add(router)
    entry = "{}:{}".format(*lab.entry())
    phone_side = {r.src for r in records if r.dst == entry}
    assert phone_side, "no packet from the phone to the lab's entry in the capture"
    assert seen("INVITE", None, phone_side, {entry})
    assert seen("INVITE", None, router_any, pbx_side), "no INVITE on the router-PBX leg"
    assert seen("INVITE", 200, pbx_side, router_any), "no 200 from the PBX to the router"
    assert seen("INVITE", 200, {entry}, phone_side), "no 200 back on the phone's leg"
    assert seen("BYE", None, router_any, pbx_side), "no BYE on the router-PBX leg"
    names = {n.address: n.name for n in lab.labfile.nodes if n.port}
    ladder = build_ladder(records, call.call_id, names)
    assert "router" in ladder.names
    assert any(n.startswith(("pbx", "fault-router-pbx")) for n in ladder.names), ladder.names
    text = ladder_text(ladder)
    assert text.count("INVITE") >= 2
    print(text)
