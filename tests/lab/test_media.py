"""RTP packets and RFC 3550 receiver statistics (lab/media.py)."""

from __future__ import annotations

import pytest

from lab.media import RtpPacket, parse_rtp, rtp_packet, sdp_media, stream_stats


def test_rtp_header_round_trip() -> None:
    data = rtp_packet(8, 65535, 123456, 0xDEADBEEF, b"\xd5" * 160)
    assert len(data) == 172
    packet = parse_rtp(data, 1.5)
    assert packet == RtpPacket(8, 65535, 123456, 0xDEADBEEF, 1.5)
    assert parse_rtp(b"\x00" * 12, 0) is None  # version 0
    assert parse_rtp(b"\x80", 0) is None


def _stream(arrivals: list[float], seqs: list[int] | None = None) -> list[RtpPacket]:
    seqs = seqs if seqs is not None else list(range(len(arrivals)))
    return [RtpPacket(0, s, s * 160, 1, a) for s, a in zip(seqs, arrivals, strict=True)]


def test_stats_no_jitter_when_spacing_matches_timestamps() -> None:
    stats = stream_stats(_stream([10 + 0.02 * i for i in range(50)]))
    assert (stats.received, stats.expected, stats.lost) == (50, 50, 0)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_stats_loss_and_jitter() -> None:
    # packets 2 and 3 lost; packet 4 arrives 10 ms late
    arrivals = [0.0, 0.02, 0.09, 0.10]
    stats = stream_stats(_stream(arrivals, [0, 1, 4, 5]))
    assert (stats.received, stats.expected, stats.lost) == (4, 6, 2)
    assert stats.loss_fraction == pytest.approx(2 / 6)
    # D = 10 ms once (late), then 10 ms again (back on time): J = 10/16, then += (10 - J)/16
    first = 10 / 16
    assert stats.jitter_ms == pytest.approx(first + (10 - first) / 16)


def test_sdp_media_reads_the_answer() -> None:
    body = b"v=0\r\nc=IN IP4 127.30.0.11\r\nt=0 0\r\nm=audio 12000 RTP/AVP 0 101\r\n"
    assert sdp_media(body) == ("127.30.0.11", 12000, [0, 101])
    with pytest.raises(ValueError, match="no audio"):
        sdp_media(b"v=0\r\n")
