"""The one door for network bytes: ``parse_untrusted`` and its inverse ``serialize``.

``parse_untrusted`` does the least work that still lets a router decide what to do with a
message (RFC 3261 §7, §18.3):

1. skip CRLFs before the start line (§7.5: "implementations processing SIP messages over
   stream-oriented transports MUST ignore any CRLF appearing before the start-line"),
2. find the empty line, decode the header block as UTF-8,
3. split the start line and the header fields, unfolding continuation lines (§7.3.1: "the
   folding ... replaced by a single SP"),
4. check what every element needs before acting: SIP-Version (505 otherwise, §8.2.2.1 ...
   "SIP/2.0" only), Request-URI syntax, the five headers a reply is built from, CSeq method
   equal to the request method (§8.1.1.5), Content-Length against the body,
5. hand back a ``Request``/``Response`` whose other headers stay raw until someone asks.

It raises only ``SipParseError``: the code is written not to raise anything else, and a safety
net converts a stray ``ValueError``/``IndexError`` (a bug) into a ``SipParseError`` with trigger
``internal`` so the receive loop lives on; the Hypothesis tests hold it to that.

Body framing over datagrams (§18.3): "If the message is shorter than the value of
Content-Length, the message is rejected (400); if longer, the remainder is discarded" —
``dblreq`` of RFC 4475 is two requests in one datagram, the second of which is ignored this way.
"""

from __future__ import annotations

import re

from .errors import SipParseError
from .headers import (
    Via,
    canonical_name,
    parse_cseq,
    parse_int_value,
    parse_name_addr,
    parse_via_list,
)
from .message import (
    _COMMON_METHODS,
    Headers,
    Request,
    Response,
    _Field,
    _parse_call_id,
    _parse_max_forwards,
)
from .uri import SipUri, parse_uri

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_CONTENT_LENGTH_MAX = 2**31 - 1

# Canonical names of header names seen before, so the common path is a dict hit instead of a
# regex check and a lower(). Bounded: untrusted names are only added while it is small.
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX = 512

# The headers §8.2.6.2 builds a response from; all five must parse before a 400 can be sent.
_REPLY_HEADERS = ("via", "from", "to", "call-id", "cseq")


def _canonical_untrusted(name: str) -> str:
    canon = _NAME_CACHE.get(name)
    if canon is not None:
        return canon
    if not _TOKEN_RE.fullmatch(name):
        raise SipParseError(f"bad header name {name[:30]!r}", trigger="bad_header_name")
    canon = canonical_name(name)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[name] = canon
    return canon


def _split_fields(lines: list[str], folded: bool) -> list[_Field]:
    fields: list[_Field] = []
    if not folded:
        # Fast path, the common case: one field per line.
        cache = _NAME_CACHE
        append = fields.append
        for line in lines:
            name, sep, value = line.partition(":")
            canon = cache.get(name)
            if canon is None or not sep:
                # Not a known name as is: no ':' at all, or blanks before the colon, or new.
                if not sep:
                    raise SipParseError(
                        f"header line without ':': {line[:40]!r}", trigger="bad_header_line"
                    )
                name = name.rstrip(" \t")
                canon = _canonical_untrusted(name)
            append((canon, name, value.strip(" \t")))
        return fields
    for line in lines:
        if not line:
            raise SipParseError("empty header line", trigger="bad_header_line")
        if line[0] in " \t":
            # Continuation of a folded value (LWS = [*WSP CRLF] 1*WSP).
            if not fields:
                raise SipParseError("continuation line before any header", trigger="lwsstart")
            canon, name, value = fields[-1]
            more = line.strip(" \t")
            fields[-1] = (canon, name, f"{value} {more}" if value and more else value + more)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError(
                f"header line without name: {line[:40]!r}", trigger="bad_header_line"
            )
        # HCOLON = *( SP / HTAB ) ":" SWS
        name = line[:colon].rstrip(" \t")
        fields.append((_canonical_untrusted(name), name, line[colon + 1 :].strip(" \t")))
    return fields


def _can_reply(headers: Headers) -> bool:
    """True if a 400 can be built: Via, From, To, Call-ID and CSeq all present and parsed."""
    try:
        for name in _REPLY_HEADERS:
            value = headers.get(name)
            if value is None:
                return False
        for value in headers.get_all("via"):
            parse_via_list(value)
        parse_name_addr(headers.get("from") or "")
        parse_name_addr(headers.get("to") or "")
        parse_cseq(headers.get("cseq") or "")
        call_id = (headers.get("call-id") or "").strip()
    except SipParseError:
        return False
    return bool(call_id)


