"""Endpoint identification and digest authentication, the Asterisk way (SIP-REFERENCE §6.1).

Pipeline of ``pjsip_distributor.c`` for a request outside any dialog:

1. Identify: the identifiers of ``global.endpoint_identifier_order`` (default
   ``ip,username,anonymous``) run in turn; an endpoint may only be chosen by a method listed in
   its ``identify_by`` (default ``username,ip``). ``ip`` matches ``ps_endpoint_id_ips.match``
   (IP or CIDR, optional ``:port``) against the packet source; ``username`` looks for an
   endpoint named ``user@domain`` and then ``user`` from the From URI; ``anonymous`` looks for
   ``anonymous@<from domain>`` then ``anonymous`` [AIp; AUser; AAnon].
2. No endpoint: the request is given the *artificial endpoint*, whose auth nobody can pass:
   everything except ACK gets 401 and any credentials fail ("Failed to authenticate").
3. An endpoint with ``auth`` challenges every request except ACK (OPTIONS too, unless
   ``allow_unauthenticated_options``) [ARes ast_sip_requires_authentication].

Challenge shape [ADig build_nonce, challenge; pjsip_auth_srv_challenge2]::

    WWW-Authenticate: Digest realm="asterisk",nonce="<ts>/<md5(ts:ip:eid:realm)>",
                      opaque="<random>",algorithm=MD5,qop="auth"

The nonce is recomputed on each check, never stored: no nonce-count tracking, and a nonce
older than ``nonce_lifetime`` (32 s) gives ``stale=true``. The timestamp is wall-clock epoch
seconds, passed in by the core (which reads no clock itself).
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass

from router.sip import (
    Algorithm,
    Challenge,
    Credentials,
    Request,
    SipError,
    SipUri,
    parse_credentials,
    verify,
)

from .store import Auth, Endpoint, PbxStore


@dataclass(frozen=True, slots=True)
class IpMatch:
    """One ``identify`` match: a network and an optional port."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None

    @classmethod
    def parse(cls, text: str) -> IpMatch | None:
        """``1.2.3.4``, ``1.2.3.0/24``, ``1.2.3.4:5060``, ``[::1]:5060``; None if unreadable.

        XXX: Asterisk also resolves host names (``srv_lookups``); the core does no DNS, so a
        host name matches nothing here.
        """
        text = text.strip()
        port: int | None = None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
            text = host
        elif text.count(":") == 1:
            text, _, port_text = text.partition(":")
            if not port_text.isdigit():
                return None
            port = int(port_text)
        try:
            return cls(ipaddress.ip_network(text, strict=False), port)
        except ValueError:
            return None

    def matches(self, source: tuple[str, int]) -> bool:
        try:
            ip = ipaddress.ip_address(source[0])
        except ValueError:
            return False
        if ip not in self.network:
            return False
        return self.port is None or self.port == source[1]


class Identified(enum.Enum):
    """How an endpoint was found."""

    IP = "ip"
    USERNAME = "username"
    ANONYMOUS = "anonymous"


def identify(
    store: PbxStore,
    request: Request,
    source: tuple[str, int],
    *,
    order: list[str],
    static: list[tuple[str, IpMatch]],
) -> tuple[Endpoint, Identified] | None:
    """Run the identifiers in ``order``; None means "unidentified" (artificial endpoint).

    Args:
        static: extra ``(endpoint, match)`` pairs from the node config (router addresses).
    """
    for method in order:
        if method == "ip":
            matches = static + [
                (endpoint, m)
                for endpoint, text in store.identify_rows()
                if (m := IpMatch.parse(text)) is not None
            ]
            for endpoint_id, match in matches:
                if match.matches(source):
                    endpoint = store.endpoint(endpoint_id)
                    if endpoint is not None and "ip" in endpoint.identify_by:
                        return endpoint, Identified.IP
        elif method in ("username", "anonymous"):
            try:
                uri = request.from_.uri
            except SipError:
                continue
            if not isinstance(uri, SipUri):
                continue
            if method == "username":
                user = uri.user_unescaped
                if not user:
                    continue
                names = [f"{user}@{uri.host}", user]
            else:
                names = [f"anonymous@{uri.host}", "anonymous"]
            for name in names:
                endpoint = store.endpoint(name)
                if endpoint is None:
                    continue
                if method == "anonymous" or "username" in endpoint.identify_by:
                    return endpoint, Identified(method)
    return None


