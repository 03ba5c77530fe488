"""``lab.json``: what is running, written by ``lab up`` and read by every other lab command.

The file is the contract between the lab and whatever drives it (traffic engines, the pytest
plugin, reports): every node's name, role, address and pid (or container id), the DB URL, the
users CSV and the merged events file. It is rewritten atomically (write + rename) so a reader
never sees half a file.

Example::

    {"version": 1, "backend": "local", "run_dir": "runs/lab", "db": "sqlite:///runs/lab/realtime.db",
     "users_csv": "runs/lab/users.csv", "events": "runs/lab/events.jsonl",
     "nodes": [{"name": "router", "role": "router", "host": "127.0.0.10", "port": 5060,
                "pid": 4242, "argv": [...], "log": "runs/lab/logs/router.log", ...}, ...]}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

LABFILE_VERSION = 1
DEFAULT_RUN_DIR = Path("runs/lab")

Role = Literal["router", "pbx", "db", "proxy"]


class LabFileError(RuntimeError):
    """lab.json is missing or unreadable (no lab running there)."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    role: Role
    host: str
    port: int
    pid: int | None = None
    container: str | None = None
    kind: str = ""
    """emulator / sipp / reference / kamailio / sqlite / relay ..."""
    argv: list[str] = field(default_factory=list)
    """Command line, so ``lab restart`` starts the same thing."""
    cwd: str = ""
    log: str = ""
    events: str = ""
    http: str = ""
    """``IP:PORT`` of the node's HTTP status endpoint, if any."""
    link: str = ""
    """For a fault relay: the link it sits on (``router-pbx1``)."""
    upstream: str = ""
    """For a fault relay: ``IP:PORT`` it forwards to."""
    rules: str = ""
    """For a fault relay: the JSON rules file it watches."""
    version: str = ""
    """The node's software as it reports itself (real Asterisk: ``asterisk -V``)."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LabFile:
    run_dir: str
    backend: str
    db: str
    users_csv: str
    events: str
    nodes: list[NodeRecord] = field(default_factory=list)
    topology: str = ""
    version: int = LABFILE_VERSION
    network: dict[str, Any] = field(default_factory=dict)
    """Empty on loopback; in netns mode (``lab/netns.py``): ``mode``, ``bridge`` (capture
    there, not on ``lo``), ``host_ns``, ``subnet``, ``namespaces`` (node -> namespace),
    ``links`` (node -> impairment now in force)."""

    def node(self, name: str) -> NodeRecord:
        """The node called ``name``.

        Raises:
            KeyError: with the names that exist.
        """
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in this lab (nodes: {', '.join(self.names())})")

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def with_node(self, record: NodeRecord) -> LabFile:
        """A copy with the node of the same name replaced (or appended)."""
        nodes = [record if n.name == record.name else n for n in self.nodes]
        if record.name not in self.names():
            nodes.append(record)
        return replace(self, nodes=nodes)

    def addresses(self) -> dict[str, str]:
        """``"ip:port" -> node name`` for every node with an address."""
        return {n.address: n.name for n in self.nodes if n.port}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def labfile_path(run_dir: str | Path | None = None) -> Path:
    return Path(run_dir or DEFAULT_RUN_DIR) / "lab.json"


def write_labfile(lab: LabFile, run_dir: str | Path | None = None) -> Path:
    """Atomically write ``lab.json`` into ``run_dir`` (default ``lab.run_dir``)."""
    path = labfile_path(run_dir or lab.run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".lab.json.{os.getpid()}.tmp")
    tmp.write_text(lab.to_json(), encoding="utf-8")
    tmp.replace(path)
    return path


def labfile_from_dict(data: dict[str, Any], *, source: str = "lab.json") -> LabFile:
    try:
        nodes = [NodeRecord(**n) for n in data.get("nodes", [])]
        fields = {k: v for k, v in data.items() if k != "nodes"}
        return LabFile(nodes=nodes, **fields)
    except TypeError as exc:
        raise LabFileError(f"{source}: not a lab.json of this siplab version: {exc}") from None


def read_labfile(run_dir: str | Path | None = None) -> LabFile:
    """Read ``<run_dir>/lab.json`` (default ``runs/lab``).

    Raises:
        LabFileError: no lab.json there (no lab is up), or it cannot be parsed.
    """
    path = labfile_path(run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabFileError(f"{path}: no lab.json (is a lab up? run `siplab lab up`)") from None
    except (OSError, ValueError) as exc:
        raise LabFileError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise LabFileError(f"{path}: expected a JSON object")
    return labfile_from_dict(data, source=str(path))


__all__ = [
    "DEFAULT_RUN_DIR",
    "LabFile",
    "LabFileError",
    "NodeRecord",
    "labfile_path",
    "read_labfile",
    "write_labfile",
]
