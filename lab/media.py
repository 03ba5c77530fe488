"""A tiny RTP stream for media checks: send G.711 packets, receive what comes back, and report
loss and interarrival jitter the way RFC 3550 defines them.

Only what a lab needs to say "media flows both ways with the negotiated payload type": a fixed
20 ms packetisation (160 samples at 8 kHz), one SSRC, and the receiver statistics of RFC 3550
§6.4.1 (cumulative loss from the highest sequence number, §A.8 jitter estimate).
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass, field

import trio

SAMPLES_PER_PACKET = 160
"""20 ms of 8 kHz audio (G.711)."""
CLOCK_RATE = 8000


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    arrival: float
    """Local clock (seconds) when it arrived."""


def rtp_packet(payload_type: int, seq: int, timestamp: int, ssrc: int, payload: bytes) -> bytes:
    """RTP header (RFC 3550 §5.1: V=2, no padding/extension/CSRC, marker 0) + payload."""
    return struct.pack("!BBHII", 0x80, payload_type & 0x7F, seq & 0xFFFF, timestamp, ssrc) + payload


def parse_rtp(data: bytes, arrival: float) -> RtpPacket | None:
    """The header of an RTP version-2 packet, or None for anything else."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    _, pt, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    return RtpPacket(pt & 0x7F, seq, ts, ssrc, arrival)


@dataclass(slots=True)
class StreamStats:
    """Receiver view of one stream (RFC 3550 §6.4.1)."""

    received: int = 0
    expected: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    payload_types: set[int] = field(default_factory=set)
    first_arrival: float | None = None

    @property
    def loss_fraction(self) -> float:
        return self.lost / self.expected if self.expected else 0.0


def stream_stats(packets: list[RtpPacket], clock_rate: int = CLOCK_RATE) -> StreamStats:
    """Loss from the sequence range, jitter by §A.8: ``J += (|D| - J) / 16`` with ``D`` the
    difference of transit times of consecutive packets, in timestamp units."""
    stats = StreamStats()
    if not packets:
        return stats
    stats.received = len(packets)
    stats.first_arrival = packets[0].arrival
    stats.payload_types = {p.payload_type for p in packets}
    seqs = sorted({p.seq for p in packets})  # no wrap in a lab-length stream
    stats.expected = seqs[-1] - seqs[0] + 1
    stats.lost = max(0, stats.expected - len(seqs))
    jitter = 0.0
    previous: float | None = None
    for p in packets:
        transit = p.arrival * clock_rate - p.timestamp
        if previous is not None:
            jitter += (abs(transit - previous) - jitter) / 16
        previous = transit
    stats.jitter_ms = jitter / clock_rate * 1000
    return stats


def sdp_media(body: bytes) -> tuple[str, int, list[int]]:
    """(connection address, audio port, payload types) of an SDP answer (RFC 4566)."""
    text = body.decode(errors="replace")
    conn = re.search(r"^c=IN IP4 (\S+)", text, re.M)
    media = re.search(r"^m=audio (\d+) RTP/AVP ([\d ]+)", text, re.M)
    if conn is None or media is None:
        raise ValueError(f"no audio stream in SDP: {text!r}")
    return conn.group(1), int(media.group(1)), [int(x) for x in media.group(2).split()]


async def echo_exchange(
    local: tuple[str, int],
    remote: tuple[str, int],
    *,
    payload_type: int,
    packets: int = 50,
    linger: float = 1.0,
) -> tuple[int, list[RtpPacket]]:
    """Send ``packets`` RTP packets every 20 ms from ``local`` to ``remote`` and collect what
    arrives on ``local`` until ``linger`` s after the last one. Returns (sent, received)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(local)
    got: list[RtpPacket] = []
    ssrc = 0x51B1AB
    silence = (b"\xff" if payload_type == 0 else b"\xd5") * SAMPLES_PER_PACKET

    async def receive() -> None:
        while True:
            data = await sock.recv(2048)
            packet = parse_rtp(data, time.monotonic())
            if packet is not None:
                got.append(packet)

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            for i in range(packets):
                pkt = rtp_packet(payload_type, i, i * SAMPLES_PER_PACKET, ssrc, silence)
                await sock.sendto(pkt, remote)
                await trio.sleep(SAMPLES_PER_PACKET / CLOCK_RATE)
            await trio.sleep(linger)
            nursery.cancel_scope.cancel()
    return packets, got


__all__ = [
    "RtpPacket",
    "StreamStats",
    "echo_exchange",
    "parse_rtp",
    "rtp_packet",
    "sdp_media",
    "stream_stats",
]
