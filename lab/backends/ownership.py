"""Which process holds a socket: proof that the node the lab started is the one answering.

An answer on ``host:port`` proves only that *something* listens there. With another lab still
up on the same addresses, a new node fails to bind ("Address already in use") while the old
lab's node answers its readiness probe. The kernel knows better: ``/proc/net/udp`` (and
``tcp``) lists each bound socket with its local address and inode, and ``/proc/<pid>/fd/N``
of the process holding it links to ``socket:[inode]``. A node is ours when a process of its
process group (the node's pid: every node is started as its own session and group leader, so
Kamailio's forked workers are in it too) holds the socket bound to its address.

Reading another process's ``fd`` folder needs the same user or root; the lab's nodes are its
own children, so it always can. Linux only, like the rest of the local backend.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

__all__ = ["bound_inodes", "group_pids", "holds_socket"]

_TCP_LISTEN = "0A"


def _hex_address(host: str, port: int) -> str:
    # /proc/net/{udp,tcp} print the IPv4 address as the in-memory 32-bit word in hex, which
    # on little-endian machines reverses the bytes: 127.0.0.10 -> 0A00007F.
    packed = socket.inet_aton(host)
    word = int.from_bytes(packed, sys.byteorder)
    return f"{word:08X}:{port:04X}"


def bound_inodes(proto: str, host: str, port: int) -> set[int]:
    """Inodes of the IPv4 ``proto`` ("udp"/"tcp") sockets bound to ``host:port`` or to the
    wildcard address on ``port`` (TCP: listening sockets only)."""
    wanted = {_hex_address(host, port), _hex_address("0.0.0.0", port)}
    try:
        lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
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


def holds_socket(pgid: int, proto: str, host: str, port: int) -> bool:
    """A process of group ``pgid`` holds a ``proto`` socket bound to ``host:port``."""
    inodes = bound_inodes(proto, host, port)
    if not inodes:
        return False
    links = {f"socket:[{inode}]" for inode in inodes}
    for pid in group_pids(pgid):
        try:
            fds = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in links:
                        return True
                except OSError:
                    continue
    return False
