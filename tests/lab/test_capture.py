"""The lab's packet capture (lab/capture.py, tcpdump on lo) and its reader (lab/wire.py)."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.capture import (
    CaptureConfig,
    flush,
    read_state,
    start_capture,
    stop_capture,
    write_keep_hook,
)
from lab.evidence import LINKTYPE_ETHERNET, _checksum, udp_frame
from lab.wire import PcapReader, cut_pcap, read_records, sip_record
from router.sip import Headers, Request, make_response, parse_untrusted, serialize

pytestmark = pytest.mark.lab

NET = 60


def sip_request(call_id: str, method: str = "INVITE", body: bytes = b"") -> bytes:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-test-1"),
            ("From", "<sip:100@lab>;tag=a"),
            ("To", "<sip:600@lab>"),
            ("Call-ID", call_id),
            ("CSeq", f"7 {method}"),
            ("Max-Forwards", "70"),
            ("Content-Length", str(len(body))),
        ]
    )
    return serialize(Request(method, "sip:600@lab", headers, body))


# -- the reader ---------------------------------------------------------------------------------


def test_sip_record_reads_the_fields_the_evidence_needs() -> None:
    data = sip_request("abc@host")
    r = sip_record(1.5, "127.0.0.1:5060", "127.0.0.2:5060", data)
    assert r is not None
    assert (r.method, r.status, r.call_id, r.cseq, r.branch) == (
        "INVITE",
        None,
        "abc@host",
        7,
        "z9hG4bK-test-1",
    )
    request = parse_untrusted(data)
    assert isinstance(request, Request)
    # a response's method is its CSeq's
    ok = sip_record(2.0, "b:1", "a:1", serialize(make_response(request, 486)))
    assert ok is not None
    assert (ok.method, ok.status, ok.call_id) == ("INVITE", 486, "abc@host")
    compact = b"OPTIONS sip:x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKc\r\ni: cid\r\nCSeq: 1 OPTIONS\r\n\r\n"
    c = sip_record(0.0, "a:1", "b:1", compact)
    assert c is not None
    assert (c.call_id, c.branch, c.method) == ("cid", "z9hG4bKc", "OPTIONS")
    assert sip_record(0.0, "a:1", "b:1", b"\r\n\r\n") is None
    assert sip_record(0.0, "a:1", "b:1", b"GET / HTTP/1.1\r\n\r\n") is None


def tcp_frame(src: str, dst: str, seq: int, payload: bytes, flags: int = 0x18) -> bytes:
    """An Ethernet/IPv4/TCP frame (checksums left zero: the reader does not check them)."""
    sip_, sport = src.rsplit(":", 1)
    dip, dport = dst.rsplit(":", 1)
    tcp = struct.pack("!HHIIBBHHH", int(sport), int(dport), seq, 0, 5 << 4, flags, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0x4000,
        64,
        6,
        0,
        socket.inet_aton(sip_),
        socket.inet_aton(dip),
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + payload


def write_frames(path: Path, frames: list[tuple[float, bytes]]) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for t, frame in frames:
            sec = int(t)
            f.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(frame), len(frame)))
            f.write(frame)


def test_tcp_stream_is_reassembled_and_cut_by_content_length(tmp_path: Path) -> None:
    a, b = "127.60.0.20:40000", "127.60.0.10:5060"
    stream = sip_request("one", "MESSAGE", b"hello") + b"\r\n\r\n" + sip_request("two")
    seq = 1000
    pieces = [stream[:30], stream[30:200], stream[200:]]
    frames = [(1.0, tcp_frame(a, b, seq - 1, b"", flags=0x02))]  # SYN: sequence space
    offset = seq
    for i, piece in enumerate(pieces):
        frames.append((1.1 + i, tcp_frame(a, b, offset, piece)))
        if i == 1:  # a retransmission of the second segment: its bytes are not taken twice
            frames.append((1.15 + i, tcp_frame(a, b, offset, piece)))
        offset += len(piece)
    frames.append((5.0, udp_frame("127.60.0.21:5060", b, sip_request("udp"))))
    path = tmp_path / "c.pcap"
    write_frames(path, frames)
    records = read_records(path)
    assert [(r.call_id, r.transport, r.method) for r in records] == [
        ("one", "tcp", "MESSAGE"),
        ("two", "tcp", "INVITE"),
        ("udp", "udp", "INVITE"),
    ]
    assert records[0].data.endswith(b"\r\n\r\nhello")
    assert records[1].t == pytest.approx(3.1)  # completed by the third segment
    assert [r.call_id for r in read_records(path, since=4.0)] == ["udp"]
    cut = tmp_path / "cut.pcap"
    assert cut_pcap(path, cut, 2.0) == 4
    # the cut starts mid-stream, inside message "one": the reader resynchronises at "two"
    assert [r.call_id for r in read_records(cut)] == ["two", "udp"]


def test_reader_leaves_a_torn_record_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    frame = udp_frame("127.60.0.1:1", "127.60.0.2:2", sip_request("x"))
    write_frames(path, [(1.0, frame), (2.0, frame)])
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])
    reader = PcapReader(path)
    assert [f.t for f in reader.frames()] == [1.0]
    path.write_bytes(whole)
    assert [f.t for f in reader.frames()] == [2.0]
    path.write_bytes(b"not a pcap at all, but long enough")
    with pytest.raises(ValueError, match="not a libpcap file"):
        list(PcapReader(path).frames())


# -- the live capture ---------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    stop_capture(tmp_path, 1.0)  # whatever the test did


def udp_pair() -> tuple[socket.socket, socket.socket]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((f"127.{NET}.0.201", 0))
    b.bind((f"127.{NET}.0.202", 0))
    return a, b


def test_capture_sees_the_lab_traffic_only_and_flush_is_a_barrier(run_dir: Path) -> None:
    state = start_capture(run_dir, CaptureConfig(NET), attached=True)
    assert state.pid is not None
    a, b = udp_pair()
    a_addr, b_addr = a.getsockname(), b.getsockname()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind((f"127.{NET + 1}.0.201", 0))
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((f"127.{NET}.0.203", 0))
    server.listen(1)
    try:
        for i in range(20):
            a.sendto(sip_request(f"udp-{i}"), b.getsockname())
        other.sendto(sip_request("other-net"), (f"127.{NET + 1}.0.202", 9))
        a.sendto(sip_request("db-port"), (f"127.{NET}.0.202", 5432))
        with socket.create_connection(server.getsockname()) as client:
            conn, _ = server.accept()
            client.sendall(sip_request("tcp-1") + sip_request("tcp-2"))
            assert flush(state)  # no sleep: everything sent above is now in the file
            records = read_records(run_dir / "capture.pcap")
            conn.close()
    finally:
        for s in (a, b, other, server):
            s.close()
    ids = [r.call_id for r in records]
    assert ids[:20] == [f"udp-{i}" for i in range(20)]
    assert ids[20:] == ["tcp-1", "tcp-2"]
    assert records[0].src == f"127.{NET}.0.201:{a_addr[1]}"
    assert records[0].dst == f"127.{NET}.0.202:{b_addr[1]}"
    assert {r.transport for r in records[20:]} == {"tcp"}
    path = stop_capture(run_dir)
    assert path == run_dir / "capture.pcap"
    stopped = read_state(run_dir)
    assert stopped is not None
    assert stopped.pid is None
    assert not Path(f"/proc/{state.pid}").exists()
    assert [r.call_id for r in read_records(path)] == ids  # nothing lost at stop


def test_ring_buffer_keeps_a_bounded_window_of_the_last_traffic(run_dir: Path) -> None:
    state = start_capture(run_dir, CaptureConfig(NET, ring_mb=1, ring_files=2), attached=True)
    a, b = udp_pair()
    body = b"x" * 1200
    try:
        for i in range(3000):  # about 4 MB: twice the ring
            a.sendto(sip_request(f"r-{i}", "MESSAGE", body), b.getsockname())
            time.sleep(0.0002)  # paced like a load test, not a flood the kernel drops from
            if i % 200 == 0:
                b.setblocking(False)
                while True:
                    try:
                        b.recv(65535)
                    except BlockingIOError:
                        break
        assert flush(state, 10.0)
    finally:
        a.close()
        b.close()
    path = stop_capture(run_dir)
    assert path is not None
    assert path.stat().st_size <= 2 * 1_000_000 + 70_000
    ids = [r.call_id for r in read_records(path)]
    assert ids[-1] == "r-2999"
    assert "r-0" not in ids
    assert len(ids) > 500
    numbers = [int(i.split("-")[1]) for i in ids if i]
    assert numbers == sorted(numbers)  # parts merged oldest first
    assert not list(run_dir.glob("capture.pcap[0-9]*"))
    stopped = read_state(run_dir)
    assert stopped is not None
    assert stopped.dropped == 0


def test_ring_files_with_failures_are_kept_out_of_the_ring(run_dir: Path) -> None:
    """keep_mb: a finished ring file holding a failure answer (not a 401 challenge) leaves the
    ring for capture-kept/ (tcpdump's -z hook) and is merged in front of the ring at stop."""
    config = CaptureConfig(NET, ring_mb=1, ring_files=5, keep_mb=3)
    state = start_capture(run_dir, config, attached=True)
    a, b = udp_pair()
    body = b"x" * 1200
    request = parse_untrusted(sip_request("early-failure"))
    assert isinstance(request, Request)
    try:
        a.sendto(serialize(make_response(request, 401)), b.getsockname())  # a challenge: no
        a.sendto(serialize(make_response(request, 503)), b.getsockname())  # a failure: kept
        for i in range(7000):  # about 9 MB: the ring is 5 MB
            a.sendto(sip_request(f"k-{i}", "MESSAGE", body), b.getsockname())
            time.sleep(0.0002)  # paced: the hook must run before the ring comes round
            if i % 200 == 0:
                b.setblocking(False)
                while True:
                    try:
                        b.recv(65535)
                    except BlockingIOError:
                        break
        assert flush(state, 10.0)
    finally:
        a.close()
        b.close()
    kept = run_dir / "capture-kept"
    deadline = time.monotonic() + 10.0  # the hook runs in its own process after a rotation
    while not list(kept.glob("*.pcap")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(kept.glob("*.pcap"))) == 1
    path = stop_capture(run_dir)
    assert path is not None
    records = read_records(path)
    assert [r.status for r in records[:2]] == [401, 503]  # the early failure survived
    assert records[-1].call_id == "k-6999"
    assert "k-2000" not in {r.call_id for r in records}  # the middle went round the ring
    assert not kept.exists()


def test_keep_hook_ignores_challenges_and_respects_the_budget(tmp_path: Path) -> None:
    request = parse_untrusted(sip_request("c"))
    assert isinstance(request, Request)

    def part(name: str, status: int) -> Path:
        path = tmp_path / name
        answer = serialize(make_response(request, status))
        write_frames(path, [(1.0, udp_frame("127.60.0.1:1", "127.60.0.2:2", answer))])
        return path

    def run(hook: Path, file: Path) -> None:
        subprocess.run([str(hook), str(file)], check=True, timeout=10)

    kept = tmp_path / "capture-kept"
    hook = write_keep_hook(tmp_path, 1, ring_mb=0)
    challenge = part("capture.pcap0", 407)
    run(hook, challenge)
    assert challenge.exists()  # a challenge is no failure: the file stays in the ring
    failure = part("capture.pcap1", 486)
    run(write_keep_hook(tmp_path, 0, ring_mb=0), failure)
    assert failure.exists()  # over the budget: stays in the ring
    run(write_keep_hook(tmp_path, 1, ring_mb=1), failure)
    assert failure.exists()  # smaller than a ring file: tcpdump is writing it again
    run(write_keep_hook(tmp_path, 1, ring_mb=0), failure)
    assert not failure.exists()
    assert len(list(kept.glob("*.pcap"))) == 1
    (tmp_path / "capture-stopping").touch()
    late = part("capture.pcap0", 500)
    run(hook, late)
    assert late.exists()  # the capture is stopping: the hook leaves files alone
