"""Algorithm 10 (call_load): least active calls by duid; INVITE only."""

from __future__ import annotations

from router.features.dispatcher import Dispatcher, SelectionKey

LIST = """\
1 sip:c.lab 0 0 duid=c
1 sip:b.lab 0 0 duid=b
1 sip:a.lab 0 0 duid=a;maxload=2
"""


def invite(n: int) -> SelectionKey:
    return SelectionKey(call_id=f"call-{n}", method="INVITE")


def test_call_load_picks_least_loaded_first_on_ties() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    picks = [dispatcher.select(1, "call_load", invite(i))[0].uri for i in range(3)]
    assert picks == ["sip:a.lab", "sip:b.lab", "sip:c.lab"]
    assert [dispatcher.load(d) for d in "abc"] == [1, 1, 1]


def test_call_load_ended_calls_free_capacity() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    for i in range(3):
        dispatcher.select(1, 10, invite(i))
    assert dispatcher.call_ended_for("call-1") == "b"
    assert dispatcher.select(1, 10, invite(9))[0].uri == "sip:b.lab"
    dispatcher.call_ended("a")
    dispatcher.call_ended("a")  # never below 0
    assert dispatcher.load("a") == 0
    assert dispatcher.select(1, 10, invite(10))[0].uri == "sip:a.lab"


def test_call_load_same_call_id_counted_once() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    dispatcher.select(1, 10, invite(1))
    dispatcher.select(1, 10, invite(1))
    assert dispatcher.load("a") == 1


def test_call_load_maxload_excludes_from_choice_and_failover() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    dispatcher.call_started("a")
    dispatcher.call_started("a")
    dispatcher.call_started("b")
    assert [d.uri for d in dispatcher.select(1, 10, invite(1))] == ["sip:c.lab", "sip:b.lab"]


def test_call_load_all_full_or_down_selects_nothing() -> None:
    dispatcher = Dispatcher.from_list_file(
        "1 sip:a.lab 0 0 duid=a;maxload=1\n1 sip:b.lab 1 0 duid=b"
    )
    assert dispatcher.select(1, 10, invite(1))[0].uri == "sip:a.lab"
    assert dispatcher.select(1, 10, invite(2)) == []


def test_call_load_non_invite_uses_first_entry_and_does_not_count() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    for _ in range(3):
        chosen = dispatcher.select(1, 10, SelectionKey(call_id="o", method="OPTIONS"))
        assert [d.uri for d in chosen] == ["sip:a.lab", "sip:b.lab", "sip:c.lab"]
    assert dispatcher.load("a") == 0
    dispatcher.call_started("a")
    dispatcher.call_started("a")
    # non-INVITE acts as alg 0 with hash 0: the full entry is still offered
    assert dispatcher.select(1, 10, SelectionKey(method="BYE"))[0].uri == "sip:a.lab"


def test_call_load_skips_inactive_and_reports_load_in_status() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    dispatcher.mark("sip:a.lab", "i", now=0.0)
    assert dispatcher.select(1, 10, invite(1))[0].uri == "sip:b.lab"
    loads = {row.uri: row.load for row in dispatcher.status()}
    assert loads == {"sip:a.lab": 0, "sip:b.lab": 1, "sip:c.lab": 0}
