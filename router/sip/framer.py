"""Message framing for stream transports (TCP, TLS).

RFC 3261 §18.3: "In the case of stream-oriented transports such as TCP, the Content-Length
header field indicates the size of the body. ... it MUST be used with stream oriented
transports." So a stream message is: header block up to the empty line, then exactly
Content-Length bytes. A message without Content-Length cannot be framed: the stream is
unusable from that point, and ``next_message`` raises.

Keep-alives (RFC 5626 §3.5.1): a client sends CRLFCRLF ("ping") and expects CRLF ("pong").
``keepalives`` counts the pings seen so the driver can answer each one; a lone CRLF between
messages is skipped as §7.5 asks ("MUST ignore any CRLF appearing before the start-line").

The framer is sans-IO in the h11 sense: ``feed`` bytes in any chunking, including one byte at a
time, and pull whole messages with ``next_message``; the result does not depend on chunking.
"""

from __future__ import annotations

from .errors import SipParseError

DEFAULT_MAX_MESSAGE_SIZE = 65535


class StreamFramer:
    """Cut a byte stream into raw SIP messages.

    Args:
        max_size: largest message (headers plus body) accepted; beyond it ``next_message``
            raises ``SipParseError`` 513 (Message Too Large, RFC 3261 §21.5.13).
    """

    __slots__ = ("_buf", "_scan_from", "keepalives", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._scan_from = 0
        self.keepalives = 0
        """Count of CRLFCRLF pings seen (each should be answered with one CRLF)."""
        self.max_size = max_size
        """Largest accepted message in bytes."""

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned message."""
        return len(self._buf)

    def _skip_crlf(self) -> bool:
        """Drop leading CRLFs; False if more bytes are needed to decide."""
        buf = self._buf
        while buf[:1] == b"\r":
            if buf.startswith(b"\r\n\r\n"):
                self.keepalives += 1
                del buf[:4]
            elif len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return False  # could still become a ping
            elif buf.startswith(b"\r\n"):
                del buf[:2]
            else:
                raise SipParseError("bare CR before start line", trigger="framing")
            self._scan_from = 0
        return True

    def next_message(self) -> bytes | None:
        """Raw bytes of the next complete message, or None until more bytes arrive.

        Raises:
            SipParseError: missing/invalid Content-Length (400), or a message over
                ``max_size`` (513). The stream cannot be resynchronised after either.
        """
        if not self._skip_crlf():
            return None
        buf = self._buf
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n", self._scan_from)
        if end < 0:
            if len(buf) > self.max_size:
                raise SipParseError(
                    "header block exceeds the maximum message size", status=513, trigger="too_large"
                )
            self._scan_from = max(0, len(buf) - 3)
            return None
        length = _content_length(bytes(buf[:end]))
        total = end + 4 + length
        if total > self.max_size:
            raise SipParseError(
                f"message of {total} bytes exceeds {self.max_size}", status=513, trigger="too_large"
            )
        if len(buf) < total:
            self._scan_from = end  # the header end is known; avoid rescanning
            return None
        message = bytes(buf[:total])
        del buf[:total]
        self._scan_from = 0
        return message


def _content_length(head: bytes) -> int:
    """Content-Length of a header block (bytes, unfolded lines are enough: digits only)."""
    value: int | None = None
    for line in head.split(b"\r\n")[1:]:
        colon = line.find(b":")
        if colon <= 0 or line[:1] in (b" ", b"\t"):
            continue
        name = line[:colon].rstrip(b" \t").lower()
        if name not in (b"content-length", b"l"):
            continue
        text = line[colon + 1 :].strip(b" \t")
        if not text.isdigit() or len(text.lstrip(b"0")) > 10:
            raise SipParseError("bad Content-Length on stream", trigger="content_length")
        this = int(text)
        if value is not None and value != this:
            raise SipParseError("conflicting Content-Length on stream", trigger="content_length")
        value = this
    if value is None:
        raise SipParseError(
            "Content-Length is required on stream transports (RFC 3261 §18.3)",
            trigger="no_content_length",
        )
    return value
