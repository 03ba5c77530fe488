"""The emulated Asterisk node as a sans-IO :class:`router.transport.base.SipCore`.

Theory of operation
-------------------
The trio ``SipDriver`` feeds datagrams in and takes ``Outgoing`` messages out; time comes in
as ``now`` and the core tells the driver its next deadline. Inside, three things run:

* the RFC 3261 transaction layer of ``router.sip.transaction`` (matching, retransmissions,
  Timers A-M), with pjsip's T1/T2/T4 from the node config;
* the request pipeline of ``pjsip_distributor.c`` (SIP-REFERENCE §6.1): in-dialog requests go
  to their dialog; everything else is identified (ip, username, anonymous), authenticated
  (digest, Asterisk's challenge) and only then dispatched: OPTIONS here, REGISTER to
  ``registrar``, INVITE to the channel layer in ``calls``;
* the node's own timers (``timers.Scheduler``): dialplan waits, queue timeouts, pjsip's 2xx
  retransmission, the contact expiry sweep.

Every message in and out is an ``events.jsonl`` line (``EventLog.message``; retransmissions
have ``event = "retransmit"``), and every channel and queue decision an ``EventLog.event``.

The core reads no clock. Wall-clock epoch seconds (nonce timestamps, ``ps_contacts``
expiration times, the Date header) are ``now + wall_offset``, the offset given by the driver
wrapper at start.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import assert_never

from router.observe import EventLog
from router.sip import (
    Request,
    Response,
    SipError,
    SipParseError,
    SipUri,
    make_response,
    new_tag,
    parse_untrusted,
    serialize,
)
from router.sip.routing import add_received_rport
from router.sip.transaction.base import ClientTransaction, ServerTransaction
from router.sip.transaction.events import (
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    Send,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from router.sip.transaction.layer import TransactionLayer, TransactionStatistics
from router.sip.transaction.timers import Timers
from router.transport.base import Address, Inbound, Outgoing, TransportName

from .calls import CallManager
from .config import PbxConfig
from .dialplan import DEFAULT_DIALPLAN, Dialplan
from .registrar import handle_register
from .security import AuthOutcome, DigestAuthenticator, IpMatch, identify
from .store import Endpoint, PbxStore
from .timers import Scheduler

ALLOW = "OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, MESSAGE, INFO, REFER"
SUPPORTED = "100rel, timer, replaces, norefersub, histinfo"
ACCEPT = "application/sdp, application/dialog-info+xml, application/simple-message-summary, application/pidf+xml, text/plain"
CONTACT_SWEEP_INTERVAL = 30.0
"""Asterisk's contact expiry check runs every 30 s [AReg check_expiration_thread]."""


@dataclass(frozen=True, slots=True)
class PbxStatistics:
    """A snapshot of one node (trio-style ``statistics()``)."""

    channels: int
    """Live channels (call legs, both directions)."""
    calls_started: int
    """Inbound calls that got past the dialplan check (100 Trying sent)."""
    counters: dict[str, int]
    """Drops, unidentified requests, 503s for a full node ..."""
    transactions: TransactionStatistics
    """The transaction layer's own statistics."""
    timers: int
    """Armed node timers (dialplan, queue, 2xx retransmission, sweep)."""


