"""The algorithm plug-in contract and its registry.

Kamailio's ``ds_manage_routes`` is one ``switch(alg)``; here each case is a class in its own
module, registered with ``@register_algorithm(number, name)``. The dispatcher keeps one
instance per destination set (Kamailio keeps RR ``last``, ``wlist``/``wlast`` and
``rwlist``/``rwlast`` in ``ds_set_t``) and drives it in ``ds_manage_routes`` order:

1. ``first_index(key)`` -> the raw "hash" (reduced ``% n`` by the caller), or None when the
   algorithm cannot select ("can't get callid hash", "no address selected");
2. the caller walks ``(i + 1) % n`` past skipped entries (INACTIVE/DISABLED);
3. ``selected(index, key)`` is told the final choice (RR moves its counter, call-load counts);
4. ``failover_ok(index, key)`` filters the failover entries (call-load drops full ones);
5. ``state_changed(index, old, new)`` runs on every state change in the set (rweight table).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..destination import Destination


@dataclass(frozen=True, slots=True)
class SelectionKey:
    """What the algorithms may look at in a request (Kamailio reads them from the message)."""

    call_id: str | None = None
    """Call-ID header value (alg 0)."""
    from_uri: str | None = None
    """URI of the From header (alg 1)."""
    to_uri: str | None = None
    """URI of the To header (alg 2)."""
    ruri: str | None = None
    """Request-URI (alg 3)."""
    method: str = "INVITE"
    """Request method (alg 10 only balances INVITEs)."""


class CallLoads:
    """Active calls per ``duid`` (Kamailio's ``dload`` counters and Call-ID load table).

    Kamailio counts per set entry; entries of different sets sharing a ``duid`` are the same
    node for this lab, so we count per ``duid``. XXX: deviation, only visible when one duid is
    in two sets.
    """

    def __init__(self) -> None:
        self._load: dict[str, int] = {}
        self._by_call: dict[str, str] = {}

    def load(self, duid: str) -> int:
        """Active calls counted for ``duid``."""
        return self._load.get(duid, 0)

    def started(self, duid: str, call_id: str | None = None) -> None:
        """Count one more call (``ds_load_add``); a known ``call_id`` is not counted twice."""
        if call_id is not None:
            if call_id in self._by_call:
                return
            self._by_call[call_id] = duid
        self._load[duid] = self._load.get(duid, 0) + 1

    def ended(self, duid: str) -> None:
        """Count one call less, never below 0 (``DS_LOAD_DEC``)."""
        if self._load.get(duid, 0) > 0:
            self._load[duid] -= 1
        for call_id, owner in list(self._by_call.items()):
            if owner == duid:
                del self._by_call[call_id]
                break

    def ended_call(self, call_id: str) -> str | None:
        """``ds_load_remove`` by Call-ID: uncount that call's duid, return it (None if unknown)."""
        duid = self._by_call.pop(call_id, None)
        if duid is not None and self._load.get(duid, 0) > 0:
            self._load[duid] -= 1
        return duid


@dataclass(slots=True)
class SetContext:
    """What an algorithm instance gets at creation: its set (live) and shared services."""

    setid: int
    entries: list[Destination]
    """The set in Kamailio order; the dispatcher replaces items in place on state changes."""
    rng: random.Random
    """Seeded source for the table shuffles (Kamailio ``kam_rand``)."""
    loads: CallLoads = field(default_factory=CallLoads)
    hash_user_only: bool = False
    """Modparam ``flags`` bit 1 (``DS_HASH_USER_ONLY``): URI hashes use the user part only."""


class Algorithm(Protocol):
    """A selection algorithm instance bound to one destination set."""

    def first_index(self, key: SelectionKey) -> int | None:
        """Raw index/hash before ``% n`` and the skip walk; None = selection fails."""
        ...

    def selected(self, index: int, key: SelectionKey) -> None:
        """The final choice after the skip walk."""
        ...

    def failover_ok(self, index: int, key: SelectionKey) -> bool:
        """Whether a non-skipped entry may go on the failover list."""
        ...

    def state_changed(self, index: int, old_flags: int, new_flags: int) -> None:
        """Entry ``index`` of the set changed its flags."""
        ...


class AlgorithmBase:
    """Defaults for the optional hooks; algorithms subclass this and set ``first_index``."""

    def __init__(self, ctx: SetContext) -> None:
        self.ctx = ctx

    def selected(self, index: int, key: SelectionKey) -> None:
        """Nothing to remember by default."""

    def failover_ok(self, index: int, key: SelectionKey) -> bool:
        """Every usable entry may be a failover by default."""
        return True

    def state_changed(self, index: int, old_flags: int, new_flags: int) -> None:
        """No derived tables by default."""


AlgorithmFactory = Callable[[SetContext], Algorithm]


@dataclass(frozen=True, slots=True)
class AlgorithmSpec:
    """A registered algorithm."""

    number: int
    """Kamailio ``ds_select_dst`` algorithm number."""
    name: str
    """Our name for it."""
    factory: AlgorithmFactory
    """Builds the per-set instance."""


_BY_NUMBER: dict[int, AlgorithmSpec] = {}
_BY_NAME: dict[str, AlgorithmSpec] = {}


def register_algorithm(number: int, name: str) -> Callable[[AlgorithmFactory], AlgorithmFactory]:
    """Class decorator: register an algorithm under its Kamailio number and a name.

    Raises:
        ValueError: the number or the name is already taken.
    """

    def decorate(factory: AlgorithmFactory) -> AlgorithmFactory:
        if number in _BY_NUMBER or name in _BY_NAME:
            raise ValueError(f"dispatcher algorithm {number}/{name} registered twice")
        spec = AlgorithmSpec(number, name, factory)
        _BY_NUMBER[number] = spec
        _BY_NAME[name] = spec
        return factory

    return decorate


def get_algorithm(alg: int | str) -> AlgorithmSpec:
    """Look an algorithm up by Kamailio number, by name, or by a number written as text.

    Raises:
        ValueError: no such algorithm. (Kamailio falls back to the first entry for unknown
        numbers, "algo %d not implemented - using first entry"; we refuse instead.)
    """
    if isinstance(alg, str) and alg.strip().isdigit():
        alg = int(alg)
    spec = _BY_NUMBER.get(alg) if isinstance(alg, int) else _BY_NAME.get(alg)
    if spec is None:
        raise ValueError(f"unknown dispatcher algorithm {alg!r}")
    return spec


def registered_algorithms() -> Sequence[AlgorithmSpec]:
    """Every registered algorithm, by number."""
    return [_BY_NUMBER[n] for n in sorted(_BY_NUMBER)]
