"""Algorithm 11 (relative_weight): table over usable entries, rebuilt on state change."""

from __future__ import annotations

from collections import Counter

from router.features.dispatcher import Dispatcher, SelectionKey
from router.features.dispatcher.algorithms.relative_weight import relative_weight_table

KEY = SelectionKey()
LIST = """\
1 sip:n2.lab 0 0 rweight=1
1 sip:n1.lab 0 0 rweight=2
1 sip:n0.lab 0 0 rweight=1
"""


def hundred(dispatcher: Dispatcher) -> Counter[str]:
    return Counter(dispatcher.select(1, "relative_weight", KEY)[0].uri for _ in range(100))


def test_relative_weight_1_2_1_is_25_50_25() -> None:
    assert hundred(Dispatcher.from_list_file(LIST)) == {
        "sip:n0.lab": 25,
        "sip:n1.lab": 50,
        "sip:n2.lab": 25,
    }


def test_relative_weight_third_down_is_33_67_0_and_back() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    dispatcher.mark("sip:n2.lab", "i", now=0.0)
    assert hundred(dispatcher) == {"sip:n0.lab": 33, "sip:n1.lab": 67}
    dispatcher.mark("sip:n2.lab", "a", now=1.0)
    assert hundred(dispatcher) == {"sip:n0.lab": 25, "sip:n1.lab": 50, "sip:n2.lab": 25}


def test_relative_weight_table_truncates_and_fills_with_last_usable() -> None:
    assert Counter(relative_weight_table([1, 2, 1], [True, True, False])) == {0: 33, 1: 67}
    assert Counter(relative_weight_table([1, 1, 1], [True, True, True])) == {0: 33, 1: 33, 2: 34}
    assert relative_weight_table([1, 1], [False, False]) is None


def test_relative_weight_disable_then_enable_restores_share() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    dispatcher.mark("sip:n2.lab", "d", now=0.0)
    dispatcher.mark("sip:n2.lab", "a", now=0.0)
    assert hundred(dispatcher)["sip:n2.lab"] == 25


def test_relative_weight_all_down_selects_nothing() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    for name in ("n0", "n1", "n2"):
        dispatcher.mark(f"sip:{name}.lab", "i", now=0.0)
    assert dispatcher.select(1, 11, KEY) == []
