"""The realtime DB shared by the router, the emulator nodes, Asterisk and Kamailio.

``connect(url)`` opens SQLite (embedded default) or PostgreSQL; ``schema`` holds the DDL of
Asterisk's, Kamailio's and siplab's tables in one place; ``Database`` is the typed store.
"""

from __future__ import annotations

from router.realtime.engine import RealtimeError
from router.realtime.provision import write_sipp_csv
from router.realtime.records import (
    AorRow,
    AuthRow,
    Binding,
    ContactRow,
    DispatcherRow,
    MemberState,
    QueueMemberRow,
    QueueRow,
    UserCredential,
    UserRow,
)
from router.realtime.store import Database, connect

__all__ = [
    "AorRow",
    "AuthRow",
    "Binding",
    "ContactRow",
    "Database",
    "DispatcherRow",
    "MemberState",
    "QueueMemberRow",
    "QueueRow",
    "RealtimeError",
    "UserCredential",
    "UserRow",
    "connect",
    "write_sipp_csv",
]
