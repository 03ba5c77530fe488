"""Dispatch: how the router spreads calls over the PBX nodes, per dispatcher algorithm, and that
only healthy nodes get calls.

Topology (own lab for this module): router, pbx1..3 (emulators), SQLite, no fault relays (the
dispatcher addresses the nodes directly). Each test sets the algorithm it is about in the
router's config (``lab.reconfigure``: the router restarts and reloads its set). Calls are SIPp
UAC calls to extension 600 (Answer, then the caller hangs up at once), straight to the router.
Which node got a call is read from the nodes' own events (INVITEs each node received).

Kamailio numbers: 0 hash over Call-ID, 4 round robin, 8 serial (first entry of the set, in
set order, while it is usable), 9 weight (``weight=`` attrs, a 100-slot table: call N uses
slot N % 100).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from lab.engines import SippResult, uac_call
from lab.pytest_plugin import Lab, LabSpec
from router.features.dispatcher.hashing import ds_get_hash

CALLS = 60


@pytest.fixture(scope="module")
def lab_topology() -> LabSpec:
    return LabSpec({"faults": []})


def use_algorithm(lab: Lab, algorithm: int, weights: dict[str, int] | None = None) -> None:
    """Restart the router with ``algorithm`` (and ``weight=`` attrs when given)."""
    dispatcher: dict[str, Any] = {"algorithm": algorithm}
    destinations = lab.read_config("router")["dispatcher"]["destinations"]
    for d in destinations:
        duid = d["attrs"].split("duid=")[1].split(";")[0]
        d["attrs"] = f"duid={duid}" + (f";weight={weights[duid]}" if weights else "")
    dispatcher["destinations"] = destinations
    lab.reconfigure("router", {"dispatcher": dispatcher})
    for node in lab.pbx:
        lab.wait_dispatcher(node.name, active=True)


async def place_calls(lab: Lab, name: str, calls: int = CALLS, rate: float = 60.0) -> SippResult:
    result = await lab.run_sipp_async(
        uac_call(hold_ms=0), name=name, service="600", max_calls=calls, rate=rate, timeout_s=30.0
    )
    assert (result.successful, result.failed) == (calls, 0), result.errors
    return result


def invites_by_node(lab: Lab, since: float) -> dict[str, set[str]]:
    """Call-IDs of the INVITEs sent to each PBX node's address since ``since``, from the lab's
    capture (after its flush barrier; retransmissions collapse into their Call-ID)."""
    by_address = {n.address: n.name for n in lab.pbx}
    seen: dict[str, set[str]] = {name: set() for name in by_address.values()}
    for r in lab.packets(since):
        node = by_address.get(r.dst)
        if node is not None and r.method == "INVITE" and r.is_request and r.call_id:
            seen[node].add(r.call_id)
    return seen


def set_order(lab: Lab) -> list[str]:
    """Node names in the dispatcher set's order, as the router reports it."""
    by_uri = {lab.dispatch_uri(n.name): n.name for n in lab.pbx}
    return [by_uri[d["uri"]] for d in lab.router_status()["dispatcher"]]


@pytest.mark.kamailio  # CI subset under --router kamailio
@pytest.mark.router_needs("ds_alg:4")
async def test_round_robin_spreads_evenly(lab: Lab, measurements: dict[str, Any]) -> None:
    """Algorithm 4, 60 calls.

    Must hold: every call succeeds; each node gets 20 calls (round robin: counts differ by
    at most one).
    """
    use_algorithm(lab, 4)
    since = time.time()
    await place_calls(lab, "dispatch-rr")
    counts = {n: len(c) for n, c in invites_by_node(lab, since).items()}
    measurements["calls_per_node"] = counts
    assert sum(counts.values()) == CALLS
    assert max(counts.values()) - min(counts.values()) <= 1, counts


