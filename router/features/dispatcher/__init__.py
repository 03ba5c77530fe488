"""Kamailio-style dispatcher for the reference router (pure, synchronous, ``now`` passed in).

Modelled on kamailio/kamailio ``src/modules/dispatcher`` (``dispatch.c``/``dispatch.h``); see
``dispatcher.py`` for the theory of operation and docs/SIP-REFERENCE.md §1.
"""

from __future__ import annotations

from .algorithms import (
    Algorithm,
    AlgorithmBase,
    AlgorithmSpec,
    SelectionKey,
    get_algorithm,
    register_algorithm,
    registered_algorithms,
)
from .destination import Destination, DispatcherConfigError
from .dispatcher import Dispatcher, StatusRow
from .events import StateChanged
from .flags import DsFlag, is_skipped, parse_state, state_letters
from .hashing import ds_get_hash, hash_uri, uri_hash_keys
from .loading import order_set, parse_list_file, parse_rows
from .probing import PingRequest, ProbingConfig, ProbingMode, parse_reply_codes

__all__ = [
    "Algorithm",
    "AlgorithmBase",
    "AlgorithmSpec",
    "Destination",
    "Dispatcher",
    "DispatcherConfigError",
    "DsFlag",
    "PingRequest",
    "ProbingConfig",
    "ProbingMode",
    "SelectionKey",
    "StateChanged",
    "StatusRow",
    "ds_get_hash",
    "get_algorithm",
    "hash_uri",
    "is_skipped",
    "order_set",
    "parse_list_file",
    "parse_reply_codes",
    "parse_rows",
    "parse_state",
    "register_algorithm",
    "registered_algorithms",
    "state_letters",
    "uri_hash_keys",
]
