"""Evidence from a run folder: the capture's SIP records, merged events, call ladders.

**The capture is the source.** A run started by a backend has ``capture.pcap``, the real
packets on loopback (:mod:`lab.capture`), read as :class:`lab.wire.SipRecord` values
(:func:`run_packets`); fault relays' decisions (their ``fault`` events) annotate the records
they concern (a dropped datagram is marked ``drop``). Runs without a capture (older run folders,
fixtures) fall back to the nodes' event logs below.

Every component may write ``events/<node>.jsonl`` (``router/observe.py`` format: ``t``, ``node``,
``event``, ``dir``, ``peer``, ``method``, ``status``, ``call_id`` and the message text in
``raw``). From those alone this module rebuilds what crossed the wire:

- **Packets.** A message one lab node sends to another is logged twice (``out`` by the sender,
  ``in`` by the receiver); the two are paired by (source, destination, bytes), so each datagram
  appears once and a retransmission (a second identical send) still appears twice. Messages
  from programs that log nothing (SIPp, phones) appear through the receiver's ``in`` line. A
  fault relay logs each decision with the incoming datagram (``from`` -> ``to``) and the copies
  it sent (``src`` -> ``dst``, ``copies``, after ``delay``).
- **pcap.** Packets as Ethernet/IPv4/UDP frames with correct lengths and checksums (libpcap
  format, LINKTYPE_ETHERNET), readable by Wireshark and tshark. TCP messages are written as UDP
  datagrams between the same addresses (XXX: no TCP stream reconstruction).
- **Ladders.** One lane per address (phones left, then the router, then PBX nodes), one arrow
  per packet of a Call-ID, as text for the terminal and SVG (PNG too when matplotlib is there).

A *failed* call is a Call-ID with an INVITE whose last final response is >= 300 or that never
got one, or that carries a BYE with ``Reason: ...;cause=408``.
"""

from __future__ import annotations

import html
import json
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab.wire import SipRecord, read_records

Event = dict[str, Any]


# -- events -------------------------------------------------------------------------------------


def read_events(path: str | Path) -> Iterator[Event]:
    """JSON objects of one events file; torn or garbage lines (a killed writer) are skipped."""
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("t"), int | float):
                    yield record
    except FileNotFoundError:
        return


def load_events(run_dir: str | Path) -> list[Event]:
    """Every node's events of a run, sorted by time (``events/*.jsonl``, else ``events.jsonl``)."""
    folder = Path(run_dir) / "events"
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        return list(read_events(Path(run_dir) / "events.jsonl"))
    events = [e for path in files for e in read_events(path)]
    events.sort(key=lambda e: e["t"])
    return events


