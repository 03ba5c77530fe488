"""Algorithm 9 (weight): 100-slot table built at load, cycled."""

from __future__ import annotations

from collections import Counter

from router.features.dispatcher import Dispatcher, SelectionKey
from router.features.dispatcher.algorithms.weight import weight_table

KEY = SelectionKey()


def hundred(dispatcher: Dispatcher, rounds: int = 1) -> Counter[str]:
    return Counter(dispatcher.select(1, "weight", KEY)[0].uri for _ in range(100 * rounds))


def build(*weights: int) -> Dispatcher:
    # file order reversed so the set order is n0, n1, ...
    lines = [f"1 sip:n{i}.lab 0 0 weight={w}" for i, w in enumerate(weights)]
    return Dispatcher.from_list_file("\n".join(reversed(lines)), seed=7)


def test_weight_exact_shares_every_100_calls() -> None:
    dispatcher = build(50, 30, 20)
    assert hundred(dispatcher, 3) == {"sip:n0.lab": 150, "sip:n1.lab": 90, "sip:n2.lab": 60}


def test_weight_table_is_shuffled_not_blocked() -> None:
    dispatcher = build(50, 50)
    first_ten = [dispatcher.select(1, 9, KEY)[0].uri for _ in range(10)]
    assert len(set(first_ten)) == 2


def test_weight_sum_over_100_ignores_the_excess() -> None:
    assert Counter(weight_table([60, 60, 10])) == {0: 60, 1: 40}
    assert hundred(build(60, 60, 10)) == {"sip:n0.lab": 60, "sip:n1.lab": 40}


def test_weight_shortfall_goes_to_last_entry() -> None:
    assert Counter(weight_table([20, 10, 10])) == {0: 20, 1: 10, 2: 70}


def test_weight_first_entry_without_weight_means_no_table() -> None:
    # dp_init_weights: "first address must have weight!=0" -> all slots index 0
    assert weight_table([0, 50, 50]) == [0] * 100
    dispatcher = Dispatcher.from_list_file("1 sip:w.lab 0 0 weight=50\n1 sip:none.lab")
    assert hundred(dispatcher) == {"sip:none.lab": 100}


def test_weight_down_entry_slots_walk_to_next_usable() -> None:
    dispatcher = build(50, 30, 20)
    dispatcher.mark("sip:n1.lab", "i", now=0.0)
    assert hundred(dispatcher) == {"sip:n0.lab": 50, "sip:n2.lab": 50}


def test_weight_same_seed_same_sequence() -> None:
    a, b = build(50, 30, 20), build(50, 30, 20)
    assert [a.select(1, 9, KEY)[0].uri for _ in range(100)] == [
        b.select(1, 9, KEY)[0].uri for _ in range(100)
    ]
