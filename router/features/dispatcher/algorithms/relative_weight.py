"""Algorithm 11: relative weight (``rweight``).

Kamailio ``dp_init_relative_weights``: over the *usable* entries only (``ds_skip_dst``),
``current_slice = rweight * 100 / rw_sum`` slots each (integer division), in set order; "if the
array was not completely filled ... then use last address to fill the rest"; shuffle. So
rweights 1/2/1 give 25/50/25 slots, and with the third down 1/2 give 33/66 + 1 = 33/67/0.

The table is rebuilt when an entry with ``rweight > 0`` flips between usable and skipped
(``ds_reinit_rweight_on_state_change``). A set of fewer than two entries has no table (all
zeros -> index 0), and when every entry is down (``rw_sum == 0``) the old table is kept.
"""

from __future__ import annotations

from ..flags import is_skipped
from .base import AlgorithmBase, SelectionKey, SetContext, register_algorithm

TABLE_SIZE = 100


def relative_weight_table(rweights: list[int], usable: list[bool]) -> list[int] | None:
    """The unshuffled table, or None when the usable rweights sum to 0 (keep the old one)."""
    total = sum(w for w, ok in zip(rweights, usable, strict=True) if ok)
    if total == 0:
        return None
    table: list[int] = []
    for index, (weight, ok) in enumerate(zip(rweights, usable, strict=True)):
        if ok:
            table.extend([index] * (weight * TABLE_SIZE // total))
    fill = table[-1] if table else len(rweights) - 1
    table.extend([fill] * (TABLE_SIZE - len(table)))
    return table


@register_algorithm(11, "relative_weight")
class RelativeWeight(AlgorithmBase):
    """``ds_select_dst(set, "11")``."""

    def __init__(self, ctx: SetContext) -> None:
        super().__init__(ctx)
        self.table = [0] * TABLE_SIZE
        """Kamailio ``rwlist``."""
        self.position = 0
        """Kamailio ``rwlast`` (not reset when the table is rebuilt)."""
        self.rebuild()

    def rebuild(self) -> None:
        """``dp_init_relative_weights`` for the current states."""
        entries = self.ctx.entries
        if len(entries) < 2:
            return
        table = relative_weight_table(
            [dest.rweight for dest in entries], [not is_skipped(dest.flags) for dest in entries]
        )
        if table is not None:
            self.ctx.rng.shuffle(table)
            self.table = table

    def first_index(self, key: SelectionKey) -> int | None:
        """The next slot of the table."""
        index = self.table[self.position]
        self.position = (self.position + 1) % TABLE_SIZE
        return index

    def state_changed(self, index: int, old_flags: int, new_flags: int) -> None:
        """Rebuild when an entry with rweight flips usable <-> skipped."""
        if self.ctx.entries[index].rweight > 0 and is_skipped(old_flags) != is_skipped(new_flags):
            self.rebuild()
