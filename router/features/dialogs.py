"""Which calls are up: a light dialog tracker for a record-routing proxy.

A stateful proxy does not need dialog state to route (the route set does that), but operators
want to see how many calls are established, and the call-load dispatcher algorithm (Kamailio
alg 10, ``ds_load_*``) must learn when a call ends. Kamailio's ``dialog`` module does this; here
a call counts as up from the first 2xx to its INVITE until a BYE for it passes, and is forgotten
after ``max_lifetime`` even if the BYE never came (a lost BYE must not leak an entry forever).

Synchronous, takes ``now``; keyed by Call-ID (one dialog per call in the lab's flows: a forked
INVITE that gets two 2xx counts once).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class TrackedDialog:
    call_id: str
    destination: str
    """Dispatcher destination (or next hop) the call went to."""
    started: float


class DialogTracker:
    def __init__(self, max_lifetime: float = 7200.0) -> None:
        self.max_lifetime = max_lifetime
        self._dialogs: OrderedDict[str, TrackedDialog] = OrderedDict()
        self.confirmed_total = 0
        self.ended_total = 0
        self.expired_total = 0

    def __len__(self) -> int:
        return len(self._dialogs)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._dialogs

    def confirmed(self, call_id: str, destination: str, now: float) -> bool:
        """A 2xx to the INVITE passed: the call is up. False if it already was."""
        self.prune(now)
        if call_id in self._dialogs:
            return False
        self._dialogs[call_id] = TrackedDialog(call_id, destination, now)
        self.confirmed_total += 1
        return True

    def ended(self, call_id: str) -> TrackedDialog | None:
        """A BYE passed: the call is over (None if it was not known as up)."""
        dialog = self._dialogs.pop(call_id, None)
        if dialog is not None:
            self.ended_total += 1
        return dialog

    def prune(self, now: float) -> list[TrackedDialog]:
        """Forget calls older than ``max_lifetime`` (oldest first; insertion order is age)."""
        gone = []
        while self._dialogs:
            oldest = next(iter(self._dialogs.values()))
            if now - oldest.started < self.max_lifetime:
                break
            self._dialogs.popitem(last=False)
            gone.append(oldest)
        self.expired_total += len(gone)
        return gone

    def per_destination(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self._dialogs.values():
            counts[d.destination] = counts.get(d.destination, 0) + 1
        return counts
