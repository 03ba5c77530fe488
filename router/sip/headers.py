"""Header names and the typed header values a router reads: Via, name-addr, Contact, CSeq.

Header names are case-insensitive and several have a compact form (RFC 3261 §7.3.3), so every
lookup goes through ``canonical_name``: lowercase long form. It is a ``str.lower`` plus one
dict probe, cheap enough to run on every header of every message.

The typed values are frozen slotted dataclasses whose ``str()`` is their wire form. The parse
functions accept everything RFC 3261 §25.1 allows (LWS around separators, quoted display
names with quoted-pairs, UTF-8 display names, parameters without values, IPv6 references) and
raise only ``SipParseError`` (400) for the rest.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Self

from .errors import SipParseError
from .uri import (
    AbsoluteUri,
    Params,
    Uri,
    del_param,
    format_params,
    get_param,
    has_param,
    parse_header_params,
    parse_uri,
    set_param,
    split_outside_quotes,
)

# RFC 3261 §7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "x": "session-expires",
    "y": "identity",
    "b": "referred-by",
    "j": "reject-contact",
    "a": "accept-contact",
    "d": "request-disposition",
    "n": "identity-info",
}


def canonical_name(name: str) -> str:
    """Lowercase long form of a header name (``"V"`` -> ``"via"``, ``"CALL-ID"`` -> ``"call-id"``)."""
    lower = name.lower()
    if len(lower) == 1:
        return COMPACT_FORMS.get(lower, lower)
    return lower


# ----------------------------------------------------------------------------------------
# name-addr / addr-spec (RFC 3261 §20.10, §25.1)
#
#   name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
#   display-name = *(token LWS) / quoted-string
#
# "When the header field value contains a display name, the URI including all URI parameters
# is enclosed in "<" and ">".  If no "<" and ">" are present, all parameters after the URI are
# header parameters, not URI parameters." (§20)

_TOKEN_WORDS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Unescape the quoted-string starting at ``text[start] == '"'``; return (value, end)."""
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return _QUOTED_PAIR_RE.sub(r"\1", text[start + 1 : i]), i + 1
        if ch in "\r\n":
            break
        i += 1
    raise SipParseError("unterminated quoted string", trigger="unbalanced")


def _quote(display: str) -> str:
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Route/Record-Route/Path/Refer-To style value."""

    display: str | None
    """Display name, unquoted and unescaped; None when absent."""
    uri: Uri
    """The address."""
    params: Params = ()
    """Header parameters (``tag``, ...) after the address."""

    def __str__(self) -> str:
        # Always the <> form: it is never wrong, while the bare addr-spec form is wrong as
        # soon as the URI has parameters.
        head = f"{_quote(self.display)} " if self.display else ""
        return f"{head}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), None when absent."""
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> Self:
        """A copy with ``;tag=`` set."""
        return dataclasses.replace(self, params=set_param(self.params, "tag", tag))

    def with_param(self, name: str, value: str | None = None) -> Self:
        """A copy with header parameter ``name`` set (``None``: flag without value)."""
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    def without_param(self, name: str) -> Self:
        """A copy without header parameter ``name``."""
        return dataclasses.replace(self, params=del_param(self.params, name))

    def with_params(self, params: Params) -> Self:
        """A copy whose header parameters are exactly ``params``."""
        return dataclasses.replace(self, params=params)


