"""OPTIONS keepalives and destination state transitions (Kamailio ``ds_update_state``).

Parameters mirror the modparams: ``ds_ping_interval`` (``interval``; 0 = no pinging),
``ds_ping_fr_timer`` (``ping_timeout``: when the OPTIONS transaction gives up with a local 408),
``ds_probing_threshold``, ``ds_inactive_threshold``, ``ds_probing_mode``, ``ds_ping_reply_codes``
and ``ds_ping_from``.

Which entries are pinged each interval (``ds_ping_set`` + ``ds_ping_result_helper``): never
DISABLED, NOPING or NODNSARES ones; then mode 1 (``DS_PROBE_ALL``) pings all, modes 0 and 3 ping
entries with the PROBING flag, mode 2 (``DS_PROBE_INACTIVE``) only INACTIVE+PROBING ones.

What a reply does (``ds_options_callback``): in mode 3 (``DS_PROBE_ONLYFLAGGED``) a reply for an
entry that lost its PROBING flag meanwhile is ignored; a DISABLED entry is never touched.
Success (2xx, or a code/class in ``reply_codes``) requests state 0, keeping PROBING in mode 1
and (if set) in mode 3; anything else, including the local 408 of a timeout, requests TRYING,
plus PROBING unless mode 0. Note mode 0 therefore clears PROBING after any reply: one-shot.

``ds_update_state(state, mode)`` then applies the request (``update_state`` below).
"""

from __future__ import annotations

from dataclasses import dataclass

from .destination import Destination
from .flags import STATES_ALL, DsFlag


class ProbingMode:
    """``ds_probing_mode`` values (dispatch.h ``DS_PROBE_*``)."""

    NONE = 0
    ALL = 1
    INACTIVE = 2
    ONLYFLAGGED = 3


@dataclass(frozen=True, slots=True)
class ProbingConfig:
    """Keepalive parameters (Kamailio defaults where Kamailio has one)."""

    interval: float
    """Seconds between ping rounds (``ds_ping_interval``); 0 disables pinging."""
    ping_timeout: float
    """Seconds before an unanswered ping counts as a 408 (``ds_ping_fr_timer``/tm fr_timer)."""
    probing_threshold: int = 1
    """Failed pings before TRYING becomes INACTIVE."""
    inactive_threshold: int = 1
    """Successful pings before INACTIVE becomes active again."""
    probing_mode: int = ProbingMode.NONE
    """0..3, see the module docstring."""
    reply_codes: tuple[int, ...] = ()
    """Extra replies counted as success besides 2xx: a value < 10 is a class, else a code."""
    ping_from: str = "sip:dispatcher@localhost"
    """From URI of the pings (``ds_ping_from``), unless the entry has ``ping_from``."""

    def __post_init__(self) -> None:
        if self.interval < 0 or self.ping_timeout <= 0:
            raise ValueError("interval must be >= 0 and ping_timeout > 0")
        if self.probing_threshold < 1 or self.inactive_threshold < 1:
            raise ValueError("thresholds must be >= 1")
        if self.probing_mode not in (0, 1, 2, 3):
            raise ValueError(f"probing_mode {self.probing_mode} not in 0..3")

    def is_success(self, code: int) -> bool:
        """``(code >= 200 && code <= 299) || ds_ping_check_rplcode(code)``."""
        if 200 <= code <= 299:
            return True
        return any(c == code if c >= 10 else c == code // 100 for c in self.reply_codes)


def parse_reply_codes(text: str) -> tuple[int, ...]:
    """Parse ``ds_ping_reply_codes`` text such as ``"class=2;code=403;code=488"``.

    Raises:
        ValueError: anything but ``class=<1..6>`` / ``code=<100..699>`` items.
    """
    out: list[int] = []
    for item in filter(None, (piece.strip() for piece in text.split(";"))):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if not value.strip().isdigit():
            raise ValueError(f"bad reply code item {item!r}")
        number = int(value)
        valid_class = name == "class" and 1 <= number <= 6
        if not (valid_class or (name == "code" and 100 <= number <= 699)):
            raise ValueError(f"bad reply code item {item!r}")
        out.append(number)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PingRequest:
    """An OPTIONS the driver must send: R-URI = To = ``destination.uri``."""

    destination: Destination
    """Whom to ping (its set is ``destination.setid``)."""
    from_uri: str
    """From URI: the entry's ``ping_from`` attribute or ``ProbingConfig.ping_from``."""
    from_tag: str
    """From tag; unique, and the key to report the result with."""
    sent_at: float
    """When the ping was issued."""
    timeout_at: float
    """When it counts as a 408 if unanswered."""


def wants_ping(flags: int, mode: int) -> bool:
    """``ds_ping_set`` filters then ``ds_ping_result_helper``."""
    if flags & (DsFlag.DISABLED | DsFlag.NOPING | DsFlag.NODNSARES):
        return False
    if mode == ProbingMode.ALL:
        return True
    if mode != ProbingMode.INACTIVE:
        return bool(flags & DsFlag.PROBING)
    return bool(flags & DsFlag.PROBING and flags & DsFlag.INACTIVE)


def requested_state(flags: int, success: bool, mode: int) -> int | None:
    """``ds_options_callback``: the state to request for a reply, or None to ignore it."""
    if mode == ProbingMode.ONLYFLAGGED and not flags & DsFlag.PROBING:
        return None
    if flags & DsFlag.DISABLED:
        return None
    if success:
        keep = mode == ProbingMode.ALL or (
            mode == ProbingMode.ONLYFLAGGED and bool(flags & DsFlag.PROBING)
        )
        return int(DsFlag.PROBING) if keep else 0
    state = int(DsFlag.TRYING)
    if mode != ProbingMode.NONE:
        state |= DsFlag.PROBING
    return state


def update_state(
    old: int, count: int, state: int, *, mode: int, probing_threshold: int, inactive_threshold: int
) -> tuple[int, int]:
    """``ds_update_state``: apply a requested ``state`` to flags ``old`` with ``probing_count``.

    ``mode`` is the function's own argument, not the probing mode: 0 from ping replies, 1 from
    ``ds_mark_dst``/``ds_mark_addr`` (a TRYING mark goes straight to INACTIVE, an active mark
    ignores ``inactive_threshold``). Returns ``(new_flags, new_probing_count)``.

    All state bits (``DS_STATES_ALL`` = 63, NOPING and NODNSARES included) are replaced: that is
    Kamailio's behaviour and why a marked entry loses NOPING.
    """
    flags = old & ~STATES_ALL
    init_state = state
    if state & DsFlag.TRYING and old & DsFlag.INACTIVE:
        # "old state is inactive, new state is trying => keep it inactive
        #  - it has to go first to active state and then to trying"
        state = (state & ~DsFlag.TRYING) | DsFlag.INACTIVE
    flags |= DsFlag.DISABLED if state & DsFlag.DISABLED else state
    if state & DsFlag.TRYING:
        # "Destination is not replying.. Increasing failure counter"
        count += 1
        if mode == 1 or count >= probing_threshold:
            # "Destination has too many lost messages.. Bringing it to inactive state"
            flags = (flags & ~DsFlag.TRYING) | DsFlag.INACTIVE
            count = 0
    elif not init_state & DsFlag.TRYING and old & DsFlag.INACTIVE:
        # "Destination was inactive but it is just replying.. Increasing successful counter"
        count += 1
        if mode == 0 and count < inactive_threshold:
            flags |= DsFlag.INACTIVE
            if old & DsFlag.PROBING:
                flags |= DsFlag.PROBING
        else:
            count = 0
    else:
        count = 0
    return flags, count
