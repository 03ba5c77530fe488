"""The trio UA: SIP phones for scenario steps (`ua`), storm mode (`storm`), results (`results`).

Built on the router's sans-IO core and its trio driver, so the UA speaks the same SIP as the
router and the emulator. See ``lab/ua/ua.py`` for the API.
"""

from __future__ import annotations

from .calls import Call, Incoming
from .results import LoggedMessage, RegisterResult, StormProgress, StormResult, UaStatistics
from .ua import AutoAnswer, UserAgent, open_ua

__all__ = [
    "AutoAnswer",
    "Call",
    "Incoming",
    "LoggedMessage",
    "RegisterResult",
    "StormProgress",
    "StormResult",
    "UaStatistics",
    "UserAgent",
    "open_ua",
]
