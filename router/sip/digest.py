"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760; RFC 3261 §22.4).

Theory of operation
-------------------
A server (the router's registrar or a proxy) answers an unauthenticated request with 401/407
carrying a ``Challenge`` (``WWW-Authenticate`` / ``Proxy-Authenticate``). The client computes a
response hash over the nonce, its password and the request, and retries with ``Credentials``
(``Authorization`` / ``Proxy-Authorization``). This module is the arithmetic and the grammar of
that exchange; it does no I/O, reads no clock and stores nothing outside ``NonceCounter``.

Pieces, in the order a server uses them:

* ``NonceManager`` makes and checks *stateless* nonces (Kamailio's model, SIP-REFERENCE §3.2):
  the nonce carries its own creation time and an HMAC, so every router instance sharing the
  secret can verify it without a shared table. Authentic-but-old gives ``NonceState.STALE``,
  which RFC 7616 §3.3 answers with ``stale=true`` ("the client may wish to simply retry the
  request with a new encrypted response, without re-prompting the user").
* ``parse_credentials`` reads the client's header value; it raises only ``SipParseError``.
* ``verify`` recomputes the response from a plaintext password or a stored MD5 HA1 (Asterisk
  ``ps_auths.md5_cred``) and compares in constant time.
* ``NonceCounter`` remembers the highest ``nc`` per nonce so a replayed response is refused
  (RFC 7616 §3.4: "the server ... can detect a replay of a request by noting the nonce-count").

Client side (the emulator and the load generator): ``parse_challenge`` then
``answer_challenge``; ``maybe_select_challenge`` picks among several WWW-Authenticate headers,
which RFC 8760 §2.4 allows, one per algorithm, "in order of preference".

XXX: one header value holding two comma-joined challenges ("Digest ..., Digest ...") is legal
HTTP but not handled; SIP UAs send one challenge per header field.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from router.sip.errors import SipParseError

__all__ = [
    "Algorithm",
    "Challenge",
    "Credentials",
    "NonceCounter",
    "NonceCounterStatistics",
    "NonceManager",
    "NonceState",
    "answer_challenge",
    "compute_ha1",
    "compute_response",
    "maybe_select_challenge",
    "parse_challenge",
    "parse_credentials",
    "verify",
]


class Algorithm(enum.Enum):
    """Digest ``algorithm`` values (RFC 7616 §3.2 / §6.1 registry); value is the wire token."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"
    SHA512_256 = "SHA-512-256"
    SHA512_256_SESS = "SHA-512-256-sess"

    @classmethod
    def from_token(cls, token: str) -> Algorithm:
        """The algorithm named by ``token`` (case-insensitive, RFC 7616 §3.3 "algorithm").

        Raises:
            SipParseError: (400, trigger ``"unsupported_algorithm"``) for any other name.
        """
        found = _ALGORITHMS_BY_TOKEN.get(token.lower())
        if found is None:
            raise SipParseError(
                f"unsupported digest algorithm {token!r}", trigger="unsupported_algorithm"
            )
        return found

    @property
    def is_session(self) -> bool:
        """True for the ``-sess`` variants, whose HA1 mixes in nonce and cnonce."""
        return self.value.endswith("-sess")

    @property
    def hash_name(self) -> str:
        """The ``hashlib`` name of the underlying hash."""
        return _HASH_NAMES[self]


_HASH_NAMES: dict[Algorithm, str] = {
    Algorithm.MD5: "md5",
    Algorithm.MD5_SESS: "md5",
    Algorithm.SHA256: "sha256",
    Algorithm.SHA256_SESS: "sha256",
    Algorithm.SHA512_256: "sha512_256",
    Algorithm.SHA512_256_SESS: "sha512_256",
}
_ALGORITHMS_BY_TOKEN: dict[str, Algorithm] = {a.value.lower(): a for a in Algorithm}

QOP_AUTH = "auth"
QOP_AUTH_INT = "auth-int"


# --- Grammar -----------------------------------------------------------------------------------
# RFC 7235 §2.1: credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
#                auth-param  = token BWS "=" BWS ( token / quoted-string )
# RFC 7230 §3.2.6: quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
# Unquoted values are read leniently (anything up to whitespace or comma) because UAs put
# URIs and base64 nonces there in the wild; the #rule allows empty list elements (", ,").
_SCHEME_RE = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|\Z)")
_PARAM_RE = re.compile(
    r"""[\s,]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*(?:,|\Z)""",
    re.DOTALL,
)
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")

Extra = tuple[tuple[str, str], ...]
"""Unknown auth-params, in order, names as received, values unquoted."""


def _parse_digest_params_untrusted(value: str, what: str) -> dict[str, tuple[str, str]]:
    """Split ``Digest a=b, c="d"`` into {lowercase name: (raw name, unquoted value)}."""
    match = _SCHEME_RE.match(value)
    if match is None or match.group(1).lower() != "digest":
        raise SipParseError(f"{what}: not a Digest scheme", trigger="bad_auth_scheme")
    params: dict[str, tuple[str, str]] = {}
    pos = match.end()
    rest = value.rstrip(" \t,")
    while pos < len(rest):
        param = _PARAM_RE.match(rest, pos)
        if param is None:
            raise SipParseError(
                f"{what}: malformed auth-param at offset {pos}", trigger="bad_auth_param"
            )
        name, quoted, token = param.group(1), param.group(2), param.group(3)
        text = _UNESCAPE_RE.sub(r"\1", quoted) if quoted is not None else token
        key = name.lower()
        # RFC 7235 §2.1: "Each parameter name MUST only occur once per challenge."
        if key in params:
            raise SipParseError(f"{what}: duplicate parameter {name!r}", trigger="bad_auth_param")
        params[key] = (name, text)
        pos = param.end()
    return params


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _take(params: dict[str, tuple[str, str]], name: str) -> str | None:
    item = params.pop(name, None)
    return None if item is None else item[1]


def _require(params: dict[str, tuple[str, str]], name: str, what: str) -> str:
    found = _take(params, name)
    if found is None:
        raise SipParseError(f"{what}: missing {name!r}", trigger="missing_auth_param")
    return found


def _extras(params: dict[str, tuple[str, str]]) -> Extra:
    return tuple(params.values())


def _join(scheme_parts: list[str], extra: Extra) -> str:
    parts = scheme_parts + [f"{name}={_quote(value)}" for name, value in extra]
    return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge: the value of WWW-Authenticate or Proxy-Authenticate."""

    realm: str
    """Protection space; SIP UAs show it to pick a password (RFC 3261 §22.1)."""
    nonce: str
    """Server-chosen, opaque to the client."""
    algorithm: Algorithm | None = None
    """None means the parameter is absent, which RFC 7616 §3.3 says means MD5."""
    qop: tuple[str, ...] = ()
    """Offered qop options, lowercase; empty = RFC 2617 legacy (no qop)."""
    opaque: str | None = None
    """Echoed back verbatim by the client."""
    stale: bool = False
    """RFC 7616 §3.3: the previous credentials were right but the nonce is old."""
    domain: str | None = None
    """Space-separated URIs of the protection space (rarely used in SIP)."""
    extra: Extra = ()
    """Unknown parameters (``charset``, ``userhash``, ...) kept for the round trip."""

    @property
    def effective_algorithm(self) -> Algorithm:
        """``algorithm``, defaulting to MD5."""
        return self.algorithm if self.algorithm is not None else Algorithm.MD5

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm.value}")
        if self.qop:
            # RFC 7616 §3.3: qop in a challenge is a quoted list.
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return _join(parts, self.extra)


def parse_challenge(value: str) -> Challenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value.

    Raises:
        SipParseError: status 400 for a non-Digest scheme, bad syntax, a missing realm/nonce or
            an algorithm this module cannot compute (trigger ``"unsupported_algorithm"``).
    """
    what = "challenge"
    params = _parse_digest_params_untrusted(value, what)
    realm = _require(params, "realm", what)
    nonce = _require(params, "nonce", what)
    algorithm_text = _take(params, "algorithm")
    qop_text = _take(params, "qop")
    stale_text = _take(params, "stale")
    qop: tuple[str, ...] = ()
    if qop_text is not None:
        qop = tuple(q.strip().lower() for q in qop_text.split(",") if q.strip())
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=None if algorithm_text is None else Algorithm.from_token(algorithm_text),
        qop=qop,
        opaque=_take(params, "opaque"),
        # RFC 7616 §3.3: stale is "true" or "false", case-insensitive; anything else is false.
        stale=stale_text is not None and stale_text.lower() == "true",
        domain=_take(params, "domain"),
        extra=_extras(params),
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials: the value of Authorization or Proxy-Authorization."""

    username: str
    """The authentication user (Asterisk ``ps_auths.username``)."""
    realm: str
    """Must equal the challenge's realm."""
    nonce: str
    """The server nonce being answered."""
    uri: str
    """digest-uri: the Request-URI as the client wrote it (RFC 3261 §22.4)."""
    response: str
    """Hex response hash."""
    algorithm: Algorithm | None = None
    """None = absent = MD5."""
    qop: str | None = None
    """Chosen qop (``auth``/``auth-int``) as sent; None = RFC 2617 legacy."""
    nc: str | None = None
    """nonce-count, 8 hex digits as sent (hashed verbatim)."""
    cnonce: str | None = None
    """Client nonce; required with qop or a -sess algorithm."""
    opaque: str | None = None
    """Echo of the challenge's opaque."""
    extra: Extra = ()
    """Unknown parameters, kept for the round trip."""

    @property
    def effective_algorithm(self) -> Algorithm:
        """``algorithm``, defaulting to MD5."""
        return self.algorithm if self.algorithm is not None else Algorithm.MD5

    @property
    def nc_value(self) -> int | None:
        """``nc`` as an integer (for replay checks)."""
        return None if self.nc is None else int(self.nc, 16)

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm.value}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        # RFC 2617 §3.2.2 / RFC 7616 §3.4: qop and nc are unquoted tokens in credentials.
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        return _join(parts, self.extra)


def parse_credentials(value: str) -> Credentials:
    """Parse an Authorization / Proxy-Authorization value.

    Raises:
        SipParseError: status 400 for a non-Digest scheme, bad syntax, a missing required
            parameter, an unknown qop or algorithm, a malformed ``nc``, or qop/-sess without
            the ``cnonce`` (and ``nc``) that RFC 7616 §3.4 makes mandatory with them.
    """
    what = "credentials"
    params = _parse_digest_params_untrusted(value, what)
    username = _require(params, "username", what)
    realm = _require(params, "realm", what)
    nonce = _require(params, "nonce", what)
    uri = _require(params, "uri", what)
    response = _require(params, "response", what)
    algorithm_text = _take(params, "algorithm")
    algorithm = None if algorithm_text is None else Algorithm.from_token(algorithm_text)
    qop = _take(params, "qop")
    nc = _take(params, "nc")
    cnonce = _take(params, "cnonce")
    if qop is not None and qop.lower() not in (QOP_AUTH, QOP_AUTH_INT):
        raise SipParseError(f"{what}: unknown qop {qop!r}", trigger="bad_auth_param")
    if nc is not None and _NC_RE.fullmatch(nc) is None:
        raise SipParseError(f"{what}: nc must be 8 hex digits", trigger="bad_auth_param")
    # RFC 7616 §3.4: cnonce and nc "MUST be specified if a qop parameter is sent" and "MUST
    # NOT be specified if the server did not send a qop"; -sess needs cnonce for its HA1.
    if qop is not None and (nc is None or cnonce is None):
        raise SipParseError(f"{what}: qop without nc/cnonce", trigger="missing_auth_param")
    if qop is None and nc is not None:
        raise SipParseError(f"{what}: nc without qop", trigger="bad_auth_param")
    if algorithm is not None and algorithm.is_session and cnonce is None:
        raise SipParseError(f"{what}: -sess without cnonce", trigger="missing_auth_param")
    return Credentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response,
        algorithm=algorithm,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        opaque=_take(params, "opaque"),
        extra=_extras(params),
    )


