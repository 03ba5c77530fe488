"""Algorithm 10: call load (least active calls, by ``duid``).

Kamailio ``ds_manage_routes``::

    case DS_ALG_CALLLOAD: /* 10 - call load based distribution */
        /* only INVITE can start a call */
        if(msg->first_line.u.request.method_value != METHOD_INVITE) {
            /* use first entry */
            hash = 0; rstate->alg = 0; break;
        }
        ...
        i = ds_get_leastloaded(idx);
        if(i < 0) { /* no address selected */ return -1; }
        hash = i;
        if(ds_load_add(msg, idx, rstate->setid, hash) < 0) { ... rstate->alg = 0; }

``ds_get_leastloaded`` takes the first usable entry with the strictly lowest load among those
below their ``maxload`` (0 = unlimited). ``ds_load_add`` counts the call at selection time,
keyed by Call-ID; ``ds_load_update``/``ds_load_unset`` (BYE, CANCEL, failure) uncount it, which
here is ``Dispatcher.call_ended`` / ``call_ended_for``. Failover entries at their ``maxload``
are left out of the list (``ds_manage_routes_fill_xavp``).
"""

from __future__ import annotations

from ..flags import is_skipped
from .base import AlgorithmBase, SelectionKey, register_algorithm


@register_algorithm(10, "call_load")
class CallLoad(AlgorithmBase):
    """``ds_select_dst(set, "10")`` (needs ``duid`` attrs)."""

    def _load(self, index: int) -> int:
        duid = self.ctx.entries[index].duid
        return self.ctx.loads.load(duid) if duid is not None else 0

    def _full(self, index: int) -> bool:
        maxload = self.ctx.entries[index].maxload
        return maxload != 0 and self._load(index) >= maxload

    def first_index(self, key: SelectionKey) -> int | None:
        """Least-loaded usable entry for INVITE, index 0 otherwise; None if all are full."""
        if key.method.upper() != "INVITE":
            return 0
        best: int | None = None
        best_load = 0
        for index, dest in enumerate(self.ctx.entries):
            if is_skipped(dest.flags) or self._full(index):
                continue
            load = self._load(index)
            if best is None or load < best_load:
                best, best_load = index, load
        return best

    def selected(self, index: int, key: SelectionKey) -> None:
        """``ds_load_add``: count the call on the chosen duid (INVITE only)."""
        duid = self.ctx.entries[index].duid
        if key.method.upper() == "INVITE" and duid is not None:
            self.ctx.loads.started(duid, key.call_id)

    def failover_ok(self, index: int, key: SelectionKey) -> bool:
        """Full entries are not offered as failover (INVITE only; other methods act as alg 0)."""
        return key.method.upper() != "INVITE" or not self._full(index)
