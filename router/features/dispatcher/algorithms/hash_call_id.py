"""Algorithm 0: hash over the Call-ID.

Kamailio ``ds_hash_callid``: the Call-ID body, trimmed, hashed with ``ds_get_hash(&cid, NULL)``;
the set index is ``hash % n``, walking forward past inactive/disabled entries. All requests of a
call (and its retransmissions) land on the same node while the set does not change.
"""

from __future__ import annotations

from ..hashing import ds_get_hash
from .base import AlgorithmBase, SelectionKey, register_algorithm


@register_algorithm(0, "hash_call_id")
class HashCallId(AlgorithmBase):
    """``ds_select_dst(set, "0")``."""

    def first_index(self, key: SelectionKey) -> int | None:
        """Hash of the trimmed Call-ID; None ("can't get callid hash") without one."""
        if key.call_id is None:
            return None
        return ds_get_hash(key.call_id.strip())
