"""Container specs shared by the docker backend and the compose file it writes for users.

The backend never describes a container twice: every node becomes one :class:`ServiceSpec`, the
backend starts it through the Docker SDK and :func:`write_compose` renders the same specs into
``<run>/compose.yml``, so ``docker compose -f runs/lab/compose.yml up`` (Docker Compose v2) starts
the same containers with the same commands, environment and mounts. Every service uses host
networking (``network_mode: host``) and binds its own 127.x.0.y address, as in the local backend;
the run folder is mounted at the same path inside the containers, so the node configs, the events
files and a SQLite DB written by ``lab up`` are valid paths in there too.

The YAML is written by a small emitter (dicts, lists, str, int, float, bool; every string
double-quoted, JSON escapes being valid YAML), so no YAML library is needed to write it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMPOSE_FILE = "compose.yml"
LABEL_LAB = "siplab.lab"
LABEL_NODE = "siplab.node"
LABEL_RUN_DIR = "siplab.run_dir"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One container: what the SDK runs and what compose.yml says."""

    name: str
    """Node name (``db``, ``pbx1``, ``router``, ``fault-router-pbx1``) = compose service name."""
    container_name: str
    image: str
    command: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    """``host_path:container_path[:ro]``."""
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    stop_grace: float = 3.0
    one_shot: bool = False
    """Runs to completion (``provision``): compose-only, the SDK backend does its work itself;
    services depending on it wait for it to exit 0 (``service_completed_successfully``)."""

    def volume_binds(self) -> dict[str, dict[str, str]]:
        """The SDK's ``volumes=`` form of :attr:`volumes`."""
        binds: dict[str, dict[str, str]] = {}
        for item in self.volumes:
            parts = item.split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            binds[parts[0]] = {"bind": parts[1], "mode": mode}
        return binds

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``client.containers.run`` (detached, host networking)."""
        return {
            "image": self.image,
            "command": list(self.command) or None,
            "name": self.container_name,
            "environment": dict(self.environment),
            "volumes": self.volume_binds(),
            "labels": dict(self.labels),
            "network_mode": "host",
            "detach": True,
            "stop_signal": "SIGTERM",
        }


def compose_dict(project: str, services: Sequence[ServiceSpec]) -> dict[str, Any]:
    """The compose document (Compose Specification) for ``services``."""
    one_shot = {s.name for s in services if s.one_shot}
    out: dict[str, Any] = {}
    for s in services:
        entry: dict[str, Any] = {
            "image": s.image,
            "container_name": s.container_name,
            # The images are built locally (python -m lab.docker.images); never look for them
            # in a registry.
            "pull_policy": "never",
            "network_mode": "host",
            "restart": "no",
            "stop_grace_period": f"{s.stop_grace:g}s",
        }
        if s.command:
            entry["command"] = list(s.command)
        if s.environment:
            entry["environment"] = dict(s.environment)
        if s.volumes:
            entry["volumes"] = list(s.volumes)
        if s.labels:
            entry["labels"] = dict(s.labels)
        if s.depends_on:
            entry["depends_on"] = {
                dep: {
                    "condition": "service_completed_successfully"
                    if dep in one_shot
                    else "service_started"
                }
                for dep in s.depends_on
            }
        out[s.name] = entry
    return {"name": project, "services": out}


# -- a small YAML emitter --------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} to YAML")


def _key(key: str) -> str:
    plain = key.replace("-", "").replace("_", "").replace(".", "").isalnum()
    return key if plain and not key[0].isdigit() else json.dumps(key)


def _emit(value: Any, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list | tuple) and item:
                lines.append(f"{pad}{_key(str(key))}:")
                _emit(item, indent + 1, lines)
            elif isinstance(item, Mapping):
                lines.append(f"{pad}{_key(str(key))}: {{}}")
            elif isinstance(item, list | tuple):
                lines.append(f"{pad}{_key(str(key))}: []")
            else:
                lines.append(f"{pad}{_key(str(key))}: {_scalar(item)}")
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, Mapping | list | tuple):
                raise TypeError("nested collections in lists are not used by compose files here")
            lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))


def to_yaml(document: Mapping[str, Any], *, header: Iterable[str] = ()) -> str:
    """``document`` as block-style YAML, preceded by ``# header`` comment lines."""
    lines = [f"# {h}".rstrip() for h in header]
    _emit(document, 0, lines)
    return "\n".join(lines) + "\n"


def compose_binary() -> list[str] | None:
    """The Compose v2 command: ``docker compose`` (plugin), Debian trixie's binary that
    scripts/setup.sh extracts to ``~/.cache/siplab/bin/docker-compose``, or one on PATH."""
    import shutil
    import subprocess

    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    cached = Path.home() / ".cache" / "siplab" / "bin" / "docker-compose"
    if cached.is_file():
        return [str(cached)]
    found = shutil.which("docker-compose")
    return [found] if found else None


def write_compose(run_dir: Path, project: str, services: Sequence[ServiceSpec]) -> Path:
    """Write ``<run_dir>/compose.yml`` for ``services`` and return its path."""
    header = [
        f"siplab lab {project}: generated by `siplab lab up --backend docker`.",
        "Same containers as the lab started: host networking, one 127.x.0.y address per node.",
        "Images are local: build them first with `python -m lab.docker.images emulator postgres`.",
        "Start: docker compose -f compose.yml up -d   Stop: docker compose -f compose.yml down",
        "The `provision` service fills the DB (users, router endpoint, queues, dispatcher) and",
        "exits; the PBX nodes start after it. A Kamailio router is not in here (host process).",
    ]
    path = Path(run_dir) / COMPOSE_FILE
    tmp = path.with_name(f".{COMPOSE_FILE}.tmp")
    tmp.write_text(to_yaml(compose_dict(project, services), header=header), encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = [
    "COMPOSE_FILE",
    "LABEL_LAB",
    "LABEL_NODE",
    "LABEL_RUN_DIR",
    "ServiceSpec",
    "compose_binary",
    "compose_dict",
    "to_yaml",
    "write_compose",
]
