"""Events the dispatcher queues for its owner (drained with ``Dispatcher.drain_events``)."""

from __future__ import annotations

from dataclasses import dataclass

from .flags import is_skipped, state_letters


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A destination's flags changed (Kamailio runs ``dispatcher:dst-down``/``dst-up`` when
    the skip status flips; we report every change and say whether it flipped)."""

    setid: int
    """Set of the destination."""
    uri: str
    """Destination URI."""
    old: int
    """Flags before."""
    new: int
    """Flags after."""
    reason: str
    """Why: ``"ping 200"``, ``"ping timeout"``, ``"mark"`` ..."""
    t: float
    """When (the ``now`` of the call that caused it)."""
    code: int | None = None
    """SIP status behind it (408 for a ping timeout), None for admin marks."""

    @property
    def went_down(self) -> bool:
        """``dispatcher:dst-down``: usable before, skipped now."""
        return not is_skipped(self.old) and is_skipped(self.new)

    @property
    def went_up(self) -> bool:
        """``dispatcher:dst-up``: skipped before, usable now."""
        return is_skipped(self.old) and not is_skipped(self.new)

    def __str__(self) -> str:
        return (
            f"set {self.setid} {self.uri}: {state_letters(self.old)} -> "
            f"{state_letters(self.new)} ({self.reason})"
        )