def merge_events(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/events.jsonl``: every node's events sorted by ``t``; returns its path."""
    target = Path(run_dir) / "events.jsonl"
    if not (Path(run_dir) / "events").is_dir():
        return target
    events = load_events(run_dir)
    tmp = target.with_name(".events.jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in events:
            f.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
    tmp.replace(target)
    return target


# -- packets -----------------------------------------------------------------------------------


Packet = SipRecord
"""The record of one SIP message (:class:`lab.wire.SipRecord`; the old name)."""


def _node_addresses(events: list[Event]) -> dict[str, str]:
    """Guess each node's address from the top Via sent-by of the requests it sent."""
    from router.sip import Request, SipError, parse_untrusted

    found: dict[str, str] = {}
    for e in events:
        node = e.get("node")
        if node in found or e.get("dir") != "out" or e.get("status") is not None or "raw" not in e:
            continue
        try:
            msg = parse_untrusted(e["raw"].encode())
            if isinstance(msg, Request):
                host, port = msg.top_via.sent_by()
                found[str(node)] = f"{host}:{port}"
        except (SipError, IndexError):
            continue
    return found


def packets_from_events(
    events: Iterable[Event], addresses: dict[str, str] | None = None
) -> list[Packet]:
    """Datagrams of a run, each once, in time order.

    Args:
        addresses: node name -> ``ip:port`` (from ``lab.json``); guessed from Via when absent.
    """
    ordered = sorted(events, key=lambda e: e["t"])
    names = dict(_node_addresses(ordered))
    names.update(addresses or {})
    unmatched: dict[str, Counter[tuple[str, str, str]]] = {"in": Counter(), "out": Counter()}
    packets: list[Packet] = []

    def add(kind: str, t: float, src: str, dst: str, e: Event, raw: str, note: str = "") -> None:
        key = (src, dst, raw)
        other = "in" if kind == "out" else "out"
        if unmatched[other][key] > 0:
            unmatched[other][key] -= 1  # the other end of a datagram we already have
            return
        unmatched[kind][key] += 1
        status = e.get("status")
        packets.append(
            Packet(
                t,
                src,
                dst,
                raw.encode("utf-8"),
                e.get("call_id"),
                e.get("method"),
                status if isinstance(status, int) else None,
                note,
            )
        )

    for e in ordered:
        raw = e.get("raw")
        if not isinstance(raw, str):
            continue
        if e.get("event") == "fault":
            action = str(e.get("action", ""))
            note = "" if action == "pass" else action
            if e.get("from") and e.get("to"):
                add(
                    "in",
                    e["t"],
                    e["from"],
                    e["to"],
                    e,
                    raw,
                    note if action in ("drop", "hold") else "",
                )
            for _ in range(int(e.get("copies", 0) or 0)):
                add(
                    "out",
                    e["t"] + float(e.get("delay", 0) or 0),
                    e["src"],
                    e["dst"],
                    e,
                    raw,
                    note if note != "hold" else "",
                )
            continue
        own = names.get(str(e.get("node")))
        peer = e.get("peer")
        if own is None or not isinstance(peer, str) or e.get("dir") not in ("in", "out"):
            continue
        if e["dir"] == "out":
            add("out", e["t"], own, peer, e, raw)
        else:
            add("in", e["t"], peer, own, e, raw)
    packets.sort(key=lambda p: p.t)
    return packets


# -- pcap ---------------------------------------------------------------------------------------

LINKTYPE_ETHERNET = 1


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _split(address: str) -> tuple[bytes, int]:
    import socket

    host, _, port = address.rpartition(":")
    return socket.inet_aton(host.strip("[]")), int(port)


def udp_frame(src: str, dst: str, payload: bytes, ident: int = 0) -> bytes:
    """An Ethernet II / IPv4 / UDP frame (RFC 791, RFC 768) with both checksums."""
    sip, sport = _split(src)
    dip, dport = _split(dst)
    udp_len = 8 + len(payload)
    pseudo = sip + dip + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF  # RFC 768: a computed zero is sent as all ones
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0x4000, 64, 17, 0, sip, dip
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ether = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return ether + ip + udp


def write_pcap(path: str | Path, packets: Iterable[Packet]) -> int:
    """Write a libpcap file of ``packets``; returns the number written (IPv4 only)."""
    count = 0
    with Path(path).open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for p in packets:
            try:
                frame = udp_frame(p.src, p.dst, p.data, count)
            except (OSError, ValueError, struct.error):
                continue  # IPv6 or an unparsable address
            sec = int(p.t)
            usec = min(999_999, round((p.t - sec) * 1e6))
            f.write(struct.pack("<IIII", sec, usec, min(len(frame), 65535), len(frame)))
            f.write(frame[:65535])
            count += 1
    return count


# -- calls --------------------------------------------------------------------------------------


def _reason_408(raw: bytes) -> bool:
    from router.sip import SipError, parse_untrusted

    try:
        msg = parse_untrusted(raw)
    except SipError:
        return False
    return any("cause=408" in v.replace(" ", "") for v in msg.headers.get_all("Reason"))


def failed_calls(packets: Iterable[Packet]) -> list[str]:
    """Call-IDs whose INVITE's last final was >= 300 or missing, or with a BYE ``cause=408``."""
    invited: dict[str, int | None] = {}
    failed: set[str] = set()
    for p in packets:
        if p.call_id is None:
            continue
        if p.status is None and p.method == "INVITE":
            invited.setdefault(p.call_id, None)
        elif p.status is not None and p.status >= 200 and p.method == "INVITE":
            invited[p.call_id] = p.status
        elif p.status is None and p.method == "BYE" and _reason_408(p.data):
            failed.add(p.call_id)
    failed.update(cid for cid, status in invited.items() if status is None or status >= 300)
    return [cid for cid in invited if cid in failed] + sorted(failed - invited.keys())


# -- ladders ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ladder:
    call_id: str
    lanes: list[str]
    """Addresses, left to right."""
    names: list[str]
    """Display name per lane (node name, or the address)."""
    arrows: list[Packet]

    @property
    def t0(self) -> float:
        return self.arrows[0].t if self.arrows else 0.0


def _lane_rank(name: str | None) -> int:
    if name is None:
        return 0
    if name.startswith("fault-ua"):
        return 1
    if name == "router":
        return 2
    return 3 if name.startswith("fault-") else 4


def build_ladder(
    packets: Iterable[Packet], call_id: str, names: dict[str, str] | None = None
) -> Ladder:
    """The ladder of one Call-ID.

    Args:
        names: ``ip:port`` -> node name for lane titles (``LabFile.addresses()``).
    """
    names = names or {}
    # A relay sends from one socket per client: fold those into the relay's own lane.
    relay_hosts = {a.rpartition(":")[0]: a for a, n in names.items() if n.startswith("fault-")}

    def lane(addr: str) -> str:
        return relay_hosts.get(addr.rpartition(":")[0], addr)

    arrows = [replace(p, src=lane(p.src), dst=lane(p.dst)) for p in packets if p.call_id == call_id]
    seen: dict[str, int] = {}
    for p in arrows:
        for addr in (p.src, p.dst):
            seen.setdefault(addr, len(seen))
    lanes = sorted(seen, key=lambda a: (_lane_rank(names.get(a)), names.get(a) or "", seen[a]))
    return Ladder(call_id, lanes, [names.get(a, a) for a in lanes], arrows)


def ladder_text(ladder: Ladder, width: int = 24) -> str:
    """The ladder for a terminal: one column per lane, one line per message."""
    cols = [8 + width // 2 + i * width for i in range(len(ladder.lanes))]
    total = cols[-1] + width // 2 if cols else 0
    head = [" " * total for _ in range(2)]

    def put(line: str, pos: int, text: str) -> str:
        pos = max(0, min(pos, len(line) - len(text)))
        return line[:pos] + text + line[pos + len(text) :]

    for col, name, addr in zip(cols, ladder.names, ladder.lanes, strict=True):
        head[0] = put(head[0], col - len(name[: width - 2]) // 2, name[: width - 2])
        short = addr if name != addr else ""
        head[1] = put(head[1], col - len(short) // 2, short)
    lines = [f"Call-ID: {ladder.call_id}", head[0].rstrip(), head[1].rstrip()]
    blank = " " * total
    for col in cols:
        blank = put(blank, col, "|")
    index = {a: i for i, a in enumerate(ladder.lanes)}
    for p in ladder.arrows:
        a, b = cols[index[p.src]], cols[index[p.dst]]
        lo, hi = min(a, b), max(a, b)
        label = p.label[: max(6, hi - lo - 1)]
        lines.append(put(blank, (lo + hi) // 2 - len(label) // 2 + 1, label).rstrip())
        line = put(blank, 0, f"{p.t - ladder.t0:7.3f}")
        if lo == hi:
            line = put(line, lo, "|<>")
        else:
            body = "-" * (hi - lo - 1)
            body = (body[:-1] + ">") if b > a else ("<" + body[1:])
            if "drop" in p.note:  # a dropped datagram ends in an X short of its target
                body = (body[:-2] + "X ") if b > a else (" X" + body[2:])
            line = put(line, lo + 1, body)
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def ladder_svg(ladder: Ladder) -> str:
    """The ladder as a standalone SVG document."""
    lane_w, row_h, top, left = 190, 26, 60, 70
    width = left + lane_w * max(1, len(ladder.lanes))
    height = top + row_h * (len(ladder.arrows) + 1)
    x = {a: left + lane_w // 2 + i * lane_w for i, a in enumerate(ladder.lanes)}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        '<defs><marker id="arr" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#333"/></marker></defs>',
        f'<text x="4" y="14" font-size="12">Call-ID: {html.escape(ladder.call_id)}</text>',
    ]
    for addr, name in zip(ladder.lanes, ladder.names, strict=True):
        out.append(
            f'<text x="{x[addr]}" y="34" text-anchor="middle" font-weight="bold">{html.escape(name)}</text>'
        )
        if name != addr:
            out.append(
                f'<text x="{x[addr]}" y="48" text-anchor="middle" fill="#666">{html.escape(addr)}</text>'
            )
        out.append(
            f'<line x1="{x[addr]}" y1="{top - 6}" x2="{x[addr]}" y2="{height - 4}" stroke="#bbb"/>'
        )
    for i, p in enumerate(ladder.arrows):
        y = top + row_h * (i + 1) - 6
        x1, x2 = x[p.src], x[p.dst]
        failed = (p.status is not None and p.status >= 300) or "drop" in p.note
        color = "#c0392b" if failed else "#333"
        out.append(f'<text x="4" y="{y + 4}" fill="#666">{p.t - ladder.t0:.3f}</text>')
        dash = ' stroke-dasharray="4,3"' if "drop" in p.note else ""
        out.append(
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}"{dash} marker-end="url(#arr)"/>'
        )
        out.append(
            f'<text x="{(x1 + x2) // 2}" y="{y - 4}" text-anchor="middle" fill="{color}">{html.escape(p.label)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def ladder_png(ladder: Ladder, path: str | Path) -> bool:
    """Draw the ladder with matplotlib's object API (no pyplot state); False if unavailable."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    n = max(1, len(ladder.lanes))
    fig = Figure(figsize=(2.2 * n + 1, 0.35 * len(ladder.arrows) + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_ylim(len(ladder.arrows) + 0.5, -1)
    ax.axis("off")
    index = {a: i for i, a in enumerate(ladder.lanes)}
    for i, name in enumerate(ladder.names):
        ax.axvline(i, color="#bbbbbb", linewidth=0.8)
        ax.text(i, -0.6, name, ha="center", fontweight="bold", fontsize=8)
    for row, p in enumerate(ladder.arrows):
        a, b = index[p.src], index[p.dst]
        color = "#c0392b" if (p.status or 0) >= 300 or "drop" in p.note else "#333333"
        ax.annotate(
            "", xy=(b, row), xytext=(a, row), arrowprops={"arrowstyle": "->", "color": color}
        )
        ax.text((a + b) / 2, row - 0.15, p.label, ha="center", fontsize=7, color=color)
        ax.text(-0.65, row, f"{p.t - ladder.t0:.3f}", fontsize=6, color="#666666")
    fig.savefig(str(path), dpi=100)
    return True


def _safe_name(call_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in call_id)[:120]


def write_ladders(
    run_dir: str | Path,
    call_ids: Iterable[str] | None = None,
    *,
    failed: bool = False,
    png: bool = False,
    names: dict[str, str] | None = None,
    packets: list[Packet] | None = None,
) -> list[tuple[str, Path, str]]:
    """Write ``ladders/<call-id>.svg`` (and ``.png``) for the given or the failed calls.

    Returns:
        ``(call_id, svg_path, text)`` per ladder.
    """
    run = Path(run_dir)
    if packets is None:
        packets = run_packets(run)
    names = names if names is not None else {v: k for k, v in _lab_addresses(run).items()}
    if call_ids is None:
        call_ids = (
            failed_calls(packets)
            if failed
            else list(dict.fromkeys(p.call_id for p in packets if p.call_id))
        )
    out = []
    folder = run / "ladders"
    for cid in call_ids:
        ladder = build_ladder(packets, cid, names)
        if not ladder.arrows:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        svg = folder / f"{_safe_name(cid)}.svg"
        svg.write_text(ladder_svg(ladder), encoding="utf-8")
        if png:
            ladder_png(ladder, svg.with_suffix(".png"))
        out.append((cid, svg, ladder_text(ladder)))
    return out


def _lab_addresses(run: Path) -> dict[str, str]:
    """node name -> ``ip:port`` from ``lab.json`` when the run has one."""
    from lab.labfile import LabFileError, read_labfile

    try:
        lab = read_labfile(run)
    except LabFileError:
        return {}
    return {n.name: n.address for n in lab.nodes if n.port}


def has_capture(run_dir: str | Path) -> bool:
    """True when the run was captured on the wire (``capture.json`` next to the pcap)."""
    run = Path(run_dir)
    return (run / "capture.json").exists() and (run / "capture.pcap").exists()


def annotate_faults(records: list[SipRecord], events: Iterable[Event]) -> list[SipRecord]:
    """``records`` with the fault relays' decisions as notes: the datagram a relay dropped,
    held, delayed or duplicated carries the action (matched by source, destination, bytes)."""
    pending: Counter[tuple[str, str, bytes]] = Counter()
    actions: dict[tuple[str, str, bytes], list[str]] = {}
    for e in events:
        action = str(e.get("action", ""))
        if e.get("event") != "fault" or action in ("", "pass") or not isinstance(e.get("raw"), str):
            continue
        key = (str(e.get("from")), str(e.get("to")), e["raw"].encode("utf-8"))
        pending[key] += 1
        actions.setdefault(key, []).append(action)
    if not pending:
        return records
    out = []
    for r in records:
        key = (r.src, r.dst, r.data)
        if pending[key] > 0:
            pending[key] -= 1
            r = replace(r, note=actions[key].pop(0))
        out.append(r)
    return out


def run_packets(run_dir: str | Path, since: float = 0.0) -> list[SipRecord]:
    """The SIP records of a run since ``since``: from the capture when the run has one (fault
    decisions as notes), else rebuilt from the nodes' event logs; plus ``hep.pcap`` (HEPv3
    from a router on another host, :mod:`lab.hep`) when the run has one."""
    run = Path(run_dir)
    if has_capture(run):
        faults = [e for e in load_events(run) if e.get("event") == "fault"]
        records = annotate_faults(read_records(run / "capture.pcap", since), faults)
    else:
        events = load_events(run)
        records = [p for p in packets_from_events(events, _lab_addresses(run)) if p.t >= since]
    if (run / "hep.pcap").exists():  # a remote router's own view (lab/hep.py), merged in
        records = sorted([*records, *read_records(run / "hep.pcap", since)], key=lambda r: r.t)
    return records


def lab_packets(
    run_dir: Path, since: float, addresses: dict[str, str], cache: dict[str, Any]
) -> list[SipRecord]:
    """:func:`run_packets` for a lab that is still running: the capture is read incrementally
    (a :class:`lab.wire.LiveRecords` kept in ``cache``) so each call re-reads only from just
    before ``since``. Call after the capture's flush barrier."""
    from lab.wire import LiveRecords

    events = [e for e in load_events(run_dir) if e["t"] >= since]
    if not has_capture(run_dir):
        return packets_from_events(events, addresses)
    live = cache.get("_live")
    if not isinstance(live, LiveRecords):
        live = cache["_live"] = LiveRecords(run_dir / "capture.pcap")
    faults = [e for e in events if e.get("event") == "fault"]
    return annotate_faults(live.since(since), faults)


def failure_evidence(
    run_dir: Path, packets: list[SipRecord], folder: Path, since: float, names: dict[str, str]
) -> list[tuple[str, str]]:
    """The report sections of a failed test: ladders of the calls that failed (SVGs in
    ``folder/ladders``) and ``folder/capture.pcap``, the frames captured since ``since``."""
    from lab.wire import cut_pcap

    pcap = folder / "capture.pcap"
    if has_capture(run_dir):
        cut_pcap(run_dir / "capture.pcap", pcap, since)  # the frames as captured
    else:
        write_pcap(pcap, packets)
    ladders = write_ladders(folder, failed_calls(packets), names=names, packets=packets)
    text = (
        "\n".join(f"{body}  -> {svg}\n" for _, svg, body in ladders[:5])
        or "no failed calls during the test\n"
    )
    return [
        ("siplab ladder", text),
        ("siplab capture", f"pcap: {pcap} ({len(packets)} packets)\nrun folder: {run_dir}"),
    ]


def write_capture(run_dir: str | Path) -> Path:
    """``<run_dir>/capture.pcap``: the real capture when the run has one; for a run folder
    without a capture, a pcap rebuilt from its events (UDP frames only)."""
    run = Path(run_dir)
    target = run / "capture.pcap"
    if not has_capture(run):
        write_pcap(target, packets_from_events(load_events(run), _lab_addresses(run)))
    return target


__all__ = [
    "LINKTYPE_ETHERNET",
    "Ladder",
    "Packet",
    "SipRecord",
    "annotate_faults",
    "build_ladder",
    "failed_calls",
    "failure_evidence",
    "has_capture",
    "lab_packets",
    "ladder_png",
    "ladder_svg",
    "ladder_text",
    "load_events",
    "merge_events",
    "packets_from_events",
    "read_events",
    "run_packets",
    "udp_frame",
    "write_capture",
    "write_ladders",
    "write_pcap",
]
