"""Which process holds a socket: proof that the node the lab started is the one answering.

An answer on ``host:port`` proves only that *something* listens there. With another lab still
up on the same addresses, a new node fails to bind ("Address already in use") while the old
lab's node answers its readiness probe. The kernel knows better: ``/proc/net/udp`` (and
``tcp``) lists each bound socket with its local address and inode, and ``/proc/<pid>/fd/N``
of the process holding it links to ``socket:[inode]``. A node is ours when a process of its
process group (the node's pid: every node is started as its own session and group leader, so
Kamailio's forked workers are in it too) holds the socket bound to its address, and nobody
else does: with ``SO_REUSEADDR`` set on both (the reference router and the emulator set it),
Linux lets a second UDP socket bind an address that is already bound, so the new node starts
"fine" and shares the address with the other lab's node.

Reading another process's ``fd`` folder needs the same user or root; the lab's nodes are its
own children, so it always can. Linux only, like the rest of the local backend.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Holders", "bound_inodes", "group_pids", "socket_holders"]

_TCP_LISTEN = "0A"


def _hex_address(host: str, port: int) -> str:
    # /proc/net/{udp,tcp} print the IPv4 address as the in-memory 32-bit word in hex, which
    # on little-endian machines reverses the bytes: 127.0.0.10 -> 0A00007F.
    packed = socket.inet_aton(host)
    word = int.from_bytes(packed, sys.byteorder)
    return f"{word:08X}:{port:04X}"


def bound_inodes(proto: str, host: str, port: int, pid: int | None = None) -> set[int]:
    """Inodes of the IPv4 ``proto`` ("udp"/"tcp") sockets bound to ``host:port`` or to the
    wildcard address on ``port`` (TCP: listening sockets only), in the network namespace of
    ``pid`` (``/proc/<pid>/net``: a node of the netns backend lives in a namespace of its
    own) or, without it, in the caller's (``/proc/net``)."""
    wanted = {_hex_address(host, port), _hex_address("0.0.0.0", port)}
    table = Path(f"/proc/{pid}/net/{proto}") if pid is not None else Path(f"/proc/net/{proto}")
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return set()
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[1] not in wanted:
            continue
        if proto == "tcp" and fields[3] != _TCP_LISTEN:
            continue
        found.add(int(fields[9]))
    return found


def group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (from ``/proc/*/stat``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name (field 2) may contain spaces and parentheses: split after it
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


@dataclass(frozen=True, slots=True)
class Holders:
    """Who holds the sockets bound to one address."""

    ours: bool
    """A process of the node's group holds one."""
    others: tuple[int, ...]
    """Processes outside the group holding one (sorted pids)."""
    unknown: bool
    """A bound socket no visible process holds (one that is exiting, or hidden from us)."""

    @property
    def shared(self) -> bool:
        """Someone else is bound there too: with ``SO_REUSEADDR`` on both, Linux lets two
        UDP sockets bind one address and delivers each datagram to one of them."""
        return bool(self.others) or self.unknown


def socket_holders(pgid: int, proto: str, host: str, port: int) -> Holders:
    """Which processes hold the ``proto`` sockets bound to ``host:port``: the node's group
    (``pgid``) and anyone else."""
    group = set(group_pids(pgid))
    inodes = bound_inodes(proto, host, port)
    for pid in _one_per_namespace(group):
        inodes |= bound_inodes(proto, host, port, pid)
    if not inodes:
        return Holders(ours=False, others=(), unknown=False)
    wanted = {f"socket:[{inode}]" for inode in inodes}
    held: set[str] = set()
    for pid in group:
        held |= _held(pid, wanted)
    ours = bool(held)
    others = []
    if wanted - held:
        for entry in Path("/proc").glob("[0-9]*"):
            pid = int(entry.name)
            if pid not in group and (found := _held(pid, wanted - held)):
                others.append(pid)
                held |= found
    return Holders(ours=ours, others=tuple(sorted(others)), unknown=bool(wanted - held))


def _one_per_namespace(pids: set[int]) -> list[int]:
    """One pid per network namespace among ``pids`` other than the caller's own."""
    try:
        own = os.readlink("/proc/thread-self/ns/net")
    except OSError:
        own = ""
    seen: dict[str, int] = {}
    for pid in sorted(pids):
        try:
            ns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if ns != own:
            seen.setdefault(ns, pid)
    return list(seen.values())


def _held(pid: int, links: set[str]) -> set[str]:
    """The ``socket:[inode]`` links among ``links`` that ``pid`` has open."""
    found = set()
    try:
        fds = os.scandir(f"/proc/{pid}/fd")
    except OSError:
        return found
    with fds:
        for fd in fds:
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target in links:
                found.add(target)
    return found