def _split_name_addr(value: str) -> tuple[str | None, str, str]:
    """(display, uri text, params text) of one name-addr / addr-spec value."""
    text = value.strip()
    if not text:
        raise SipParseError("empty address", trigger="bad_name_addr")
    display: str | None = None
    if text[0] == '"':
        display, end = _read_quoted(text, 0)
        rest = text[end:].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError("display name without <address>", trigger="bad_name_addr")
        text = rest
    lt = text.find("<")
    if lt >= 0:
        if lt > 0 and display is None:
            words = text[:lt].strip(" \t")
            if words:
                if not _TOKEN_WORDS_RE.fullmatch(words):
                    raise SipParseError(
                        f"display name {words[:30]!r} must be quoted", trigger="bad_name_addr"
                    )
                display = words
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError("unclosed '<'", trigger="unbalanced")
        # LAQUOT = SWS "<" and RAQUOT = ">" SWS: no whitespace *inside* the brackets
        # (RFC 4475 §3.1.2.14 badaspec); parse_uri refuses it.
        return display, text[lt + 1 : gt], text[gt + 1 :]
    # addr-spec form: the URI ends at the first ';' and cannot contain ',' '?' (§20).
    semi = text.find(";")
    uri_text = text if semi < 0 else text[:semi]
    uri_text = uri_text.rstrip(" \t")
    if "?" in uri_text or "," in uri_text or " " in uri_text:
        raise SipParseError("addr-spec with '?', ',' or space needs <>", trigger="bad_name_addr")
    return None, uri_text, "" if semi < 0 else text[semi:]


@lru_cache(maxsize=4096)
def parse_name_addr(value: str) -> NameAddr:
    """Parse one name-addr or addr-spec with header parameters.

    Results are cached (the values are immutable): From, To and Route values recur on every
    message of a dialog.

    Raises:
        SipParseError: malformed value (400).
    """
    display, uri_text, params_text = _split_name_addr(value)
    return NameAddr(display, parse_uri(uri_text), parse_header_params(params_text))


def parse_name_addr_list(value: str) -> list[NameAddr]:
    """Parse a comma-separated list of name-addrs (Route, Record-Route, Path)."""
    return [parse_name_addr(piece) for piece in split_outside_quotes(value, ",") if piece]


# ----------------------------------------------------------------------------------------
# Contact (RFC 3261 §20.10):  Contact = ( "m" / "Contact" ) HCOLON ( STAR / (contact-param
# *(COMMA contact-param)))

_WILDCARD = AbsoluteUri("*", "*")


@dataclass(frozen=True, slots=True)
class Contact(NameAddr):
    """One Contact value; ``star`` is the ``Contact: *`` wildcard of REGISTER (§10.2.2)."""

    star: bool = False
    """True for ``*``; then ``uri`` is a placeholder and ``str()`` is ``"*"``."""

    @classmethod
    def wildcard(cls) -> Contact:
        """The ``*`` contact."""
        return cls(None, _WILDCARD, (), star=True)

    def __str__(self) -> str:
        if self.star:
            return "*"
        return NameAddr.__str__(self)

    @property
    def expires(self) -> int | None:
        """The ``expires`` parameter as int (RFC 3261 §20.19: delta-seconds); None if absent.

        Raises:
            SipParseError: present but not a number.
        """
        value = get_param(self.params, "expires")
        if value is None:
            return None
        return _parse_delta(value, "expires")

    @property
    def q(self) -> float | None:
        """The ``q`` parameter (``qvalue``, 0..1), None if absent.

        Raises:
            SipParseError: present but not a qvalue.
        """
        value = get_param(self.params, "q")
        if value is None:
            return None
        try:
            q = float(value)
        except ValueError:
            raise SipParseError(f"bad q {value!r}", trigger="bad_contact") from None
        if not 0.0 <= q <= 1.0:
            raise SipParseError(f"q out of range {value!r}", trigger="bad_contact")
        return q


def parse_contact_list(value: str) -> list[Contact]:
    """Parse a Contact header value: ``*`` or a comma-separated list.

    Raises:
        SipParseError: malformed value (400).
    """
    return list(_parse_contacts(value))


@lru_cache(maxsize=2048)
def _parse_contacts(value: str) -> tuple[Contact, ...]:
    if value.strip() == "*":
        return (Contact.wildcard(),)
    out: list[Contact] = []
    for piece in split_outside_quotes(value, ","):
        if not piece:
            continue
        display, uri_text, params_text = _split_name_addr(piece)
        out.append(Contact(display, parse_uri(uri_text), parse_header_params(params_text)))
    return tuple(out)


