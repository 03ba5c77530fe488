"""Keepalive state machine (ds_update_state / ds_options_callback) with explicit time."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from router.features.dispatcher import (
    Dispatcher,
    DsFlag,
    ProbingConfig,
    SelectionKey,
    parse_reply_codes,
)
from router.features.dispatcher.probing import update_state, wants_ping

from ._helpers import A, B, C, three_nodes

# Short names keep the transition table readable.
I, T, D, P = DsFlag.INACTIVE, DsFlag.TRYING, DsFlag.DISABLED, DsFlag.PROBING  # noqa: E741
NODNS, NOPING = DsFlag.NODNSARES, DsFlag.NOPING
RR = SelectionKey()


@pytest.mark.parametrize(
    ("old", "count", "state", "mode", "thresholds", "expected"),
    [
        # ping failure, thresholds 1: straight to inactive
        (0, 0, T, 0, (1, 1), (I, 0)),
        (P, 0, T | P, 0, (1, 1), (I | P, 0)),
        # probing_threshold 3: TRYING twice, inactive on the third
        (P, 0, T | P, 0, (3, 1), (T | P, 1)),
        (T | P, 1, T | P, 0, (3, 1), (T | P, 2)),
        (T | P, 2, T | P, 0, (3, 1), (I | P, 0)),
        # success while trying clears it and the counter
        (T | P, 2, P, 0, (3, 1), (P, 0)),
        # success on inactive counts up to inactive_threshold
        (I | P, 0, P, 0, (1, 2), (I | P, 1)),
        (I | P, 1, P, 0, (1, 2), (P, 0)),
        (I | P, 0, 0, 0, (1, 1), (0, 0)),
        # "old state is inactive, new state is trying => keep it inactive", counter reset
        (I | P, 1, T | P, 0, (1, 2), (I | P, 0)),
        # ... even below probing_threshold: a failing inactive node never turns usable TRYING
        (I | P, 0, T | P, 0, (3, 1), (I | P, 0)),
        # ds_mark_dst (mode 1): trying means inactive now, active ignores the threshold
        (0, 0, T, 1, (5, 5), (I, 0)),
        (I | P, 0, 0, 1, (5, 5), (0, 0)),
        # disabled wins and drops the rest; every state bit is replaced (NOPING too)
        (I | P, 0, D | P, 1, (1, 1), (D, 0)),
        (NOPING | NODNS, 0, P, 1, (1, 1), (P, 0)),
    ],
)
def test_update_state_transitions(
    old: int,
    count: int,
    state: int,
    mode: int,
    thresholds: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    got = update_state(
        old,
        count,
        state,
        mode=mode,
        probing_threshold=thresholds[0],
        inactive_threshold=thresholds[1],
    )
    assert got == expected


@pytest.mark.parametrize(
    ("flags", "pinged_in_modes"),
    [
        (0, {1}),
        (P, {0, 1, 3}),
        (I, {1}),
        (I | P, {0, 1, 2, 3}),
        (T | P, {0, 1, 3}),
        (D | P, set()),
        (NOPING | P, set()),
        (NODNS | P, set()),
    ],
)
def test_which_entries_each_mode_pings(flags: int, pinged_in_modes: set[int]) -> None:
    assert {m for m in range(4) if wants_ping(flags, m)} == pinged_in_modes


def cfg(
    mode: int = 1,
    *,
    interval: float = 10.0,
    ping_timeout: float = 4.0,
    probing_threshold: int = 1,
    inactive_threshold: int = 1,
    reply_codes: tuple[int, ...] = (),
    ping_from: str = "sip:dispatcher@localhost",
) -> ProbingConfig:
    return ProbingConfig(
        interval,
        ping_timeout,
        probing_threshold=probing_threshold,
        inactive_threshold=inactive_threshold,
        probing_mode=mode,
        reply_codes=reply_codes,
        ping_from=ping_from,
    )


def answer_all(
    dispatcher: Dispatcher, now: float, code_for: Callable[[str], int | None]
) -> list[str]:
    """Run a round at ``now``; answer each ping at once with ``code_for(uri)`` (None = silence)."""
    pinged = []
    for ping in dispatcher.due_pings(now):
        pinged.append(ping.destination.uri)
        code = code_for(ping.destination.uri)
        if code is not None:
            assert dispatcher.ping_result(ping.destination.uri, code, now, from_tag=ping.from_tag)
    return pinged


def test_mode_0_pings_flagged_entries_once() -> None:
    dispatcher = Dispatcher.from_list_file(f"1 {A} 8\n1 {B} 8\n1 {C} 0", probing=cfg(0))
    assert sorted(answer_all(dispatcher, 0.0, lambda u: 200 if u == A else 503)) == [A, B]
    flags = {d.uri: d.flags for d in dispatcher.destinations(1)}
    # success clears PROBING; failure gives INACTIVE without PROBING (never pinged again)
    assert flags == {A: 0, B: I, C: 0}
    assert answer_all(dispatcher, 10.0, lambda u: 200) == []
    dispatcher.mark(B, "ip", now=11.0)
    assert answer_all(dispatcher, 20.0, lambda u: 200) == [B]
    assert dispatcher.destinations(1)[1].flags == 0


def test_mode_1_pings_everything_and_keeps_probing() -> None:
    dispatcher = Dispatcher.from_list_file(f"1 {A} 0\n1 {B} 4\n1 {C} 32", probing=cfg(1))
    assert answer_all(dispatcher, 0.0, lambda u: 200) == [A]
    assert dispatcher.destinations(1)[2].flags == P  # sorted: C, B, A -> A last
    assert answer_all(dispatcher, 10.0, lambda u: 500) == [A]
    assert dispatcher.destinations(1)[2].flags == I | P
    assert [r.flags for r in dispatcher.status()] == ["AN", "DX", "IP"]


def test_mode_2_pings_only_inactive_probing_entries() -> None:
    dispatcher = three_nodes(probing=cfg(2))
    dispatcher.mark(A, "ip", now=0.0)
    dispatcher.mark(B, "i", now=0.0)
    assert answer_all(dispatcher, 0.0, lambda u: 200) == [A]
    assert dispatcher.destinations(1)[0].flags == 0  # back and no longer probed
    assert answer_all(dispatcher, 10.0, lambda u: 200) == []


def test_mode_3_probes_flagged_forever_and_ignores_unflagged_replies() -> None:
    dispatcher = three_nodes(probing=cfg(3))
    dispatcher.mark(A, "ap", now=0.0)
    for t in (0.0, 10.0, 20.0):
        assert answer_all(dispatcher, t, lambda u: 200) == [A]
        assert dispatcher.destinations(1)[0].flags == P
    pings = dispatcher.due_pings(30.0)
    dispatcher.mark(A, "a", now=31.0)  # admin clears PROBING meanwhile
    assert dispatcher.ping_result(A, 500, 32.0, from_tag=pings[0].from_tag)
    assert dispatcher.destinations(1)[0].flags == 0  # the 500 was ignored


def _responder(*, alive: bool) -> Callable[[str], int | None]:
    def code_for(uri: str) -> int | None:
        return 200 if uri != A or alive else None

    return code_for


def run_until_skipped(
    dispatcher: Dispatcher, dies_at: float, horizon: float, step: float = 0.25
) -> float:
    """Step time; A answers 200 before ``dies_at`` and never after. Returns when A is skipped."""
    t = 0.0
    while t <= horizon:
        answer_all(dispatcher, t, _responder(alive=t < dies_at))
        if dispatcher.select(1, "serial", RR)[0].uri != A:
            return t
        t += step
    raise AssertionError("never marked down")


@pytest.mark.parametrize("dies_at", [0.1, 3.0, 9.9, 10.0, 10.25, 17.5])
def test_dead_node_gets_no_calls_after_interval_plus_timeout(dies_at: float) -> None:
    dispatcher = three_nodes(probing=cfg(1, interval=10.0, ping_timeout=4.0))
    down_at = run_until_skipped(dispatcher, dies_at, horizon=60.0)
    assert dies_at < down_at <= dies_at + 10.0 + 4.0
    events = [e for e in dispatcher.drain_events() if e.uri == A and e.went_down]
    assert len(events) == 1
    assert (events[0].reason, events[0].code) == ("ping timeout", 408)
    assert events[0].t <= dies_at + 14.0


def test_probing_threshold_needs_that_many_lost_pings() -> None:
    dispatcher = three_nodes(probing=cfg(1, interval=10.0, ping_timeout=4.0, probing_threshold=3))
    down_at = run_until_skipped(dispatcher, 5.0, horizon=80.0)
    # lost pings sent at 10, 20, 30; the third times out at 34
    assert down_at == 34.0
    states = [e.new for e in dispatcher.drain_events() if e.uri == A]
    # 0 s answered (-> P); lost pings time out at 14 (TRYING), 24 (count 2, flags unchanged: no
    # event) and 34 (INACTIVE)
    assert states == [P, T | P, I | P]


@pytest.mark.parametrize("inactive_threshold", [1, 2, 3])
def test_recovered_node_gets_calls_after_inactive_threshold_pings(inactive_threshold: int) -> None:
    dispatcher = three_nodes(
        probing=cfg(1, interval=10.0, ping_timeout=4.0, inactive_threshold=inactive_threshold)
    )
    dispatcher.mark(A, "ip", now=0.0)
    successes = 0
    t = 0.0
    while dispatcher.select(1, "serial", RR)[0].uri != A:
        successes += len([u for u in answer_all(dispatcher, t, lambda u: 200) if u == A])
        t += 0.5
        assert t < 100
    assert successes == inactive_threshold
    assert t - 0.5 == 10.0 * (inactive_threshold - 1)


def test_fresh_ping_each_interval_while_one_is_outstanding() -> None:
    dispatcher = three_nodes(probing=cfg(1, interval=5.0, ping_timeout=12.0))
    tags = set()
    for t in (0.0, 5.0, 10.0):
        tags |= {p.from_tag for p in dispatcher.due_pings(t) if p.destination.uri == A}
    assert len(tags) == 3
    assert dispatcher.next_deadline() == 12.0
    assert dispatcher.due_pings(12.0) == []
    assert dispatcher.destinations(1)[0].flags == I | P
    # the other two pings are still waiting; a 200 to the oldest brings A back
    assert dispatcher.ping_result(A, 200, 13.0)
    assert dispatcher.destinations(1)[0].flags == P


def test_late_or_unknown_replies_are_ignored() -> None:
    dispatcher = three_nodes(probing=cfg(1, interval=10.0, ping_timeout=4.0))
    tag = next(p.from_tag for p in dispatcher.due_pings(0.0) if p.destination.uri == A)
    dispatcher.due_pings(4.0)
    assert dispatcher.destinations(1)[0].flags == I | P
    assert not dispatcher.ping_result(A, 200, 5.0, from_tag=tag)
    assert not dispatcher.ping_result(A, 200, 5.0)
    assert not dispatcher.ping_result(B, 200, 5.0, from_tag="nope")
    assert dispatcher.destinations(1)[0].flags == I | P


@pytest.mark.parametrize(
    ("reply_codes", "code", "up"),
    [
        ((), 200, True),
        ((), 299, True),
        ((), 401, False),
        ((), 503, False),
        (parse_reply_codes("code=401"), 401, True),
        (parse_reply_codes("class=4;code=503"), 404, True),
        (parse_reply_codes("class=4;code=503"), 503, True),
        (parse_reply_codes("class=4"), 503, False),
    ],
)
def test_reply_codes_decide_success(reply_codes: tuple[int, ...], code: int, up: bool) -> None:
    dispatcher = three_nodes(probing=cfg(1, reply_codes=reply_codes))
    answer_all(dispatcher, 0.0, lambda u: code)
    assert (dispatcher.destinations(1)[0].flags == P) is up


def test_listing_408_means_timeouts_never_take_a_node_down() -> None:
    dispatcher = three_nodes(probing=cfg(1, reply_codes=parse_reply_codes("code=408")))
    dispatcher.due_pings(0.0)
    dispatcher.due_pings(4.0)
    assert all(d.flags == P for d in dispatcher.destinations(1))


def test_parse_reply_codes_rejects_garbage() -> None:
    assert parse_reply_codes("class=2; code=403 ;") == (2, 403)
    for bad in ("class=7", "code=99", "kode=200", "code=abc"):
        with pytest.raises(ValueError, match="bad reply code"):
            parse_reply_codes(bad)


def test_disabled_entries_are_not_pinged_nor_changed_by_replies() -> None:
    dispatcher = three_nodes(probing=cfg(1))
    pings = dispatcher.due_pings(0.0)
    dispatcher.mark(A, "d", now=0.5)
    dispatcher.drain_events()
    assert dispatcher.ping_result(A, 500, 1.0, from_tag=pings[0].from_tag)
    assert dispatcher.destinations(1)[0].flags == D
    assert dispatcher.drain_events() == []
    assert A not in [p.destination.uri for p in dispatcher.due_pings(10.0)]


def test_ping_request_fields_and_ping_from_attr() -> None:
    dispatcher = Dispatcher.from_list_file(
        f"1 {A} 0 0 ping_from=sip:health@lab\n1 {B}", probing=cfg(1, ping_from="sip:ds@router")
    )
    pings = {p.destination.uri: p for p in dispatcher.due_pings(100.0)}
    assert pings[A].from_uri == "sip:health@lab"
    assert pings[B].from_uri == "sip:ds@router"
    assert (pings[A].sent_at, pings[A].timeout_at) == (100.0, 104.0)
    assert pings[A].from_tag != pings[B].from_tag


def test_next_deadline_rounds_and_timeouts() -> None:
    assert three_nodes().next_deadline() is None
    dispatcher = three_nodes(probing=cfg(1, interval=10.0, ping_timeout=4.0))
    assert dispatcher.next_deadline() == -math.inf
    dispatcher.due_pings(100.0)
    assert dispatcher.next_deadline() == 104.0
    answer_all(dispatcher, 101.0, lambda u: 200)  # not a round yet: nothing sent
    for d in dispatcher.destinations(1):
        dispatcher.ping_result(d.uri, 200, 101.0)
    assert dispatcher.next_deadline() == 110.0
    assert dispatcher.due_pings(109.9) == []
    assert len(dispatcher.due_pings(135.0)) == 3  # late: one round, not three
    assert dispatcher.next_deadline() == 139.0


def test_mark_letters_default_and_errors() -> None:
    dispatcher = Dispatcher.from_list_file(f"1 {A}\n2 {A}\n2 {B}", probing=cfg(1))
    assert dispatcher.mark(A.upper().replace("SIP:", "sip:"), now=1.0) == 2  # both sets, no case
    assert {d.flags for d in dispatcher.destinations(1) + dispatcher.destinations(2)[1:]} == {I | P}
    assert dispatcher.mark(A, "a", now=2.0, setid=2) == 1
    assert dispatcher.destinations(1)[0].flags == I | P
    assert dispatcher.mark(B, "t", now=3.0) == 1
    assert dispatcher.destinations(2)[0].flags == I  # ds_mark_dst("t") -> inactive at once
    assert dispatcher.mark("sip:nobody.lab", "i", now=3.0) == 0
    with pytest.raises(ValueError, match="letter"):
        dispatcher.mark(A, "x", now=4.0)


def test_events_report_changes_and_flips() -> None:
    dispatcher = three_nodes(probing=cfg(1))
    dispatcher.mark(A, "i", now=1.0)
    dispatcher.mark(A, "i", now=2.0)  # no change, no event
    dispatcher.mark(A, "a", now=3.0)
    events = dispatcher.drain_events()
    assert [(e.old, e.new, e.went_down, e.went_up, e.t) for e in events] == [
        (0, I, True, False, 1.0),
        (I, 0, False, True, 3.0),
    ]
    assert str(events[0]) == f"set 1 {A}: AX -> IX (mark i)"
    assert dispatcher.drain_events() == []


def test_status_rows_like_dispatcher_list() -> None:
    dispatcher = Dispatcher.from_list_file(
        f"1 {C} 2 0 duid=c\n1 {B} 4 1\n1 {A} 8 2", probing=cfg(1, probing_threshold=3)
    )
    answer_all(dispatcher, 0.0, lambda u: 200 if u == A else 500)
    rows = dispatcher.status()
    assert [(r.uri, r.flags, r.priority, r.attrs, r.probing_count) for r in rows] == [
        (A, "AP", 2, "", 0),
        (B, "DX", 1, "", 0),
        (C, "TP", 0, "duid=c", 1),
    ]
    assert rows[0].latency == 0.0
    assert rows[2].latency is None
