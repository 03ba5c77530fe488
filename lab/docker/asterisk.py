"""Real Asterisk nodes in the lab: choosing them, and asking them things.

- :func:`with_pbx_kind`: ``--pbx asterisk`` (pytest) / ``--pbx-kind asterisk`` (CLI) turns
  every emulator node of a topology into a real Asterisk container; nodes that already say
  what they are (a mixed lab: pbx1 ``asterisk``, pbx2-3 ``emulator`` in the topology file)
  keep it when the kind asked for is ``emulator``.
- :func:`backend_for`: real Asterisk runs only as a container, so a lab with one needs the
  docker backend whatever the default is.
- :class:`AsteriskCli`: ``asterisk -rx`` inside a node's container (``docker exec``), with
  parsers for what the scenarios check: ``pjsip show contacts``, ``core show channels``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from lab.topology import PbxKind, Topology

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CONTACT = re.compile(r"^\s*Contact:\s+(\S+?)/(\S+)\s+([0-9a-f]+)\s+(\S+)")
_CHANNELS = re.compile(r"^(\d+) active channels?", re.M)


def with_pbx_kind(topology: Topology, kind: str) -> Topology:
    """``topology`` with every (non-external) emulator node of ``kind`` instead."""
    if kind == "emulator":
        return topology
    wanted: PbxKind = "asterisk" if kind == "asterisk" else "sipp"
    nodes = [
        replace(n, kind=wanted) if n.kind == "emulator" and not n.external else n
        for n in topology.pbx_nodes()
    ]
    return replace(topology, pbx=nodes)


def backend_for(topology: Topology, requested: str) -> str:
    """``requested``, or ``docker`` instead of ``local`` when the topology has a real Asterisk
    node to start (containers only; the swarm backend runs them as services)."""
    if requested == "local" and any(
        n.kind == "asterisk" and not n.external for n in topology.pbx_nodes()
    ):
        return "docker"
    return requested


@dataclass(frozen=True, slots=True)
class PjsipContact:
    """One row of ``pjsip show contacts``."""

    aor: str
    uri: str
    status: str


class AsteriskError(RuntimeError):
    """``asterisk -rx`` failed in a node (the message names the node and the command)."""


class AsteriskCli:
    """``asterisk -rx COMMAND`` in a running node's container."""

    def __init__(self, container: Any, node: str) -> None:
        self.container = container
        self.node = node

    @classmethod
    def for_node(cls, client: Any, container_id: str, node: str) -> AsteriskCli:
        return cls(client.containers.get(container_id), node)

    def rx(self, command: str) -> str:
        """The command's output, colour codes stripped.

        Raises:
            AsteriskError: the CLI could not connect or the command failed.
        """
        code, out = self.container.exec_run(["asterisk", "-rx", command])
        text = _ANSI.sub("", out.decode(errors="replace"))
        if code != 0:
            raise AsteriskError(f"{self.node}: asterisk -rx {command!r} exited {code}: {text}")
        return text

    def contacts(self) -> list[PjsipContact]:
        """``pjsip show contacts`` (the ``router`` AOR's permanent contact included)."""
        rows = []
        for line in self.rx("pjsip show contacts").splitlines():
            m = _CONTACT.match(line)
            if m and m.group(1) != "<Aor":
                rows.append(PjsipContact(m.group(1), m.group(2), m.group(4)))
        return rows

    def contact_fields(self, aor: str, uri: str) -> dict[str, str]:
        """``pjsip show contact <aor>/<uri>``: the stored fields (``path``, ``reg_server``...)."""
        fields: dict[str, str] = {}
        for line in self.rx(f"pjsip show contact {aor}/{uri}").splitlines():
            name, sep, value = line.partition(":")
            if sep and re.fullmatch(r"\s*[a-z_0-9]+\s*", name):
                fields[name.strip()] = value.strip()
        return fields

    def active_channels(self) -> int:
        """``core show channels``' count of active channels."""
        text = self.rx("core show channels count")
        m = _CHANNELS.search(text)
        if m is None:
            raise AsteriskError(f"{self.node}: no channel count in {text!r}")
        return int(m.group(1))


__all__ = [
    "AsteriskCli",
    "AsteriskError",
    "PjsipContact",
    "backend_for",
    "with_pbx_kind",
]
