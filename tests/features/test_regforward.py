"""REGISTER forwarding to the PBX nodes (SIP-REFERENCE §4.2 option B), with explicit time."""

from __future__ import annotations

from router.features.regforward import (
    ForwardConfig,
    ForwardMode,
    ForwardRequest,
    Node,
    RegistrationForwarder,
)
from router.realtime import Binding
from router.sip import Request, Response, make_response

T0 = 1_700_000_000.0
NODES = [
    Node("sip:127.0.0.11:5060", ("127.0.0.11", 5060)),
    Node("sip:127.0.0.12:5060", ("127.0.0.12", 5060)),
]


def fwd(
    mode: ForwardMode = ForwardMode.ALL, *, retry: float = 30.0, expires_margin: float = 30.0
) -> RegistrationForwarder:
    cfg = ForwardConfig(
        router_host="127.0.0.10",
        router_port=5060,
        mode=mode,
        domain="example.com",
        retry=retry,
        expires_margin=expires_margin,
    )
    return RegistrationForwarder(cfg)


def binding(contact: str = "sip:101@192.0.2.7:5062", expires: float = T0 + 3600) -> Binding:
    return Binding("r1", "101", None, contact, int(expires))


def ok(req: Request, contact_expires: int | None = None) -> Response:
    """The node's 200; with ``contact_expires`` the node granted that instead (it clamps)."""
    headers: list[tuple[str, str]] = []
    if contact_expires is not None:
        headers = [
            ("Contact", str(c.with_param("expires", str(contact_expires)))) for c in req.contacts
        ]
    return make_response(req, 200, to_tag="n1", headers=headers)


def by_node(out: list[ForwardRequest]) -> dict[str, ForwardRequest]:
    return {f.key[1]: f for f in out}


def test_forward_all_builds_one_register_per_node() -> None:
    f = fwd()
    f.update("101", [binding()], NODES, T0)
    out = by_node(f.drain_requests())
    assert set(out) == {n.uri for n in NODES}
    r = out["sip:127.0.0.11:5060"]
    req = r.request
    assert (req.method, req.uri, r.dest) == (
        "REGISTER",
        "sip:127.0.0.11:5060",
        ("127.0.0.11", 5060),
    )
    assert str(req.from_.uri) == str(req.to.uri) == "sip:101@example.com"
    assert req.headers.get_all("Contact") == ["<sip:101@192.0.2.7:5062>;expires=3600"]
    assert req.headers.get("Path") == "<sip:127.0.0.10:5060;lr>"
    assert req.headers.get("Supported") == "path"
    assert "Authorization" not in req.headers
    assert req.top_via.host == "127.0.0.10"
    assert req.cseq.seq == 1
    assert out["sip:127.0.0.12:5060"].request.call_id != req.call_id


def test_forward_one_register_in_flight_per_pair_and_cseq_increases() -> None:
    f = fwd()
    node = NODES[:1]
    f.update("101", [binding()], node, T0)
    (first,) = f.drain_requests()
    f.update("101", [binding(expires=T0 + 1800)], node, T0 + 1)
    assert f.drain_requests() == []  # RFC 3261 §10.2: wait for the final response
    f.on_response(first.key, ok(first.request), T0 + 1.5)
    (second,) = f.drain_requests()
    assert second.request.call_id == first.request.call_id
    assert second.request.cseq.seq == 2
    assert second.request.headers.get_all("Contact") == ["<sip:101@192.0.2.7:5062>;expires=1799"]


def test_forward_removed_contact_sent_with_expires_zero_then_star() -> None:
    f = fwd()
    node = NODES[:1]
    a, b = binding("sip:a@h1"), binding("sip:b@h2")
    f.update("101", [a, b], node, T0)
    (r,) = f.drain_requests()
    f.on_response(r.key, ok(r.request), T0)
    f.update("101", [b], node, T0 + 10)
    (r,) = f.drain_requests()
    assert r.request.headers.get_all("Contact") == [
        "<sip:b@h2>;expires=3590",
        "<sip:a@h1>;expires=0",
    ]
    f.on_response(r.key, ok(r.request), T0 + 10)
    assert set(f.held("101", node[0].uri)) == {"sip:b@h2"}
    f.update("101", [], node, T0 + 20)
    (r,) = f.drain_requests()
    assert r.request.headers.get_all("Contact") == ["*"]
    assert r.request.expires == 0
    f.on_response(r.key, ok(r.request), T0 + 20)
    assert f.held("101", node[0].uri) == {}


def test_forward_nothing_to_undo_sends_nothing() -> None:
    f = fwd()
    f.update("101", [], NODES, T0)
    assert f.drain_requests() == []


def test_forward_hash_picks_one_stable_usable_node() -> None:
    f = fwd(ForwardMode.HASH)
    f.update("101", [binding()], NODES, T0)
    (r,) = f.drain_requests()
    g = fwd(ForwardMode.HASH)
    g.update("101", [binding()], NODES, T0)
    assert g.drain_requests()[0].key == r.key
    # The chosen node goes down: the user moves and the old node is told to forget it.
    f.on_response(r.key, ok(r.request), T0)
    nodes = [Node(n.uri, n.dest, usable=n.uri != r.key[1]) for n in NODES]
    f.update("101", [binding()], nodes, T0 + 5)
    out = by_node(f.drain_requests())
    assert set(out) == {n.uri for n in NODES}
    assert out[r.key[1]].request.headers.get_all("Contact") == ["*"]


def test_forward_none_sends_nothing() -> None:
    f = fwd(ForwardMode.NONE)
    f.update("101", [binding()], NODES, T0)
    assert f.drain_requests() == []


def test_forward_failure_retried_after_retry_time() -> None:
    f = fwd(retry=30.0)
    node = NODES[:1]
    f.update("101", [binding()], node, T0)
    (r,) = f.drain_requests()
    f.on_failure(r.key, T0 + 32)
    assert f.next_deadline() == T0 + 62
    f.handle_timers(T0 + 61)
    assert f.drain_requests() == []
    f.handle_timers(T0 + 62)
    (again,) = f.drain_requests()
    assert again.request.cseq.seq == 2
    assert again.request.headers.get_all("Contact") == ["<sip:101@192.0.2.7:5062>;expires=3538"]
    f.on_response(again.key, make_response(again.request, 403), T0 + 63)
    stats = f.statistics()
    assert (stats.sent, stats.failed, stats.retried, stats.ok) == (2, 2, 1, 0)


def test_forward_refreshes_before_the_node_copy_expires() -> None:
    f = fwd(expires_margin=30.0)
    node = NODES[:1]
    f.update("101", [binding(expires=T0 + 3600)], node, T0)
    (r,) = f.drain_requests()
    f.on_response(r.key, ok(r.request, contact_expires=600), T0)  # the node clamps to 600
    assert f.held("101", node[0].uri) == {"sip:101@192.0.2.7:5062": T0 + 600}
    assert f.next_deadline() == T0 + 570
    f.handle_timers(T0 + 570)
    (refresh,) = f.drain_requests()
    assert refresh.request.headers.get_all("Contact") == ["<sip:101@192.0.2.7:5062>;expires=3030"]
    assert f.statistics().refreshed == 1


def test_forward_no_refresh_when_node_holds_it_as_long_as_the_binding() -> None:
    f = fwd()
    node = NODES[:1]
    f.update("101", [binding(expires=T0 + 3600)], node, T0)
    (r,) = f.drain_requests()
    f.on_response(r.key, ok(r.request), T0)
    assert f.next_deadline() is None
