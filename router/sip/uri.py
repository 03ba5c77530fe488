"""URIs (RFC 3261 §19.1, RFC 3966) and the parameter lists shared with header values.

Grammar this module follows (RFC 3261 §25.1)::

    SIP-URI   = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    userinfo  = ( user / telephone-subscriber ) [ ":" password ] "@"
    hostport  = host [ ":" port ]
    host      = hostname / IPv4address / IPv6reference
    uri-parameters = *( ";" uri-parameter )
    headers   = "?" header *( "&" header )

Two details decide the shape of the parser:

* ``user`` may contain ``;`` ``?`` ``/`` ``&`` ``=`` (user-unreserved), but never ``@``, and
  ``@`` appears nowhere else in a SIP URI, so the userinfo is everything up to the ``@``.
  RFC 4475 §3.1.1.9 ("semiuri") depends on this.
* Everything that is not allowed literally must be %-escaped; we keep the escaped form in the
  fields (``user``, parameter values) so that ``str(uri)`` reproduces the wire form, and offer
  ``user_unescaped`` for comparisons.

A URI whose scheme is neither sip/sips nor tel parses to ``AbsoluteUri`` (RFC 3261 §19.1: the
Request-URI may be any absoluteURI). Whether that is acceptable is the caller's decision
(a proxy answers 416, §8.2.2.1), not the parser's.

``Params`` is an ordered tuple of ``(name, value)`` with raw case kept and ``None`` for a
parameter without ``=value``; lookups are case-insensitive (parameter names are, §7.3.1).
Values are kept exactly as on the wire, quotes included for quoted-string values.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from .errors import SipParseError

Params = tuple[tuple[str, str | None], ...]


def get_param(params: Params, name: str) -> str | None:
    """Value of parameter ``name`` (case-insensitive); None if absent *or* valueless."""
    lname = name.lower()
    for pname, value in params:
        if pname.lower() == lname:
            return value
    return None


def has_param(params: Params, name: str) -> bool:
    """True if parameter ``name`` is present, with or without a value."""
    lname = name.lower()
    return any(pname.lower() == lname for pname, _ in params)


def set_param(params: Params, name: str, value: str | None) -> Params:
    """Return ``params`` with ``name`` set to ``value`` (replaced in place, else appended)."""
    lname = name.lower()
    out: list[tuple[str, str | None]] = []
    done = False
    for pname, pvalue in params:
        if pname.lower() == lname:
            if not done:
                out.append((pname, value))
                done = True
        else:
            out.append((pname, pvalue))
    if not done:
        out.append((name, value))
    return tuple(out)


def del_param(params: Params, name: str) -> Params:
    """Return ``params`` without any parameter called ``name``."""
    lname = name.lower()
    return tuple(p for p in params if p[0].lower() != lname)


def format_params(params: Params) -> str:
    """Wire form ``;a=b;c`` of a parameter list."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it is outside "quoted strings" and <angle brackets>.

    Quoted strings may contain ``\\"`` (quoted-pair, RFC 3261 §25.1). Pieces are stripped.

    Raises:
        SipParseError: unbalanced quotes or angle brackets.
    """
    if '"' not in text and "<" not in text:
        if ">" in text:
            raise SipParseError("unbalanced '>'", trigger="unbalanced")
        return [piece.strip() for piece in text.split(sep)]
    pieces: list[str] = []
    start = 0
    i = 0
    n = len(text)
    in_quote = False
    in_angle = False
    while i < n:
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif in_angle:
            if ch == ">":
                in_angle = False
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            raise SipParseError("unbalanced '>'", trigger="unbalanced")
        elif ch == sep:
            pieces.append(text[start:i].strip())
            start = i + 1
        i += 1
    if in_quote or in_angle:
        raise SipParseError("unbalanced quote or '<'", trigger="unbalanced")
    pieces.append(text[start:].strip())
    return pieces


_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_QUOTED = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
_IPV6REF = r"\[[0-9A-Fa-f:.]+\]"
# via-received = "received" EQUAL (IPv4address / IPv6address): IPv6 without brackets.
_IPV6ADDR = r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*"
# generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string
# (RFC 3261 §25.1), EQUAL = SWS "=" SWS.
_GENERIC_PARAM_RE = re.compile(
    rf"[ \t]*({_TOKEN})[ \t]*(?:=[ \t]*({_IPV6ADDR}|{_TOKEN}|{_QUOTED}|{_IPV6REF}))?[ \t]*"
)
TOKEN_RE = re.compile(_TOKEN)
# The same grammar for a whole ";a=b;c" list without quoted strings: one regex call validates
# every parameter, then plain splits extract them (the hot path of Via parsing).
_UNQUOTED_PARAMS_RE = re.compile(
    rf"(?:;[ \t]*{_TOKEN}[ \t]*(?:=[ \t]*(?:{_IPV6ADDR}|{_TOKEN}|{_IPV6REF}))?[ \t]*)+"
)


def parse_header_params(text: str) -> Params:
    """Parse ``;name=value;flag`` (the part after a header value's main element).

    Raises:
        SipParseError: anything but generic-params separated by ``;``.
    """
    stripped = text.strip()
    if not stripped:
        return ()
    if stripped[0] != ";":
        raise SipParseError(f"expected ';' before {stripped[:20]!r}", trigger="bad_params")
    out: list[tuple[str, str | None]] = []
    if '"' not in stripped and _UNQUOTED_PARAMS_RE.fullmatch(stripped):
        for piece in stripped[1:].split(";"):
            name, eq, value = piece.partition("=")
            out.append((name.strip(), value.strip() if eq else None))
        return tuple(out)
    pieces = split_outside_quotes(stripped[1:], ";") if '"' in stripped else stripped[1:].split(";")
    for piece in pieces:
        m = _GENERIC_PARAM_RE.fullmatch(piece)
        if m is None:
            raise SipParseError(f"bad parameter {piece[:30]!r}", trigger="bad_params")
        out.append((m.group(1), m.group(2)))
    return tuple(out)


# Characters that never appear literally in a URI (they must be %-escaped): controls, space,
# and the "unwise"/delimiter set of RFC 2396 §2.4.3, plus anything non-ASCII.
_BAD_URI_CHAR_RE = re.compile(r'[\x00-\x20"<>\\^`{|}\x7f-\U0010ffff]')
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# hostname / IPv4address (RFC 3261 §25.1, underscore tolerated as real deployments use it),
# or IPv6reference kept with its brackets.
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?|" + _IPV6REF)
_URI_PARAM_RE = re.compile(
    r"([A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+)(?:=([A-Za-z0-9\-_.!~*'()%\[\]/:&+$]*))?"
)
_HEADER_RE = re.compile(r"([A-Za-z0-9\-_.!~*'()%\[\]/?:+$]+)=([A-Za-z0-9\-_.!~*'()%\[\]/?:+$]*)")
_PORT_MAX = 65535


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1)."""

    scheme: str = "sip"
    """``"sip"`` or ``"sips"``, lowercase."""
    user: str | None = None
    """User part, %-escapes kept as on the wire."""
    password: str | None = None
    """Password part (deprecated by RFC 3261 but legal)."""
    host: str = ""
    """Host name, IPv4 address or ``[IPv6]`` reference (brackets kept)."""
    port: int | None = None
    """Explicit port, None when absent."""
    params: Params = ()
    """uri-parameters in order."""
    headers: Params = ()
    """``?name=value&...`` header components in order."""

    def __post_init__(self) -> None:
        if self.scheme not in ("sip", "sips"):
            raise ValueError(f"SipUri scheme must be sip or sips, not {self.scheme!r}")
        if not self.host:
            raise ValueError("SipUri needs a host")

    def __str__(self) -> str:
        out = self.scheme + ":"
        if self.user is not None:
            out += self.user
            if self.password is not None:
                out += ":" + self.password
            out += "@"
        out += self.host
        if self.port is not None:
            out += f":{self.port}"
        if self.params:
            out += format_params(self.params)
        if self.headers:
            out += "?" + "&".join(f"{n}={v or ''}" for n, v in self.headers)
        return out

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %-escapes decoded (RFC 3261 §19.1.4 compares it this way)."""
        return None if self.user is None else unquote(self.user, errors="replace")

    @property
    def transport(self) -> str:
        """``transport`` parameter lowercased; default ``udp`` for sip, ``tls`` for sips."""
        value = get_param(self.params, "transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def lr(self) -> bool:
        """True for a loose-routing URI (``;lr``, RFC 3261 §19.1.1)."""
        return has_param(self.params, "lr")

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter, if any."""
        return get_param(self.params, "maddr")

    def with_(
        self,
        *,
        scheme: str | None = None,
        user: str | None = None,
        host: str | None = None,
        port: int | None = None,
        params: Params | None = None,
        headers: Params | None = None,
        clear_port: bool = False,
        clear_user: bool = False,
    ) -> SipUri:
        """A copy with the given fields changed (``clear_*`` set a field to None)."""
        return dataclasses.replace(
            self,
            scheme=self.scheme if scheme is None else scheme,
            user=None if clear_user else (self.user if user is None else user),
            host=self.host if host is None else host,
            port=None if clear_port else (self.port if port is None else port),
            params=self.params if params is None else params,
            headers=self.headers if headers is None else headers,
        )

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """A copy with uri-parameter ``name`` set."""
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    def without_param(self, name: str) -> SipUri:
        """A copy without uri-parameter ``name``."""
        return dataclasses.replace(self, params=del_param(self.params, name))

    def host_port(self) -> tuple[str, int]:
        """``(host, port)`` with the default port filled in (5060, 5061 for sips/TLS)."""
        if self.port is not None:
            return self.host, self.port
        default = 5061 if self.scheme == "sips" or self.transport == "tls" else 5060
        return self.host, default


@dataclass(frozen=True, slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966): the number and its parameters."""

    number: str
    """global-number (``+...``) or local-number, visual separators kept."""
    params: Params = ()
    """Parameters in order (``phone-context``, ``ext``, ...)."""

    def __str__(self) -> str:
        return "tel:" + self.number + format_params(self.params)


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other absoluteURI (RFC 3261 §25.1), kept as raw text."""

    scheme: str
    """Scheme, lowercase."""
    text: str
    """The whole URI as on the wire."""

    def __str__(self) -> str:
        return self.text


Uri = SipUri | TelUri | AbsoluteUri


def _fail(text: str, why: str) -> SipParseError:
    return SipParseError(f"bad URI {text[:60]!r}: {why}", trigger="bad_uri")


def _parse_uri_params(text: str, params_text: str) -> Params:
    out: list[tuple[str, str | None]] = []
    for piece in params_text.split(";"):
        m = _URI_PARAM_RE.fullmatch(piece)
        if m is None:
            raise _fail(text, f"bad uri-parameter {piece[:30]!r}")
        out.append((m.group(1), m.group(2)))
    return tuple(out)


def _parse_sip(text: str, scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        if "@" in rest:
            raise _fail(text, "more than one '@'")
        colon = userinfo.find(":")
        if colon >= 0:
            user, password = userinfo[:colon], userinfo[colon + 1 :]
        else:
            user = userinfo
        if not user:
            raise _fail(text, "empty user")
    headers: Params = ()
    q = rest.find("?")
    if q >= 0:
        hdr_items: list[tuple[str, str | None]] = []
        for piece in rest[q + 1 :].split("&"):
            m = _HEADER_RE.fullmatch(piece)
            if m is None:
                raise _fail(text, f"bad header component {piece[:30]!r}")
            hdr_items.append((m.group(1), m.group(2)))
        headers = tuple(hdr_items)
        rest = rest[:q]
    params: Params = ()
    semi = rest.find(";")
    if semi >= 0:
        params = _parse_uri_params(text, rest[semi + 1 :])
        rest = rest[:semi]
    port: int | None = None
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise _fail(text, "unclosed IPv6 reference")
        host, port_text = rest[: close + 1], rest[close + 1 :]
        if port_text and port_text[0] != ":":
            raise _fail(text, "junk after IPv6 reference")
        port_text = port_text[1:] if port_text else ""
        has_port = bool(rest[close + 1 :])
    else:
        host, colon_sep, port_text = rest.partition(":")
        has_port = bool(colon_sep)
    if has_port:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 10:
            raise _fail(text, "bad port")
        port = int(port_text)
        if port > _PORT_MAX:
            raise _fail(text, "port out of range")
    if not _HOST_RE.fullmatch(host):
        raise _fail(text, "bad host")
    return SipUri(scheme, user, password, host, port, params, headers)


@lru_cache(maxsize=4096)
def parse_uri(text: str) -> Uri:
    """Parse a URI: ``SipUri`` for sip/sips, ``TelUri`` for tel, ``AbsoluteUri`` otherwise.

    Results are cached (the values are immutable); the same Request-URI, From and To URIs
    recur on every message of a dialog.

    Raises:
        SipParseError: (400, trigger ``bad_uri``) the text is not a URI of its scheme.
    """
    colon = text.find(":")
    if colon <= 0:
        raise _fail(text, "no scheme")
    scheme = text[:colon]
    if not _SCHEME_RE.fullmatch(scheme):
        raise _fail(text, "bad scheme")
    scheme = scheme.lower()
    rest = text[colon + 1 :]
    if not rest:
        raise _fail(text, "nothing after scheme")
    if _BAD_URI_CHAR_RE.search(rest) or _BAD_ESCAPE_RE.search(rest):
        raise _fail(text, "character that must be escaped")
    if scheme in ("sip", "sips"):
        return _parse_sip(text, scheme, rest)
    if scheme == "tel":
        number, semi, params_text = rest.partition(";")
        if not number:
            raise _fail(text, "empty number")
        return TelUri(number, _parse_uri_params(text, params_text) if semi else ())
    return AbsoluteUri(scheme, text)
