"""The reference router: the SIP core, the transaction layer, the proxy and the dispatcher,
composed into one :class:`router.transport.base.SipCore` that the trio driver runs.

Per message: parse (a malformed request gets 400 when enough parsed to answer, otherwise a
counted drop), stamp ``received``/``rport`` on the top Via (§18.2.1, RFC 3581), hand it to the
transaction layer, then act on what the layer says: new requests go through the routing policy
(``router/policy.py``), CANCELs cancel the proxied INVITE, responses go to the proxy core (or, for
our own OPTIONS keepalives, to the dispatcher), timeouts become local 408s.

Everything is synchronous. ``now`` comes from the driver's clock; event timestamps are wall-clock.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.config import RouterConfig
from router.features.dialogs import DialogTracker
from router.features.dispatcher import (
    Dispatcher,
    PingRequest,
    ProbingConfig,
    SelectionKey,
    get_algorithm,
    parse_reply_codes,
)
from router.features.proxy import ProxyConfig, ProxyCore, ResponseContext, Target
from router.observe import EventLog, Metrics
from router.script import RequestContext
from router.sip import (
    Headers,
    Request,
    Response,
    SipError,
    SipParseError,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_untrusted,
    serialize,
)
from router.sip.routing import add_received_rport, response_destination
from router.sip.transaction import ServerInviteTransaction, Timers
from router.sip.transaction.events import (
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    Send,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from router.sip.transaction.layer import TransactionLayer
from router.transport.base import Inbound, Outgoing, TransportName

log = logging.getLogger("siplab.router")

Policy = Callable[[RequestContext], None]

RETRY_AFTER = 5
"""Seconds in the Retry-After of a 503 sent because of overload."""


@dataclass(frozen=True, slots=True)
class Features:
    """Which parts of the router are switched on (part 2 adds the registrar)."""

    registrar: bool = False


def load_policy(spec: str) -> Policy:
    """``"package.module:function"`` -> the function (raises ValueError naming the problem)."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"policy {spec!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"policy {spec!r}: cannot import {module_name}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"policy {spec!r}: {module_name} has no function {func_name}")
    return func  # type: ignore[no-any-return]


class RouterCore:
    """The router as a sans-IO core for :class:`router.transport.driver.SipDriver`."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        events: EventLog | None = None,
        policy: Policy | None = None,
        now: float = 0.0,
    ) -> None:
        """Build the router. ``now`` is the driver's clock at start-up (trio.current_time())."""
        self.config = config
        self.name = config.name
        self.host = config.host
        self.port = config.port
        self.now = now
        timers = Timers(t1=config.timers.t1, t2=config.timers.t2, t4=config.timers.t4)
        self.layer = TransactionLayer(timers, auto_100=True)
        self.proxy = ProxyCore(
            self.layer,
            ProxyConfig(
                host=self.host,
                port=self.port,
                fr_timer=config.timers.fr_timer,
                fr_inv_timer=config.timers.fr_inv_timer,
            ),
        )
        self.events = events or EventLog(None, self.name)
        self.metrics = Metrics()
        self.drops: Counter[str] = Counter()
        self.policy: Policy = policy or load_policy(config.policy)
        self.dispatcher = self._build_dispatcher(config)
        self._ds_addresses = {
            d.host for s in self.dispatcher.setids() for d in self.dispatcher.destinations(s)
        }
        self._pings: dict[int, PingRequest] = {}
        self._outgoing: list[Outgoing] = []
        self._alg_numbers: dict[int | str, int] = {}
        self._transports: dict[int, str] = {}
        self._transport_stats: Callable[[], Any] | None = None
        self.dialogs = DialogTracker()
        """Calls up (2xx passed, no BYE yet): the dialogs gauge and call-load accounting."""
        """Transport of each request between receive and the policy (by id of the message)."""
        self._myself = {(h, p) for h, p in config.listen_addresses()}
        self.overload = 0.0
        """The driver's overload pressure, 0.0 (normal) to 1.0 (far behind): see set_overload."""
        self._shed_credit = 0.0
        self.shed: Counter[str] = Counter()
        """New requests refused because of overload, by how (e.g. ``invite_503``)."""
        self._to_tag = new_tag()
        self._describe_metrics()
        # Router part 2: registrar, digest auth, registration forwarding (when configured).
        from router.registration import RegistrationService

        self.registration = RegistrationService.from_router(self, now=now)
        self.features = Features(registrar=self.registration is not None)

    # -- construction ---------------------------------------------------------------------

    @staticmethod
    def _build_dispatcher(config: RouterConfig) -> Dispatcher:
        ds = config.dispatcher
        probing = None
        if ds.probing.interval > 0:
            probing = ProbingConfig(
                interval=ds.probing.interval,
                ping_timeout=ds.probing.timeout,
                probing_threshold=ds.probing.probing_threshold,
                inactive_threshold=ds.probing.inactive_threshold,
                probing_mode=ds.probing.mode,
                reply_codes=parse_reply_codes(ds.probing.reply_codes),
                ping_from=ds.probing.ping_from,
            )
        rows = config.dispatcher_rows()
        return Dispatcher.from_rows(rows, probing=probing)

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("requests_total", "SIP requests received, by method")
        m.describe("responses_total", "SIP responses sent or received, by code and direction")
        m.describe("drops_total", "messages dropped, by reason")
        m.describe("active_transactions", "live transactions by kind")
        m.describe("dispatcher_destination_up", "1 when the destination is usable")
        m.add_gauges(self._gauges)

    def _gauges(self) -> list[tuple[str, dict[str, str], float]]:
        st = self.layer.statistics()
        out: list[tuple[str, dict[str, str], float]] = [
            ("active_transactions", {"kind": "client_invite"}, st.client_invite),
            ("active_transactions", {"kind": "client_non_invite"}, st.client_non_invite),
            ("active_transactions", {"kind": "server_invite"}, st.server_invite),
            ("active_transactions", {"kind": "server_non_invite"}, st.server_non_invite),
            ("proxy_contexts", {}, len(self.proxy.contexts)),
            ("dialogs", {}, len(self.dialogs)),
        ]
        if self._transport_stats is not None:
            for reason, n in self._transport_stats().drops.items():
                out.append(("transport_drops", {"reason": reason}, n))
        for row in self.dispatcher.status():
            labels = {"set": str(row.setid), "uri": row.uri, "state": row.flags}
            out.append(("dispatcher_destination_up", labels, 0 if row.flags[0] in "ID" else 1))
        return out

    # -- SipCore --------------------------------------------------------------------------

    def receive_untrusted(self, data: bytes, inbound: Inbound, *, now: float) -> None:
        self.now = now
        if not data.strip(b"\r\n\x00 "):
            self.drops["keepalive"] += 1  # RFC 5626 CRLF keepalive on UDP: nothing to do
            return
        try:
            message = parse_untrusted(data)
        except SipParseError as exc:
            self._bad_message(data, inbound, exc)
            return
        reliable = inbound.transport == "tcp"
        if isinstance(message, Request):
            self.metrics.add("requests_total", (("method", message.method),))
            if self.overload and message.method == "INVITE" and self._shed_invite(message, inbound):
                return
            try:
                top = message.top_via
                stamped = add_received_rport(top, inbound.source)
                if stamped is not top:
                    message.headers.pop_first_value("Via")
                    message.headers.prepend_via(stamped)
                if self.events.active:
                    self.events.message(
                        "in", message, inbound.source, transport=inbound.transport, data=data
                    )
                self._transports[id(message)] = inbound.transport
                self.layer.receive_request(message, inbound.source, now=now, reliable=reliable)
            except SipError as exc:
                self._drop("bad_via", inbound, str(exc))
                return
        else:
            self.metrics.add("responses_total", (("code", str(message.status)), ("dir", "in")))
            if self.events.active:
                self.events.message(
                    "in", message, inbound.source, transport=inbound.transport, data=data
                )
            try:
                self.layer.receive_response(message, inbound.source, now=now)
            except SipError as exc:
                self._drop("bad_response", inbound, str(exc))
                return
        self._process(now)

    def set_overload(self, pressure: float) -> None:
        """The driver's receive backlog as a pressure, 0.0 (normal) to 1.0 (far behind).

        Under pressure p, that share of new INVITEs (no To tag, no transaction yet) is answered
        503 with Retry-After at once, statelessly (RFC 3261 §21.5.4: "temporarily unable to
        process the request due to a temporary overloading"); the others are routed. At 1.0 the
        driver drops INVITEs before parsing. Everything already accepted -- responses, ACK,
        BYE, CANCEL, retransmissions -- is still handled, so calls in progress complete while
        the excess is refused cheaply, and the router keeps completing calls at its capacity.
        """
        self.overload = pressure
        if not pressure:
            self._shed_credit = 0.0

    def _shed_invite(self, request: Request, inbound: Inbound) -> bool:
        try:
            if request.to.tag is not None or self.layer.find_server(request) is not None:
                return False  # a re-INVITE or a retransmission: handled as usual
            # Shed exactly the share `overload` of new INVITEs, evenly spread (no RNG).
            self._shed_credit += self.overload
            if self._shed_credit < 1.0:
                return False
            self._shed_credit -= 1.0
            response = make_response(
                request, 503, to_tag=self._to_tag, headers=(("Retry-After", str(RETRY_AFTER)),)
            )
            dest = self._reply_destination(request, inbound.source, inbound.transport)
        except SipError:
            return False  # let the normal path answer the malformed request
        self.shed["invite_503"] += 1
        self.metrics.add("responses_total", (("code", "503"), ("dir", "out")))
        self._outgoing.append(Outgoing(serialize(response), dest, inbound.transport))
        return True

    def handle_timers(self, *, now: float) -> None:
        self.now = now
        self.layer.handle_timers(now=now)
        self.proxy.handle_timers(now)
        self._run_pings(now)
        if self.registration is not None:
            self.registration.handle_timers(now)
        self._process(now)

    def next_deadline(self) -> float | None:
        deadlines = [
            self.layer.next_deadline(),
            self.proxy.next_deadline(),
            self.dispatcher.next_deadline(),
        ]
        if self.registration is not None:
            deadlines.append(self.registration.next_deadline())
        candidates = [d for d in deadlines if d is not None]
        return min(candidates) if candidates else None

    def drain_outgoing(self) -> list[Outgoing]:
        if self.registration is not None:
            # Group commit: every binding change of this batch in one DB transaction, and only
            # then the 200 OKs that acknowledge them (nothing acknowledged is lost on kill -9).
            self.registration.commit(self.now)
            self._process(self.now)
        out, self._outgoing = self._outgoing, []
        self.events.flush()
        return out

    def transport_failed(self, dest: tuple[str, int], transport: str, *, now: float) -> None:
        self.now = now
        self.layer.transport_failed(dest, now=now)
        self._process(now)

    # -- helpers used by RequestContext ---------------------------------------------------

    def is_myself(self, host: str, port: int) -> bool:
        return (host, port) in self._myself

    def to_tag(self, request: Request) -> str:
        return self._to_tag

    def dispatcher_has_address(self, ip: str) -> bool:
        return ip in self._ds_addresses

    def dispatcher_select(
        self, setid: int, algorithm: int | str, request: Request
    ) -> list[tuple[str, tuple[str, int], str]]:
        # Only the field the algorithm hashes is computed (parsing From/To costs on the hot path).
        number = self._alg_numbers.get(algorithm)
        if number is None:
            number = self._alg_numbers[algorithm] = get_algorithm(algorithm).number
        key = SelectionKey(
            call_id=request.call_id if number in (0, 10) else None,
            from_uri=str(request.from_.uri) if number == 1 else None,
            to_uri=str(request.to.uri) if number == 2 else None,
            ruri=request.uri if number == 3 else None,
            method=request.method,
        )
        chosen = self.dispatcher.select(setid, algorithm, key)
        return [(d.uri, (d.host.strip("[]"), d.port), d.transport) for d in chosen]

    def dispatcher_usable(self, uri: str) -> bool:
        return any(self.dispatcher.is_active(s, uri) for s in self.dispatcher.setids())

    def dispatcher_mark(self, uri: str, state: str, *, reason: str) -> None:
        self.dispatcher.mark(uri, state, now=self.now)

    @staticmethod
    def _reply_destination(
        request: Request, source: tuple[str, int], transport: str
    ) -> tuple[str, int]:
        """Where a response sent outside a transaction goes (RFC 3261 §18.2.2, RFC 3581).

        Over TCP: back on the connection the request came on (its peer address), "if the
        connection is still open". Over UDP: the Via stamped with received/rport as if the
        request had gone through the server transport (so a hostname in sent-by is never
        resolved: ``received`` holds the source IP).
        """
        if transport == "tcp":
            return source
        return response_destination(add_received_rport(request.top_via, source), source)

    def reply(self, ctx: RequestContext, response: Response) -> None:
        tx = ctx.transaction
        if tx is None:
            dest = self._reply_destination(ctx.request, ctx.source, ctx.transport)
            self.layer.send_stateless(response, dest, reliable=ctx.transport == "tcp")
            return
        self.layer.respond(tx, response, now=self.now)

    def relay(self, ctx: RequestContext, target: Target) -> bool:
        req = ctx.request
        if req.method == "ACK":
            fwd = self.proxy.relay_stateless(req, target.dest, transport=target.transport)
            self.layer.send_stateless(fwd, target.dest, reliable=target.transport == "tcp")
            return True
        if ctx.transaction is None:
            return False
        rctx = self.proxy.contexts.get(id(ctx.transaction))
        if rctx is None:
            rctx = self.proxy.new_context(ctx.transaction, req, ctx.source, self.now)
        if ctx._failure_route is not None:
            rctx.on_failure = ctx._on_branch_failure
        ctx._response_ctx = rctx
        self.proxy.relay(rctx, target, self.now)
        return True

    # Router part 2 (router/registration.py) when the [registrar] table enables it.
    def requires_auth(self, ctx: RequestContext) -> bool:
        return self.registration is not None and self.registration.requires_auth(ctx)

    def auth_check(self, ctx: RequestContext) -> bool:
        return self.registration is None or self.registration.auth_check(ctx)

    def save_location(self, ctx: RequestContext) -> bool:
        if self.registration is None:
            ctx.reply(405, "Method Not Allowed")
            return False
        return self.registration.save_location(ctx)

    def forward_registration(self, ctx: RequestContext) -> None:
        if self.registration is not None:
            self.registration.forward_registration(ctx)

    def lookup_and_relay(self, ctx: RequestContext) -> None:
        if self.registration is None:
            ctx.reply(404, "Not Found")
            return
        self.registration.lookup_and_relay(ctx)

    def close(self) -> None:
        if self.registration is not None:
            self.registration.close()
        self.events.flush()

    # -- event processing -----------------------------------------------------------------

    def _process(self, now: float) -> None:
        for _ in range(1000):  # handlers may queue more events; bounded for safety
            events = self.layer.drain_events()
            if not events:
                break
            for ev in events:
                try:
                    self._handle(ev, now)
                except SipError as exc:
                    self.drops["handler_sip_error"] += 1
                    log.info("dropping after %s", exc)
                except Exception:
                    self.drops["handler_error"] += 1
                    log.exception("router handler failed on %r", type(ev).__name__)
        for change in self.dispatcher.drain_events():
            self.events.event(
                "dispatcher_state",
                setid=change.setid,
                uri=change.uri,
                old=change.old,
                new=change.new,
                reason=change.reason,
                went_down=change.went_down,
                went_up=change.went_up,
            )

    def _handle(self, ev: object, now: float) -> None:
        match ev:
            case Send():
                self._send(ev)
            case RequestReceived(request=request, source=source, transaction=tx):
                transport = self._transports.pop(id(request), "udp")
                if request.method == "BYE":
                    self._call_over(request)
                ctx = RequestContext(self, request, source, tx, transport=transport, now=now)
                self.policy(ctx)
                if (
                    tx is not None
                    and not ctx.replied
                    and ctx._response_ctx is None
                    and request.method != "ACK"
                ):
                    # The policy neither answered nor relayed: say so rather than leave it hanging.
                    ctx.reply(500, "No routing decision")
            case CancelReceived(request=request, transaction=tx, invite=invite):
                self._transports.pop(id(request), None)
                reasons = tuple(request.headers.get_all("reason"))
                if invite is None or not self.proxy.cancel(invite, now, reasons=reasons):
                    self.layer.respond(
                        tx, make_response(request, 481, to_tag=self._to_tag), now=now
                    )
                else:
                    self.layer.respond(
                        tx, make_response(request, 200, to_tag=self._to_tag), now=now
                    )
            case ResponseReceived(response=response, transaction=tx) if (
                tx is not None and self.registration is not None and self.registration.owns(tx)
            ):
                self.registration.on_response(tx, response, now)
            case TransactionTimeout(transaction=tx) | TransportError(transaction=tx) if (
                self.registration is not None and self.registration.owns(tx)
            ):
                self.registration.on_timeout(tx, now)
            case ResponseReceived(response=response, transaction=tx):
                if tx is not None and id(tx) in self._pings:
                    if response.status >= 200:
                        ping = self._pings.pop(id(tx))
                        self.dispatcher.ping_result(
                            ping.destination.uri, response.status, now, from_tag=ping.from_tag
                        )
                    return
                if tx is None:
                    self._forward_stray(response)
                    return
                if 200 <= response.status < 300 and response.cseq.method == "INVITE":
                    found = self.proxy.by_client.get(id(tx))
                    if found is not None:
                        self.dialogs.confirmed(response.call_id, found[1].target.label, now)
                self.proxy.on_response(tx, response, now)
            case TransactionTimeout(transaction=tx):
                if id(tx) in self._pings:
                    ping = self._pings.pop(id(tx))
                    self.dispatcher.ping_result(
                        ping.destination.uri, None, now, from_tag=ping.from_tag
                    )
                    return
                self.proxy.on_client_timeout(tx, now)
            case TransportError(transaction=tx):
                if id(tx) in self._pings:
                    ping = self._pings.pop(id(tx))
                    self.dispatcher.ping_result(
                        ping.destination.uri, None, now, from_tag=ping.from_tag
                    )
                    return
                self.proxy.on_client_timeout(tx, now)
            case TransactionTerminated(transaction=tx):
                self._pings.pop(id(tx), None)
                if (
                    isinstance(tx, ServerInviteTransaction)
                    and tx.request.call_id not in self.dialogs
                ):
                    # The INVITE ended without a call (failed or cancelled): uncount it for
                    # the call-load algorithm (Kamailio ds_load_unset on a negative reply).
                    self.dispatcher.call_ended_for(tx.request.call_id)
                self.proxy.on_client_terminated(tx)
                self.proxy.on_server_terminated(tx)
            case _:
                log.debug("ignored event %r", ev)

    def _call_over(self, request: Request) -> None:
        """A BYE passed: the call is down (dialog gauge, call-load counters)."""
        try:
            call_id = request.call_id
        except SipError:
            return
        self.dialogs.ended(call_id)
        self.dispatcher.call_ended_for(call_id)

    def _send(self, ev: Send) -> None:
        msg = ev.message
        data = serialize(msg)
        transport: TransportName = "tcp" if ev.reliable else "udp"
        if self.events.active:
            kind = "retransmit" if ev.retransmission else "sip"
            self.events.message("out", msg, ev.dest, transport=transport, data=data, kind=kind)
        if isinstance(msg, Response):
            self.metrics.add("responses_total", (("code", str(msg.status)), ("dir", "out")))
        self._outgoing.append(Outgoing(data, ev.dest, transport))

    def _forward_stray(self, response: Response) -> None:
        """§16.7 for a response that matches no transaction: forward it statelessly."""
        vias = response.vias
        if len(vias) < 2 or f"{vias[0].host}:{vias[0].port or 5060}" != self.proxy.via_sent_by:
            self.drops["stray_response"] += 1
            return
        fwd = response.copy()
        fwd.headers.pop_first_value("Via")
        dest = response_destination(
            fwd.top_via, (fwd.top_via.received or fwd.top_via.host, fwd.top_via.sent_by()[1])
        )
        self.layer.send_stateless(fwd, dest)

    def _bad_message(self, data: bytes, inbound: Inbound, exc: SipParseError) -> None:
        self._drop(f"parse_{exc.trigger}", inbound, str(exc))
        partial = getattr(exc, "partial", None)
        if exc.can_reply and isinstance(partial, Request):
            try:
                resp = make_response(partial, exc.status, None, to_tag=self._to_tag)
                dest = self._reply_destination(partial, inbound.source, inbound.transport)
            except SipError:
                return
            out = serialize(resp)
            self.events.message("out", resp, dest, transport=inbound.transport, data=out)
            self._outgoing.append(Outgoing(out, dest, inbound.transport))

    def _drop(self, reason: str, inbound: Inbound, detail: str) -> None:
        self.drops[reason] += 1
        self.metrics.inc("drops_total", reason=reason)
        self.events.event(
            "drop",
            reason=reason,
            peer=f"{inbound.source[0]}:{inbound.source[1]}",
            detail=detail[:200],
        )

    # -- keepalives -----------------------------------------------------------------------

    def _run_pings(self, now: float) -> None:
        for ping in self.dispatcher.due_pings(now):
            dest = ping.destination
            headers = Headers(
                [
                    ("Via", f"SIP/2.0/UDP {self.proxy.via_sent_by};branch={new_branch()};rport"),
                    ("Max-Forwards", "70"),
                    ("From", f"<{ping.from_uri}>;tag={ping.from_tag}"),
                    ("To", f"<{dest.uri}>"),
                    ("Call-ID", new_call_id(self.host)),
                    ("CSeq", "10 OPTIONS"),
                    ("User-Agent", "siplab-router"),
                    ("Content-Length", "0"),
                ]
            )
            req = Request("OPTIONS", dest.uri, headers)
            tx = self.layer.start_client(req, (dest.host.strip("[]"), dest.port), now=now)
            self._pings[id(tx)] = ping

    # -- introspection --------------------------------------------------------------------

    def attach_transport(self, statistics: Callable[[], Any]) -> None:
        """Let status and metrics show the driver's counters (its drops: framing errors on TCP,
        full send buffers...), which happen before a message reaches this core."""
        self._transport_stats = statistics

    def _all_drops(self) -> dict[str, int]:
        drops = dict(self.drops)
        if self._transport_stats is not None:
            for reason, n in self._transport_stats().drops.items():
                drops[reason] = drops.get(reason, 0) + n
        return drops

    def _transport_status(self) -> dict[str, Any] | None:
        if self._transport_stats is None:
            return None
        st = self._transport_stats()
        return {
            "datagrams_in": st.datagrams_in,
            "datagrams_out": st.datagrams_out,
            "tcp_messages_in": st.tcp_messages_in,
            "tcp_messages_out": st.tcp_messages_out,
            "tcp_connections": st.tcp_connections,
            "drops": dict(st.drops),
        }

    def status(self) -> dict[str, Any]:
        st = self.layer.statistics()
        return {
            "node": self.name,
            "time": time.time(),
            "dispatcher": [
                {
                    "set": r.setid,
                    "uri": r.uri,
                    "flags": r.flags,
                    "priority": r.priority,
                    "attrs": r.attrs,
                    "latency": r.latency,
                }
                for r in self.dispatcher.status()
            ],
            "transactions": {
                "client_invite": st.client_invite,
                "client_non_invite": st.client_non_invite,
                "server_invite": st.server_invite,
                "server_non_invite": st.server_non_invite,
                "retransmissions": st.retransmissions,
                "timeouts": st.timeouts,
            },
            "proxy": dict(self.proxy.stats),
            "dialogs": {
                "active": len(self.dialogs),
                "confirmed_total": self.dialogs.confirmed_total,
                "ended_total": self.dialogs.ended_total,
                "expired_total": self.dialogs.expired_total,
                "per_destination": self.dialogs.per_destination(),
            },
            "drops": self._all_drops(),
            "overload": {"level": self.overload, "shed": dict(self.shed)},
            "transport": self._transport_status(),
            "registrar": self.registration.status() if self.registration is not None else None,
        }


__all__ = ["Features", "ResponseContext", "RouterCore", "load_policy"]