# --- Arithmetic (RFC 7616 §3.4.1-3.4.3, RFC 2617 §3.2.2) ----------------------------------------


def _hash(algorithm: Algorithm, data: bytes) -> str:
    return hashlib.new(algorithm.hash_name, data).hexdigest()


def compute_ha1(
    username: str, realm: str, password: str, algorithm: Algorithm = Algorithm.MD5
) -> str:
    """The stored-form HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2).

    For the -sess variants this is the *base* HA1; ``compute_response`` derives the session
    key from it, which is why a stored MD5 HA1 also serves MD5-sess.
    """
    return _hash(algorithm, f"{username}:{realm}:{password}".encode())


def compute_response(
    *,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    algorithm: Algorithm = Algorithm.MD5,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest (``response`` parameter).

    Args:
        ha1: base HA1 from ``compute_ha1`` (hex, lowercase or not).
        method, uri: the request method and digest-uri.
        nonce, nc, cnonce, qop: as in the credentials; ``nc`` is the 8-hex-digit text.
        body: the message body, hashed only for ``qop=auth-int``.

    Raises:
        ValueError: qop without nc/cnonce, -sess without cnonce, or an unknown qop
            (``parse_credentials`` already refuses such credentials with a SipParseError).
    """
    ha1 = ha1.lower()
    if algorithm.is_session:
        # RFC 7616 §3.4.2: "A1 = H( unq(username) ":" unq(realm) ":" passwd ) ":"
        # unq(nonce-prime) ":" unq(cnonce-prime)" for the -sess algorithms.
        if cnonce is None:
            raise ValueError("-sess algorithm needs a cnonce")
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}".encode())
    qop_kind = None if qop is None else qop.lower()
    if qop_kind == QOP_AUTH_INT:
        # RFC 7616 §3.4.3: A2 = Method ":" request-uri ":" H(entity-body)
        a2 = f"{method}:{uri}:{_hash(algorithm, body)}"
    elif qop_kind in (None, QOP_AUTH):
        a2 = f"{method}:{uri}"
    else:
        raise ValueError(f"unknown qop {qop!r}")
    ha2 = _hash(algorithm, a2.encode())
    if qop is None:
        # RFC 2617 §3.2.2.1 legacy (RFC 2069 compatible): KD(H(A1), nonce ":" H(A2)).
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}".encode())
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def verify(
    credentials: Credentials,
    method: str,
    *,
    password: str | None = None,
    ha1: str | None = None,
    body: bytes = b"",
    realm: str | None = None,
) -> bool:
    """True when ``credentials.response`` is right for this request.

    Exactly one of ``password`` (plaintext, any algorithm) or ``ha1`` must be given. A stored
    HA1 (Asterisk ``md5_cred``) is an MD5 hash of ``user:realm:password`` for one realm, so it
    verifies only MD5 / MD5-sess credentials, and only if the client used that realm: pass
    ``realm=`` (the realm you challenged with / the HA1 was computed for) to have that checked
    explicitly rather than just failing the hash. Nonce freshness and nc replay are separate
    (``NonceManager.check``, ``NonceCounter.advance``), and so is RFC 2617 §3.2.2.5's check
    that ``credentials.uri`` names the Request-URI.

    Raises:
        ValueError: both or neither of ``password`` and ``ha1``.
    """
    if (password is None) == (ha1 is None):
        raise ValueError("give exactly one of password= or ha1=")
    if realm is not None and credentials.realm != realm:
        return False
    algorithm = credentials.effective_algorithm
    if ha1 is None:
        assert password is not None
        base_ha1 = compute_ha1(credentials.username, credentials.realm, password, algorithm)
    else:
        if algorithm.hash_name != "md5":
            return False
        base_ha1 = ha1
    expected = compute_response(
        ha1=base_ha1,
        method=method,
        uri=credentials.uri,
        nonce=credentials.nonce,
        algorithm=algorithm,
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
        body=body,
    )
    # Bytes, not str: compare_digest refuses non-ASCII str, and response is peer-supplied.
    return hmac.compare_digest(expected.encode(), credentials.response.lower().encode())


def answer_challenge(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    nc: int = 1,
    cnonce: str | None = None,
    body: bytes = b"",
) -> Credentials:
    """Build the credentials a UAC sends after ``challenge``.

    qop ``auth`` is chosen when offered, else ``auth-int``, else none (RFC 2617 legacy).
    ``cnonce`` defaults to 16 random hex digits when qop or a -sess algorithm needs one.
    """
    if QOP_AUTH in challenge.qop:
        qop: str | None = QOP_AUTH
    elif QOP_AUTH_INT in challenge.qop:
        qop = QOP_AUTH_INT
    else:
        qop = None
    algorithm = challenge.effective_algorithm
    if cnonce is None and (qop is not None or algorithm.is_session):
        cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}" if qop is not None else None
    response = compute_response(
        ha1=compute_ha1(username, challenge.realm, password, algorithm),
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        algorithm=algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        opaque=challenge.opaque,
    )


def maybe_select_challenge(values: Iterable[str]) -> Challenge | None:
    """The first challenge among header values that parses with a supported algorithm.

    RFC 8760 §2.4: a UAS may send one WWW-Authenticate per algorithm, "in the order of
    preference"; the UAC uses "the topmost header field that it supports".
    """
    for value in values:
        try:
            return parse_challenge(value)
        except SipParseError:
            continue
    return None


# --- Nonces -----------------------------------------------------------------------------------


class NonceState(enum.Enum):
    """What ``NonceManager.check`` found."""

    VALID = "valid"
    STALE = "stale"  # authentic but expired: re-challenge with stale=true (RFC 7616 §3.3)
    INVALID = "invalid"  # forged, tampered, bound to other `extra`, or garbage


# Nonce layout before base64url: created-at (uint64 milliseconds since the epoch) | 8 random
# bytes (makes nonces unique so NonceCounter can key on them) | HMAC-SHA256 truncated to 16
# bytes over the first 16 bytes plus `extra`. Like Kamailio's (SIP-REFERENCE §3.2) it is
# stateless: any instance holding the secret verifies it.
_STAMP = struct.Struct(">Q")
_RANDOM_LEN = 8
_MAC_LEN = 16
_NONCE_LEN = _STAMP.size + _RANDOM_LEN + _MAC_LEN
# Kamailio nonce_auth_max_drift: a nonce "from the future" by more than this is refused.
MAX_DRIFT = 3.0


class NonceManager:
    """Makes and checks self-expiring HMAC nonces.

    Args:
        secret: HMAC key; every router instance that must accept another's nonces shares it.
        lifetime: seconds a nonce stays VALID (Kamailio ``nonce_expire`` default 300; Asterisk
            ``nonce_lifetime`` default 32).
    """

    def __init__(self, secret: bytes, lifetime: float) -> None:
        if not secret:
            raise ValueError("secret must not be empty")
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        self._secret = secret
        self.lifetime = lifetime

    def _mac(self, head: bytes, extra: str) -> bytes:
        digest = hmac.new(self._secret, head + extra.encode(), hashlib.sha256).digest()
        return digest[:_MAC_LEN]

    def new_nonce(self, now: float, *, extra: str = "") -> str:
        """A fresh nonce created at ``now``.

        ``extra`` binds the nonce to request facts (Kamailio ``auth_checks_*``: R-URI, Call-ID,
        From-tag, source IP); ``check`` must be given the same string.
        """
        head = _STAMP.pack(max(0, round(now * 1000))) + secrets.token_bytes(_RANDOM_LEN)
        raw = head + self._mac(head, extra)
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def check(self, nonce: str, now: float, extra: str = "") -> NonceState:
        """Classify a nonce received in credentials (never raises on garbage)."""
        raw = _maybe_b64decode(nonce)
        if raw is None or len(raw) != _NONCE_LEN:
            return NonceState.INVALID
        head, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(head, extra)):
            return NonceState.INVALID
        created = _STAMP.unpack_from(head)[0] / 1000
        if created > now + MAX_DRIFT:
            return NonceState.INVALID
        if now - created > self.lifetime:
            return NonceState.STALE
        return NonceState.VALID


def _maybe_b64decode(text: str) -> bytes | None:
    if not text.isascii() or len(text) > 4 * _NONCE_LEN:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class NonceCounterStatistics:
    """Snapshot of a ``NonceCounter``."""

    tracked: int
    """Nonces currently remembered."""
    replays: int
    """nc values refused because they did not increase."""
    evicted: int
    """Entries dropped early because ``max_entries`` was reached (a bounded replay window)."""


class NonceCounter:
    """Highest nonce-count seen per nonce, with bounded memory.

    Entries live ``ttl`` seconds after their last use (give it the nonce lifetime: by then the
    nonce itself is STALE, so forgetting it opens no replay). Past ``max_entries`` the least
    recently used entry is evicted; XXX that nonce's replay protection is lost for the rest of
    its lifetime, which ``statistics().evicted`` makes visible.
    """

    def __init__(self, ttl: float, *, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._replays = 0
        self._evicted = 0

    def advance(self, nonce: str, nc: int, now: float) -> bool:
        """Record ``nc`` for ``nonce``; False (replay) unless it is above every earlier one.

        RFC 7616 §3.4: "The server MUST ... ensure that the nc-value ... increments" for the
        replay protection to hold.
        """
        self.prune(now)
        previous = self._seen.get(nonce)
        if previous is not None and nc <= previous[0]:
            self._replays += 1
            return False
        self._seen[nonce] = (nc, now)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
            self._evicted += 1
        return True

    def prune(self, now: float) -> int:
        """Forget entries idle for more than ``ttl``; returns how many."""
        removed = 0
        # Entries are kept in last-use order, so the idle ones are at the front.
        while self._seen:
            _, (_, last_used) = next(iter(self._seen.items()))
            if now - last_used <= self.ttl:
                break
            self._seen.popitem(last=False)
            removed += 1
        return removed

    def statistics(self) -> NonceCounterStatistics:
        """Counters for reports."""
        return NonceCounterStatistics(
            tracked=len(self._seen), replays=self._replays, evicted=self._evicted
        )