class AuthOutcome(enum.Enum):
    """What the digest check decided."""

    ACCEPTED = "accepted"
    CHALLENGE = "challenge"
    """No usable credentials: answer 401 with a fresh challenge."""
    FAILED = "failed"
    """Credentials present but wrong (Asterisk logs "Failed to authenticate"; 401 again)."""
    STALE = "stale"
    """Right password, nonce older than nonce_lifetime: 401 with stale=true."""


class DigestAuthenticator:
    """Asterisk's digest authenticator for one node.

    Args:
        entity_id: stands in for Asterisk's EID in the nonce hash (per node, random).
        default_realm: global ``default_realm`` ("asterisk").
    """

    def __init__(self, *, default_realm: str = "asterisk", entity_id: str | None = None) -> None:
        self.default_realm = default_realm
        self.entity_id = entity_id or secrets.token_hex(6)

    def realm_of(self, auth: Auth | None) -> str:
        return (auth.realm if auth is not None and auth.realm else None) or self.default_realm

    def _nonce(self, timestamp: int, source_ip: str, realm: str) -> str:
        digest = hashlib.md5(f"{timestamp}:{source_ip}:{self.entity_id}:{realm}".encode())
        return f"{timestamp}/{digest.hexdigest()}"

    def challenge(
        self, auth: Auth | None, source: tuple[str, int], *, now_epoch: float, stale: bool = False
    ) -> str:
        """The WWW-Authenticate value for ``auth`` (None: the artificial endpoint)."""
        realm = self.realm_of(auth)
        return str(
            Challenge(
                realm=realm,
                nonce=self._nonce(int(now_epoch), source[0], realm),
                algorithm=Algorithm.MD5,
                qop=("auth",),
                opaque=secrets.token_hex(8),  # 16 hex digits, as Asterisk's
                stale=stale,
            )
        )

    def check(
        self,
        request: Request,
        auths: list[Auth],
        source: tuple[str, int],
        *,
        now_epoch: float,
    ) -> AuthOutcome:
        """Check the Authorization headers of ``request`` against ``auths`` [ADig]."""
        values = request.headers.get_all("Authorization")
        if not values:
            return AuthOutcome.CHALLENGE
        outcome = AuthOutcome.FAILED
        for value in values:
            try:
                creds = parse_credentials(value)
            except SipError:
                continue
            for auth in auths:
                result = self._check_one(request, creds, auth, source, now_epoch)
                if result is AuthOutcome.ACCEPTED:
                    return result
                if result is AuthOutcome.STALE:
                    outcome = result
        return outcome

    def _check_one(
        self,
        request: Request,
        creds: Credentials,
        auth: Auth,
        source: tuple[str, int],
        now_epoch: float,
    ) -> AuthOutcome:
        realm = self.realm_of(auth)
        if creds.realm != realm or creds.username != (auth.username or auth.id):
            return AuthOutcome.FAILED
        ts_text, sep, _ = creds.nonce.partition("/")
        if not sep or not ts_text.isdigit():
            return AuthOutcome.FAILED
        if creds.nonce != self._nonce(int(ts_text), source[0], realm):
            return AuthOutcome.FAILED
        try:
            if (auth.auth_type or "userpass").lower() == "md5" and auth.md5_cred:
                good = verify(creds, request.method, ha1=auth.md5_cred, body=request.body)
            elif auth.password is not None:
                good = verify(creds, request.method, password=auth.password, body=request.body)
            else:
                return AuthOutcome.FAILED
        except ValueError:
            return AuthOutcome.FAILED
        if not good:
            return AuthOutcome.FAILED
        if now_epoch - int(ts_text) > auth.nonce_lifetime:
            return AuthOutcome.STALE
        return AuthOutcome.ACCEPTED
