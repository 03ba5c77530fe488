"""Algorithm 0 (hash_call_id)."""

from __future__ import annotations

from router.features.dispatcher import SelectionKey, ds_get_hash

from ._helpers import A, B, C, tally, three_nodes, uris

KEYS = [SelectionKey(call_id=f"{i:08x}-call@10.1.2.3") for i in range(3000)]


def test_hash_call_id_spreads_calls_evenly() -> None:
    counts = tally(three_nodes(), 1, "hash_call_id", KEYS)
    assert set(counts) == {A, B, C}
    assert all(900 <= n <= 1100 for n in counts.values()), counts


def test_hash_call_id_is_ds_get_hash_mod_n_and_deterministic() -> None:
    dispatcher = three_nodes()
    order = uris(dispatcher, 1)
    for key in KEYS[:200]:
        assert key.call_id is not None
        expected = order[ds_get_hash(key.call_id) % 3]
        assert dispatcher.select(1, 0, key)[0].uri == expected
        assert three_nodes(seed=99).select(1, 0, key)[0].uri == expected


def test_hash_call_id_trims_the_call_id() -> None:
    dispatcher = three_nodes()
    assert (
        dispatcher.select(1, 0, SelectionKey(call_id="  abc@h "))[0].uri
        == dispatcher.select(1, 0, SelectionKey(call_id="abc@h"))[0].uri
    )


def test_hash_call_id_dead_node_traffic_moves_to_its_successor_only() -> None:
    dispatcher = three_nodes()
    before = {key.call_id: dispatcher.select(1, 0, key)[0].uri for key in KEYS}
    dispatcher.mark(B, "i", now=0.0)
    for key in KEYS:
        now_uri = dispatcher.select(1, 0, key)[0].uri
        assert now_uri == (C if before[key.call_id] == B else before[key.call_id])


def test_hash_call_id_walk_wraps_around() -> None:
    dispatcher = three_nodes()
    dispatcher.mark(C, "i", now=0.0)
    to_c = [k for k in KEYS if k.call_id and ds_get_hash(k.call_id) % 3 == 2]
    assert to_c
    assert {dispatcher.select(1, 0, k)[0].uri for k in to_c} == {A}


def test_hash_call_id_failover_after_then_before() -> None:
    dispatcher = three_nodes()
    key = next(k for k in KEYS if k.call_id and ds_get_hash(k.call_id) % 3 == 1)
    assert [d.uri for d in dispatcher.select(1, 0, key)] == [B, C, A]
    assert [d.uri for d in dispatcher.select(1, 0, key, limit=2)] == [B, C]


def test_hash_call_id_without_call_id_selects_nothing() -> None:
    assert three_nodes().select(1, 0, SelectionKey()) == []
