"""RFC 3261 §17 transactions (with RFC 6026's Accepted state) and the layer that owns them.

One module per machine (``client_invite``, ``client_non_invite``, ``server_invite``,
``server_non_invite``), each with its ``TRANSITIONS`` table; ``layer`` matches messages to
transactions and runs their timers; ``events`` are the outputs; ``timers`` derives A-M from
T1, T2, T4.
"""

from router.sip.transaction.base import (
    ClientTransaction,
    ServerTransaction,
    Transaction,
    TransactionCounters,
    TransactionStateError,
)
from router.sip.transaction.client_invite import (
    ClientInviteInput,
    ClientInviteState,
    ClientInviteTransaction,
    build_non2xx_ack,
)
from router.sip.transaction.client_non_invite import (
    ClientNonInviteInput,
    ClientNonInviteState,
    ClientNonInviteTransaction,
)
from router.sip.transaction.events import (
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    Send,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from router.sip.transaction.layer import (
    MAGIC_COOKIE,
    TransactionLayer,
    TransactionStatistics,
    server_key,
)
from router.sip.transaction.server_invite import (
    ServerInviteInput,
    ServerInviteState,
    ServerInviteTransaction,
)
from router.sip.transaction.server_non_invite import (
    ServerNonInviteInput,
    ServerNonInviteState,
    ServerNonInviteTransaction,
)
from router.sip.transaction.timers import DEFAULT_TIMERS, Timer, Timers

__all__ = [
    "DEFAULT_TIMERS",
    "MAGIC_COOKIE",
    "CancelReceived",
    "ClientInviteInput",
    "ClientInviteState",
    "ClientInviteTransaction",
    "ClientNonInviteInput",
    "ClientNonInviteState",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "Send",
    "ServerInviteInput",
    "ServerInviteState",
    "ServerInviteTransaction",
    "ServerNonInviteInput",
    "ServerNonInviteState",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "Timer",
    "Timers",
    "Transaction",
    "TransactionCounters",
    "TransactionLayer",
    "TransactionStateError",
    "TransactionStatistics",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportError",
    "build_non2xx_ack",
    "server_key",
]