# ----------------------------------------------------------------------------------------
# Via (RFC 3261 §20.42)
#
#   via-parm      = sent-protocol LWS sent-by *( SEMI via-params )
#   sent-protocol = protocol-name SLASH protocol-version SLASH transport
#   sent-by       = host [ COLON port ]
#
# SLASH and COLON allow whitespace on both sides, so "SIP / 2.0 / UDP host : 5060" is legal
# (RFC 4475 §3.1.1.1 "wsinv").

_VIA_RE = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,10}))?[ \t]*"
)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (one hop)."""

    transport: str
    """Transport as written, e.g. ``"UDP"``, ``"TCP"``, ``"TLS"``."""
    host: str
    """sent-by host (``[IPv6]`` keeps brackets)."""
    port: int | None = None
    """sent-by port, None when absent."""
    params: Params = ()
    """via-params in order (``branch``, ``received``, ``rport``, ...)."""
    protocol: str = "SIP/2.0"
    """protocol-name/protocol-version."""

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (transaction id under RFC 3261, §17.2.3)."""
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (§18.2.1)."""
        return get_param(self.params, "received")

    @property
    def has_rport(self) -> bool:
        """True when ``rport`` is present, bare or with a value (RFC 3581)."""
        return has_param(self.params, "rport")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value; None when absent or bare.

        Raises:
            SipParseError: present with a value that is not a port.
        """
        value = get_param(self.params, "rport")
        if value is None:
            return None
        return _parse_port(value, "rport")

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter."""
        return get_param(self.params, "maddr")

    @property
    def ttl(self) -> int | None:
        """The ``ttl`` parameter (0..255).

        Raises:
            SipParseError: present but not a ttl.
        """
        value = get_param(self.params, "ttl")
        if value is None:
            return None
        ttl = _parse_delta(value, "ttl")
        if ttl > 255:
            raise SipParseError(f"ttl out of range {value!r}", trigger="bad_via")
        return ttl

    def sent_by(self) -> tuple[str, int]:
        """``(host, port)`` with the default port filled in (5060; 5061 for TLS)."""
        if self.port is not None:
            return self.host, self.port
        return self.host, 5061 if self.transport.upper() in ("TLS", "WSS") else 5060

    def with_param(self, name: str, value: str | None = None) -> Via:
        """A copy with via-param ``name`` set (``None``: flag such as bare ``rport``)."""
        return dataclasses.replace(self, params=set_param(self.params, name, value))

    def without_param(self, name: str) -> Via:
        """A copy without via-param ``name``."""
        return dataclasses.replace(self, params=del_param(self.params, name))


# Parsed Vias by text (Via is immutable): the same Via strings come back in every response of
# a transaction, and the Vias an element builds itself are remembered as built
# (``remember_via``), so the responses that carry them back are not parsed again. Cleared when
# full (untrusted texts cannot grow it without bound).
_VIA_MEMO: dict[str, Via] = {}
_VIA_MEMO_MAX = 8192


def _parse_via(text: str) -> Via:
    via = _VIA_MEMO.get(text)
    if via is None:
        via = _parse_via_text(text)
        if len(_VIA_MEMO) >= _VIA_MEMO_MAX:
            _VIA_MEMO.clear()
        _VIA_MEMO[text] = via
    return via


def remember_via(via: Via) -> str:
    """``str(via)``, remembered so that parsing that text returns ``via`` without work.

    Only for Vias whose wire form parses back to an equal Via (built from a host, a port and
    token parameters), which is what an element puts on the requests it sends.
    """
    text = str(via)
    if len(_VIA_MEMO) >= _VIA_MEMO_MAX:
        _VIA_MEMO.clear()
    _VIA_MEMO[text] = via
    return text


def _parse_via_text(text: str) -> Via:
    m = _VIA_RE.match(text)
    if m is None:
        raise SipParseError(f"bad Via {text[:60]!r}", trigger="bad_via")
    name, version, transport, host, port_text = m.groups()
    if port_text is None:
        port = None
    elif len(port_text) <= 5 and (port := int(port_text)) <= 65535:
        pass  # the regex took 1-10 ASCII digits: a port unless too long or too big
    else:
        port = _parse_port(port_text, "Via port")  # raises
    params = parse_header_params(text[m.end() :])
    if '"' in text:
        # The branch must be a token (RFC 3261 §20.42 via-branch = "branch" EQUAL token).
        for pname, pvalue in params:
            if pvalue is not None and pvalue.startswith('"') and pname.lower() == "branch":
                raise SipParseError("branch must be a token", trigger="bad_via")
    protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name}/{version}"
    return Via(transport, host, port, params, protocol)


def parse_via_list(value: str) -> list[Via]:
    """Parse a Via header value (one or more comma-separated hops, top first).

    Raises:
        SipParseError: malformed value (400).
    """
    if "," not in value and '"' not in value:
        return [_parse_via(value.strip())]
    # Via = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm): no empty elements.
    return [_parse_via(piece) for piece in split_outside_quotes(value, ",")]


# ----------------------------------------------------------------------------------------
# CSeq (RFC 3261 §8.1.1.5, §20.16): CSeq = "CSeq" HCOLON 1*DIGIT LWS Method.
# "The sequence number MUST be expressible as a 32-bit unsigned integer and MUST be less than
# 2**31."

_CSEQ_MAX = 2**31 - 1
_CSEQ_RE = re.compile(r"[ \t]*([0-9]{1,20})[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*")


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq value."""

    seq: int
    """Sequence number, 0 <= seq < 2**31."""
    method: str
    """Method, case kept (methods are case-sensitive, §7.1)."""

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@lru_cache(maxsize=1024)
def parse_cseq(value: str) -> CSeq:
    """Parse a CSeq value (cached: the values are immutable and few).

    Raises:
        SipParseError: malformed or out of range (400).
    """
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise SipParseError(f"bad CSeq {value[:40]!r}", trigger="bad_cseq")
    seq = int(m.group(1))
    if seq > _CSEQ_MAX:
        raise SipParseError("CSeq number must be less than 2**31", trigger="bad_cseq")
    return CSeq(seq, m.group(2))


