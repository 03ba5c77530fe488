"""Algorithm 8 (serial: highest priority first)."""

from __future__ import annotations

from router.features.dispatcher import Dispatcher, SelectionKey

KEY = SelectionKey()
LIST = "1 sip:backup.lab 0 1\n1 sip:primary.lab 0 10\n1 sip:second.lab 0 5"


def test_serial_always_starts_at_highest_priority() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    for _ in range(5):
        assert [d.uri for d in dispatcher.select(1, "serial", KEY)] == [
            "sip:primary.lab",
            "sip:second.lab",
            "sip:backup.lab",
        ]


def test_serial_falls_to_next_priority_when_first_is_down() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    dispatcher.mark("sip:primary.lab", "i", now=0.0)
    assert [d.uri for d in dispatcher.select(1, 8, KEY)] == ["sip:second.lab", "sip:backup.lab"]
    dispatcher.mark("sip:primary.lab", "a", now=1.0)
    assert dispatcher.select(1, 8, KEY)[0].uri == "sip:primary.lab"


def test_serial_trying_destination_is_still_used() -> None:
    # ds_skip_dst only looks at INACTIVE and DISABLED
    dispatcher = Dispatcher.from_list_file("1 sip:a.lab 2 9\n1 sip:b.lab 8 1")
    assert [d.uri for d in dispatcher.select(1, 8, KEY)] == ["sip:a.lab", "sip:b.lab"]


def test_serial_limit_one_has_no_failover() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    assert [d.uri for d in dispatcher.select(1, 8, KEY, limit=1)] == ["sip:primary.lab"]
