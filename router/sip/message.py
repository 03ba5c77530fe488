"""SIP messages: the ``Headers`` container, ``Request``, ``Response`` and response helpers.

Laziness is the point of this module. A proxy reads a handful of headers (Via, Route,
Max-Forwards, Call-ID, CSeq) and forwards the rest untouched, so the parser only splits header
fields and every typed value is parsed on first access and cached inside ``Headers``. Any
mutation of the headers clears that cache, so a typed accessor never returns a stale value.

Raw names and values are preserved (``Headers`` iterates ``(raw_name, raw_value)``), so a
forwarded message differs from the received one only where the router changed it; RFC 3261
§16.6 asks proxies not to reorder or rewrite what they do not own.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar, cast

from .errors import SipParseError, standard_reason
from .headers import (
    COMPACT_FORMS,
    Contact,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    parse_contact_list,
    parse_cseq,
    parse_delta_seconds,
    parse_int_value,
    parse_name_addr,
    parse_name_addr_list,
    parse_via_list,
    remember_via,
)
from .uri import Uri, parse_uri, split_outside_quotes

T = TypeVar("T")

_Field = tuple[str, str, str]  # (canonical name, raw name, raw value)
_MISSING = object()


def _first_top_level_comma(value: str) -> int:
    """Index of the first ``,`` outside quotes and <>, or -1."""
    if '"' not in value and "<" not in value:
        return value.find(",")
    in_quote = in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif in_angle:
            in_angle = ch != ">"
        elif ch == "<":
            in_angle = True
        elif ch == ",":
            return i
        i += 1
    return -1


class Headers:
    """Ordered header fields with raw names and values kept.

    Lookups take any spelling of a name (``"via"``, ``"Via"``, ``"v"``). Typed values parsed
    from these fields are cached here (``cached``) and the cache is cleared by every mutation.
    """

    __slots__ = ("_cache", "_fields")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[_Field] = [(canonical_name(n), n, v) for n, v in fields]
        self._cache: dict[str, object] = {}

    @classmethod
    def _from_parsed(cls, fields: list[_Field]) -> Headers:
        """Adopt pre-canonicalised fields (the parser's fast path)."""
        self = cls.__new__(cls)
        self._fields = fields
        self._cache = {}
        return self

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._fields:
            yield name, value

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        canon = canonical_name(name)
        return any(f[0] == canon for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [f[1:] for f in self._fields] == [f[1:] for f in other._fields]

    def same_fields(self, other: Headers) -> bool:
        """Equal raw fields, ignoring Content-Length (framing that ``serialize`` rewrites)."""
        mine = [f[1:] for f in self._fields if f[0] != "content-length"]
        return mine == [f[1:] for f in other._fields if f[0] != "content-length"]

    __hash__ = None  # type: ignore[assignment]  # mutable container

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def fields(self) -> list[tuple[str, str, str]]:
        """``(canonical_name, raw_name, raw_value)`` triples, in order (a copy)."""
        return list(self._fields)

    def get(self, name: str) -> str | None:
        """Value of the first field called ``name``, or None."""
        canon = name.lower()
        if len(canon) == 1:
            canon = COMPACT_FORMS.get(canon, canon)
        for f in self._fields:
            if f[0] == canon:
                return f[2]
        return None

    def get_all(self, name: str) -> list[str]:
        """Values of every field called ``name``, in order, not comma-split."""
        canon = name.lower()
        if len(canon) == 1:
            canon = COMPACT_FORMS.get(canon, canon)
        return [f[2] for f in self._fields if f[0] == canon]

    def values(self, name: str) -> list[str]:
        """Comma-separated values across all fields called ``name`` (RFC 3261 §7.3.1).

        Commas inside "quoted strings" and <URIs> do not split. Don't use this for headers
        whose grammar is not a comma list (WWW-Authenticate, Authorization, Date).

        Raises:
            SipParseError: unbalanced quotes or angle brackets.
        """
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(piece for piece in split_outside_quotes(value, ",") if piece)
        return out

    def _touch(self, canon: str) -> None:
        # Typed values are cached under the canonical name of the header they come from, so
        # only that entry goes stale: prepending a Via keeps the parsed CSeq, From, To...
        if self._cache:
            self._cache.pop(canon, None)

    def add(self, name: str, value: str) -> None:
        """Append a field at the end."""
        canon = canonical_name(name)
        self._fields.append((canon, name, value))
        old = self._cache.pop(canon, None) if self._cache else None
        if old is not None:
            parse = _LIST_PARSERS.get(canon)
            if parse is not None:
                try:
                    self._cache[canon] = [*cast("list[object]", old), *parse(value)]
                except SipParseError:
                    pass

    def prepend(self, name: str, value: str) -> None:
        """Insert a field before the first field of that name, or at the top if none."""
        canon = canonical_name(name)
        self._insert_first(canon, name, value)
        old = self._cache.pop(canon, None) if self._cache else None
        if old is not None:
            parse = _LIST_PARSERS.get(canon)
            if parse is not None:
                # The new field's values come first: keep the parsed rest.
                try:
                    self._cache[canon] = [*parse(value), *cast("list[object]", old)]
                except SipParseError:
                    pass  # stays uncached: the accessor raises, as a fresh parse would

    def prepend_via(self, via: Via) -> None:
        """Insert ``via`` as the new top Via, written as ``str(via)``.

        Same as ``prepend("Via", str(via))`` but the parsed Via list stays cached with ``via``
        on top, so a proxy does not re-parse the Via it just built. ``via`` must be well formed
        (its wire form parses back to an equal Via), as every Via built from a host, a port and
        a token branch is.
        """
        self._insert_first("via", "Via", remember_via(via))
        old = self._cache.pop("via", None) if self._cache else None
        if old is not None:
            self._cache["via"] = [via, *cast("list[Via]", old)]

    def _insert_first(self, canon: str, name: str, value: str) -> None:
        fields = self._fields
        index = 0
        for i, f in enumerate(fields):
            if f[0] == canon:
                index = i
                break
        fields.insert(index, (canon, name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` by one field (at the first one's position)."""
        canon = canonical_name(name)
        fields = self._fields
        for i, f in enumerate(fields):
            if f[0] == canon:
                fields[i] = (canon, f[1], value)
                rest = fields[i + 1 :]
                if any(g[0] == canon for g in rest):
                    del fields[i + 1 :]
                    fields.extend(g for g in rest if g[0] != canon)
                break
        else:
            fields.append((canon, name, value))
        self._touch(canon)

    def remove(self, name: str) -> int:
        """Remove every field called ``name``; return how many were removed."""
        canon = canonical_name(name)
        before = len(self._fields)
        self._fields = [f for f in self._fields if f[0] != canon]
        removed = before - len(self._fields)
        if removed:
            self._touch(canon)
        return removed

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first comma-value of the first field called ``name``.

        The field is removed when it held one value. This is how a proxy removes its Via from
        a response (§16.7 step 3) or a Route entry it consumed (§16.4).
        """
        canon = canonical_name(name)
        for i, f in enumerate(self._fields):
            if f[0] != canon:
                continue
            value = f[2]
            comma = _first_top_level_comma(value)
            if comma < 0:
                del self._fields[i]
                popped = value.strip()
            else:
                rest = value[comma + 1 :].strip()
                if rest:
                    self._fields[i] = (canon, f[1], rest)
                else:
                    del self._fields[i]
                popped = value[:comma].strip()
            old = self._cache.pop(canon, None) if self._cache else None
            if old is not None and popped and canon in _LIST_PARSERS:
                # The first value of the first field is the first parsed element (the list
                # parsers split on the same top-level commas and only skip empty pieces).
                self._cache[canon] = cast("list[object]", old)[1:]
            return popped
        return None

    def copy(self) -> Headers:
        """An independent copy (fields copied; the typed cache is shared-immutable data)."""
        new = Headers.__new__(Headers)
        new._fields = self._fields[:]
        new._cache = self._cache.copy()
        return new

    def cached(self, key: str, parse: Callable[[Headers], T]) -> T:
        """``parse(self)``, memoised under ``key`` until the next mutation."""
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            value = parse(self)
            self._cache[key] = value
        return cast(T, value)


# ----------------------------------------------------------------------------------------
# Typed accessors. Each is a function of Headers so that Request and Response share them and
# the cache lives with the fields it was computed from.


def _first(headers: Headers, canon: str) -> str | None:
    """First value of an already-canonical name (skips canonical_name on the hot path)."""
    for f in headers._fields:
        if f[0] == canon:
            return f[2]
    return None


def _required(headers: Headers, name: str) -> str:
    value = _first(headers, name)
    if value is None:
        raise SipParseError(f"missing {name} header", trigger="missing_header")
    return value


def _call_id(h: Headers) -> str:
    return _parse_call_id(_required(h, "call-id"))


def _parse_call_id(raw: str) -> str:
    value = raw.strip()
    if not value or " " in value or "\t" in value:
        raise SipParseError("bad Call-ID", trigger="bad_call_id")
    return value


def _cseq(h: Headers) -> CSeq:
    return parse_cseq(_required(h, "cseq"))


def _from(h: Headers) -> NameAddr:
    return parse_name_addr(_required(h, "from"))


def _to(h: Headers) -> NameAddr:
    return parse_name_addr(_required(h, "to"))


def _vias(h: Headers) -> list[Via]:
    out: list[Via] = []
    for f in h._fields:
        if f[0] == "via":
            out.extend(parse_via_list(f[2]))
    return out


def _max_forwards(h: Headers) -> int | None:
    return _parse_max_forwards(_first(h, "max-forwards"))


def _parse_max_forwards(value: str | None) -> int | None:
    # RFC 3261 §20.22: Max-Forwards = 1*DIGIT, "between 0 and 255" in practice.
    return None if value is None else parse_int_value(value, "max_forwards", 255)


def _contacts(h: Headers) -> list[Contact]:
    out: list[Contact] = []
    for value in h.get_all("contact"):
        out.extend(parse_contact_list(value))
    return out


def _name_addrs(name: str) -> Callable[[Headers], list[NameAddr]]:
    def parse(h: Headers) -> list[NameAddr]:
        out: list[NameAddr] = []
        for value in h.get_all(name):
            out.extend(parse_name_addr_list(value))
        return out

    return parse


_routes = _name_addrs("route")
_record_routes = _name_addrs("record-route")
_paths = _name_addrs("path")

# List-valued headers cached under their canonical name, with the parser of one field value:
# mutations at the ends (prepend, add, pop_first_value) update the cached list instead of
# dropping it, so a proxy that stamps or pushes a Via does not re-parse the others.
_LIST_PARSERS: dict[str, Callable[[str], list[Via] | list[NameAddr]]] = {
    "via": parse_via_list,
    "route": parse_name_addr_list,
    "record-route": parse_name_addr_list,
    "path": parse_name_addr_list,
}


def _expires(h: Headers) -> int | None:
    value = _first(h, "expires")
    return None if value is None else parse_delta_seconds(value, "expires")


def _content_length(h: Headers) -> int | None:
    value = _first(h, "content-length")
    return None if value is None else parse_int_value(value, "content_length", 2**31 - 1)


def _content_type(h: Headers) -> str | None:
    value = _first(h, "content-type")
    return None if value is None else value.strip()


class _Typed:
    """Typed, cached header accessors shared by Request and Response."""

    __slots__ = ()
    headers: Headers

    @property
    def call_id(self) -> str:
        """Call-ID (required; SipParseError 400 if absent or malformed)."""
        cache = self.headers._cache
        value = cache.get("call-id", _MISSING)
        if value is _MISSING:
            value = cache["call-id"] = _call_id(self.headers)
        return value  # type: ignore[return-value]  # typed by the key (no cast() call)

    @property
    def cseq(self) -> CSeq:
        """CSeq (required; SipParseError 400 if absent or malformed)."""
        cache = self.headers._cache
        value = cache.get("cseq", _MISSING)
        if value is _MISSING:
            value = cache["cseq"] = _cseq(self.headers)
        return value  # type: ignore[return-value]  # typed by the key (no cast() call)

    @property
    def from_(self) -> NameAddr:
        """From (required; SipParseError 400 if absent or malformed)."""
        cache = self.headers._cache
        value = cache.get("from", _MISSING)
        if value is _MISSING:
            value = cache["from"] = _from(self.headers)
        return value  # type: ignore[return-value]  # typed by the key (no cast() call)

    @property
    def to(self) -> NameAddr:
        """To (required; SipParseError 400 if absent or malformed)."""
        cache = self.headers._cache
        value = cache.get("to", _MISSING)
        if value is _MISSING:
            value = cache["to"] = _to(self.headers)
        return value  # type: ignore[return-value]  # typed by the key (no cast() call)

    @property
    def vias(self) -> list[Via]:
        """Every Via hop, top first (a fresh list; empty if none)."""
        cache = self.headers._cache
        value = cache.get("via", _MISSING)
        if value is _MISSING:
            value = cache["via"] = _vias(self.headers)
        return list(value)  # type: ignore[call-overload,no-any-return]  # typed by the key; cast() costs a call

    @property
    def top_via(self) -> Via:
        """The first Via (SipParseError 400 if there is none)."""
        cache = self.headers._cache
        vias = cache.get("via", _MISSING)
        if vias is _MISSING:
            vias = cache["via"] = _vias(self.headers)
        if not vias:
            raise SipParseError("missing Via header", trigger="missing_header")
        return vias[0]  # type: ignore[index,no-any-return]  # a list[Via] under this key

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards, None if absent."""
        cache = self.headers._cache
        value = cache.get("max-forwards", _MISSING)
        if value is _MISSING:
            value = cache["max-forwards"] = _max_forwards(self.headers)
        return value  # type: ignore[return-value]  # typed by the key (no cast() call)

    @property
    def contacts(self) -> list[Contact]:
        """Contact values in order (``[Contact.wildcard()]`` for ``*``)."""
        cache = self.headers._cache
        value = cache.get("contact", _MISSING)
        if value is _MISSING:
            value = cache["contact"] = _contacts(self.headers)
        return list(value)  # type: ignore[call-overload,no-any-return]  # typed by the key; cast() costs a call

    @property
    def routes(self) -> list[NameAddr]:
        """Route values in order."""
        cache = self.headers._cache
        value = cache.get("route", _MISSING)
        if value is _MISSING:
            value = cache["route"] = _routes(self.headers)
        return list(value)  # type: ignore[call-overload,no-any-return]  # typed by the key; cast() costs a call

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values in order."""
        cache = self.headers._cache
        value = cache.get("record-route", _MISSING)
        if value is _MISSING:
            value = cache["record-route"] = _record_routes(self.headers)
        return list(value)  # type: ignore[call-overload,no-any-return]  # typed by the key; cast() costs a call

    @property
    def paths(self) -> list[NameAddr]:
        """Path values in order (RFC 3327)."""
        cache = self.headers._cache
        value = cache.get("path", _MISSING)
        if value is _MISSING:
            value = cache["path"] = _paths(self.headers)
        return list(value)  # type: ignore[call-overload,no-any-return]  # typed by the key; cast() costs a call

    @property
    def expires(self) -> int | None:
        """Expires header in seconds, None if absent."""
        cache = self.headers._cache
        value = cache.get("expires", _MISSING)
        if value is _MISSING:
            value = cache["expires"] = _expires(self.headers)
        return value  # type: ignore[return-value]  # typed by the key (no cast() call)

    @property
    def content_length(self) -> int | None:
        """Content-Length header as received/set, None if absent."""
        cache = self.headers._cache
        value = cache.get("content-length", _MISSING)
        if value is _MISSING:
            value = cache["content-length"] = _content_length(self.headers)
        return value  # type: ignore[return-value]  # typed by the key (no cast() call)

    @property
    def content_type(self) -> str | None:
        """Content-Type header value, None if absent."""
        cache = self.headers._cache
        value = cache.get("content-type", _MISSING)
        if value is _MISSING:
            value = cache["content-type"] = _content_type(self.headers)
        return value  # type: ignore[return-value]  # typed by the key (no cast() call)


_METHOD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


_COMMON_METHODS = frozenset(
    (
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    )
)


@dataclass(slots=True, eq=False)
class Request(_Typed):
    """A SIP request."""

    method: str
    """Method, case-sensitive (RFC 3261 §7.1)."""
    uri: str
    """Request-URI as raw text; ``request_uri`` parses it."""
    headers: Headers
    """Header fields in order."""
    body: bytes = b""
    """Message body (Content-Length is written by ``serialize``)."""
    version: str = "SIP/2.0"
    """SIP-Version of the start line."""

    def __post_init__(self) -> None:
        if self.method not in _COMMON_METHODS and not _METHOD_RE.fullmatch(self.method):
            raise ValueError(f"method must be a token: {self.method!r}")
        if not self.uri or " " in self.uri:
            raise ValueError(f"bad Request-URI {self.uri!r}")

    def __eq__(self, other: object) -> bool:
        """Start line, body and raw header fields; Content-Length is not compared because it
        is framing derived from the body (``serialize`` writes it), so a built message equals
        its own parsed wire form."""
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and self.uri == other.uri
            and self.version == other.version
            and self.body == other.body
            and self.headers.same_fields(other.headers)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    @property
    def request_uri(self) -> Uri:
        """The parsed Request-URI (SipParseError 400 if malformed)."""
        return parse_uri(self.uri)

    def copy(self) -> Request:
        """A copy whose headers can be changed without touching this request."""
        return Request(self.method, self.uri, self.headers.copy(), self.body, self.version)


@dataclass(slots=True, eq=False)
class Response(_Typed):
    """A SIP response."""

    status: int
    """Status-Code, 100..699."""
    reason: str
    """Reason-Phrase (may be empty)."""
    headers: Headers
    """Header fields in order."""
    body: bytes = b""
    """Message body (Content-Length is written by ``serialize``)."""
    version: str = "SIP/2.0"
    """SIP-Version of the status line."""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 699:
            raise ValueError(f"status out of range: {self.status}")
        if "\r" in self.reason or "\n" in self.reason:
            raise ValueError("reason phrase contains CR/LF")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.version == other.version
            and self.body == other.body
            and self.headers.same_fields(other.headers)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    @property
    def is_provisional(self) -> bool:
        """1xx."""
        return self.status < 200

    @property
    def is_success(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    @property
    def is_final(self) -> bool:
        """>= 200."""
        return self.status >= 200

    def copy(self) -> Response:
        """A copy whose headers can be changed without touching this response."""
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)


Message = Request | Response


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (x00 phrase of its class if unknown)."""
    return standard_reason(status)


_RESPONSE_COPIED = ("from", "to", "call-id", "cseq")
"""What §8.2.6.2 copies besides the Vias, in the order a response carries them."""


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` per RFC 3261 §8.2.6.2.

    "the From field of the response MUST equal the From header field of the request. The
    Call-ID ... MUST equal ... The CSeq ... MUST equal ... The Via header field values in the
    response MUST equal the Via header field values in the request and MUST maintain the same
    ordering." The To is copied and, when ``to_tag`` is given and the To has no tag yet, gets
    ``;tag=to_tag`` appended (§8.2.6.2: "If a request contained a To tag in the request, the To
    header field in the response MUST equal that of the request").

    Args:
        request: the request answered.
        status: 100..699.
        reason: Reason-Phrase; defaults to ``reason_phrase(status)``.
        to_tag: the UAS/proxy tag to add to To.
        headers: extra fields appended after the copied ones.
        body: body bytes.

    Raises:
        SipParseError: the request's To cannot be parsed while a tag must be added.
    """
    fields: list[_Field] = []
    first: dict[str, _Field] = {}
    for f in request.headers._fields:
        canon = f[0]
        if canon == "via":
            fields.append(f)
        elif canon in _RESPONSE_COPIED and canon not in first:
            first[canon] = f
    for canon in _RESPONSE_COPIED:
        copied = first.get(canon)
        if copied is not None:
            if canon == "to" and to_tag is not None and request.to.tag is None:
                copied = (copied[0], copied[1], f"{copied[2]};tag={to_tag}")
            fields.append(copied)
    out = Headers._from_parsed(fields)
    for name, value in headers:
        out.add(name, value)
    return Response(status, reason_phrase(status) if reason is None else reason, out, body)


# 64-bit random tokens drawn from ``secrets`` in batches: one system call per 256 branches
# instead of one per branch. Each token is used once, so branches stay unique and
# unpredictable (the pool is the same CSPRNG output, only fetched ahead).
_TOKEN_BATCH = 256
_tokens: list[str] = []


def _random_token16() -> str:
    while True:
        try:
            return _tokens.pop()
        except IndexError:
            raw = secrets.token_hex(8 * _TOKEN_BATCH)
            _tokens.extend(raw[i : i + 16] for i in range(0, len(raw), 16))


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie ``z9hG4bK`` plus 64 random bits (§8.1.1.7)."""
    return "z9hG4bK" + _random_token16()


def new_tag() -> str:
    """A fresh From/To tag: 48 random bits as hex (§19.3 asks for at least 32)."""
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    """A fresh Call-ID ``<96 random bits>@host`` (§8.1.1.4)."""
    return f"{secrets.token_hex(12)}@{host}"