class _Scan:
    """What one pass over the fields collects for the checks (no parsing, no errors)."""

    __slots__ = ("duplicated", "first", "lengths", "vias")

    def __init__(self, fields: list[_Field]) -> None:
        vias: list[str] = []
        lengths: list[str] = []
        first: dict[str, str] = {}
        duplicated: list[str] = []
        for canon, _, value in fields:
            if canon in _SCANNED:
                if canon == "via":
                    vias.append(value)
                elif canon == "content-length":
                    lengths.append(value)
                elif canon not in first:
                    first[canon] = value
                elif canon != "max-forwards":
                    duplicated.append(canon)
        self.vias = vias
        self.lengths = lengths
        self.first = first
        self.duplicated = duplicated


_SCANNED = frozenset((*_REPLY_HEADERS, "max-forwards", "content-length"))


def _check_single(scan: _Scan, headers: Headers) -> None:
    """The five reply headers are present exactly once.

    §7.3.1 lets a header repeat only when its grammar is a comma list; Call-ID, CSeq, From and
    To are not (RFC 4475 §3.3.9 multi01 is answered with 400). Via may repeat.
    """
    first = scan.first
    for name in _REPLY_HEADERS:
        if name == "via" and scan.vias:
            continue
        if name not in first:
            raise SipParseError(f"missing {name} header", trigger="missing_header")
        if name in scan.duplicated:
            count = sum(1 for f in headers._fields if f[0] == name)
            raise SipParseError(f"{name} header appears {count} times", trigger="duplicate_header")


def _parse_vias(scan: _Scan, cache: dict[str, object]) -> None:
    # Parsed once here and cached, exactly as the ``vias`` accessor would.
    vias: list[Via] = []
    for value in scan.vias:
        vias.extend(parse_via_list(value))
    if not vias:
        raise SipParseError("missing Via header", trigger="missing_header")
    cache["via"] = vias


def _check_request(req: Request, scan: _Scan) -> None:
    """What every request must carry (RFC 3261 §8.1.1, §8.2)."""
    # Parse the Request-URI now: a request that cannot be routed is a 400 (RFC 4475
    # §3.1.2.11-13: ltgtruri, lwsruri, escruri-like defects). Unknown schemes parse to
    # AbsoluteUri; the proxy decides on 416.
    ruri = parse_uri(req.uri)
    if isinstance(ruri, SipUri) and ruri.headers:
        # §19.1.1 table: URI headers are "not allowed" in a Request-URI (RFC 4475 escruri).
        raise SipParseError("headers in the Request-URI", trigger="bad_request_uri")
    headers = req.headers
    _check_single(scan, headers)
    # Every typed value is parsed and cached (what the accessors would compute), raising
    # SipParseError if malformed.
    cache = headers._cache
    first = scan.first
    _parse_vias(scan, cache)
    cache["from"] = parse_name_addr(first["from"])
    cache["to"] = parse_name_addr(first["to"])
    cache["call-id"] = _parse_call_id(first["call-id"])
    cseq = cache["cseq"] = parse_cseq(first["cseq"])
    if cseq.method != req.method:
        # §8.1.1.5: "The method MUST match that of the request." (RFC 4475 mismatch01)
        raise SipParseError("CSeq method does not match the request method", trigger="cseq_method")
    cache["max-forwards"] = _parse_max_forwards(first.get("max-forwards"))


def _check_response(resp: Response, scan: _Scan) -> None:
    # A response we cannot match to a transaction is dropped (§18.1.2); malformed here means
    # "drop", never "answer".
    _check_single(scan, resp.headers)
    cache = resp.headers._cache
    first = scan.first
    _parse_vias(scan, cache)
    cache["cseq"] = parse_cseq(first["cseq"])
    cache["call-id"] = _parse_call_id(first["call-id"])
    cache["from"] = parse_name_addr(first["from"])
    cache["to"] = parse_name_addr(first["to"])


def _new_request(method: str, uri: str, headers: Headers, version: str) -> Request:
    req = Request.__new__(Request)
    req.method = method
    req.uri = uri
    req.headers = headers
    req.body = b""
    req.version = version
    return req


def _new_response(status: int, reason: str, headers: Headers, version: str) -> Response:
    resp = Response.__new__(Response)
    resp.status = status
    resp.reason = reason
    resp.headers = headers
    resp.body = b""
    resp.version = version
    return resp


