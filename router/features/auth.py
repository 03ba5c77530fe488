"""Digest authentication of requests from phones (Kamailio auth + auth_db over Asterisk ps_auths).

Theory of operation (SIP-REFERENCE §3)
--------------------------------------
``Authenticator.check`` is Kamailio's ``auth_check(realm, table, 1)``: REGISTER is checked
against ``Authorization`` and challenged with 401 + ``WWW-Authenticate``; every other method
against ``Proxy-Authorization`` with 407 + ``Proxy-Authenticate`` (RFC 3261 §22.2, §22.3). The
answer is an :class:`AuthDecision` that says what to put on the wire; this module sends
nothing, stores no passwords and reads no clock.

* Nonces are the stateless HMAC nonces of ``router.sip.digest.NonceManager``, so several router
  instances that share ``nonce_secret`` verify each other's nonces (Kamailio ``secret``). An
  authentic but old nonce is answered with a fresh challenge carrying ``stale=true`` (RFC 7616
  §3.3: "the client may wish to simply retry the request with a new encrypted response, without
  re-prompting the user"), as Asterisk does and Kamailio does not.
* With ``qop`` the nonce-count must increase (RFC 7616 §3.4: the server "can detect a replay of
  a request by noting the nonce-count"); a repeat is answered like a stale nonce.
* Users are Asterisk ``ps_auths`` rows: ``userpass`` rows verify with any realm, ``md5`` rows
  only with the realm their ``md5_cred`` was computed for, so such a user is challenged with
  that realm (SIP-REFERENCE §3.5). XXX: that choice shows that the user exists and has an md5
  row with its own realm; every other case (unknown user, userpass user) gets the configured
  realm, and unknown user and wrong password get byte-for-byte the same kind of answer.
* Kamailio ``auth_check`` flag 1: the digest username must equal the To user (REGISTER) or
  the From user (others), else 403 (Kamailio return code -8).
* Brute force: failures (unknown user, wrong password, username mismatch) are counted per
  source IP and per user over ``failure_window``; reaching the limit blocks that source or
  user for ``block_time``, during which everything it sends is answered 403 (Asterisk logs a
  security event after ``unidentified_request_count``; fail2ban does the blocking — here it
  is built in).
* ACK and CANCEL are never challenged (they cannot be, RFC 3261 §22.1 and Kamailio
  ``post_auth``); trusted source addresses skip auth (Kamailio ``allow_source_address``).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from router.sip import (
    Algorithm,
    Challenge,
    Credentials,
    NonceCounter,
    NonceManager,
    NonceState,
    Request,
    SipError,
    SipParseError,
    SipUri,
    parse_credentials,
    verify,
)

NEVER_CHALLENGED = frozenset({"ACK", "CANCEL"})


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """What the authenticator needs from the ``[registrar]`` settings."""

    realm: str = "asterisk"
    """Challenge realm (Asterisk ``default_realm``)."""
    qop: str = "auth"
    """Offered qop; "" for RFC 2617 legacy challenges (stock Kamailio)."""
    algorithms: tuple[str, ...] = ("MD5",)
    """One challenge header per algorithm, preferred first (RFC 8760 §2.4)."""
    methods: frozenset[str] = frozenset({"REGISTER", "INVITE", "SUBSCRIBE", "MESSAGE"})
    """Methods that must carry credentials."""
    trusted_sources: frozenset[str] = frozenset()
    """Source IPs that skip authentication."""
    nonce_lifetime: float = 300.0
    failure_window: float = 60.0
    max_failures_per_source: int = 10
    max_failures_per_user: int = 5
    block_time: float = 300.0


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """A user's secret as stored (one ``ps_auths`` row, already read)."""

    password: str | None = None
    """Plaintext (auth_type ``userpass``)."""
    ha1: str | None = None
    """MD5 HA1 (auth_type ``md5``, column ``md5_cred``)."""
    realm: str | None = None
    """The realm ``ha1`` was computed for (None: the configured realm)."""


CredentialLookup = Callable[[str], StoredCredential | None]
"""digest username -> stored secret, None when there is no such user."""


class AuthOutcome(enum.Enum):
    """What ``Authenticator.check`` decided."""

    OK = "ok"
    """Authenticated (or exempt): go on routing."""
    CHALLENGE = "challenge"
    """No usable credentials: answer 401/407 with a fresh nonce."""
    FAILED = "failed"
    """Unknown user or wrong password: a fresh 401/407, identical to CHALLENGE on the wire."""
    STALE = "stale"
    """Right password, old (or replayed) nonce: 401/407 with ``stale=true``."""
    FORBIDDEN = "forbidden"
    """Username mismatch or blocked: 403."""
    BAD_REQUEST = "bad_request"
    """Malformed credentials: 400."""


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """The answer to put on the wire (``status`` 0 when the request may go on)."""

    outcome: AuthOutcome
    status: int = 0
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    """The digest username that was checked, when credentials were present."""
    credentials: Credentials | None = None
    """The credentials that authenticated the request (to consume them before relaying)."""
    blocked: tuple[str, ...] = ()
    """Keys ("ip:1.2.3.4", "user:101") that this request caused to be blocked."""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