@pytest.mark.kamailio
@pytest.mark.router_needs("ds_alg:0")
async def test_hash_call_id_spreads_and_is_deterministic(
    lab: Lab, measurements: dict[str, Any]
) -> None:
    """Algorithm 0, 60 calls with SIPp's Call-IDs.

    Must hold: every node gets calls, none more than 60% of them; each call landed on the
    node its Call-ID hashes to (Kamailio ``ds_get_hash(callid) % n`` in set order), so a
    Call-ID always reaches the same node.
    """
    use_algorithm(lab, 0)
    order = set_order(lab)
    since = time.time()
    await place_calls(lab, "dispatch-hash")
    seen = invites_by_node(lab, since)
    counts = {n: len(c) for n, c in seen.items()}
    measurements["calls_per_node"] = counts
    assert sum(counts.values()) == CALLS
    assert min(counts.values()) > 0, counts
    assert max(counts.values()) <= 0.6 * CALLS, counts
    for node, call_ids in seen.items():
        for call_id in call_ids:
            assert order[ds_get_hash(call_id.strip()) % len(order)] == node, call_id


@pytest.mark.router_needs("ds_alg:8")
async def test_serial_sends_everything_to_the_first(lab: Lab, measurements: dict[str, Any]) -> None:
    """Algorithm 8 (serial / priority order), 30 calls.

    Must hold: all calls go to the first node of the set; the others get none.
    """
    use_algorithm(lab, 8)
    first = set_order(lab)[0]
    since = time.time()
    await place_calls(lab, "dispatch-serial", calls=30)
    counts = {n: len(c) for n, c in invites_by_node(lab, since).items()}
    measurements["calls_per_node"] = counts
    assert counts[first] == 30, counts
    assert sum(counts.values()) == 30, counts


@pytest.mark.router_needs("ds_alg:9")
async def test_weight_follows_the_attrs(lab: Lab, measurements: dict[str, Any]) -> None:
    """Algorithm 9 with ``weight=60``/``30``/``10`` on pbx1/pbx2/pbx3, 100 calls.

    Must hold: 100 calls walk the 100-slot table once, so the nodes get exactly 60, 30 and
    10 calls.
    """
    weights = {"pbx1": 60, "pbx2": 30, "pbx3": 10}
    use_algorithm(lab, 9, weights)
    since = time.time()
    await place_calls(lab, "dispatch-weight", calls=100, rate=100.0)
    counts = {n: len(c) for n, c in invites_by_node(lab, since).items()}
    measurements["calls_per_node"] = counts
    assert counts == weights


@pytest.mark.kamailio  # CI subset under --router kamailio
@pytest.mark.router_needs("ds_alg:4")
@pytest.mark.parametrize("how", ["pause", "kill"])
async def test_only_healthy_nodes_get_calls(
    lab: Lab, how: str, measurements: dict[str, Any]
) -> None:
    """Round robin; pbx2 is paused (SIGSTOP: hung, socket still bound) or killed; once the
    router's probing marks it inactive, 45 calls are placed; then the node is brought back.

    Must hold: the dispatcher reports pbx2 inactive; every call succeeds and pbx2 gets none
    (the other two share them evenly); after resume/restart pbx2 is active again and gets
    calls.
    """
    use_algorithm(lab, 4)
    getattr(lab, how)("pbx2")
    flags = lab.wait_dispatcher("pbx2", active=False, timeout=5)
    measurements["flags_while_down"] = flags
    since = time.time()
    await place_calls(lab, f"dispatch-healthy-{how}", calls=45)
    counts = Counter({n: len(c) for n, c in invites_by_node(lab, since).items()})
    measurements["calls_per_node"] = dict(counts)
    assert counts["pbx2"] == 0, counts
    assert counts["pbx1"] + counts["pbx3"] == 45
    assert abs(counts["pbx1"] - counts["pbx3"]) <= 1, counts

    if how == "pause":
        lab.resume("pbx2")
    else:
        lab.restart("pbx2")
    lab.wait_dispatcher("pbx2", active=True, timeout=5)
    since = time.time()
    await place_calls(lab, f"dispatch-back-{how}", calls=30)
    assert len(invites_by_node(lab, since)["pbx2"]) > 0
