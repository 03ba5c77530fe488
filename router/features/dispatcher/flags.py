"""Destination flag bits and their letters, as Kamailio's dispatcher defines them.

From ``dispatch.h`` (kamailio/kamailio, src/modules/dispatcher)::

    #define DS_INACTIVE_DST   1  /*!< inactive destination */
    #define DS_TRYING_DST     2  /*!< temporary trying destination */
    #define DS_DISABLED_DST   4  /*!< admin disabled destination */
    #define DS_PROBING_DST    8  /*!< checking destination */
    #define DS_NODNSARES_DST 16  /*!< no DNS A/AAAA resolve for host in uri */
    #define DS_NOPING_DST    32  /*!< no ping to destination */
    #define DS_STATES_ALL    63  /*!< all bits for the states of destination */
    #define ds_skip_dst(flags) ((flags) & (DS_INACTIVE_DST|DS_DISABLED_DST))

Only INACTIVE and DISABLED take a destination out of selection; TRYING and PROBING
destinations are still chosen.
"""

from __future__ import annotations

import enum


class DsFlag(enum.IntFlag):
    """One bit of a destination's ``flags`` (Kamailio numbering)."""

    INACTIVE = 1
    TRYING = 2
    DISABLED = 4
    PROBING = 8
    NODNSARES = 16
    NOPING = 32


STATES_ALL = 63
"""``DS_STATES_ALL``: ``ds_update_state`` clears all of these bits before setting the new state."""

SKIP_MASK = DsFlag.INACTIVE | DsFlag.DISABLED


def is_skipped(flags: int) -> bool:
    """``ds_skip_dst``: True when selection must pass over a destination with these flags."""
    return bool(flags & SKIP_MASK)


def state_letters(flags: int) -> str:
    """The two letters ``dispatcher.list`` prints (``ds_rpc_print_set``).

    First letter: ``I`` inactive, else ``D`` disabled, else ``T`` trying, else ``A`` active
    (this precedence is the RPC's; INACTIVE wins over DISABLED). Second letter: ``P`` probing,
    else ``N`` no-ping, else ``X``.
    """
    if flags & DsFlag.INACTIVE:
        first = "I"
    elif flags & DsFlag.DISABLED:
        first = "D"
    elif flags & DsFlag.TRYING:
        first = "T"
    else:
        first = "A"
    if flags & DsFlag.PROBING:
        second = "P"
    elif flags & DsFlag.NOPING:
        second = "N"
    else:
        second = "X"
    return first + second


_LETTERS = {
    "i": DsFlag.INACTIVE,
    "d": DsFlag.DISABLED,
    "t": DsFlag.TRYING,
    "p": DsFlag.PROBING,
}


def parse_state(text: str) -> int:
    """``ds_parse_flags``: state letters as given to ``ds_mark_dst`` / ``dispatcher.set_state``.

    ``a`` clears every state bit gathered so far, ``i``/``d``/``t``/``p`` add INACTIVE,
    DISABLED, TRYING, PROBING (case-insensitive), so ``"ip"`` is inactive+probing.

    Raises:
        ValueError: an empty string or any other letter.
    """
    if not text:
        raise ValueError("empty dispatcher state")
    flags = 0
    for ch in text.lower():
        if ch == "a":
            flags &= ~STATES_ALL
        elif ch in _LETTERS:
            flags |= _LETTERS[ch]
        else:
            raise ValueError(f"bad dispatcher state letter {ch!r} in {text!r}")
    return flags
