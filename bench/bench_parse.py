"""Parse + serialize throughput of router.sip, next to a floor measured in the same run.

The floor is ``data.split(b"\\r\\n")`` over the same bytes: the least work any SIP parser must do.
The ratio (ours / floor, in time per message) is the number to watch: absolute rates move
from machine to machine, the ratio much less (docs PERFORMANCE.md).

Run: ``python bench/bench_parse.py [--seconds 1.0]``. Numbers only; nothing asserts.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from router.sip import parse_untrusted, serialize

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:1001@pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:1001@pbx.example.com>\r\n"
    b'From: "Alice" <sip:2001@pbx.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:2001@192.0.2.10:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: SIPp/3.6\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)

REGISTER = (
    b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:2001@pbx.example.com>\r\n"
    b"From: <sip:2001@pbx.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1827 REGISTER\r\n"
    b"Contact: <sip:2001@192.0.2.20:5060>;expires=3600\r\n"
    b'Authorization: Digest username="2001", realm="pbx.example.com", '
    b'nonce="ea9c8e88df84f1cec4341ae6cbe5a359", uri="sip:pbx.example.com", '
    b'response="dfe56131d1958046689d83306477ecc", algorithm=MD5, qop=auth, '
    b'nc=00000001, cnonce="0a4f113b"\r\n'
    b"Expires: 3600\r\n"
    b"User-Agent: SIPp/3.6\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (best of 3 rounds)."""
    n = 1000
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        took = time.perf_counter() - start
        if took > seconds / 10:
            break
        n *= 2
    per_round = max(1, int(n * (seconds / 3) / took))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        best = max(best, per_round / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()

    print(f"{'message':10} {'operation':34} {'msgs/s':>12} {'floor msgs/s':>13} {'ratio':>7}")
    for name, data in (("INVITE", INVITE), ("REGISTER", REGISTER)):
        floor = _rate(lambda data=data: data.split(b"\r\n"), args.seconds)

        def parse(data: bytes = data) -> object:
            return parse_untrusted(data)

        def parse_serialize(data: bytes = data) -> object:
            return serialize(parse_untrusted(data))

        def proxy_touch(data: bytes = data) -> object:
            # What a stateful proxy reads and writes on each request.
            msg = parse_untrusted(data)
            _ = msg.top_via.branch, msg.call_id, msg.cseq, msg.max_forwards, msg.routes
            msg.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.10;branch=z9hG4bKproxy1")
            msg.headers.set("Max-Forwards", "69")
            return serialize(msg)

        for label, fn in (
            ("parse_untrusted", parse),
            ("parse + serialize", parse_serialize),
            ("parse + proxy reads/writes + ser.", proxy_touch),
        ):
            rate = _rate(fn, args.seconds)
            print(f"{name:10} {label:34} {rate:12,.0f} {floor:13,.0f} {floor / rate:6.1f}x")


if __name__ == "__main__":
    main()
