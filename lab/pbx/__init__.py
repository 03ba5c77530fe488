"""The Asterisk-node emulator: behaves on the wire like Asterisk 22 with PJSIP realtime.

Public API:

* ``PbxConfig`` / ``load_config`` (``config``): one node's TOML configuration;
* ``serve_pbx`` (``server``): run a node in-process under trio (``await nursery.start``);
* ``PbxCore`` (``core``): the sans-IO node, a ``router.transport.base.SipCore``;
* ``Dialplan`` / ``load_dialplan`` / ``DEFAULT_DIALPLAN`` (``dialplan``);
* ``PbxStore`` (``store``): the realtime reads and writes the node does;
* ``add_commands`` (``cli``): the ``siplab pbx`` subcommand.

See ``core`` for the theory of operation and docs/SIP-REFERENCE.md §4-§6 for the behaviour
being reproduced.
"""

from __future__ import annotations

from .config import CapacityConfig, PbxConfig, TimersConfig, load_config
from .core import PbxCore, PbxStatistics
from .dialplan import DEFAULT_DIALPLAN, Dialplan, Extension, load_dialplan
from .server import burn_cpu, serve_pbx
from .store import PbxStore

__all__ = [
    "DEFAULT_DIALPLAN",
    "CapacityConfig",
    "Dialplan",
    "Extension",
    "PbxConfig",
    "PbxCore",
    "PbxStatistics",
    "PbxStore",
    "TimersConfig",
    "burn_cpu",
    "load_config",
    "load_dialplan",
    "serve_pbx",
]
