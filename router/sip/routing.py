"""Where a message goes: response addressing (RFC 3261 §18.2.2, RFC 3581) and URI targets.

Responses travel back along the Via path. A server stamps the top Via of a request it
receives (``add_received_rport``, §18.2.1 and RFC 3581 §4) and later sends the response to the
address that Via names (``response_destination``, §18.2.2 and RFC 3581 §4). Requests go where
their target URI points (``uri_destination``; RFC 3263 §4 without DNS: the core never resolves
names, so a hostname comes back as is and the transport resolves it).

Reliable transports answer on the connection the request came in on (§18.2.2: "If the
'sent-protocol' is a reliable transport protocol such as TCP or SCTP ... the response MUST be
sent using the existing connection"); that is the driver's job. The address computed here is
still the right one to open a new connection to when the old one is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.sip.headers import Via
from router.sip.uri import set_param

if TYPE_CHECKING:
    from router.sip.uri import SipUri


def _bare(host: str) -> str:
    """IPv6 reference without brackets, as socket addresses and ``received=`` carry it."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def response_destination(via: Via, source: tuple[str, int]) -> tuple[str, int]:
    """The (host, port) to send a response to, from the request's top Via and its source.

    Rules, first match wins:

    1. ``maddr`` (§18.2.2): "if the Via header field value contains a 'maddr' parameter, the
       response MUST be forwarded to the address listed there, using the port indicated in
       'sent-by', or port 5060 if none is present".
    2. ``rport`` (RFC 3581 §4): "there is both a 'received' parameter and an 'rport' parameter,
       the response MUST be sent to the IP address listed in the 'received' parameter, and the
       port in the 'rport' parameter". A Via not stamped yet (bare ``rport``) means the source
       address and port, which is what the stamp would have said.
    3. ``received`` (§18.2.2): "the response MUST be sent to the address in the 'received'
       parameter, using the port indicated in the 'sent-by' value, or using port 5060 if none".
    4. otherwise the sent-by host and port (default 5060, 5061 for TLS).

    Args:
        via: the top Via of the request (stamped or not).
        source: (ip, port) the request came from.

    Returns:
        (host, port); the host carries no IPv6 brackets.

    Raises:
        SipParseError: ``rport`` has a value that is not a port.
    """
    # One pass over the params instead of three lookups: this runs for every server
    # transaction.
    maddr = received = None
    rport = False
    for name, value in via.params:
        lname = name.lower()
        if lname == "received":
            received = value
        elif lname == "rport":
            rport = True
        elif lname == "maddr":
            maddr = value
    if maddr:
        return _bare(maddr), via.sent_by()[1]
    if rport:
        port = via.rport  # validated: raises SipParseError for a non-port value
        return received or source[0], source[1] if port is None else port
    host, port = via.sent_by()
    if received:
        return _bare(received), port
    return _bare(host), port


def add_received_rport(via: Via, source: tuple[str, int]) -> Via:
    """Stamp a received request's top Via (§18.2.1, RFC 3581 §4).

    "When the server transport receives a request over any transport, it MUST examine the value
    of the 'sent-by' parameter in the top Via header field value. If the host portion of the
    'sent-by' parameter contains a domain name, or if it contains an IP address that differs
    from the packet source address, the server MUST add a 'received' parameter to that Via" and
    RFC 3581: "The server MUST insert a 'received' parameter containing the source IP address
    ... even if it is identical to the value of the 'sent-by' component" when ``rport`` is
    present, and "MUST set the value of the 'rport' parameter to the source port".

    Args:
        via: the top Via as received.
        source: (ip, port) the request came from.

    Returns:
        The stamped Via (``via`` itself when nothing needs adding).
    """
    ip, port = source
    rport = via.has_rport
    if not rport and _bare(via.host) == ip:
        return via
    params = set_param(via.params, "received", ip)
    if rport:
        params = set_param(params, "rport", str(port))
    # One construction instead of two ``with_param`` copies: this runs for every request.
    return Via(via.transport, via.host, via.port, params, via.protocol)


def uri_destination(uri: SipUri) -> tuple[str, int, str]:
    """Where a request for ``uri`` goes: (host, port, transport), RFC 3263 §4 minus DNS.

    ``maddr`` overrides the host (§19.1.1: "the maddr parameter indicates the server address
    to be contacted for this user, overriding any address derived from the host field"). The
    port defaults to 5060, or 5061 for ``sips:`` or ``transport=tls``; the transport defaults
    to ``udp`` for ``sip:`` and ``tls`` for ``sips:`` (RFC 3263 §4.1, without NAPTR/SRV).

    Args:
        uri: the target (Request-URI, or the top Route of a loose-routed request).

    Returns:
        (host without IPv6 brackets, port, lowercase transport).
    """
    host, port = uri.host_port()
    maddr = uri.maddr
    return _bare(maddr if maddr is not None else host), port, uri.transport
