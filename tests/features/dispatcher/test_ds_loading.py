"""Destination lists: Kamailio list files, dispatcher DB rows, router config dicts; set order."""

from __future__ import annotations

import pytest

from router.features.dispatcher import (
    Destination,
    Dispatcher,
    DispatcherConfigError,
    DsFlag,
    order_set,
    parse_list_file,
    parse_rows,
)

LIST = """\
# dispatcher destination sets
# setid destination flags priority attrs

# proxies
2 sip:127.0.0.1:5080
2 sip:127.0.0.1:5082   # trailing comment

# gateways
1 sip:10.0.0.11:5060 8 0 duid=ast1;weight=50
1 sip:10.0.0.12:5060 0x8 0 duid=ast2;weight=50;note=a#b
\t1  10.0.0.13;transport=tcp  32  7  duid=ast3;maxload=20;ping_from=sip:ds@lab
"""


def test_list_file_fields_and_defaults() -> None:
    dests = parse_list_file(LIST)
    assert [(d.setid, d.uri, d.flags, d.priority) for d in dests] == [
        (2, "sip:127.0.0.1:5080", 0, 0),
        (2, "sip:127.0.0.1:5082", 0, 0),
        (1, "sip:10.0.0.11:5060", 8, 0),
        (1, "sip:10.0.0.12:5060", 8, 0),
        (1, "sip:10.0.0.13;transport=tcp", 32, 7),
    ]
    first = dests[2]
    assert first.duid == "ast1"
    assert first.weight == 50
    assert first.attrs == {"duid": "ast1", "weight": "50"}
    assert first.attrs_body == "duid=ast1;weight=50"
    # attrs run to the next blank in ds_load_list: '#' inside them is data
    assert dests[3].attrs["note"] == "a#b"


def test_list_file_adds_sip_scheme_and_derives_host_port_transport() -> None:
    last = parse_list_file(LIST)[-1]
    assert last.uri == "sip:10.0.0.13;transport=tcp"
    assert (last.host, last.port, last.transport) == ("10.0.0.13", 5060, "tcp")
    assert last.maxload == 20
    assert last.ping_from == "sip:ds@lab"
    assert last.flags & DsFlag.NOPING


def test_destination_defaults_for_sips() -> None:
    dest = Destination.build(1, "sips:pbx.example.com")
    assert (dest.host, dest.port, dest.transport) == ("pbx.example.com", 5061, "tls")
    assert dest.duid is None
    assert (dest.weight, dest.rweight, dest.maxload) == (0, 0, 0)


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("x sip:a.example.com", 1, "setid"),
        ("1", 1, "destination"),
        ("# ok\n1 sip:a.example.com\n1 sip:@@bad", 3, "destination"),
        ("1 tel:+123", 1, "destination"),
        ("1 sip:a.example.com eight", 1, "flags"),
        ("1 sip:a.example.com 0x", 1, "flags"),
        ("1 sip:a.example.com 64", 1, "flags"),
        ("1 sip:a.example.com 0 high", 1, "priority"),
        ("\n\n1 sip:a.example.com 0 0 weight=0", 3, "attrs"),
        ("1 sip:a.example.com 0 0 weight=101", 1, "attrs"),
        ("1 sip:a.example.com 0 0 rweight=abc", 1, "attrs"),
        ("1 sip:a.example.com 0 0 maxload=-1", 1, "attrs"),
        ("1 sip:a.example.com 0 0 =x", 1, "attrs"),
        ("1 sip:a.example.com 0 0 duid=a extra", 1, "attrs"),
    ],
)
def test_list_file_errors_name_line_and_field(text: str, line: int, field: str) -> None:
    with pytest.raises(DispatcherConfigError) as info:
        parse_list_file(text)
    assert (info.value.line, info.value.field) == (line, field)
    assert f"line {line}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_db_rows_version_4() -> None:
    rows = [
        {
            "id": 1,
            "setid": 1,
            "destination": "sip:10.0.0.11",
            "flags": 0,
            "priority": 0,
            "attrs": None,
            "description": "ast1",
        },
        {
            "id": 2,
            "setid": 1,
            "destination": "sip:10.0.0.12",
            "flags": 8,
            "priority": 5,
            "attrs": "duid=ast2",
            "description": "",
        },
    ]
    dests = parse_rows(rows)
    assert [(d.uri, d.flags, d.priority, d.duid) for d in dests] == [
        ("sip:10.0.0.11", 0, 0, None),
        ("sip:10.0.0.12", 8, 5, "ast2"),
    ]


def test_config_dicts_accept_attr_mapping_and_uri_alias() -> None:
    dests = parse_rows(
        [{"setid": 3, "uri": "sip:n1.lab:5070", "attrs": {"duid": "n1", "weight": 30}}]
    )
    assert dests[0].attrs == {"duid": "n1", "weight": "30"}
    assert dests[0].port == 5070


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"destination": "sip:a"}, "setid"),
        ({"setid": "one", "destination": "sip:a"}, "setid"),
        ({"setid": True, "destination": "sip:a"}, "setid"),
        ({"setid": 1}, "destination"),
        ({"setid": 1, "destination": 5}, "destination"),
        ({"setid": 1, "destination": "sip:a", "flags": 1.5}, "flags"),
        ({"setid": 1, "destination": "sip:a", "priority": "hi"}, "priority"),
        ({"setid": 1, "destination": "sip:a", "attrs": 7}, "attrs"),
        ({"setid": 1, "destination": "sip:a", "weigth": 7}, "weigth"),
    ],
)
def test_row_errors_name_row_and_field(row: dict[str, object], field: str) -> None:
    good = {"setid": 1, "destination": "sip:ok.example.com"}
    with pytest.raises(DispatcherConfigError) as info:
        parse_rows([good, row])
    assert (info.value.line, info.value.field) == (2, field)


def test_order_priority_descending_ties_in_reverse_load_order() -> None:
    # add_dest2list + reindex_dests: highest priority at index 0, later-loaded first on ties
    text = """\
1 sip:p0-first.lab 0 0
1 sip:p5-first.lab 0 5
1 sip:p0-second.lab 0 0
1 sip:p9.lab 0 9
1 sip:p5-second.lab 0 5
"""
    dispatcher = Dispatcher.from_list_file(text)
    assert [d.uri for d in dispatcher.destinations(1)] == [
        "sip:p9.lab",
        "sip:p5-second.lab",
        "sip:p5-first.lab",
        "sip:p0-second.lab",
        "sip:p0-first.lab",
    ]


def test_order_set_equal_priorities_is_reverse_file_order() -> None:
    dests = parse_list_file("1 sip:a.lab\n1 sip:b.lab\n1 sip:c.lab")
    assert [d.uri for d in order_set(dests)] == ["sip:c.lab", "sip:b.lab", "sip:a.lab"]


def test_sets_are_separate_and_unknown_set_is_empty() -> None:
    dispatcher = Dispatcher.from_list_file(LIST)
    assert dispatcher.setids() == [1, 2]
    assert len(dispatcher.destinations(1)) == 3
    assert dispatcher.destinations(99) == []
