"""Small builders shared by the dispatcher tests."""

from __future__ import annotations

from collections import Counter

from router.features.dispatcher import Dispatcher, ProbingConfig, SelectionKey


def three_nodes(
    attrs: tuple[str, str, str] = ("", "", ""),
    *,
    probing: ProbingConfig | None = None,
    seed: int = 0,
) -> Dispatcher:
    """Set 1 with a, b, c (file order c, b, a so that Kamailio order is a, b, c)."""
    text = "\n".join(
        f"1 sip:{name}.example.com 0 0 {attr}".rstrip()
        for name, attr in reversed(list(zip("abc", attrs, strict=True)))
    )
    return Dispatcher.from_list_file(text, probing=probing, seed=seed)


def uris(dispatcher: Dispatcher, setid: int) -> list[str]:
    return [d.uri for d in dispatcher.destinations(setid)]


def tally(
    dispatcher: Dispatcher, setid: int, alg: int | str, keys: list[SelectionKey]
) -> Counter[str]:
    """How many of ``keys`` select each URI first."""
    counts: Counter[str] = Counter()
    for key in keys:
        chosen = dispatcher.select(setid, alg, key)
        assert chosen, key
        counts[chosen[0].uri] += 1
    return counts


A, B, C = "sip:a.example.com", "sip:b.example.com", "sip:c.example.com"
