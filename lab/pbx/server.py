"""Run an emulator node on real sockets: the trio ``SipDriver`` around a :class:`PbxCore`.

``serve_pbx`` is the in-process API (tests, the local lab backend); ``siplab pbx`` runs the
same function under ``trio.run``.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from router.observe import EventLog
from router.transport.driver import SipDriver

from .config import PbxConfig
from .core import PbxCore
from .dialplan import DEFAULT_DIALPLAN, Dialplan, load_dialplan
from .store import PbxStore


def burn_cpu(milliseconds: float) -> None:
    """Spend ``milliseconds`` of CPU in a busy loop (the per-call processing cost).

    A sleep would not do: the point is that a node with a cost of 5 ms per call saturates one
    core at 200 calls/s, as a real Asterisk saturates on SIP and channel setup.
    """
    end = time.perf_counter() + milliseconds / 1000.0
    while time.perf_counter() < end:
        pass


async def serve_pbx(
    config: PbxConfig,
    *,
    store: PbxStore | None = None,
    dialplan: Dialplan | None = None,
    log: EventLog | None = None,
    task_status: trio.TaskStatus[PbxCore] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind the node's sockets, report the running core, then serve until cancelled.

    Args:
        store: an open store (default: open ``config.db``; closed on exit when opened here).
        dialplan: default: ``config.dialplan`` if set, else the built-in dialplan.
        log: default: ``config.events`` (or no file).

    Raises:
        ConfigError: the dialplan file is invalid.
        RealtimeError: the DB cannot be opened.
        OSError: the address cannot be bound.
    """
    own_store = store is None
    if store is None:
        store = PbxStore.open(config.db)
    if dialplan is None:
        dialplan = load_dialplan(config.dialplan) if config.dialplan else DEFAULT_DIALPLAN
    own_log = log is None
    if log is None:
        log = EventLog(
            Path(config.events) if config.events else None, config.name, raw=config.raw_events
        )
    if config.queue_mode == "shared":
        store.release_node(config.name, now_epoch=time.time())
    core = PbxCore(
        config,
        store,
        dialplan=dialplan,
        log=log,
        wall_offset=time.time() - trio.current_time(),
        spend_cpu=burn_cpu,
    )
    driver = SipDriver(
        core,
        udp=[(config.listen, config.port)],
        tcp=[(config.listen, config.port)] if config.tcp else None,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.serve)
            core.local = driver.bound_udp[0]
            log.event(
                "node_started",
                address=f"{core.local[0]}:{core.local[1]}",
                queue_mode=config.queue_mode,
            )
            task_status.started(core)
    finally:
        if own_log:
            log.close()
        else:
            log.flush()
        if own_store:
            store.close()
