"""A dispatcher destination: one line of ``dispatcher.list`` / one row of the ``dispatcher`` table.

Kamailio's ``pack_dest`` parses the URI (prefixing ``sip:`` when the text has no scheme and
fails to parse as is: "uri without sip scheme - fixing it"), keeps host, port and protocol, and
``ds_set_attrs`` reads the ``name=value;...`` attribute string, recognising (case-insensitive)
``duid``, ``weight`` (1..100), ``rweight`` (1..100), ``maxload``, ``socket``, ``sockname``,
``ping_from``, ``obproxy``, ``latency``, ``cc``, ``ocmin``/``ocmax``/``ocrate``. Unknown
attributes are kept (they reach the routing script through ``$xavp(_dsdst_=>attrs)``).

We are stricter than Kamailio where Kamailio only logs: a weight or rweight outside 1..100 or a
non-integer numeric attribute is a configuration error here (Kamailio logs "weight %d not in
1-100 range" and uses 0), so the lab never runs a silently different distribution.

A ``Destination`` is immutable; the dispatcher replaces it (``with_flags``) when its state bits
change, so a value handed out by ``select`` is a snapshot. It compares by value but is not
hashable (``attrs`` is a read-only mapping); key dicts by ``(setid, uri)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from router.sip.errors import SipParseError
from router.sip.uri import SipUri, parse_uri


class DispatcherConfigError(ValueError):
    """A destination list entry is invalid.

    ``line`` is the 1-based line (list file) or row (DB rows, config list) number, or None;
    ``field`` names the offending column (``setid``, ``destination``, ``flags``, ``priority``,
    ``attrs``) or None.
    """

    def __init__(self, reason: str, *, line: int | None = None, field: str | None = None) -> None:
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + reason)
        self.reason = reason
        self.line = line
        self.field = field


_INT_ATTRS = ("weight", "rweight", "maxload")


def parse_attrs(text: str) -> dict[str, str]:
    """Parse ``name=value;name2=value2`` (Kamailio ``parse_params``); names are lowercased.

    A trailing ``;`` is ignored, a name without ``=`` gets the empty value.

    Raises:
        ValueError: an empty name, or weight/rweight/maxload not an integer or out of range.
    """
    attrs: dict[str, str] = {}
    body = text.strip()
    if body.endswith(";"):
        body = body[:-1]
    if not body:
        return attrs
    for piece in body.split(";"):
        name, _, value = piece.partition("=")
        name = name.strip().lower()
        if not name:
            raise ValueError(f"empty attribute name in {text!r}")
        attrs[name] = value.strip()
    for name in _INT_ATTRS:
        if name in attrs:
            raw = attrs[name]
            try:
                number = int(raw)
            except ValueError:
                raise ValueError(f"attribute {name}={raw!r} is not an integer") from None
            if name in ("weight", "rweight") and not 1 <= number <= 100:
                raise ValueError(f"attribute {name}={number} not in 1-100 range")
            if number < 0:
                raise ValueError(f"attribute {name}={number} is negative")
    return attrs


def parse_destination_uri(text: str) -> SipUri:
    """Parse a destination URI as ``pack_dest`` does, adding ``sip:`` when no scheme is given.

    Raises:
        ValueError: not a sip/sips URI.
    """
    uri = text.strip()
    if not uri:
        raise ValueError("empty destination URI")
    try:
        parsed = parse_uri(uri)
    except SipParseError:
        parsed = None
    if not isinstance(parsed, SipUri) and not uri.lower().startswith(("sip:", "sips:")):
        try:
            parsed = parse_uri("sip:" + uri)
        except SipParseError:
            parsed = None
    if not isinstance(parsed, SipUri):
        raise ValueError(f"bad destination uri {text!r}")
    return parsed


@dataclass(frozen=True, slots=True)
class Destination:
    """One entry of a destination set."""

    uri: str
    """Destination URI text (``sip:`` added when the source had no scheme)."""
    setid: int
    """Destination set (group) id."""
    flags: int = 0
    """Kamailio bitmask: 1 INACTIVE, 2 TRYING, 4 DISABLED, 8 PROBING, 16 NODNSARES, 32 NOPING."""
    priority: int = 0
    """Higher sorts first inside the set."""
    attrs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """All attributes, names lowercased (read-only)."""
    attrs_body: str = ""
    """The attribute string as given (what ``dispatcher.list`` prints as BODY)."""
    host: str = ""
    """Host from the URI (IPv6 keeps brackets)."""
    port: int = 5060
    """Port from the URI, default 5060 (5061 for sips / transport=tls)."""
    transport: str = "udp"
    """Lowercase transport from the URI."""

    @classmethod
    def build(
        cls, setid: int, uri: str, flags: int = 0, priority: int = 0, attrs: str = ""
    ) -> Destination:
        """Validate and build a destination.

        Raises:
            DispatcherConfigError: with ``field`` naming the bad part.
        """
        try:
            parsed = parse_destination_uri(uri)
        except ValueError as exc:
            raise DispatcherConfigError(str(exc), field="destination") from None
        if flags < 0 or flags > 63:
            raise DispatcherConfigError(f"flags {flags} outside 0..63", field="flags")
        try:
            parsed_attrs = parse_attrs(attrs)
        except ValueError as exc:
            raise DispatcherConfigError(str(exc), field="attrs") from None
        text = uri.strip()
        if not text.lower().startswith(("sip:", "sips:")):
            text = "sip:" + text
        host, port = parsed.host_port()
        return cls(
            uri=text,
            setid=setid,
            flags=flags,
            priority=priority,
            attrs=MappingProxyType(parsed_attrs),
            attrs_body=attrs.strip(),
            host=host,
            port=port,
            transport=parsed.transport,
        )

    def with_flags(self, flags: int) -> Destination:
        """The same destination with new state bits."""
        return dataclasses.replace(self, flags=flags)

    def _int_attr(self, name: str) -> int:
        value = self.attrs.get(name)
        return int(value) if value else 0

    @property
    def duid(self) -> str | None:
        """``duid`` attribute: the id call-load accounting (alg 10) counts calls under."""
        return self.attrs.get("duid") or None

    @property
    def weight(self) -> int:
        """``weight`` attribute (alg 9), 0 when absent."""
        return self._int_attr("weight")

    @property
    def rweight(self) -> int:
        """``rweight`` attribute (alg 11), 0 when absent."""
        return self._int_attr("rweight")

    @property
    def maxload(self) -> int:
        """``maxload`` attribute (alg 10): most active calls, 0 = unlimited."""
        return self._int_attr("maxload")

    @property
    def ping_from(self) -> str | None:
        """``ping_from`` attribute: From URI of this destination's OPTIONS pings."""
        return self.attrs.get("ping_from") or None

    @property
    def socket(self) -> str | None:
        """``socket`` attribute: local socket to send from (``proto:ip:port``)."""
        return self.attrs.get("socket") or None
