"""The registration service: digest auth, registrar, forwarding and lookup wired into the router.

This is the glue between the pure features (``router.features.auth``, ``registrar``,
``regforward``) and the router core (``router.app.RouterCore``) plus the realtime DB. It is
synchronous and may do DB I/O; everything it sends goes through the router's transaction layer.

Durability (usrloc ``db_mode`` 1, write-through, but grouped): a REGISTER that changes bindings
updates the in-memory cache at once and queues the location rows; its 200 OK is *held*. The
router calls :meth:`RegistrationService.commit` at the start of every drain (after each batch
of datagrams): one DB transaction writes every queued change, and only then are the held 200s
released. One fsync covers the batch, and a binding that was answered 200 is on disk before the
200 leaves, so a ``kill -9`` loses nothing that was acknowledged. If the write fails, the held
requests are answered 500 (Kamailio answers 500 on usrloc errors) and the rows stay queued for
the next commit (the cache is then ahead of the DB until it succeeds).

Clocks: the router's ``now`` is the driver's clock (``trio.current_time()``, arbitrary origin);
the ``location`` table, ``Date`` and nonces need wall-clock seconds. The service keeps
``wall = now + offset`` with the offset taken once at construction (tests pass it).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.configfile import FieldError, load_section
from router.features.auth import (
    AuthConfig,
    Authenticator,
    StoredCredential,
    consume_credentials,
)
from router.features.dispatcher.flags import is_skipped
from router.features.proxy import Target
from router.features.regforward import (
    ForwardConfig,
    ForwardMode,
    Node,
    RegistrationForwarder,
)
from router.features.registrar import Registrar, RegistrarConfig, SaveResult, aor_of
from router.realtime import Binding, Database, connect
from router.sip import (
    Request,
    Response,
    SipError,
    SipUri,
    make_response,
    parse_name_addr_list,
    parse_uri,
)
from router.sip.routing import uri_destination

if TYPE_CHECKING:
    from router.app import RouterCore
    from router.script import RequestContext

log = logging.getLogger("siplab.router.registration")

CREDENTIAL_CACHE_MAX = 100_000
"""Entries of the credential cache before it is emptied (a bound, not an LRU)."""


@dataclass(frozen=True)
class RegistrationSettings:
    """The router TOML ``[registrar]`` table (SIP-REFERENCE §2.1, §3.2 names in comments)."""

    enabled: bool = True
    db: str | None = None
    """Realtime DB URL (ps_auths, ps_aors, location); required when enabled."""
    realm: str = "asterisk"
    """Challenge realm (Asterisk ``default_realm``)."""
    domain: str | None = None
    """Domain of the forwarded REGISTERs' From/To (default: the node's host)."""
    nonce_lifetime: float = 300.0
    """Kamailio ``nonce_expire``."""
    nonce_secret: str | None = None
    """Hex HMAC key; random per start when absent (set it so routers verify each other)."""
    qop: str = "auth"
    algorithms: list[str] = field(default_factory=lambda: ["MD5"])
    auth_methods: list[str] = field(
        default_factory=lambda: ["REGISTER", "INVITE", "SUBSCRIBE", "MESSAGE"]
    )
    trusted_sources: list[str] = field(default_factory=list)
    """Source IPs that skip auth (permissions ``allow_source_address``)."""
    failure_window: float = 60.0
    max_failures_per_source: int = 10
    max_failures_per_user: int = 5
    block_time: float = 300.0
    default_expires: int = 3600
    min_expires: int = 60
    min_expires_mode: int = 0
    max_expires: int = 3600
    max_contacts: int = 0
    """0 = use ps_aors.max_contacts; otherwise this limit for every AOR."""
    cseq_delay: float = 20.0
    forward: str = "all"
    """"all", "hash" or "none" (SIP-REFERENCE §4.2 option B)."""
    forward_set: int = 1
    """Dispatcher set whose destinations get the forwarded REGISTERs."""
    forward_expires_margin: float = 30.0
    forward_retry: float = 30.0
    path: bool = True
    purge_interval: float = 60.0
    credential_cache_ttl: float = 10.0
    """Seconds a ps_auths row found for a user is reused without asking the DB again (0: ask
    every time). A failed verification drops the user's entry, so a changed password costs one
    extra challenge; a deleted user keeps working for at most this long. Users not found are
    never cached (a user provisioned a moment ago can register at once)."""

    def __post_init__(self) -> None:
        if self.enabled and not self.db:
            raise FieldError("db", "required when the registrar is enabled")
        if self.nonce_secret is not None:
            try:
                if not bytes.fromhex(self.nonce_secret):
                    raise ValueError
            except ValueError:
                raise FieldError("nonce_secret", "expected non-empty hex") from None
        if self.forward not in ("all", "hash", "none"):
            raise FieldError("forward", f"must be all, hash or none, got {self.forward!r}")
        if self.min_expires_mode not in (0, 1):
            raise FieldError("min_expires_mode", "must be 0 (raise) or 1 (423)")
        for name in ("nonce_lifetime", "purge_interval", "forward_retry", "failure_window"):
            if getattr(self, name) <= 0:
                raise FieldError(name, "must be > 0")
        if self.credential_cache_ttl < 0:
            raise FieldError("credential_cache_ttl", "must be >= 0 (0 disables the cache)")
        if self.max_expires and self.max_expires < self.min_expires:
            raise FieldError("max_expires", "must be >= min_expires (or 0 for no cap)")
        try:
            from router.sip import Algorithm

            for a in self.algorithms:
                Algorithm.from_token(a)
        except SipError as exc:
            raise FieldError("algorithms", str(exc)) from None


def load_settings(table: dict[str, Any], *, file: str = "<config>") -> RegistrationSettings:
    """``[registrar]`` table -> settings (raises ``ConfigError`` naming the field)."""
    return load_section(table, RegistrationSettings, file=file, prefix="registrar")


class RegistrationService:
    """REGISTER handling for one router (see module docstring and SIP-REFERENCE §2-4)."""

    def __init__(
        self,
        router: RouterCore,
        settings: RegistrationSettings,
        db: Database,
        *,
        now: float,
        wall_offset: float | None = None,
    ) -> None:
        self.router = router
        self.settings = settings
        self.db = db
        self.offset = time.time() - now if wall_offset is None else wall_offset
        secret = (
            bytes.fromhex(settings.nonce_secret)
            if settings.nonce_secret
            else secrets.token_bytes(32)
        )
        self.auth = Authenticator(
            AuthConfig(
                realm=settings.realm,
                qop=settings.qop,
                algorithms=tuple(settings.algorithms),
                methods=frozenset(m.upper() for m in settings.auth_methods),
                trusted_sources=frozenset(settings.trusted_sources),
                nonce_lifetime=settings.nonce_lifetime,
                failure_window=settings.failure_window,
                max_failures_per_source=settings.max_failures_per_source,
                max_failures_per_user=settings.max_failures_per_user,
                block_time=settings.block_time,
            ),
            secret,
        )
        self.registrar = Registrar(
            RegistrarConfig(
                default_expires=settings.default_expires,
                min_expires=settings.min_expires,
                min_expires_mode=settings.min_expires_mode,
                max_expires=settings.max_expires,
                cseq_delay=settings.cseq_delay,
                use_path=settings.path,
            )
        )
        self.forwarder = RegistrationForwarder(
            ForwardConfig(
                router_host=router.host,
                router_port=router.port,
                mode=ForwardMode(settings.forward),
                domain=settings.domain,
                retry=settings.forward_retry,
                expires_margin=settings.forward_expires_margin,
                path=settings.path,
                instance=secrets.token_hex(4),
            )
        )
        self._upserts: dict[str, Binding] = {}
        self._deletes: dict[str, Binding] = {}
        self._held: list[tuple[object, Response]] = []
        self._saved: tuple[int, SaveResult] | None = None
        """(id of the REGISTER, its SaveResult) between save_location and forward_registration."""
        self._fwd_tx: dict[int, tuple[object, tuple[str, str]]] = {}
        self._next_purge = now + settings.purge_interval
        self._credentials: dict[str, tuple[float, StoredCredential]] = {}
        """username -> (valid until, driver time; the credential): see credential_cache_ttl."""
        self.counts = {
            "commits": 0,
            "commit_failures": 0,
            "lookups": 0,
            "lookup_misses": 0,
            "credential_cache_hits": 0,
        }
        for expired in self.registrar.load(db.location_all(), self.wall(now)):
            self._deletes[expired.ruid] = expired

    @classmethod
    def from_router(cls, router: RouterCore, *, now: float) -> RegistrationService | None:
        """Build from ``router.config.registrar`` (None when the table is absent or disabled).

        Raises:
            ConfigError: a bad setting. RealtimeError: the DB cannot be opened.
        """
        table = router.config.registrar
        if not table:
            return None
        settings = load_settings(table, file=router.config.source)
        if not settings.enabled or settings.db is None:
            return None
        db = connect(settings.db)
        db.init_schema()
        return cls(router, settings, db, now=now)

    def wall(self, now: float) -> float:
        """Driver time -> epoch seconds."""
        return now + self.offset

    # -- auth -----------------------------------------------------------------------------

    def requires_auth(self, ctx: RequestContext) -> bool:
        return self.auth.requires_auth(ctx.request.method, ctx.source[0])

    def _credential(self, username: str) -> StoredCredential | None:
        now = self.router.now
        hit = self._credentials.get(username)
        if hit is not None and hit[0] > now:
            self.counts["credential_cache_hits"] += 1
            return hit[1]
        found = self._load_credential(username)
        ttl = self.settings.credential_cache_ttl
        if found is not None and ttl > 0:
            if len(self._credentials) >= CREDENTIAL_CACHE_MAX:
                self._credentials.clear()
            self._credentials[username] = (now + ttl, found)
        return found

    def _load_credential(self, username: str) -> StoredCredential | None:
        row = self.db.get_auth(username)
        if row is None:
            return None
        if (row.auth_type or "userpass").lower() == "md5":
            return (
                StoredCredential(ha1=row.md5_cred, realm=row.realm or None)
                if row.md5_cred
                else None
            )
        return StoredCredential(password=row.password) if row.password is not None else None

    def auth_check(self, ctx: RequestContext) -> bool:
        """Kamailio ``auth_check``; False after answering 401/407/403/400 itself."""
        request = ctx.request
        decision = self.auth.check(request, ctx.source[0], self._credential, now=self.wall(ctx.now))
        for key in decision.blocked:
            self.router.events.event(
                "auth_blocked",
                key=key,
                source=f"{ctx.source[0]}:{ctx.source[1]}",
                user=decision.username,
                block_time=self.settings.block_time,
            )
            log.warning("auth: blocked %s for %.0f s", key, self.settings.block_time)
        if not decision.ok:
            if decision.username is not None:
                # Maybe the password changed since it was cached: ask the DB next time.
                self._credentials.pop(decision.username, None)
            ctx.reply(decision.status, decision.reason, list(decision.headers))
            return False
        if decision.credentials is not None and request.method != "REGISTER":
            consume_credentials(request, decision.credentials)
        return True

    # -- registrar ------------------------------------------------------------------------

    def _max_contacts(self, request: Request) -> int | None:
        if self.settings.max_contacts > 0:
            return self.settings.max_contacts
        try:
            aor = aor_of(request)
        except SipError:
            return None  # save() answers the bad To itself
        row = self.db.get_aor(aor)
        # Asterisk: no AOR or max_contacts 0/NULL -> registration refused (SIP-REFERENCE §4.1).
        return (row.max_contacts or 0) if row is not None else 0

    def save_location(self, ctx: RequestContext) -> bool:
        """Kamailio ``save("location")``; the 200 is held until :meth:`commit`."""
        request = ctx.request
        ip, port = ctx.source
        host = f"[{ip}]" if ":" in ip else ip
        received = f"sip:{host}:{port}" + (";transport=tcp" if ctx.transport == "tcp" else "")
        result = self.registrar.save(
            request,
            now=self.wall(ctx.now),
            received=received,
            socket=f"{ctx.transport}:{self.router.host}:{self.router.port}",
            max_contacts=self._max_contacts(request),
        )
        if not result.ok:
            ctx.reply(result.status, result.reason, list(result.headers))
            return False
        for b in result.deletes:
            self._upserts.pop(b.ruid, None)
            self._deletes[b.ruid] = b
        for b in result.upserts:
            self._deletes.pop(b.ruid, None)
            self._upserts[b.ruid] = b
        response = make_response(
            request, 200, to_tag=self.router.to_tag(request), headers=result.headers
        )
        if ctx.transaction is not None and (self._upserts or self._deletes or self._held):
            # Held: a 200 may only leave once what it acknowledges is on disk (and a query
            # must not overtake the 200 of a change it reports).
            self._held.append((ctx.transaction, response))
            ctx.replied = True
        else:
            self.router.reply(ctx, response)
            ctx.replied = True
        self._saved = (id(request), result)
        return True

    def forward_registration(self, ctx: RequestContext) -> None:
        """Bring the PBX nodes in line with the AOR just saved (no-op for queries/repeats)."""
        saved, self._saved = self._saved, None
        if saved is None or saved[0] != id(ctx.request):
            return
        result = saved[1]
        if result.aor is None or not result.changed:
            return
        wall = self.wall(ctx.now)
        self.forwarder.update(result.aor, result.bindings, self._nodes(), wall)
        self._flush_forwards(ctx.now)

    def commit(self, now: float) -> None:
        """Write every queued binding change in one transaction, then release the held 200s."""
        if not (self._upserts or self._deletes or self._held):
            return
        held, self._held = self._held, []
        failed = False
        if self._upserts or self._deletes:
            try:
                with self.db.transaction():
                    if self._upserts:
                        self.db.location_upsert_many(self._upserts.values())
                    if self._deletes:
                        self.db.location_delete_ruids(self._deletes)
            except Exception:  # the DB edge: any driver error becomes a 500, never a crash
                log.exception("registrar: location commit failed")
                self.counts["commit_failures"] += 1
                failed = True
            else:
                self.counts["commits"] += 1
                self._upserts.clear()
                self._deletes.clear()
        for tx, response in held:
            if failed:
                response = Response(500, "Server Internal Error", response.headers.copy())
                response.headers.remove("Contact")
                response.headers.add("P-Registrar-Error", "Error while updating location")
            try:
                self.router.layer.respond(tx, response, now=now)  # type: ignore[arg-type]
            except Exception:  # the transaction may have ended meanwhile
                log.debug("held response dropped", exc_info=True)

    # -- lookup ---------------------------------------------------------------------------

    def lookup_and_relay(self, ctx: RequestContext) -> None:
        """Kamailio ``lookup("location")`` + ``t_relay``: fork to every contact of the R-URI."""
        uri = ctx.ruri
        if uri is None:
            ctx.reply(416, "Unsupported URI Scheme")
            return
        wall = self.wall(ctx.now)
        self.counts["lookups"] += 1
        exact = self.registrar.lookup_contact(str(uri), wall)
        if exact is not None:
            bindings = [exact]  # the node called the contact we gave it (with our Path)
        else:
            bindings = self.registrar.lookup(uri.user_unescaped or "", wall) if uri.user else []
        targets = [t for t in (_target(b) for b in bindings) if t is not None]
        if not targets:
            self.counts["lookup_misses"] += 1
            ctx.reply(404, "Not Found")
            return
        for target in targets:
            if not self.router.relay(ctx, target):
                ctx.reply(500, "Cannot relay")
                return

    # -- forwarded REGISTER transactions --------------------------------------------------

    def _nodes(self) -> list[Node]:
        return [
            Node(d.uri, (d.host.strip("[]"), d.port), d.transport, usable=not is_skipped(d.flags))
            for d in self.router.dispatcher.destinations(self.settings.forward_set)
        ]

    def _flush_forwards(self, now: float) -> None:
        for fwd in self.forwarder.drain_requests():
            try:
                tx = self.router.layer.start_client(
                    fwd.request, fwd.dest, now=now, reliable=fwd.transport == "tcp"
                )
            except ValueError:
                log.exception("cannot start forwarded REGISTER")
                self.forwarder.on_failure(fwd.key, self.wall(now))
                continue
            self._fwd_tx[id(tx)] = (tx, fwd.key)

    def owns(self, tx: object) -> bool:
        """True for the client transactions of forwarded REGISTERs."""
        return id(tx) in self._fwd_tx

    def on_response(self, tx: object, response: Response, now: float) -> None:
        if response.status < 200:
            return
        entry = self._fwd_tx.pop(id(tx), None)
        if entry is None:
            return
        self.forwarder.on_response(entry[1], response, self.wall(now))
        self._flush_forwards(now)

    def on_timeout(self, tx: object, now: float) -> None:
        """Timer F or a transport error on a forwarded REGISTER."""
        entry = self._fwd_tx.pop(id(tx), None)
        if entry is None:
            return
        self.forwarder.on_failure(entry[1], self.wall(now))
        self._flush_forwards(now)

    # -- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        others = (self.forwarder.next_deadline(), self.auth.next_deadline())
        return min([self._next_purge, *(d - self.offset for d in others if d is not None)])

    def handle_timers(self, now: float) -> None:
        wall = self.wall(now)
        if now >= self._next_purge:
            self._next_purge = now + self.settings.purge_interval
            self._purge(wall)
        self.auth.prune(wall)
        self.forwarder.handle_timers(wall)
        self._flush_forwards(now)

    def _purge(self, wall: float) -> None:
        gone = self.registrar.purge_expired(wall)
        users: set[str] = set()
        for b in gone:
            self._upserts.pop(b.ruid, None)
            self._deletes[b.ruid] = b
            users.add(b.username)
        nodes = self._nodes()
        for user in users:
            # usrloc contact-expired event: the nodes drop the contact too.
            self.forwarder.update(user, self.registrar.lookup(user, wall), nodes, wall)
        if gone:
            self.router.events.event("location_purged", count=len(gone))

    # -- introspection --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        a = self.auth.statistics(self.wall(self.router.now))
        f = self.forwarder.statistics()
        return {
            "bindings": self.registrar.count(),
            "aors": len(self.registrar.users()),
            "pending_writes": len(self._upserts) + len(self._deletes),
            "held_replies": len(self._held),
            "auth": {
                "ok": a.ok,
                "challenges": a.challenges,
                "failures": a.failures,
                "stale": a.stale,
                "forbidden": a.forbidden,
                "blocked": a.blocked_now,
                "blocks": a.blocks,
                "replays": a.replays,
            },
            "forward": {
                "pairs": f.pairs,
                "pending": f.pending,
                "sent": f.sent,
                "ok": f.ok,
                "failed": f.failed,
                "retried": f.retried,
                "refreshed": f.refreshed,
            },
            **self.counts,
        }

    def close(self) -> None:
        self.db.close()


def _target(binding: Binding) -> Target | None:
    """Next hop for a binding: its Path (RFC 3327 §5.3: "the Path header field values ... are
    used as a preloaded Route set"), else the received address (NAT), else the contact."""
    try:
        contact = parse_uri(binding.contact)
        if binding.path:
            routes = tuple(str(r) for r in parse_name_addr_list(binding.path))
            first = parse_name_addr_list(binding.path)[0].uri
            if isinstance(first, SipUri):
                host, port, transport = uri_destination(first)
                return Target((host, port), binding.contact, routes, transport, binding.contact)
        hop = parse_uri(binding.received) if binding.received else contact
        if not isinstance(hop, SipUri):
            hop = contact
        if not isinstance(hop, SipUri):
            return None
        host, port, transport = uri_destination(hop)
        return Target((host, port), binding.contact, (), transport, binding.contact)
    except SipError:
        return None


__all__ = ["RegistrationService", "RegistrationSettings", "load_settings"]
