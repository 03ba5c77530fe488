"""Contract every registered algorithm must keep, over random sets and states."""

from __future__ import annotations

import random

import pytest

from router.features.dispatcher import (
    AlgorithmSpec,
    Dispatcher,
    SelectionKey,
    get_algorithm,
    is_skipped,
    register_algorithm,
    registered_algorithms,
)

SPECS = registered_algorithms()


def random_dispatcher(rng: random.Random) -> Dispatcher:
    lines = []
    for i in range(rng.randint(1, 6)):
        flags = rng.choice([0, 0, 0, 1, 2, 4, 8, 9])
        attrs = f"duid=d{i};weight={rng.randint(1, 60)};rweight={rng.randint(1, 9)}"
        if rng.random() < 0.3:
            attrs += f";maxload={rng.randint(1, 3)}"
        lines.append(f"5 sip:node{i}.lab:{5060 + i} {flags} {rng.randint(0, 3)} {attrs}")
    return Dispatcher.from_list_file("\n".join(lines), seed=rng.randint(0, 99))


def random_key(rng: random.Random, n: int) -> SelectionKey:
    return SelectionKey(
        call_id=f"{n}-{rng.random()}@h",
        from_uri=f"sip:u{rng.randint(0, 50)}@a.lab",
        to_uri=f"sip:t{rng.randint(0, 50)}@b.lab:5070",
        ruri=f"sip:r{rng.randint(0, 50)}@c.lab",
        method=rng.choice(["INVITE", "INVITE", "OPTIONS"]),
    )


def test_registry_has_the_kamailio_numbers() -> None:
    assert [(s.number, s.name) for s in SPECS] == [
        (0, "hash_call_id"),
        (1, "hash_from_uri"),
        (2, "hash_to_uri"),
        (3, "hash_request_uri"),
        (4, "round_robin"),
        (8, "serial"),
        (9, "weight"),
        (10, "call_load"),
        (11, "relative_weight"),
    ]
    assert get_algorithm("4") is get_algorithm(4) is get_algorithm("round_robin")


def test_registry_refuses_duplicates_and_unknowns() -> None:
    with pytest.raises(ValueError, match="twice"):
        register_algorithm(4, "another_rr")(SPECS[0].factory)
    with pytest.raises(ValueError, match="unknown"):
        get_algorithm(6)
    with pytest.raises(ValueError, match="unknown"):
        Dispatcher.from_list_file("1 sip:a.lab").select(1, "random", SelectionKey())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_contract_only_usable_each_once_within_limit(spec: AlgorithmSpec) -> None:
    rng = random.Random(spec.number)
    for trial in range(150):
        dispatcher = random_dispatcher(rng)
        entries = dispatcher.destinations(5)
        usable = {d.uri for d in entries if not is_skipped(d.flags)}
        for n in range(8):
            limit = rng.choice([None, 0, 1, 2, 3])
            chosen = dispatcher.select(5, spec.number, random_key(rng, n), limit=limit)
            got = [d.uri for d in chosen]
            assert len(got) == len(set(got)), (trial, got)
            assert set(got) <= usable, (trial, got, usable)
            if limit:
                assert len(got) <= limit
            if chosen and not limit and spec.name != "call_load":
                assert set(got) == usable, (trial, got, usable)
            if not usable:
                assert got == []


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_contract_failover_is_set_order_rotated_at_the_choice(spec: AlgorithmSpec) -> None:
    rng = random.Random(100 + spec.number)
    for _ in range(100):
        dispatcher = random_dispatcher(rng)
        order = [d.uri for d in dispatcher.destinations(5)]
        got = [d.uri for d in dispatcher.select(5, spec.number, random_key(rng, 0))]
        if not got:
            continue
        start = order.index(got[0])
        rotated = order[start:] + order[:start]
        assert got == [u for u in rotated if u in got]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_contract_unknown_or_empty_set_selects_nothing(spec: AlgorithmSpec) -> None:
    dispatcher = Dispatcher.from_list_file("1 sip:a.lab 0 0 duid=a")
    assert dispatcher.select(2, spec.number, SelectionKey(call_id="c")) == []