class PbxCore:
    """One emulated Asterisk 22 node.

    Args:
        config: the node configuration.
        store: the shared realtime DB.
        dialplan: extensions (default: ``dialplan.DEFAULT_DIALPLAN``).
        log: where events go (default: nowhere).
        local: the bound (ip, port), when it differs from the config (port 0 in tests).
        wall_offset: epoch seconds minus the ``now`` clock.
        spend_cpu: burns the per-call processing cost, in milliseconds (None: no cost).
    """

    def __init__(
        self,
        config: PbxConfig,
        store: PbxStore,
        *,
        dialplan: Dialplan = DEFAULT_DIALPLAN,
        log: EventLog | None = None,
        local: Address | None = None,
        wall_offset: float = 0.0,
        spend_cpu: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.dialplan = dialplan
        self.log = log if log is not None else EventLog(None, config.name)
        self.local: Address = local or (config.listen, config.port)
        self.wall_offset = wall_offset
        self.spend_cpu = spend_cpu
        t = config.timers
        self.layer = TransactionLayer(Timers(t1=t.t1, t2=t.t2, t4=t.t4))
        self.scheduler = Scheduler()
        self.rng = random.Random(config.seed)
        self.authenticator = DigestAuthenticator(default_realm=config.default_realm)
        self.identifier_order = [s.strip() for s in config.endpoint_identifier_order.split(",")]
        self.static_identify: list[tuple[str, IpMatch]] = [
            (config.router_endpoint, m)
            for text in config.routers
            if (m := IpMatch.parse(text)) is not None
        ]
        self.counters: Counter[str] = Counter()
        self.calls = CallManager(self)
        self._out: list[Outgoing] = []
        self._sweep_started = False

    # -- SipCore --------------------------------------------------------------------------

    def receive_untrusted(self, data: bytes, inbound: Inbound, *, now: float) -> None:
        """Take one datagram / framed message. Never raises for any input."""
        self._start_sweep(now)
        try:
            message = parse_untrusted(data)
        except SipParseError as exc:
            self.counters[f"drop_{exc.trigger}"] += 1
            self.log.event(
                "drop", trigger=exc.trigger, peer=f"{inbound.source[0]}:{inbound.source[1]}"
            )
            return
        self.log.message("in", message, inbound.source, transport=inbound.transport, data=data)
        try:
            if isinstance(message, Response):
                self.layer.receive_response(message, inbound.source, now=now)
            else:
                via = message.top_via
                stamped = add_received_rport(via, inbound.source)
                if stamped is not via:
                    message.headers.pop_first_value("Via")
                    message.headers.prepend("Via", str(stamped))
                self.layer.receive_request(
                    message, inbound.source, now=now, reliable=inbound.transport == "tcp"
                )
        except SipError as exc:
            self.counters["drop_bad_message"] += 1
            self.log.event("drop", trigger="bad_message", reason=str(exc))
            return
        self._pump(now)

    def handle_timers(self, *, now: float) -> None:
        self._start_sweep(now)
        self.layer.handle_timers(now=now)
        self._pump(now)
        self.scheduler.run_due(now)
        self._pump(now)

    def next_deadline(self) -> float | None:
        a = self.layer.next_deadline()
        b = self.scheduler.next_deadline()
        if a is None:
            return b
        return a if b is None or a < b else b

    def drain_outgoing(self) -> list[Outgoing]:
        out, self._out = self._out, []
        self.log.flush()
        return out

    def transport_failed(self, dest: Address, transport: TransportName, *, now: float) -> None:
        self.layer.transport_failed(dest, now=now)
        self._pump(now)

    def statistics(self) -> PbxStatistics:
        """Channels, counters and transaction counts right now."""
        return PbxStatistics(
            channels=self.calls.channels,
            calls_started=self.calls.started,
            counters=dict(self.counters),
            transactions=self.layer.statistics(),
            timers=len(self.scheduler),
        )

    # -- helpers for the channel layer ----------------------------------------------------

    def epoch(self, now: float) -> float:
        """Wall-clock epoch seconds at ``now``."""
        return now + self.wall_offset

    def emit(
        self,
        message: Request | Response,
        dest: Address,
        transport: TransportName = "udp",
        *,
        retransmission: bool = False,
    ) -> None:
        """Serialize, log and queue one message outside any transaction."""
        data = serialize(message)
        self._out.append(Outgoing(data, dest, transport, self.local))
        self.log.message(
            "out",
            message,
            dest,
            transport=transport,
            data=data,
            kind="retransmit" if retransmission else "sip",
        )

    def respond(self, tx: ServerTransaction, response: Response, *, now: float) -> None:
        """Answer through a server transaction (adds Asterisk's Server header)."""
        if "Server" not in response.headers:
            response.headers.add("Server", self.config.user_agent)
        self.layer.respond(tx, response, now=now)

    def start_client(
        self, request: Request, dest: Address, transport: str, *, now: float
    ) -> ClientTransaction:
        return self.layer.start_client(request, dest, now=now, reliable=transport == "tcp")

    # -- event pump -----------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        while events := self.layer.drain_events():
            for event in events:
                try:
                    self._handle(event, now)
                except SipError as exc:
                    # A header we needed later turned out malformed: answer 400 if we can.
                    self.counters["bad_request"] += 1
                    self._fail_event(event, 400, now, str(exc))
                except Exception as exc:  # DB down or locked, our own bug: Asterisk sends 500
                    self.counters["internal_error"] += 1
                    self._fail_event(event, 500, now, f"{type(exc).__name__}: {exc}")

    def _fail_event(self, event: Event, status: int, now: float, why: str) -> None:
        self.log.event("internal_error" if status == 500 else "bad_request", reason=why)
        if isinstance(event, RequestReceived | CancelReceived) and event.transaction is not None:
            try:
                self.reply(event.transaction, event.request, status, now)
            except Exception:  # already answered: nothing more to say
                self.counters["unanswerable"] += 1

    def _handle(self, event: Event, now: float) -> None:
        match event:
            case Send():
                transport: TransportName = "tcp" if event.reliable else "udp"
                self.emit(event.message, event.dest, transport, retransmission=event.retransmission)
            case RequestReceived():
                self._on_request(event.request, event.source, event.transaction, now)
            case CancelReceived():
                self.calls.on_cancel(event, now)
            case ResponseReceived():
                self.calls.on_response(event.response, event.transaction, now)
            case TransactionTimeout():
                self.calls.on_failure(event.transaction, 408, now)
            case TransportError():
                self.calls.on_failure(event.transaction, 503, now)
            case TransactionTerminated():
                self.calls.on_terminated(event.transaction)
            case _:
                assert_never(event)

    # -- the distributor ------------------------------------------------------------------

    def _on_request(
        self, request: Request, source: Address, tx: ServerTransaction | None, now: float
    ) -> None:
        if tx is None:  # ACK for a 2xx, or a stray ACK
            self.calls.on_ack(request, now)
            return
        try:
            in_dialog = request.to.tag is not None
        except SipError:
            self.reply(tx, request, 400, now)
            return
        if in_dialog:
            if not self.calls.on_in_dialog(request, tx, now):
                self.reply(tx, request, 481, now)
            return
        found = identify(
            self.store,
            request,
            source,
            order=self.identifier_order,
            static=self.static_identify,
        )
        epoch = self.epoch(now)
        if found is None:
            # The artificial endpoint: challenge, and no credentials can ever pass [ADist].
            self.counters["unidentified"] += 1
            self.log.event(
                "unidentified",
                method=request.method,
                call_id=request.call_id,
                peer=f"{source[0]}:{source[1]}",
            )
            challenge = self.authenticator.challenge(None, source, now_epoch=epoch)
            self.reply(tx, request, 401, now, [("WWW-Authenticate", challenge)])
            return
        endpoint, how = found
        if not self._authenticated(request, endpoint, tx, source, now):
            return
        self.log.event(
            "identified",
            method=request.method,
            call_id=request.call_id,
            endpoint=endpoint.id,
            by=how.value,
        )
        match request.method:
            case "OPTIONS":
                self._options(request, tx, now)
            case "REGISTER":
                outcome = handle_register(
                    self.store,
                    request,
                    endpoint,
                    source,
                    reg_server=self.config.reg_server,
                    now_epoch=epoch,
                    extra_headers=[("Server", self.config.user_agent)],
                )
                self.log.event(
                    "register",
                    call_id=request.call_id,
                    endpoint=endpoint.id,
                    aor=outcome.aor,
                    action=outcome.action,
                    status=outcome.response.status,
                )
                self.respond(tx, outcome.response, now=now)
            case "INVITE" if "Contact" not in request.headers:
                # pjsip_inv_verify_request: a dialog-creating INVITE MUST carry a Contact (RFC
                # 3261 §8.1.1.8); real Asterisk answers this, before any 100 (measured).
                response = make_response(request, 400, "Missing Contact header", to_tag=new_tag())
                self.respond(tx, response, now=now)
            case "INVITE":
                self.calls.on_invite(request, tx, source, endpoint, now)
            case "BYE" | "UPDATE" | "PRACK" | "INFO":
                self.reply(tx, request, 481, now)
            case _:
                self.reply(tx, request, 501, now)

    def _authenticated(
        self,
        request: Request,
        endpoint: Endpoint,
        tx: ServerTransaction,
        source: Address,
        now: float,
    ) -> bool:
        """ast_sip_requires_authentication + the digest authenticator [ADist; ADig]."""
        if not endpoint.auths:
            return True
        if request.method == "OPTIONS" and _yes(endpoint.allow_unauthenticated_options):
            return True
        auths = [a for name in endpoint.auths if (a := self.store.auth(name)) is not None]
        epoch = self.epoch(now)
        outcome = self.authenticator.check(request, auths, source, now_epoch=epoch)
        if outcome is AuthOutcome.ACCEPTED:
            return True
        self.log.event("auth", call_id=request.call_id, endpoint=endpoint.id, outcome=outcome.value)
        challenge = self.authenticator.challenge(
            auths[0] if auths else None,
            source,
            now_epoch=epoch,
            stale=outcome is AuthOutcome.STALE,
        )
        challenges = [("WWW-Authenticate", challenge)]
        self.reply(tx, request, 401, now, challenges)
        return False

    def _options(self, request: Request, tx: ServerTransaction, now: float) -> None:
        """options_on_rx_request: 404 for an R-URI user that is not an extension [AOpt]."""
        try:
            uri = request.request_uri
        except SipError:
            self.reply(tx, request, 400, now)
            return
        user = uri.user_unescaped if isinstance(uri, SipUri) else None
        if user and not self.calls.is_extension(user):
            self.reply(tx, request, 404, now)
            return
        self.reply(
            tx,
            request,
            200,
            now,
            [  # no Contact: Asterisk 22's OPTIONS 200 has none (measured, docs/fidelity.md)
                ("Allow", ALLOW),
                ("Supported", SUPPORTED),
                ("Accept", ACCEPT),
                ("Accept-Encoding", "text/plain"),
                ("Accept-Language", "en"),
            ],
        )

    def reply(
        self,
        tx: ServerTransaction,
        request: Request,
        status: int,
        now: float,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        response = make_response(
            request,
            status,
            to_tag=None if status == 100 else new_tag(),
            headers=headers or (),
        )
        self.respond(tx, response, now=now)

    def _start_sweep(self, now: float) -> None:
        if not self._sweep_started:
            self._sweep_started = True
            self.scheduler.call_at(now + CONTACT_SWEEP_INTERVAL, self._sweep, "contact_sweep")

    def _sweep(self, now: float) -> None:
        removed = self.store.delete_expired_contacts(self.epoch(now))
        if removed:
            self.log.event("contacts_expired", count=removed)
        self.scheduler.call_at(now + CONTACT_SWEEP_INTERVAL, self._sweep, "contact_sweep")


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "on", "1")