def _parse_delta(value: str, what: str) -> int:
    """delta-seconds = 1*DIGIT; leading zeros allowed; values beyond 2**32-1 clamp (§20.19)."""
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit():
        raise SipParseError(f"bad {what} {value[:30]!r}", trigger=f"bad_{what}")
    if len(text) > 10:
        # "If a value is received that is larger than 2**32-1, it is treated as 2**32-1"
        # (RFC 3261 §20.19 for Expires; we use it for every delta-seconds).
        return 2**32 - 1
    return min(int(text), 2**32 - 1)


def _parse_port(value: str, what: str) -> int:
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit() or len(text) > 5:
        raise SipParseError(f"bad {what} {value[:30]!r}", trigger="bad_port")
    port = int(text)
    if port > 65535:
        raise SipParseError(f"{what} out of range", trigger="bad_port")
    return port


def parse_delta_seconds(value: str, what: str = "delta-seconds") -> int:
    """Parse delta-seconds (Expires, Min-Expires, Retry-After); leading zeros allowed.

    Raises:
        SipParseError: not a number (400).
    """
    return _parse_delta(value, what)


def parse_int_value(value: str, what: str, maximum: int) -> int:
    """Parse a bounded non-negative integer header (Max-Forwards 0..255, Content-Length).

    Raises:
        SipParseError: not a number or above ``maximum`` (400).
    """
    known = _INT_VALUES.get(value)
    if known is not None and known <= maximum:
        return known
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit():
        raise SipParseError(f"bad {what} {value[:30]!r}", trigger=f"bad_{what}")
    stripped = text.lstrip("0")
    if len(stripped) > len(str(maximum)) or int(text) > maximum:
        raise SipParseError(f"{what} out of range", trigger=f"bad_{what}")
    number = int(text)
    if len(_INT_VALUES) < _INT_VALUES_MAX:
        _INT_VALUES[value] = number
    return number


# Header texts already read as numbers (Max-Forwards "70", Content-Length "0", ...): the value
# depends on the text only, the bound is checked on every use. Bounded: untrusted texts are
# only added while it is small.
_INT_VALUES: dict[str, int] = {}
_INT_VALUES_MAX = 2048
