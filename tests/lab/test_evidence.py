"""Evidence: merged events, datagrams rebuilt once each, a pcap a reader accepts, ladders."""

from __future__ import annotations

import argparse
import json
import socket
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from lab.cli import add_commands
from lab.evidence import (
    build_ladder,
    failed_calls,
    ladder_svg,
    ladder_text,
    load_events,
    merge_events,
    packets_from_events,
    write_ladders,
    write_pcap,
)
from router.sip import Headers, Request, make_response, serialize

UA, ROUTER, PBX = "127.0.0.100:5062", "127.0.0.10:5060", "127.0.0.11:5060"
NODES = {"router": ROUTER, "pbx1": PBX}


def invite(call_id: str, reason: str | None = None, method: str = "INVITE") -> Request:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {UA};branch=z9hG4bK{call_id}{method}"),
            ("From", "<sip:101@127.0.0.10>;tag=f1"),
            ("To", "<sip:600@127.0.0.10>"),
            ("Call-ID", call_id),
            ("CSeq", f"1 {method}"),
            ("Max-Forwards", "70"),
        ]
    )
    if reason:
        headers.add("Reason", reason)
    return Request(method, "sip:600@127.0.0.10", headers)


def ev(t: float, node: str, direction: str, peer: str, msg: Any) -> dict[str, Any]:
    is_req = isinstance(msg, Request)
    return {
        "t": t,
        "node": node,
        "event": "sip",
        "dir": direction,
        "peer": peer,
        "method": msg.method if is_req else msg.cseq.method,
        "status": None if is_req else msg.status,
        "call_id": msg.call_id,
        "raw": serialize(msg).decode(),
    }


def call_events(call_id: str, status: int, t0: float = 100.0) -> list[dict[str, Any]]:
    """UA -> router -> pbx1 and back; the router retransmits its INVITE once."""
    req = invite(call_id)
    resp = make_response(req, status, to_tag="t9")
    return [
        ev(t0, "router", "in", UA, req),  # the UA (SIPp) writes no events
        ev(t0 + 0.001, "router", "out", PBX, req),
        ev(t0 + 0.002, "pbx1", "in", ROUTER, req),
        ev(t0 + 0.5, "router", "out", PBX, req),  # retransmission: a second datagram
        ev(t0 + 0.501, "pbx1", "in", ROUTER, req),
        ev(t0 + 0.6, "pbx1", "out", ROUTER, resp),
        ev(t0 + 0.5995, "router", "in", PBX, resp),  # the receiver's clock may log first
        ev(t0 + 0.602, "router", "out", UA, resp),
    ]


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "events").mkdir(parents=True)
    events = call_events("ok-call", 200) + call_events("busy-call", 486, t0=101.0)
    bye = invite("dropped-call", reason='SIP;cause=408;text="ACK timeout"', method="BYE")
    events.append(ev(102.0, "pbx1", "out", ROUTER, bye))
    for node in ("router", "pbx1"):
        lines = [json.dumps(e) for e in events if e["node"] == node]
        (run / "events" / f"{node}.jsonl").write_text(
            "\n".join([*lines, '{"torn": '][: len(lines) + 1]) + "\n"
        )
    return run