def _parse_start_line(line: str) -> tuple[bool, str, str, str]:
    """(is_request, a, b, version): method/uri for requests, status/reason for responses."""
    if line[:4].upper() == "SIP/":
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        parts = line.split(" ", 2)
        version = parts[0]
        if not _VERSION_RE.fullmatch(version):
            raise SipParseError("bad SIP-Version", trigger="bad_start_line")
        if len(parts) < 2:
            raise SipParseError("status line without code", trigger="bad_start_line")
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
            raise SipParseError(f"bad status code {code[:20]!r}", trigger="bad_status_code")
        # RFC 4475 §3.1.1.11 "noreason": a missing Reason-Phrase is tolerated.
        return False, code, parts[2] if len(parts) > 2 else "", version
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF: exactly single spaces
    # (RFC 4475 §3.1.2.13 lwsruri / §3.1.2.14 lwsstart / §3.1.2.15 trws are 400).
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("request line needs exactly three parts", trigger="bad_start_line")
    method, uri, version = parts
    if method not in _COMMON_METHODS and not _TOKEN_RE.fullmatch(method):
        raise SipParseError(f"bad method {method[:20]!r}", trigger="bad_start_line")
    if not uri:
        raise SipParseError("empty Request-URI", trigger="bad_start_line")
    if version != "SIP/2.0" and not _VERSION_RE.fullmatch(version):
        raise SipParseError(f"bad SIP-Version {version[:20]!r}", trigger="bad_start_line")
    return True, method, uri, version


def _parse(data: bytes) -> Request | Response:
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("no empty line after the headers", trigger="no_header_end")
    head_bytes = data[start:end]
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("header block is not UTF-8", trigger="bad_utf8") from None
    lines = head.split("\r\n")
    crlf = len(lines) - 1
    if head.count("\r") != crlf or head.count("\n") != crlf:
        # NUL is legal inside a quoted-pair (RFC 4475 §3.1.1.2 intmeth), so only bare
        # CR/LF are refused here.
        raise SipParseError("bare CR or LF in header block", trigger="bad_line_end")
    start_line = lines[0]
    del lines[0]
    fields = _split_fields(lines, "\r\n " in head or "\r\n\t" in head)
    headers = Headers._from_parsed(fields)
    scan = _Scan(fields)
    body = data[end + 4 :]
    # Anything that does not start like a Status-Line is treated as a request attempt, so a
    # broken Request-Line still gets a 400 when the reply headers are usable.
    is_request = start_line[:4].upper() != "SIP/"
    message: Request | Response | None = None
    try:
        is_request, a, b, version = _parse_start_line(start_line)
        # The start line was checked above: what __post_init__ would check holds.
        if is_request:
            message = _new_request(a, b, headers, version)
        else:
            message = _new_response(int(a), b, headers, version)
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            # §8.2.2.1 / §21.5.20: 505 Version Not Supported (RFC 4475 §3.1.2.17 badvers).
            raise SipParseError(f"SIP version {version!r}", status=505, trigger="bad_version")
        lengths = scan.lengths
        if lengths:
            length = parse_int_value(lengths[0], "content_length", _CONTENT_LENGTH_MAX)
            for other in lengths[1:]:
                if parse_int_value(other, "content_length", _CONTENT_LENGTH_MAX) != length:
                    raise SipParseError("conflicting Content-Length", trigger="content_length")
            if len(body) < length:
                raise SipParseError(
                    f"body is {len(body)} bytes, Content-Length says {length}",
                    trigger="body_truncated",
                )
            if len(body) > length:
                body = body[:length]
        message.body = body
        if isinstance(message, Request):
            _check_request(message, scan)
        else:
            _check_response(message, scan)
    except SipParseError as exc:
        exc.can_reply = is_request and _can_reply(headers)
        if exc.can_reply:
            # A broken Request-Line still leaves usable reply headers (RFC 4475 lwsstart).
            exc.partial = (
                message
                if isinstance(message, Request)
                else Request("UNKNOWN", "sip:invalid", headers)
            )
        raise
    return message


def parse_untrusted(data: bytes) -> Request | Response:
    """Parse one SIP message from a datagram (or one framed stream message).

    Args:
        data: the raw bytes.

    Returns:
        A ``Request`` or ``Response``; body truncated to Content-Length when longer.

    Raises:
        SipParseError: and nothing else. ``status`` is 400 except 505 for a SIP-Version other
            than 2.0; ``can_reply`` says whether a 400 can be sent back.
    """
    try:
        return _parse(data)
    except SipParseError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
        raise SipParseError(f"internal parse failure: {exc!r}", trigger="internal") from exc


def serialize(message: Request | Response) -> bytes:
    """Wire form of ``message``, with a correct Content-Length.

    An existing Content-Length field is kept (name and position) and its value replaced when
    wrong; otherwise one is appended. Nothing else is rewritten.
    """
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} {message.version}"
    else:
        start = f"{message.version} {message.status} {message.reason}"
    body = message.body
    length = str(len(body))
    parts = [start]
    have_length = False
    for canon, name, value in message.headers._fields:
        if canon == "content-length":
            if have_length:
                continue  # one Content-Length only
            have_length = True
            if value != length and not (
                value.isascii() and value.isdigit() and int(value) == len(body)
            ):
                value = length
        parts.append(f"{name}: {value}")
    if not have_length:
        parts.append(f"Content-Length: {length}")
    parts.append("\r\n")
    return "\r\n".join(parts).encode("utf-8") + body
