"""HEPv3 as a second evidence source: what a router on another host reports it sent and received.

The lab's own capture (:mod:`lab.capture`) sees loopback only. A router elsewhere (a staging
Kamailio) can mirror its SIP messages with its ``siptrace`` module in HEP version 3, the HOMER
encapsulation (``modparam("siptrace", "duplicate_uri", "sip:<lab>:9060")``,
``hep_mode_on = 1``, ``hep_version = 3``). This module receives those datagrams and writes each
SIP message into a libpcap file as the UDP datagram it describes (``hep.pcap``, same format as
the capture), so ladders and checks read it with the same :mod:`lab.wire` reader.

HEPv3 (HOMER "HEP3" specification): ``"HEP3"``, total length (u16), then chunks of vendor id
(u16), type (u16), length (u16, header included) and value. Generic chunks used here (vendor 0):
1 IP family (2 = IPv4), 2 IP protocol (17 UDP, 6 TCP), 3/4 IPv4 source/destination, 7/8 source/
destination port, 9/10 time stamp seconds/microseconds, 11 protocol type (1 = SIP), 12 capture
agent id, 15 payload. A datagram that is not HEPv3, not IPv4 or not SIP is counted and skipped.

Run: ``python -m lab.hep --listen 127.0.0.1:9060 --out runs/lab/hep.pcap``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.evidence import udp_frame
from lab.wire import SipRecord, sip_record

HEP_MAGIC = b"HEP3"
_CHUNK = struct.Struct("!HHH")


@dataclass(frozen=True, slots=True)
class HepStats:
    received: int = 0
    written: int = 0
    skipped: int = 0
    """Not HEPv3, not IPv4, not SIP, or malformed."""


def parse_hep(datagram: bytes) -> SipRecord | None:
    """The SIP message a HEPv3 datagram carries, or None when it carries none."""
    if len(datagram) < 6 or not datagram.startswith(HEP_MAGIC):
        return None
    total = struct.unpack("!H", datagram[4:6])[0]
    data = datagram[: min(total, len(datagram))]
    fields: dict[int, bytes] = {}
    at = 6
    while at + _CHUNK.size <= len(data):
        vendor, kind, length = _CHUNK.unpack_from(data, at)
        if length < _CHUNK.size or at + length > len(data):
            return None  # a chunk that runs past the packet: malformed
        if vendor == 0:
            fields[kind] = data[at + _CHUNK.size : at + length]
        at += length
    try:
        if fields[1] != b"\x02" or fields.get(11, b"\x01") != b"\x01":
            return None  # IPv6 or not SIP
        proto = fields.get(2, b"\x11")[0]
        src = f"{socket.inet_ntoa(fields[3])}:{struct.unpack('!H', fields[7])[0]}"
        dst = f"{socket.inet_ntoa(fields[4])}:{struct.unpack('!H', fields[8])[0]}"
        t = struct.unpack("!I", fields[9])[0] + struct.unpack("!I", fields[10])[0] / 1e6
        payload = fields[15]
    except (KeyError, OSError, struct.error, IndexError):
        return None
    return sip_record(t, src, dst, payload, "tcp" if proto == 6 else "udp")


def encode_hep(record: SipRecord, capture_id: int = 2001) -> bytes:
    """A HEPv3 datagram for ``record`` (what Kamailio's siptrace sends; used by tests)."""

    def chunk(kind: int, value: bytes) -> bytes:
        return _CHUNK.pack(0, kind, _CHUNK.size + len(value)) + value

    src_ip, _, src_port = record.src.rpartition(":")
    dst_ip, _, dst_port = record.dst.rpartition(":")
    sec = int(record.t)
    body = b"".join(
        [
            chunk(1, b"\x02"),
            chunk(2, b"\x06" if record.transport == "tcp" else b"\x11"),
            chunk(3, socket.inet_aton(src_ip)),
            chunk(4, socket.inet_aton(dst_ip)),
            chunk(7, struct.pack("!H", int(src_port))),
            chunk(8, struct.pack("!H", int(dst_port))),
            chunk(9, struct.pack("!I", sec)),
            chunk(10, struct.pack("!I", round((record.t - sec) * 1e6) % 1_000_000)),
            chunk(11, b"\x01"),
            chunk(12, struct.pack("!I", capture_id)),
            chunk(15, record.data),
        ]
    )
    return HEP_MAGIC + struct.pack("!H", 6 + len(body)) + body


def receive(sock: socket.socket, out: Path, *, limit: int | None = None) -> HepStats:
    """Write the SIP messages of the HEPv3 datagrams ``sock`` receives into the libpcap file
    ``out`` (flushed per message), until ``limit`` datagrams or SIGTERM/SIGINT."""
    received = written = skipped = 0
    with out.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        f.flush()
        while limit is None or received < limit:
            try:
                datagram = sock.recv(65535)
            except InterruptedError:
                continue
            except OSError:
                break
            received += 1
            record = parse_hep(datagram)
            if record is None:
                skipped += 1
                continue
            frame = udp_frame(record.src, record.dst, record.data, written)
            sec = int(record.t)
            usec = min(999_999, round((record.t - sec) * 1e6))
            f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
            f.flush()
            written += 1
    return HepStats(received, written, skipped)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="receive HEPv3 into a pcap file")
    parser.add_argument("--listen", default="127.0.0.1:9060", help="IP:PORT (UDP)")
    parser.add_argument("--out", type=Path, required=True, help="libpcap file to write")
    args = parser.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, int(port)))

        def stop(signum: int, frame: object) -> None:
            sock.close()  # recv fails with OSError: the loop ends, the file is complete

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print(f"hep: listening on {host}:{port}, writing {args.out}", flush=True)
        stats = receive(sock, args.out)
    print(f"hep: {stats.received} received, {stats.written} written, {stats.skipped} skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["HEP_MAGIC", "HepStats", "encode_hep", "main", "parse_hep", "receive"]