def test_merge_events_sorts_every_node_and_skips_torn_lines(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    merged = merge_events(run)
    times = [json.loads(line)["t"] for line in merged.read_text().splitlines()]
    assert times == sorted(times)
    assert len(times) == 17
    assert len(load_events(run)) == 17


def test_packets_pair_both_ends_and_keep_retransmissions() -> None:
    packets = packets_from_events(call_events("c", 200), NODES)
    flows = [(p.src, p.dst, p.method, p.status) for p in packets]
    assert flows == [
        (UA, ROUTER, "INVITE", None),
        (ROUTER, PBX, "INVITE", None),
        (ROUTER, PBX, "INVITE", None),
        (PBX, ROUTER, "INVITE", 200),
        (ROUTER, UA, "INVITE", 200),
    ]


def test_packets_guess_node_addresses_from_via_without_lab_json() -> None:
    req = invite("x")
    events = [ev(1.0, "router", "out", PBX, req), ev(1.001, "pbx1", "in", "127.0.0.100:5062", req)]
    packets = packets_from_events(events)
    assert [(p.src, p.dst) for p in packets] == [(UA, PBX)]


def _ones_complement(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_pcap_frames_have_valid_headers_and_checksums(tmp_path: Path) -> None:
    packets = packets_from_events(call_events("c", 200), NODES)
    path = tmp_path / "capture.pcap"
    assert write_pcap(path, packets) == 5
    data = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 1)
    offset, seen = 24, []
    while offset < len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        assert incl == orig == len(frame)
        assert frame[12:14] == b"\x08\x00"
        ip = frame[14:34]
        assert ip[0] == 0x45
        assert ip[9] == 17
        assert _ones_complement(ip) == 0xFFFF  # header checksum verifies
        assert struct.unpack("!H", ip[2:4])[0] == len(frame) - 14
        udp = frame[34:]
        sport, dport, length, _ = struct.unpack("!HHHH", udp[:8])
        assert length == len(udp)
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, length)
        assert _ones_complement(pseudo + udp) == 0xFFFF  # UDP checksum verifies
        src = f"{socket.inet_ntoa(ip[12:16])}:{sport}"
        dst = f"{socket.inet_ntoa(ip[16:20])}:{dport}"
        seen.append((sec + usec / 1e6, src, dst, udp[8:]))
    assert [(s, d) for _, s, d, _ in seen] == [(p.src, p.dst) for p in packets]
    assert seen[0][3].startswith(b"INVITE sip:600@127.0.0.10 SIP/2.0\r\n")
    assert abs(seen[0][0] - 100.0) < 1e-5


def test_failed_calls_rules() -> None:
    events = call_events("ok", 200) + call_events("busy", 486, 200.0)
    unanswered = invite("lost")
    events.append(ev(300.0, "router", "in", UA, unanswered))
    challenged = call_events("auth", 401, 400.0) + call_events("auth", 200, 401.0)
    bye = invite("ackless", reason="SIP;cause=408", method="BYE")
    events += [*challenged, ev(500.0, "pbx1", "out", ROUTER, bye)]
    assert failed_calls(packets_from_events(events, NODES)) == ["busy", "lost", "ackless"]


def test_ladder_text_and_svg_show_every_leg() -> None:
    packets = packets_from_events(call_events("c", 486), NODES)
    names = {v: k for k, v in NODES.items()}
    ladder = build_ladder(packets, "c", names)
    assert ladder.lanes == [UA, ROUTER, PBX]  # phones left, router, PBX nodes
    text = ladder_text(ladder)
    assert "router" in text
    assert "pbx1" in text
    assert text.count("INVITE") == 5  # 3 requests, 2 responses labelled with the CSeq method
    assert "486 Busy Here" in text
    assert "--->" in text
    assert "<---" in text
    root = ET.fromstring(ladder_svg(ladder))
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "486 Busy Here (INVITE)" in labels
    assert len(list(root.iter("{http://www.w3.org/2000/svg}line"))) == 3 + 5


def test_write_ladders_failed_only_and_png(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    written = write_ladders(run, failed=True, png=True)
    assert sorted(cid for cid, _, _ in written) == ["busy-call", "dropped-call"]
    for _, svg, _ in written:
        assert svg.parent == run / "ladders"
        assert svg.read_text().startswith("<svg")
        assert svg.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_ladder_command(tmp_path: Path, capsys: Any) -> None:
    run = make_run(tmp_path)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["ladder", str(run), "--call-id", "busy-call"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Call-ID: busy-call" in out
    assert str(run / "ladders" / "busy-call.svg") in out
    args = parser.parse_args(["ladder", str(run), "--call-id", "nope"])
    assert args.func(args) == 1
