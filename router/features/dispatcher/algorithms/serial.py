"""Algorithm 8: serial (priority order).

Kamailio: ``case DS_ALG_SERIAL: /* 8 - use always first entry */ hash = 0;``. With the set
sorted by priority descending this is "highest priority first"; the skip walk then finds the
first usable entry and the failover list is the rest in set order.
"""

from __future__ import annotations

from .base import AlgorithmBase, SelectionKey, register_algorithm


@register_algorithm(8, "serial")
class Serial(AlgorithmBase):
    """``ds_select_dst(set, "8")``."""

    def first_index(self, key: SelectionKey) -> int | None:
        """Always index 0."""
        return 0
