"""StreamFramer: TCP framing by Content-Length, keep-alives, limits."""

from __future__ import annotations

import pytest

from router.sip import Headers, Request, SipParseError, StreamFramer, parse_untrusted, serialize


def _message(n: int, body: bytes = b"") -> bytes:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK{n}"),
            ("From", "<sip:a@x>;tag=1"),
            ("To", "<sip:b@x>"),
            ("Call-ID", f"call-{n}"),
            ("CSeq", f"{n} MESSAGE"),
        ]
    )
    return serialize(Request("MESSAGE", "sip:b@x", headers, body))


def _drain(framer: StreamFramer) -> list[bytes]:
    out = []
    while (message := framer.next_message()) is not None:
        out.append(message)
    return out


STREAM = [_message(1, b"hello"), _message(2), _message(3, b"\r\n\r\nbody with blank lines")]


def test_framer_whole_stream() -> None:
    framer = StreamFramer()
    framer.feed(b"".join(STREAM))
    assert _drain(framer) == STREAM
    assert framer.buffered == 0
    assert [parse_untrusted(m).call_id for m in STREAM] == ["call-1", "call-2", "call-3"]


def test_framer_byte_at_a_time() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for byte in b"".join(STREAM):
        framer.feed(bytes([byte]))
        out.extend(_drain(framer))
    assert out == STREAM


def test_framer_keepalives_counted_and_skipped() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n\r\n" + STREAM[0] + b"\r\n\r\n\r\n\r\n" + b"\r\n" + STREAM[1])
    assert _drain(framer) == STREAM[:2]
    assert framer.keepalives == 3


def test_framer_partial_ping_waits() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n\r")
    assert framer.next_message() is None
    assert framer.keepalives == 0
    framer.feed(b"\n")
    assert framer.next_message() is None
    assert framer.keepalives == 1


def test_framer_missing_content_length_is_400() -> None:
    framer = StreamFramer()
    framer.feed(STREAM[1].replace(b"Content-Length: 0\r\n", b""))
    with pytest.raises(SipParseError) as info:
        framer.next_message()
    assert info.value.status == 400
    assert info.value.trigger == "no_content_length"


@pytest.mark.parametrize("value", [b"-1", b"five", b"1 2"])
def test_framer_bad_content_length_is_400(value: bytes) -> None:
    framer = StreamFramer()
    framer.feed(STREAM[1].replace(b"Content-Length: 0", b"Content-Length: " + value))
    with pytest.raises(SipParseError):
        framer.next_message()


def test_framer_compact_content_length() -> None:
    framer = StreamFramer()
    framer.feed(STREAM[0].replace(b"Content-Length: 5", b"l : 5"))
    assert framer.next_message() == STREAM[0].replace(b"Content-Length: 5", b"l : 5")


def test_framer_oversized_message_is_513() -> None:
    framer = StreamFramer(max_size=300)
    framer.feed(_message(9, b"x" * 400))
    with pytest.raises(SipParseError) as info:
        framer.next_message()
    assert info.value.status == 513
    endless = StreamFramer(max_size=100)
    endless.feed(b"OPTIONS sip:x SIP/2.0\r\n" + b"X: y\r\n" * 30)
    with pytest.raises(SipParseError) as info:
        endless.next_message()
    assert info.value.status == 513
