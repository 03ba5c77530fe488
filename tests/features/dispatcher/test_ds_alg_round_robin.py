"""Algorithm 4 (round_robin)."""

from __future__ import annotations

from router.features.dispatcher import Dispatcher, SelectionKey

from ._helpers import A, B, C, three_nodes

KEY = SelectionKey(call_id="x")


def firsts(dispatcher: Dispatcher, count: int, setid: int = 1) -> list[str]:
    return [dispatcher.select(setid, "round_robin", KEY)[0].uri for _ in range(count)]


def test_round_robin_cycles_in_set_order_from_index_0() -> None:
    assert firsts(three_nodes(), 7) == [A, B, C, A, B, C, A]


def test_round_robin_follows_kamailio_priority_order() -> None:
    # priority descending, ties reverse file order: p9, low-b, low-a
    dispatcher = Dispatcher.from_list_file(
        "1 sip:low-a.lab 0 1\n1 sip:p9.lab 0 9\n1 sip:low-b.lab 0 1"
    )
    assert firsts(dispatcher, 4) == ["sip:p9.lab", "sip:low-b.lab", "sip:low-a.lab", "sip:p9.lab"]


def test_round_robin_skip_moves_counter_past_the_used_entry() -> None:
    dispatcher = three_nodes()
    dispatcher.mark(B, "i", now=0.0)
    # A; then B's turn is skipped to C and the counter moves after C, so next is A (not C again)
    assert firsts(dispatcher, 5) == [A, C, A, C, A]


def test_round_robin_failover_list_rotates_with_the_choice() -> None:
    dispatcher = three_nodes()
    assert [d.uri for d in dispatcher.select(1, 4, KEY)] == [A, B, C]
    assert [d.uri for d in dispatcher.select(1, 4, KEY)] == [B, C, A]
    dispatcher.mark(A, "d", now=0.0)
    assert [d.uri for d in dispatcher.select(1, 4, KEY)] == [C, B]


def test_round_robin_counters_are_per_set() -> None:
    dispatcher = Dispatcher.from_list_file("1 sip:x.lab\n1 sip:y.lab\n2 sip:p.lab\n2 sip:q.lab")
    assert firsts(dispatcher, 1, 1) == ["sip:y.lab"]
    assert firsts(dispatcher, 2, 2) == ["sip:q.lab", "sip:p.lab"]
    assert firsts(dispatcher, 1, 1) == ["sip:x.lab"]


def test_round_robin_all_down_selects_nothing_and_even_split() -> None:
    dispatcher = three_nodes()
    picks = firsts(dispatcher, 300)
    assert {u: picks.count(u) for u in (A, B, C)} == {A: 100, B: 100, C: 100}
    for uri in (A, B, C):
        dispatcher.mark(uri, "i", now=0.0)
    assert dispatcher.select(1, 4, KEY) == []
