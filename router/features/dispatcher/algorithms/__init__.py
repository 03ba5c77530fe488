"""Dispatcher algorithms, one module each, registered by Kamailio number and by name.

Importing this package imports every algorithm module, which registers it. To add one: write a
module with an ``@register_algorithm(number, name)`` class and import it below.
"""

from __future__ import annotations

from . import (
    call_load,
    hash_call_id,
    hash_from_uri,
    hash_request_uri,
    hash_to_uri,
    relative_weight,
    round_robin,
    serial,
    weight,
)
from .base import (
    Algorithm,
    AlgorithmBase,
    AlgorithmFactory,
    AlgorithmSpec,
    CallLoads,
    SelectionKey,
    SetContext,
    get_algorithm,
    register_algorithm,
    registered_algorithms,
)

__all__ = [
    "Algorithm",
    "AlgorithmBase",
    "AlgorithmFactory",
    "AlgorithmSpec",
    "CallLoads",
    "SelectionKey",
    "SetContext",
    "call_load",
    "get_algorithm",
    "hash_call_id",
    "hash_from_uri",
    "hash_request_uri",
    "hash_to_uri",
    "register_algorithm",
    "registered_algorithms",
    "relative_weight",
    "round_robin",
    "serial",
    "weight",
]
