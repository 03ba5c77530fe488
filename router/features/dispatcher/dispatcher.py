"""The dispatcher: destination sets, selection, call load, keepalive state. Pure and synchronous.

Theory of operation. A ``Dispatcher`` owns the sets (each in Kamailio order, see
``loading.order_set``), one algorithm instance per (set, registered algorithm), the call-load
counters and the keepalive machinery. Nothing here reads a clock or does I/O: every entry point
that depends on time takes ``now``; the driver sends the ``PingRequest`` values ``due_pings``
returns, reports replies with ``ping_result``, sleeps until ``next_deadline()``, and drains
``StateChanged`` events.

Selection follows ``ds_manage_routes``: the algorithm gives a raw index, reduced ``% n``; while
that entry is skipped (INACTIVE or DISABLED) walk ``(i + 1) % n``; a full loop means no
destination. The result is the chosen destination followed by the failover order
(``ds_manage_routes_fill_xavp``): usable entries after it, then usable entries before it,
cut to ``limit`` entries in total.

Timing (the issue's contract, probing mode 1, thresholds 1): a node that stops answering at T
is pinged again at most ``interval`` later, that ping times out ``ping_timeout`` after it was
sent, and the resulting TRYING meets ``probing_threshold`` = 1, so it is INACTIVE (skipped) by
T + interval + ping_timeout. A node that answers again becomes active on the
``inactive_threshold``-th successful ping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import algorithms
from .algorithms.base import Algorithm, CallLoads, SelectionKey, SetContext
from .destination import Destination
from .events import StateChanged
from .flags import DsFlag, is_skipped, parse_state, state_letters
from .loading import order_set, parse_list_file, parse_rows
from .probing import PingRequest, ProbingConfig, ProbingMode, requested_state, update_state
from .probing import wants_ping as _wants_ping


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One destination as ``dispatcher.list`` shows it."""

    setid: int
    """Set id."""
    uri: str
    """Destination URI."""
    flags: str
    """Two letters: A/I/D/T then P/N/X."""
    priority: int
    """Priority."""
    attrs: str
    """Attribute string (BODY)."""
    probing_count: int
    """Current failure/success counter."""
    load: int
    """Active calls counted for its duid (alg 10)."""
    latency: float | None
    """Round-trip of the last answered ping, seconds."""


@dataclass(slots=True)
class _Outstanding:
    setid: int
    uri: str
    sent_at: float
    timeout_at: float


