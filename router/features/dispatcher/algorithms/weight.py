"""Algorithm 9: weight-based distribution.

Kamailio ``dp_init_weights`` (run once when the set is loaded): "fill the array of 0..99
elements where to keep the index of the destination address to be used. The Nth call will use
the address with the index at position N%100". Each destination gets ``weight`` slots in set
order; "if the sum of weights is more than 100, the addresses over the limit are ignored"; "if
the array was not completely filled (i.e., the sum of weights is less than 100), then use last
address to fill the rest"; the array is then shuffled. If the first entry of the set has no
weight, no table is built ("first address must have weight!=0") and the zeroed array sends
everything to index 0.

The table is not rebuilt on state changes: a down destination's slots fall through the skip
walk to the next usable entry.
"""

from __future__ import annotations

from .base import AlgorithmBase, SelectionKey, SetContext, register_algorithm

TABLE_SIZE = 100


def weight_table(weights: list[int]) -> list[int]:
    """The unshuffled 100-slot table for these weights (set order)."""
    if not weights or weights[0] == 0:
        return [0] * TABLE_SIZE
    table: list[int] = []
    for index, weight in enumerate(weights):
        take = min(weight, TABLE_SIZE - len(table))
        table.extend([index] * take)
    table.extend([len(weights) - 1] * (TABLE_SIZE - len(table)))
    return table


@register_algorithm(9, "weight")
class Weight(AlgorithmBase):
    """``ds_select_dst(set, "9")``."""

    def __init__(self, ctx: SetContext) -> None:
        super().__init__(ctx)
        self.table = weight_table([dest.weight for dest in ctx.entries])
        """Kamailio ``wlist``."""
        if ctx.entries and ctx.entries[0].weight:
            ctx.rng.shuffle(self.table)
        self.position = 0
        """Kamailio ``wlast``."""

    def first_index(self, key: SelectionKey) -> int | None:
        """The next slot of the table."""
        index = self.table[self.position]
        self.position = (self.position + 1) % TABLE_SIZE
        return index
