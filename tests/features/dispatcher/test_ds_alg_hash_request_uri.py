"""Algorithm 3 (hash_request_uri): user + host (+ non-default port) of the URI."""

from __future__ import annotations

from router.features.dispatcher import Dispatcher, SelectionKey, ds_get_hash

from ._helpers import A, B, C, tally, three_nodes, uris

KEYS = [SelectionKey(ruri=f"sip:user{i}@pbx{i % 7}.example.com") for i in range(3000)]


def _key(uri: str | None) -> SelectionKey:
    return SelectionKey(ruri=uri)


def test_hash_request_uri_spreads_users_evenly() -> None:
    counts = tally(three_nodes(), 1, "hash_request_uri", KEYS)
    assert set(counts) == {A, B, C}
    assert all(850 <= n <= 1150 for n in counts.values()), counts


def test_hash_request_uri_is_ds_get_hash_of_user_and_host() -> None:
    dispatcher = three_nodes()
    order = uris(dispatcher, 1)
    for i in range(100):
        expected = order[ds_get_hash(f"u{i}", "h.example.com:5080") % 3]
        assert dispatcher.select(1, 3, _key(f"sip:u{i}@h.example.com:5080;x=y"))[0].uri == expected


def test_hash_request_uri_same_user_same_node_whatever_params_or_default_port() -> None:
    dispatcher = three_nodes()
    first = dispatcher.select(1, 3, _key("sip:bob@biloxi.com"))[0].uri
    for variant in ("sip:bob@biloxi.com:5060", "sip:bob@biloxi.com;transport=tcp"):
        assert dispatcher.select(1, 3, _key(variant))[0].uri == first


def test_hash_request_uri_user_only_flag_ignores_host() -> None:
    dispatcher = Dispatcher.from_list_file(
        "1 sip:c.example.com\n1 sip:b.example.com\n1 sip:a.example.com", hash_user_only=True
    )
    picks = {dispatcher.select(1, 3, _key(f"sip:carol@host{i}.lab"))[0].uri for i in range(50)}
    assert len(picks) == 1


def test_hash_request_uri_skips_inactive_to_successor() -> None:
    dispatcher = three_nodes()
    before = {k.ruri: dispatcher.select(1, 3, k)[0].uri for k in KEYS[:600]}
    dispatcher.mark(A, "i", now=0.0)
    for key in KEYS[:600]:
        got = dispatcher.select(1, 3, key)[0].uri
        assert got == (B if before[key.ruri] == A else before[key.ruri])


def test_hash_request_uri_without_sip_uri_selects_nothing() -> None:
    dispatcher = three_nodes()
    assert dispatcher.select(1, 3, _key(None)) == []
    assert dispatcher.select(1, 3, _key("tel:+15550100")) == []
