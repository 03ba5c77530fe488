"""Algorithm 4: round robin.

Kamailio ``ds_manage_routes``::

    case DS_ALG_ROUNDROBIN: /* 4 - round robin */
        hash = idx->last;
        idx->last = (idx->last + 1) % idx->nr;
    ...
    /* update last field for next select to point after the current active used,
     * if not updated meanwhile */
    if(ulast && (vlast == idx->last)) idx->last = (hash + 1) % idx->nr;

The counter starts at 0 (index 0 is the highest priority, so the first call goes to the
highest-priority entry) and is per set. After a skip the counter moves to just after the entry
actually used, so a dead node's turn is not followed by a second call to its successor. We are
single-threaded, so "not updated meanwhile" always holds.
"""

from __future__ import annotations

from .base import AlgorithmBase, SelectionKey, SetContext, register_algorithm


@register_algorithm(4, "round_robin")
class RoundRobin(AlgorithmBase):
    """``ds_select_dst(set, "4")``."""

    def __init__(self, ctx: SetContext) -> None:
        super().__init__(ctx)
        self.last = 0
        """Kamailio ``ds_set_t.last``: next index to hand out."""

    def first_index(self, key: SelectionKey) -> int | None:
        """The counter; advances it by one."""
        n = len(self.ctx.entries)
        if n == 0:
            return None
        index = self.last % n
        self.last = (index + 1) % n
        return index

    def selected(self, index: int, key: SelectionKey) -> None:
        """Point the counter just after the entry used (matters after a skip)."""
        self.last = (index + 1) % len(self.ctx.entries)
