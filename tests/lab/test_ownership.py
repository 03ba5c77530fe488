"""``lab.backends.ownership``: which processes hold a socket bound to an address."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from lab.backends.ownership import socket_holders

HOST = "127.120.0.250"

SHARE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
print("bound", flush=True)
sys.stdin.read()
"""


def test_holders_of_a_udp_address_ours_then_shared() -> None:
    group = os.getpgid(0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        alone = socket_holders(group, "udp", HOST, port)
        assert (alone.ours, alone.others, alone.shared) == (True, (), False)
        assert not socket_holders(group, "udp", HOST, port + 1).ours  # nothing bound there

        # Another session binds the same address (SO_REUSEADDR on both: Linux allows it).
        with subprocess.Popen(
            [sys.executable, "-c", SHARE, HOST, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        ) as other:  # fmt: skip
            try:
                assert other.stdout is not None and other.stdout.readline().strip() == "bound"
                shared = socket_holders(group, "udp", HOST, port)
                assert (shared.ours, shared.others, shared.shared) == (True, (other.pid,), True)
                theirs = socket_holders(other.pid, "udp", HOST, port)
                assert (theirs.ours, theirs.others) == (True, (os.getpid(),))
            finally:
                other.kill()