@dataclass(slots=True)
class _FailureTrack:
    times: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class AuthStatistics:
    """Counters for ``status()``."""

    ok: int
    challenges: int
    failures: int
    stale: int
    forbidden: int
    blocked_now: int
    blocks: int
    replays: int


class Authenticator:
    """Digest checks with self-expiring nonces and failure blocking (see module docstring).

    Args:
        config: realm, qop, algorithms, limits.
        secret: the nonce HMAC key (share it between routers that must verify each other).
    """

    def __init__(self, config: AuthConfig, secret: bytes) -> None:
        self.config = config
        self.algorithms = tuple(Algorithm.from_token(a) for a in config.algorithms) or (
            Algorithm.MD5,
        )
        self.nonces = NonceManager(secret, config.nonce_lifetime)
        self.counter = NonceCounter(config.nonce_lifetime)
        self._tracks: dict[str, _FailureTrack] = {}
        self._counts = {"ok": 0, "challenges": 0, "failures": 0, "stale": 0, "forbidden": 0}
        self._blocks = 0

    # -- policy ---------------------------------------------------------------------------

    def requires_auth(self, method: str, source_ip: str) -> bool:
        """True when a request of ``method`` from ``source_ip`` must carry credentials."""
        if method in NEVER_CHALLENGED or source_ip in self.config.trusted_sources:
            return False
        return method in self.config.methods or method == "REGISTER"

    def is_blocked(self, key: str, now: float) -> bool:
        track = self._tracks.get(key)
        return track is not None and track.blocked_until > now

    def check(
        self, request: Request, source_ip: str, lookup: CredentialLookup, *, now: float
    ) -> AuthDecision:
        """Kamailio ``auth_check`` for one request (see module docstring for the rules).

        Args:
            request: the received request (not modified).
            source_ip: where it came from (for trusted sources and failure counting).
            lookup: digest username -> stored credential.
            now: seconds, the same clock for every call.
        """
        method = request.method
        if method in NEVER_CHALLENGED or source_ip in self.config.trusted_sources:
            return AuthDecision(AuthOutcome.OK)
        ip_key = f"ip:{source_ip}"
        identity = _identity_user(request)
        if self.is_blocked(ip_key, now) or (
            identity is not None and self.is_blocked(f"user:{identity}", now)
        ):
            return self._forbidden("Blocked")
        www = method == "REGISTER"
        header = "Authorization" if www else "Proxy-Authorization"
        stored_for_identity = lookup(identity) if identity is not None else None
        realm = self._realm_for(stored_for_identity)
        creds: Credentials | None = None
        try:
            for value in request.headers.get_all(header):
                candidate = parse_credentials(value)
                # RFC 3261 §22.4: the credentials for our realm; others belong to other hops.
                if candidate.realm == realm:
                    creds = candidate
                    break
        except SipParseError as exc:
            return AuthDecision(AuthOutcome.BAD_REQUEST, 400, f"Bad Credentials ({exc})"[:80])
        if creds is None:
            return self._challenge(www, realm, now, AuthOutcome.CHALLENGE)
        username = creds.username
        if identity is None or username != identity:
            # Kamailio auth_check flag 1 (return -8): "auth user must equal To/From user".
            return self._failure(www, realm, now, ip_key, username, forbid=True)
        state = self.nonces.check(creds.nonce, now)
        if state is NonceState.INVALID:
            # Forged, from a router with another secret, or garbage: just challenge again.
            return self._challenge(www, realm, now, AuthOutcome.CHALLENGE)
        stored = stored_for_identity
        if stored is None or not self._verify(creds, method, stored, request.body):
            return self._failure(www, realm, now, ip_key, username, forbid=False)
        if state is NonceState.STALE:
            return self._challenge(www, realm, now, AuthOutcome.STALE)
        nc = creds.nc_value
        if nc is not None and not self.counter.advance(creds.nonce, nc, now):
            # Kamailio -6 "nonce reused": treated like a stale nonce.
            return self._challenge(www, realm, now, AuthOutcome.STALE)
        self._counts["ok"] += 1
        self._tracks.pop(f"user:{username}", None)
        return AuthDecision(AuthOutcome.OK, username=username, credentials=creds)

    # -- pieces ---------------------------------------------------------------------------

    def _realm_for(self, stored: StoredCredential | None) -> str:
        if stored is not None and stored.ha1 is not None and stored.password is None:
            return stored.realm or self.config.realm
        return self.config.realm

    def _verify(
        self, creds: Credentials, method: str, stored: StoredCredential, body: bytes
    ) -> bool:
        if creds.effective_algorithm not in self.algorithms:
            return False
        if stored.password is not None:
            return verify(creds, method, password=stored.password, body=body)
        if stored.ha1 is not None:
            realm = stored.realm or self.config.realm
            return verify(creds, method, ha1=stored.ha1, body=body, realm=realm)
        return False

    def challenge_headers(
        self, www: bool, realm: str, now: float, *, stale: bool = False
    ) -> tuple[tuple[str, str], ...]:
        """One challenge per configured algorithm, same nonce (Kamailio ``auth_challenge``)."""
        name = "WWW-Authenticate" if www else "Proxy-Authenticate"
        nonce = self.nonces.new_nonce(now)
        qop = (self.config.qop,) if self.config.qop else ()
        return tuple(
            (name, str(Challenge(realm=realm, nonce=nonce, algorithm=alg, qop=qop, stale=stale)))
            for alg in self.algorithms
        )

    def _challenge(self, www: bool, realm: str, now: float, outcome: AuthOutcome) -> AuthDecision:
        stale = outcome is AuthOutcome.STALE
        key = "stale" if stale else ("failures" if outcome is AuthOutcome.FAILED else "challenges")
        self._counts[key] += 1
        status, reason = (401, "Unauthorized") if www else (407, "Proxy Authentication Required")
        headers = self.challenge_headers(www, realm, now, stale=stale)
        return AuthDecision(outcome, status, reason, headers)

    def _forbidden(self, reason: str) -> AuthDecision:
        self._counts["forbidden"] += 1
        return AuthDecision(AuthOutcome.FORBIDDEN, 403, reason)

    def _failure(
        self, www: bool, realm: str, now: float, ip_key: str, username: str, *, forbid: bool
    ) -> AuthDecision:
        """Count a failure against the source and the user; block when a limit is reached."""
        limits = (
            (ip_key, self.config.max_failures_per_source),
            (f"user:{username}", self.config.max_failures_per_user),
        )
        blocked = tuple(key for key, limit in limits if self._count_failure(key, limit, now))
        if blocked:
            self._counts["forbidden"] += 1
            return AuthDecision(
                AuthOutcome.FORBIDDEN, 403, "Blocked", username=username, blocked=blocked
            )
        if forbid:
            self._counts["forbidden"] += 1
            return AuthDecision(AuthOutcome.FORBIDDEN, 403, "Auth ID Mismatch", username=username)
        decision = self._challenge(www, realm, now, AuthOutcome.FAILED)
        return AuthDecision(
            decision.outcome, decision.status, decision.reason, decision.headers, username
        )

    def _count_failure(self, key: str, limit: int, now: float) -> bool:
        """Record one failure; True when it makes ``key`` blocked (limit 0 = never)."""
        if limit <= 0:
            return False
        track = self._tracks.setdefault(key, _FailureTrack())
        times = track.times
        times.append(now)
        while times and times[0] <= now - self.config.failure_window:
            times.popleft()
        if len(times) >= limit:
            track.blocked_until = now + self.config.block_time
            times.clear()
            self._blocks += 1
            return True
        return False

    # -- housekeeping ---------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the next block ends (so ``prune`` can forget it)."""
        ends = [t.blocked_until for t in self._tracks.values() if t.blocked_until > 0]
        return min(ends) if ends else None

    def prune(self, now: float) -> None:
        """Forget ended blocks and failures older than the window."""
        window = self.config.failure_window
        for key in list(self._tracks):
            track = self._tracks[key]
            while track.times and track.times[0] <= now - window:
                track.times.popleft()
            if track.blocked_until <= now and not track.times:
                del self._tracks[key]
            elif track.blocked_until <= now:
                track.blocked_until = 0.0
        self.counter.prune(now)

    def statistics(self, now: float) -> AuthStatistics:
        c = self._counts
        return AuthStatistics(
            ok=c["ok"],
            challenges=c["challenges"],
            failures=c["failures"],
            stale=c["stale"],
            forbidden=c["forbidden"],
            blocked_now=sum(t.blocked_until > now for t in self._tracks.values()),
            blocks=self._blocks,
            replays=self.counter.statistics().replays,
        )


