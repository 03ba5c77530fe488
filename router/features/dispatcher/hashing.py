"""Kamailio's dispatcher hash (``ds_get_hash``) and URI hash keys (``get_uri_hash_keys``).

``ds_get_hash(x, y)`` sums, over each string, 4-byte big-endian chunks ``v`` as
``h += v ^ (v >> 3)``, then the left-over tail (0-3 bytes) the same way (a zero tail adds 0),
and mixes ``h = (h + (h >> 11)) + ((h >> 13) + (h >> 23))``; a result of 0 becomes 1; two
absent strings give 0. Arithmetic is 32-bit unsigned. The bytes are C ``char`` (signed on the
x86/ARM Linux builds Kamailio ships), so a byte >= 0x80 is sign-extended before shifting; we do
the same so non-ASCII keys hash as Kamailio does.

``get_uri_hash_keys``: key1 = URI user, key2 = host, plus ``:port`` when the URI has a port
that is not the scheme default (5060 for sip, 5061 for sips); with modparam ``flags`` bit 1
(``DS_HASH_USER_ONLY``) only the user is used.
"""

from __future__ import annotations

from router.sip.errors import SipParseError
from router.sip.uri import SipUri, parse_uri

_MASK = 0xFFFFFFFF


def _signed(byte: int) -> int:
    return byte - 256 if byte > 127 else byte


def _feed(h: int, data: bytes) -> int:
    n = len(data)
    p = 0
    while p + 4 <= n:
        v = (
            (_signed(data[p]) << 24)
            + (_signed(data[p + 1]) << 16)
            + (_signed(data[p + 2]) << 8)
            + _signed(data[p + 3])
        ) & _MASK
        h = (h + (v ^ (v >> 3))) & _MASK
        p += 4
    v = 0
    while p < n:
        v = ((v << 8) + _signed(data[p])) & _MASK
        p += 1
    return (h + (v ^ (v >> 3))) & _MASK


def ds_get_hash(x: str | None, y: str | None = None) -> int:
    """Kamailio ``ds_get_hash`` over the UTF-8 bytes of ``x`` and ``y`` (either may be None)."""
    if x is None and y is None:
        return 0
    h = 0
    for part in (x, y):
        if part is not None:
            h = _feed(h, part.encode("utf-8"))
    h = ((h + (h >> 11)) + ((h >> 13) + (h >> 23))) & _MASK
    return h or 1


def uri_hash_keys(
    uri_text: str, *, user_only: bool = False
) -> tuple[str | None, str | None] | None:
    """``get_uri_hash_keys``: ``(user, "host[:port]")``, or None when the URI does not parse.

    Only sip/sips URIs carry a host; anything else is "invalid uri" for Kamailio (selection
    fails).
    """
    try:
        uri = parse_uri(uri_text.strip())
    except SipParseError:
        return None
    if not isinstance(uri, SipUri):
        return None
    if user_only:
        return uri.user, None
    key2 = uri.host
    default_port = 5061 if uri.scheme == "sips" else 5060
    if uri.port is not None and uri.port != default_port:
        key2 = f"{key2}:{uri.port}"
    return uri.user, key2


def hash_uri(uri_text: str | None, *, user_only: bool = False) -> int | None:
    """Hash of a URI as algs 1-3 compute it; None when there is no usable URI."""
    if uri_text is None:
        return None
    keys = uri_hash_keys(uri_text, user_only=user_only)
    if keys is None:
        return None
    return ds_get_hash(*keys)
