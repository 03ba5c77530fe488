"""SIP messages read back from a packet capture: the one record type of the lab's evidence.

A capture (``capture.pcap``, written by :mod:`lab.capture`) holds the real frames that crossed
the loopback interface between the lab's addresses. This module turns them into
:class:`SipRecord` values, the type that ladders, the per-test pcap, the scenario checks that
need to see a leg, and ``reports/`` share:

- **pcap.** libpcap format (magic ``a1b2c3d4`` microseconds or ``a1b23c4d`` nanoseconds, either
  byte order), link types Ethernet (Linux ``lo``), Linux cooked v1/v2 and raw IPv4. IPv6 and
  non-IP frames are skipped. A record cut short at the end of a file that is still being
  written is left for the next read (:class:`PcapReader` keeps its offset).
- **UDP.** One datagram = one SIP message (RFC 3261 §18.1.1); keep-alives (CRLF) and the
  capture's own marker datagrams are not SIP and are skipped.
- **TCP.** Each direction of a connection is a byte stream; segments are appended in sequence
  order (a retransmitted segment's bytes already seen are cut off), and messages are cut from
  the stream by their ``Content-Length`` (RFC 3261 §18.3; mandatory on stream transports).
- **Fields.** Only what the evidence needs is read from the header block: the start line,
  ``Call-ID``/``i``, ``CSeq`` (number and method: a response's method is its CSeq method) and
  the top ``Via``/``v`` branch. A message without a start line this reader understands is
  skipped, never guessed at.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MARKER = b"SIPLAB-CAPTURE-MARK "
"""Payload prefix of the barrier datagrams :mod:`lab.capture` sends (never SIP)."""


@dataclass(frozen=True, slots=True)
class SipRecord:
    """One SIP message on the wire (or, for old runs, rebuilt from the nodes' event logs)."""

    t: float
    """Capture time stamp (seconds since the epoch)."""
    src: str
    """``ip:port``"""
    dst: str
    data: bytes
    """The message as sent (start line, headers, body)."""
    call_id: str | None
    method: str | None
    """The request's method; for a response the method of its CSeq."""
    status: int | None
    """The response's status code; None for a request."""
    note: str = ""
    """What a fault relay did with it (``drop``, ``delay``, ...); empty for plain traffic."""
    transport: str = "udp"
    cseq: int | None = None
    branch: str | None = None
    """The top Via's branch parameter."""

    @property
    def is_request(self) -> bool:
        return self.status is None

    @property
    def label(self) -> str:
        first = self.data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        if first.startswith("SIP/2.0 "):
            text = first[8:] + (f" ({self.method})" if self.method else "")
        else:
            text = first.split(" ", 1)[0] or "?"
        return f"{text} [{self.note}]" if self.note else text


# -- SIP header fields ---------------------------------------------------------------------------

_COMPACT = {b"i": b"call-id", b"v": b"via", b"l": b"content-length"}


def _headers(block: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """Start line and the first value of each header (folded lines joined, names lowered)."""
    lines = block.split(b"\r\n")
    first = lines[0]
    fields: dict[bytes, bytes] = {}
    last: bytes | None = None
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and last is not None:  # RFC 3261 §7.3.1 folding
            fields[last] += b" " + line.strip()
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            last = None
            continue
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        if key in fields:
            last = None  # only the first (top) value matters here
            continue
        fields[key] = value.strip()
        last = key
    return first, fields


def _branch(via: bytes) -> str | None:
    top = via.split(b",", 1)[0]
    for param in top.split(b";")[1:]:
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"branch":
            return value.strip().decode("ascii", "replace")
    return None


def sip_record(
    t: float, src: str, dst: str, data: bytes, transport: str = "udp"
) -> SipRecord | None:
    """The record of one SIP message, or None when ``data`` is not a SIP message."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        head = data
    first, fields = _headers(head)
    parts = first.split(b" ", 2)
    status: int | None = None
    method: str | None = None
    if first.startswith(b"SIP/2.0 ") and len(parts) >= 2 and parts[1].isdigit():
        status = int(parts[1])
    elif len(parts) == 3 and parts[2].strip() == b"SIP/2.0" and parts[0].isalpha():
        method = parts[0].decode("ascii")
    else:
        return None
    cseq_num: int | None = None
    cseq = fields.get(b"cseq", b"").split()
    if cseq and cseq[0].isdigit():
        cseq_num = int(cseq[0])
    if status is not None and len(cseq) > 1:
        method = cseq[1].decode("ascii", "replace")
    call_id = fields.get(b"call-id")
    return SipRecord(
        t,
        src,
        dst,
        data,
        call_id.decode("utf-8", "replace") if call_id else None,
        method,
        status,
        transport=transport,
        cseq=cseq_num,
        branch=_branch(fields.get(b"via", b"")),
    )


def _content_length(head: bytes) -> int | None:
    value = _headers(head)[1].get(b"content-length")
    return int(value) if value is not None and value.isdigit() else None


# -- pcap ----------------------------------------------------------------------------------------

_LINK_ETHERNET, _LINK_RAW, _LINK_IPV4, _LINK_SLL, _LINK_SLL2 = 1, 101, 228, 113, 276
_IP_OFFSET = {_LINK_ETHERNET: 14, _LINK_RAW: 0, _LINK_IPV4: 0, _LINK_SLL: 16, _LINK_SLL2: 20}
_ETHERTYPE_AT = {_LINK_ETHERNET: 12, _LINK_SLL: 14, _LINK_SLL2: 0}


class PcapError(ValueError):
    """Not a libpcap file (or a link type this reader does not know)."""


@dataclass(frozen=True, slots=True)
class Frame:
    t: float
    offset: int
    """Where the frame's record starts in the file."""
    data: bytes


class PcapReader:
    """Reads the frames of a libpcap file, also while another process appends to it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self._endian = "<"
        self._scale = 1e-6
        self.linktype = -1

    def _header(self, f: BinaryIO) -> bool:
        raw = f.read(24)
        if len(raw) < 24:
            return False
        magic_le = struct.unpack("<I", raw[:4])[0]
        magic_be = struct.unpack(">I", raw[:4])[0]
        if magic_le in (0xA1B2C3D4, 0xA1B23C4D):
            self._endian, magic = "<", magic_le
        elif magic_be in (0xA1B2C3D4, 0xA1B23C4D):
            self._endian, magic = ">", magic_be
        else:
            raise PcapError(f"{self.path}: not a libpcap file (magic {raw[:4].hex()})")
        self._scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
        self.linktype = struct.unpack(self._endian + "I", raw[20:24])[0] & 0xFFFF
        if self.linktype not in _IP_OFFSET:
            raise PcapError(f"{self.path}: link type {self.linktype} not supported")
        self.offset = 24
        return True

    def frames(self, start: int | None = None) -> Iterator[Frame]:
        """Frames from ``start`` (a frame offset, default where the last call stopped) to the
        current end of the file; the offset then points after the last whole record."""
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return
        with f:
            if self.offset == 0 and not self._header(f):
                return
            if start is not None:
                self.offset = max(24, start)
            f.seek(self.offset)
            head = struct.Struct(self._endian + "IIII")
            while True:
                rec = f.read(16)
                if len(rec) < 16:
                    return
                sec, frac, incl, _ = head.unpack(rec)
                data = f.read(incl)
                if len(data) < incl:
                    return  # torn record at the end of a file being written
                yield Frame(sec + frac * self._scale, self.offset, data)
                self.offset += 16 + incl

    def ip_packet(self, frame: bytes) -> bytes | None:
        """The IPv4 packet of a frame, or None (IPv6, ARP, ...)."""
        at = _ETHERTYPE_AT.get(self.linktype)
        if at is not None and frame[at : at + 2] != b"\x08\x00":
            return None
        packet = frame[_IP_OFFSET[self.linktype] :]
        return packet if packet[:1] and packet[0] >> 4 == 4 else None


def _addr(ip: bytes, port: int) -> str:
    return f"{socket.inet_ntoa(ip)}:{port}"


class SipStream:
    """Frames in, SIP records out: UDP datagrams and reassembled TCP streams."""

    def __init__(self) -> None:
        self._tcp: dict[tuple[str, str], tuple[int, bytearray]] = {}
        """(src, dst) -> (next expected sequence number, unparsed bytes)."""

    def feed(self, reader: PcapReader, frame: Frame) -> list[SipRecord]:
        packet = reader.ip_packet(frame.data)
        if packet is None or len(packet) < 20:
            return []
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack("!H", packet[2:4])[0]
        proto = packet[9]
        if struct.unpack("!H", packet[6:8])[0] & 0x3FFF:
            return []  # a fragment (SIP over UDP on lo is never fragmented: MTU 65536)
        body = packet[ihl:total]
        src_ip, dst_ip = packet[12:16], packet[16:20]
        if proto == 17 and len(body) >= 8:
            sport, dport = struct.unpack("!HH", body[:4])
            payload = body[8:]
            if payload.startswith(MARKER):
                return []
            record = sip_record(frame.t, _addr(src_ip, sport), _addr(dst_ip, dport), payload)
            return [record] if record is not None else []
        if proto == 6 and len(body) >= 20:
            sport, dport, seq = struct.unpack("!HHI", body[:8])
            flags = body[13]
            payload = body[(body[12] >> 4) * 4 :]
            return self._tcp_segment(
                frame.t, _addr(src_ip, sport), _addr(dst_ip, dport), seq, flags, payload
            )
        return []

    def _tcp_segment(
        self, t: float, src: str, dst: str, seq: int, flags: int, payload: bytes
    ) -> list[SipRecord]:
        key = (src, dst)
        if flags & 0x02:  # SYN: a new connection (and a new sequence space)
            self._tcp[key] = ((seq + 1) & 0xFFFFFFFF, bytearray())
            return []
        if not payload:
            if flags & 0x05:  # FIN or RST: the stream ends
                self._tcp.pop(key, None)
            return []
        expected, buf = self._tcp.get(key, (seq, bytearray()))
        skip = (expected - seq) & 0xFFFFFFFF
        if skip >= len(payload) and skip < 1 << 31:
            return []  # a retransmission of bytes already seen
        if skip >= 1 << 31:
            skip = 0  # a gap (bytes lost to the capture): take what we have from here
        buf += payload[skip:]
        self._tcp[key] = ((seq + len(payload)) & 0xFFFFFFFF, buf)
        out: list[SipRecord] = []
        while True:
            while buf[:2] == b"\r\n":  # keep-alive CRLFs between messages (RFC 5626 §3.5.1)
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = _content_length(bytes(buf[:end]))
            size = end + 4 + (length or 0)
            if len(buf) < size:
                break
            record = sip_record(t, src, dst, bytes(buf[:size]), "tcp")
            del buf[:size]
            if record is not None:
                out.append(record)
        return out


def read_records(path: str | Path, since: float = 0.0) -> list[SipRecord]:
    """Every SIP message of a capture file at or after ``since``, in capture order."""
    reader = PcapReader(path)
    stream = SipStream()
    out: list[SipRecord] = []
    for frame in reader.frames():
        out.extend(r for r in stream.feed(reader, frame) if r.t >= since)
    return out


class LiveRecords:
    """SIP records of a capture that is still being written, read incrementally.

    Keeps a checkpoint (time, file offset) every ``every`` frames, so a query for the records
    since T re-reads the file from shortly before T, not from its start. TCP streams that began
    before the checkpoint are picked up at the next message boundary they reach."""

    def __init__(self, path: str | Path, every: int = 2000) -> None:
        self.path = Path(path)
        self.every = every
        self._checkpoints: list[tuple[float, int]] = []
        self._scan = PcapReader(self.path)
        self._count = 0

    def _index(self) -> None:
        for frame in self._scan.frames():
            if self._count % self.every == 0:
                self._checkpoints.append((frame.t, frame.offset))
            self._count += 1

    def since(self, t: float) -> list[SipRecord]:
        self._index()
        start = 24
        for when, offset in self._checkpoints:
            if when >= t:
                break
            start = offset
        reader = PcapReader(self.path)
        stream = SipStream()
        out: list[SipRecord] = []
        for frame in reader.frames(start):
            if frame.t < t:
                continue
            out.extend(stream.feed(reader, frame))
        return out


def _file_header(linktype: int) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)


def cut_pcap(source: Path, target: Path, since: float, until: float | None = None) -> int:
    """Copy the frames of ``source`` captured in [since, until] into a new libpcap file (the
    bytes as captured, TCP included); returns the number of frames."""
    return merge_pcaps([source], target, since, until)


def merge_pcaps(
    parts: Iterable[Path], target: Path, since: float = 0.0, until: float | None = None
) -> int:
    """Concatenate libpcap files (ring-buffer parts, oldest first) into one; returns frames."""
    count = 0
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as out:
        header_written = False
        for part in parts:
            reader = PcapReader(part)
            try:
                for frame in reader.frames():
                    if not header_written:
                        out.write(_file_header(reader.linktype))
                        header_written = True
                    if frame.t < since or (until is not None and frame.t > until):
                        continue
                    sec = int(frame.t)
                    usec = min(999_999, round((frame.t - sec) * 1e6))
                    out.write(struct.pack("<IIII", sec, usec, len(frame.data), len(frame.data)))
                    out.write(frame.data)
                    count += 1
            except PcapError:
                continue
        if not header_written:
            out.write(_file_header(_LINK_ETHERNET))
    tmp.replace(target)
    return count


__all__ = [
    "MARKER",
    "Frame",
    "LiveRecords",
    "PcapError",
    "PcapReader",
    "SipRecord",
    "SipStream",
    "cut_pcap",
    "merge_pcaps",
    "read_records",
    "sip_record",
]
