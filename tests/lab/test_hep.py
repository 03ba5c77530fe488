"""HEPv3 as a second evidence source (lab/hep.py): parsing, and Kamailio's siptrace for real."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.hep import encode_hep, parse_hep
from lab.requires import needs
from lab.routers.kamailio import kamailio_binary
from lab.wire import SipRecord, read_records, sip_record
from router.sip import Headers, Request, parse_untrusted, serialize

NET = 60
KAMAILIO = f"127.{NET}.0.249"
HEP = f"127.{NET}.0.248"
PHONE = f"127.{NET}.0.247"


def options(call_id: str) -> bytes:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {PHONE}:5060;branch=z9hG4bK-hep-{call_id}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:probe@lab>;tag=h1"),
            ("To", "<sip:router@lab>"),
            ("Call-ID", call_id),
            ("CSeq", "1 OPTIONS"),
            ("Content-Length", "0"),
        ]
    )
    return serialize(Request("OPTIONS", f"sip:{KAMAILIO}:5060", headers))


def test_hep_round_trip_and_what_is_skipped() -> None:
    record = sip_record(1700000000.25, "127.0.0.1:5061", "127.0.0.2:5060", options("rt"))
    assert record is not None
    back = parse_hep(encode_hep(record))
    assert back is not None
    assert (back.src, back.dst, back.method, back.call_id, back.data) == (
        record.src,
        record.dst,
        "OPTIONS",
        "rt",
        record.data,
    )
    assert back.t == pytest.approx(record.t)
    assert parse_hep(b"not hep at all") is None
    hep = encode_hep(record)
    assert parse_hep(hep[:-10]) is None  # the payload chunk runs past the end
    ipv6 = hep.replace(b"\x00\x00\x00\x01\x00\x07\x02", b"\x00\x00\x00\x01\x00\x07\x0a", 1)
    assert parse_hep(ipv6) is None


CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:{kamailio}:5060
loadmodule "sl.so"
loadmodule "siptrace.so"
modparam("siptrace", "duplicate_uri", "sip:{hep}:9060")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", 3)
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_on", 1)
request_route {{
    sip_trace();
    sl_send_reply("200", "OK");
}}
"""


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "hep.pcap"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.hep", "--listen", f"{HEP}:9060", "--out", str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert "listening" in proc.stdout.readline()  # bound before it says so
    yield out
    proc.terminate()
    assert proc.wait(10) == 0
    proc.stdout.close()


@needs(kamailio_binary() is not None, "Kamailio not installed (Debian package kamailio)")
def test_kamailio_siptrace_hep_becomes_records(tmp_path: Path, receiver: Path) -> None:
    """A real Kamailio mirrors the OPTIONS it receives over HEPv3 (siptrace); the receiver's
    pcap holds it with the addresses and bytes of the datagram on the wire."""
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(CFG.format(kamailio=KAMAILIO, hep=HEP))
    binary = kamailio_binary()
    assert binary is not None
    argv = [binary, "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8", "-Y", str(tmp_path)]
    with (tmp_path / "kamailio.log").open("wb") as log:
        kam = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    sent = options("hep-1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((PHONE, 5060))
            sock.settimeout(0.2)
            answer = None
            deadline = time.monotonic() + 15.0
            while answer is None and time.monotonic() < deadline:
                assert kam.poll() is None, (tmp_path / "kamailio.log").read_text()[-2000:]
                sock.sendto(sent, (KAMAILIO, 5060))  # until Kamailio is up and answers
                try:
                    answer = parse_untrusted(sock.recv(65535))
                except TimeoutError:
                    continue
        assert answer is not None
        records: list[SipRecord] = []
        while not records and time.monotonic() < deadline:
            records = read_records(receiver)
            time.sleep(0.02)  # the receiver flushes each message; poll the file
    finally:
        kam.terminate()
        kam.wait(10)
    assert records, "no HEP message written"
    first = records[0]
    assert (first.src, first.dst) == (f"{PHONE}:5060", f"{KAMAILIO}:5060")
    assert (first.method, first.call_id, first.status) == ("OPTIONS", "hep-1", None)
    assert first.data == sent