def _identity_user(request: Request) -> str | None:
    """The user the credentials must belong to: To user (REGISTER) or From user (others)."""
    try:
        addr = request.to if request.method == "REGISTER" else request.from_
    except SipError:
        return None
    uri = addr.uri
    return uri.user_unescaped if isinstance(uri, SipUri) and uri.user else None


def consume_credentials(request: Request, credentials: Credentials) -> int:
    """Kamailio ``consume_credentials``: drop the Proxy-Authorization/Authorization value that
    authenticated this hop before relaying (other realms' credentials stay); returns how many."""
    removed = 0
    for name in ("Proxy-Authorization", "Authorization"):
        values = request.headers.get_all(name)
        if not values:
            continue
        keep: list[str] = []
        for value in values:
            try:
                parsed = parse_credentials(value)
            except SipParseError:
                keep.append(value)
                continue
            if parsed.realm == credentials.realm and parsed.nonce == credentials.nonce:
                removed += 1
            else:
                keep.append(value)
        if len(keep) != len(values):
            request.headers.remove(name)
            for value in keep:
                request.headers.add(name, value)
    return removed


__all__ = [
    "AuthConfig",
    "AuthDecision",
    "AuthOutcome",
    "AuthStatistics",
    "Authenticator",
    "CredentialLookup",
    "StoredCredential",
    "consume_credentials",
]