class Dispatcher:
    """Kamailio-style dispatcher over one loaded destination list."""

    def __init__(
        self,
        destinations: Iterable[Destination],
        *,
        probing: ProbingConfig | None = None,
        seed: int = 0,
        hash_user_only: bool = False,
    ) -> None:
        """Build the sets.

        Args:
            destinations: in load order (file/row order); ordering is applied here.
            probing: keepalive parameters; None means ``ds_ping_interval`` 0 (no pings).
            seed: seeds the table shuffles (Kamailio ``kam_rand``) and ping from-tags.
            hash_user_only: modparam ``flags`` bit 1 for the URI hashes.
        """
        self.probing = probing
        self._rng = random.Random(seed)
        self._loads = CallLoads()
        by_set: dict[int, list[Destination]] = {}
        for dest in destinations:
            by_set.setdefault(dest.setid, []).append(dest)
        self._sets: dict[int, list[Destination]] = {}
        self._algs: dict[int, dict[int, Algorithm]] = {}
        for setid in sorted(by_set):
            entries = order_set(by_set[setid])
            self._sets[setid] = entries
            ctx = SetContext(setid, entries, self._rng, self._loads, hash_user_only)
            self._algs[setid] = {
                spec.number: spec.factory(ctx) for spec in algorithms.registered_algorithms()
            }
        self._count: dict[tuple[int, str], int] = {}
        self._latency: dict[tuple[int, str], float] = {}
        self._events: list[StateChanged] = []
        self._outstanding: dict[str, _Outstanding] = {}
        self._next_round: float | None = None
        self._tag_seq = 0

    @classmethod
    def from_list_file(
        cls,
        text: str,
        *,
        probing: ProbingConfig | None = None,
        seed: int = 0,
        hash_user_only: bool = False,
    ) -> Dispatcher:
        """From Kamailio list-file text (raises ``DispatcherConfigError``)."""
        return cls(parse_list_file(text), probing=probing, seed=seed, hash_user_only=hash_user_only)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Mapping[str, object]],
        *,
        probing: ProbingConfig | None = None,
        seed: int = 0,
        hash_user_only: bool = False,
    ) -> Dispatcher:
        """From ``dispatcher`` DB rows or router-config dicts (raises ``DispatcherConfigError``)."""
        return cls(parse_rows(rows), probing=probing, seed=seed, hash_user_only=hash_user_only)

    # -- inspection ------------------------------------------------------------------------

    def setids(self) -> list[int]:
        """Every set id, ascending."""
        return list(self._sets)

    def destinations(self, setid: int) -> list[Destination]:
        """Snapshot of a set in Kamailio order (empty for an unknown set)."""
        return list(self._sets.get(setid, ()))

    def is_active(self, setid: int, uri: str | None = None) -> bool:
        """``ds_is_active``: any usable destination in the set (or that one, if ``uri``)."""
        return any(
            not is_skipped(d.flags) and (uri is None or d.uri == uri)
            for d in self._sets.get(setid, ())
        )

    def status(self) -> list[StatusRow]:
        """Rows like RPC ``dispatcher.list``, by set then set order."""
        return [
            StatusRow(
                d.setid,
                d.uri,
                state_letters(d.flags),
                d.priority,
                d.attrs_body,
                self._count.get((d.setid, d.uri.lower()), 0),
                self._loads.load(d.duid) if d.duid else 0,
                self._latency.get((d.setid, d.uri.lower())),
            )
            for entries in self._sets.values()
            for d in entries
        ]

    def drain_events(self) -> list[StateChanged]:
        """Return and forget the queued ``StateChanged`` events."""
        events, self._events = self._events, []
        return events

    # -- selection -------------------------------------------------------------------------

    def select(
        self, setid: int, alg: int | str, key: SelectionKey, *, limit: int | None = None
    ) -> list[Destination]:
        """``ds_select_dst(setid, alg, limit)`` with failover (modparam ``flags=2``).

        Returns:
            The chosen destination first, then the failover order, at most ``limit`` entries
            (None or 0 = unlimited, as Kamailio treats 0); empty when the set is unknown or
            nothing is usable (``ds_select_dst`` returns false).

        Raises:
            ValueError: unknown algorithm.
        """
        spec = algorithms.get_algorithm(alg)
        entries = self._sets.get(setid)
        if not entries:
            return []
        algorithm = self._algs[setid][spec.number]
        raw = algorithm.first_index(key)
        if raw is None:
            return []
        n = len(entries)
        start = raw % n
        index = start
        while is_skipped(entries[index].flags):
            index = (index + 1) % n
            if index == start:
                return []
        algorithm.selected(index, key)
        cap = limit if limit else math.inf
        chosen = [entries[index]]
        for other in [*range(index + 1, n), *range(index)]:
            if len(chosen) >= cap:
                break
            if not is_skipped(entries[other].flags) and algorithm.failover_ok(other, key):
                chosen.append(entries[other])
        return chosen

    # -- call load (alg 10) ------------------------------------------------------------------

    def call_started(self, duid: str, *, call_id: str | None = None) -> None:
        """Count a call on ``duid``. ``select`` with alg 10 already does this for the chosen
        destination of an INVITE (``ds_load_add``); call it yourself only when moving a call
        to a failover destination (``ds_load_replace``: ``call_ended(old)`` + this)."""
        self._loads.started(duid, call_id)

    def call_ended(self, duid: str) -> None:
        """Uncount one call on ``duid`` (BYE, CANCEL, failed INVITE), never below 0."""
        self._loads.ended(duid)

    def call_ended_for(self, call_id: str) -> str | None:
        """``ds_load_unset``/``ds_load_update`` by Call-ID; returns the duid it was counted on."""
        return self._loads.ended_call(call_id)

    def load(self, duid: str) -> int:
        """Active calls counted on ``duid``."""
        return self._loads.load(duid)

    # -- state -----------------------------------------------------------------------------

    def _apply(
        self,
        setid: int,
        position: int,
        state: int,
        mode: int,
        reason: str,
        code: int | None,
        now: float,
    ) -> None:
        entries = self._sets[setid]
        dest = entries[position]
        key = (setid, dest.uri.lower())
        cfg = self.probing
        new, count = update_state(
            dest.flags,
            self._count.get(key, 0),
            state,
            mode=mode,
            probing_threshold=cfg.probing_threshold if cfg else 1,
            inactive_threshold=cfg.inactive_threshold if cfg else 1,
        )
        self._count[key] = count
        if new == dest.flags:
            return
        entries[position] = dest.with_flags(new)
        for algorithm in self._algs[setid].values():
            algorithm.state_changed(position, dest.flags, new)
        self._events.append(StateChanged(setid, dest.uri, dest.flags, new, reason, now, code))

    def _positions(self, uri: str, setid: int | None) -> list[tuple[int, int]]:
        # Kamailio compares URIs case-insensitively (strncasecmp) in ds_update_state.
        wanted = uri.strip().lower()
        return [
            (sid, pos)
            for sid, entries in self._sets.items()
            if setid is None or sid == setid
            for pos, dest in enumerate(entries)
            if dest.uri.lower() == wanted
        ]

    def mark(
        self, uri: str, state: str | None = None, *, now: float, setid: int | None = None
    ) -> int:
        """``ds_mark_dst(state)`` / ``ds_mark_addr(state, set, uri)`` for admin or failover.

        ``state`` is letters as in ``ds_parse_flags`` (``"i"``, ``"a"``, ``"t"``, ``"d"``, with
        ``"p"`` for probing, e.g. ``"ip"``); None is ``ds_mark_dst()`` without argument:
        inactive, plus probing in probing mode 1. Applied with ``ds_update_state`` mode 1, so
        ``"t"`` means inactive at once and ``"a"`` ignores ``inactive_threshold``.

        Returns:
            How many set entries matched (every set holding ``uri`` when ``setid`` is None).

        Raises:
            ValueError: bad state letters.
        """
        if state is None:
            flags = int(DsFlag.INACTIVE)
            if self.probing is not None and self.probing.probing_mode == ProbingMode.ALL:
                flags |= DsFlag.PROBING
        else:
            flags = parse_state(state)
        matches = self._positions(uri, setid)
        for sid, pos in matches:
            self._apply(sid, pos, flags, 1, f"mark {state or ''}".strip(), None, now)
        return len(matches)

    # -- keepalives ------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        for tag, ping in list(self._outstanding.items()):
            if ping.timeout_at <= now:
                self._result(tag, None, ping.timeout_at)

    def due_pings(self, now: float) -> list[PingRequest]:
        """Advance keepalives to ``now``: time out overdue pings (as tm's local 408), then
        return the pings of a round if one is due.

        The first call starts the round clock and is itself a round (Kamailio's timer first
        fires one interval after start-up; we ping at once so the lab learns states sooner).
        A new round pings even destinations with a ping still outstanding, as Kamailio does.
        """
        self._expire(now)
        cfg = self.probing
        if cfg is None or cfg.interval <= 0:
            return []
        if self._next_round is not None and now < self._next_round:
            return []
        nxt = now if self._next_round is None else self._next_round
        while nxt <= now:
            nxt += cfg.interval
        self._next_round = nxt
        pings: list[PingRequest] = []
        for entries in self._sets.values():
            for dest in entries:
                if not _wants_ping(dest.flags, cfg.probing_mode):
                    continue
                self._tag_seq += 1
                tag = f"ds{self._tag_seq}-{self._rng.getrandbits(16):04x}"
                timeout_at = now + cfg.ping_timeout
                self._outstanding[tag] = _Outstanding(dest.setid, dest.uri, now, timeout_at)
                pings.append(
                    PingRequest(dest, dest.ping_from or cfg.ping_from, tag, now, timeout_at)
                )
        return pings

    def next_deadline(self) -> float | None:
        """When ``due_pings`` next has work: a round or a ping timeout. ``-inf`` before the
        first ``due_pings`` call when probing is on (due now); None when nothing is pending."""
        cfg = self.probing
        candidates = [p.timeout_at for p in self._outstanding.values()]
        if cfg is not None and cfg.interval > 0:
            candidates.append(-math.inf if self._next_round is None else self._next_round)
        return min(candidates, default=None)

    def ping_result(
        self, destination_uri: str, status: int | None, now: float, *, from_tag: str | None = None
    ) -> bool:
        """Report the final reply to a ping (``status``) or its timeout (None, counted as 408).

        The ping is found by ``from_tag`` if given, else the oldest outstanding ping to
        ``destination_uri``. A result for no outstanding ping (for example a reply after our
        ``ping_timeout`` already counted it) is ignored: tm has finished that transaction.

        Returns:
            True when the result was applied to a ping we were waiting for.
        """
        if from_tag is None:
            wanted = destination_uri.strip().lower()
            waiting = [
                (p.sent_at, t) for t, p in self._outstanding.items() if p.uri.lower() == wanted
            ]
            if not waiting:
                return False
            from_tag = min(waiting)[1]
        ping = self._outstanding.get(from_tag)
        if ping is None or ping.uri.lower() != destination_uri.strip().lower():
            return False
        self._result(from_tag, status, now)
        return True

    def _result(self, tag: str, status: int | None, now: float) -> None:
        ping = self._outstanding.pop(tag)
        cfg = self.probing
        if cfg is None:
            return
        code = 408 if status is None else status
        success = cfg.is_success(code)
        for sid, pos in self._positions(ping.uri, ping.setid):
            if status is not None and 200 <= status <= 299:
                self._latency[(sid, ping.uri.lower())] = now - ping.sent_at
            state = requested_state(self._sets[sid][pos].flags, success, cfg.probing_mode)
            if state is None:
                continue
            reason = "ping timeout" if status is None else f"ping {status}"
            self._apply(sid, pos, state, 0, reason, code, now)
