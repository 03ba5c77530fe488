"""Lab backends: how a topology becomes running nodes.

A backend is anything that satisfies :class:`Backend`; backends register by name in an explicit
registry (STYLE §12: no discovery by module or attribute names). ``local`` runs every node as a
process on its own 127.0.0.x address; ``docker`` (containers with host networking) registers
itself the same way when it lands.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from lab.labfile import LabFile, NodeRecord
from lab.topology import Topology


class LabError(RuntimeError):
    """The lab could not be brought up or acted on; the message names the node and its log."""


class NodeState(Enum):
    UP = "up"
    PAUSED = "paused"
    DOWN = "down"


class Backend(Protocol):
    """What the lab CLI and the pytest plugin need from a backend."""

    name: str

    def up(self, topology: Topology, run_dir: Path, *, db_url: str | None = None) -> LabFile:
        """Provision the DB, start every node in dependency order, wait until each answers
        an OPTIONS with 200, write ``lab.json``; on failure stop what was started.

        Raises:
            LabError: naming the node that did not come up and its log.
        """
        ...

    def down(self, lab: LabFile) -> LabFile:
        """Stop every node (reverse order), merge the events; nothing is left running."""
        ...

    def kill(self, lab: LabFile, node: str) -> LabFile:
        """SIGKILL the node (a crash)."""
        ...

    def pause(self, lab: LabFile, node: str) -> LabFile:
        """Freeze the node (SIGSTOP): sockets stay bound, nothing answers."""
        ...

    def resume(self, lab: LabFile, node: str) -> LabFile:
        """Thaw a paused node (SIGCONT)."""
        ...

    def restart(self, lab: LabFile, node: str) -> LabFile:
        """Stop the node if running and start it again with the same command; wait ready."""
        ...

    def node_state(self, node: NodeRecord) -> NodeState:
        """Up, paused or down, from the operating system's view."""
        ...


BackendFactory = Callable[..., Backend]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory(**options)`` available as backend ``name``."""
    if name in _BACKENDS and _BACKENDS[name] is not factory:
        raise ValueError(f"backend {name!r} is already registered")
    _BACKENDS[name] = factory


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str, **options: Any) -> Backend:
    """A new backend instance.

    Raises:
        LabError: unknown backend (the message lists the known ones).
    """
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise LabError(
            f"unknown lab backend {name!r} (known: {', '.join(backend_names())})"
        ) from None
    return factory(**options)


def _swarm_backend(**options: Any) -> Backend:
    # Imported on use: lab.docker.swarm imports this package (LabError), so importing it
    # first must not come back here for a half-initialised module.
    from lab.docker.swarm import SwarmBackend

    return SwarmBackend(**options)


def _register_builtin() -> None:
    from lab.backends.local import LocalBackend
    from lab.backends.netns import NetnsBackend
    from lab.docker.backend import DockerBackend  # imports the Docker SDK lazily

    register_backend("local", LocalBackend)
    register_backend("docker", DockerBackend)
    register_backend("netns", NetnsBackend)
    register_backend("swarm", _swarm_backend)


_register_builtin()

__all__ = [
    "Backend",
    "LabError",
    "NodeState",
    "backend_names",
    "get_backend",
    "register_backend",
]
