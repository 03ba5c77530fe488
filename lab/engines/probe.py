"""Readiness by SIP: send an out-of-dialog OPTIONS over UDP and wait for any response.

The lab never sleeps for readiness (STYLE §7): a node is up when it answers SIP. This is the
smallest possible client for that: one datagram out, any datagram back whose status line and
Call-ID match. Any status counts (a dispatcher may answer 404 or 483); the point is that the
process parsed SIP and replied. The message is hand-built because the probe must work before
(and independently of) the project's own SIP core, and it is only ever sent to 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from collections.abc import Callable

__all__ = ["ProbeTimeout", "options_status", "require_loopback", "wait_sip_ready"]


class ProbeTimeout(TimeoutError):
    """The node did not answer SIP before the deadline."""


def _in_lab_namespace() -> bool:
    from lab.netns import in_lab_namespace

    return in_lab_namespace()


def require_loopback(host: str) -> str:
    """Return ``host`` if it is an IPv4 address in 127.0.0.0/8, else raise ``ValueError``.

    The lab only ever talks to loopback; this guards every command line we build. Inside a
    network namespace of a netns lab (``lab/netns.py``), whose private subnet exists nowhere
    else, a private address is allowed too.
    """
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an IPv4 address (the lab uses 127.0.0.x)") from exc
    if not addr.is_loopback and not (addr.is_private and _in_lab_namespace()):
        raise ValueError(f"{host} is not a loopback address; the lab only targets 127.0.0.0/8")
    return host


def _options(host: str, port: int, local_ip: str, local_port: int, call_id: str) -> bytes:
    branch = "z9hG4bK" + secrets.token_hex(8)
    tag = secrets.token_hex(4)
    lines = [
        f"OPTIONS sip:{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {local_ip}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:probe@{local_ip}:{local_port}>;tag={tag}",
        f"To: <sip:{host}:{port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:probe@{local_ip}:{local_port}>",
        "Accept: application/sdp",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _status_untrusted(data: bytes, call_id: str) -> int | None:
    """Status code of a response to our probe, or None if ``data`` is something else."""
    head, _, _ = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] != b"SIP/2.0" or not parts[1].isdigit():
        return None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"call-id", b"i"):
            if value.strip() == call_id.encode("ascii"):
                return int(parts[1])
            return None
    return None


def options_status(
    host: str, port: int, *, local_ip: str = "127.0.0.1", timeout: float = 0.5
) -> int | None:
    """Send one OPTIONS to ``host:port`` and return the status of the answer, or None.

    Retransmits like a (shortened) RFC 3261 Timer E: 50 ms, doubling, until ``timeout``.
    """
    require_loopback(host)
    require_loopback(local_ip)
    call_id = f"probe-{secrets.token_hex(8)}@{local_ip}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_ip, 0))
        local_port = sock.getsockname()[1]
        data = _options(host, port, local_ip, local_port, call_id)
        deadline = time.monotonic() + timeout
        interval = 0.05
        next_send = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                try:
                    sock.sendto(data, (host, port))
                except OSError:
                    pass  # ICMP port unreachable from a previous send; keep trying
                next_send = now + interval
                interval = min(interval * 2, 0.5)
            sock.settimeout(max(0.001, min(next_send, deadline) - time.monotonic()))
            try:
                reply = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                continue
            status = _status_untrusted(reply, call_id)
            if status is not None:
                return status
    return None


def wait_sip_ready(
    host: str,
    port: int,
    *,
    timeout: float = 10.0,
    local_ip: str = "127.0.0.1",
    alive: Callable[[], bool] | None = None,
) -> int:
    """Probe until ``host:port`` answers an OPTIONS; return the status code.

    Args:
        alive: called between probes; when it returns False (the process died) we stop early.

    Raises:
        ProbeTimeout: no answer within ``timeout`` seconds, or ``alive()`` turned False.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ProbeTimeout(f"{host}:{port} exited before answering SIP")
        status = options_status(host, port, local_ip=local_ip, timeout=0.3)
        if status is not None:
            return status
    raise ProbeTimeout(f"{host}:{port} did not answer OPTIONS within {timeout} s")
