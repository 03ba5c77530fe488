"""The trio user agent: SIP phones for scenario steps, on the same core as the router.

Theory of operation
-------------------
`UserAgent` is a `router.transport.base.SipCore`: the router's `SipDriver` binds its UDP
socket on a loopback address, feeds datagrams into ``receive_untrusted`` and sends what
``drain_outgoing`` returns. Inside, the RFC 3261 transaction layer (`TransactionLayer`) does
matching, retransmissions and Timers A-M; the UA core on top (this module and `calls`) does
what §8 and §12-§13 give to the UA core: building requests, digest answers (§22.2), dialogs,
ACK for 2xx (§13.2.2.4), 2xx retransmission as UAS (§13.3.1.4), CANCEL handling (§9.2).

The async API (``register``, ``call``, ``wait_incoming`` ...) runs in the test's tasks. It
changes core state, then calls ``flush()`` so the driver sends what was queued, and waits on
trio events that the core sets from the driver's callbacks. Both run on the one trio thread, so
no locking is needed.

Evidence: every message in and out is kept in ``messages`` (a `LoggedMessage` each) and, when
``events_path`` is given, written as ``events.jsonl`` lines by `router.observe.EventLog` under
the UA's node name, so call ladders show the UA leg. Fault hooks (``drop_acks``, ``on_send``)
act on our own sends only and are logged as ``event = "drop"``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

import trio

from router.observe import EventLog
from router.sip import (
    Request,
    Response,
    SipError,
    SipParseError,
    SipUri,
    Uas2xxRetransmitter,
    Via,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_untrusted,
    parse_uri,
    serialize,
)
from router.sip.dialog import Dialog
from router.sip.routing import add_received_rport, uri_destination
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
from router.sip.transaction.layer import TransactionLayer
from router.sip.transaction.timers import DEFAULT_TIMERS, Timers
from router.transport.base import Address, Inbound, Outgoing, TransportName
from router.transport.driver import SipDriver

from .build import MAX_AUTH_ROUNDS, authorize, is_stale, out_of_dialog_request, sdp_body
from .calls import Call, Incoming, Leg
from .results import LoggedMessage, RegisterResult, UaStatistics

__all__ = ["Address", "AutoAnswer", "UserAgent", "open_ua"]

Message = Request | Response


@dataclass(frozen=True, slots=True)
class AutoAnswer:
    """How ``auto_answer`` treats every new INVITE."""

    status: int = 200
    ring: bool = True
    """Send 180 Ringing first."""
    delay: float = 0.0
    """Seconds between the 180 and the final response."""
    sdp: bool = True


class _Pending:
    """A non-INVITE client transaction an API call waits on."""

    __slots__ = ("done", "final")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.final: Response | None = None


class UserAgent:
    """One SIP user agent on one UDP socket. Use `open_ua` to run it.

    Args:
        local: (ip, port) to bind; port 0 picks one (``local`` holds the bound one once open).
        proxy: outbound proxy for out-of-dialog requests (§8.1.2); None sends to the
            Request-URI's host.
        user, password, domain: our AOR ``sip:user@domain`` and digest credentials.
        events_path: ``events.jsonl`` to append to (None: no file).
        node: node name in the events (default ``ua<user>``).
        timers: T1/T2/T4 (compress them in tests).
        drop_acks: never put an ACK on the wire (ACK-loss scenarios); logged as drops.
        on_send: called with every outgoing message; return False to drop it.
        register_status: answer REGISTER requests with this status (a PBX stand-in that the
            router forwards registrations to); None answers 405.
        extensions: serve only these Request-URI users out of dialog and answer 404 to the
            others (a PBX that leaks its extensions, for enumeration scenarios); None serves all.
        keep_messages: keep ``messages`` (storms turn it off to bound memory).
    """

    ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"

    def __init__(
        self,
        *,
        local: Address = ("127.0.0.1", 0),
        proxy: Address | None = None,
        user: str = "ua",
        password: str | None = None,
        domain: str | None = None,
        events_path: str | Path | None = None,
        node: str | None = None,
        timers: Timers = DEFAULT_TIMERS,
        drop_acks: bool = False,
        on_send: Callable[[Message], bool] | None = None,
        register_status: int | None = None,
        extensions: Collection[str] | None = None,
        keep_messages: bool = True,
    ) -> None:
        self.local: Address = local
        self.proxy = proxy
        self.user = user
        self.password = password
        self.domain = domain or (proxy[0] if proxy else local[0])
        self.timers = timers
        self.drop_acks = drop_acks
        self.on_send = on_send
        self.register_status = register_status
        self.extensions = None if extensions is None else frozenset(extensions)
        self.keep_messages = keep_messages
        self.log = EventLog(events_path, node or f"ua{user}")
        self.layer = TransactionLayer(timers)
        self.driver = SipDriver(self, udp=[local])
        self.messages: list[LoggedMessage] = []
        """Everything sent and received, in order (when ``keep_messages``)."""
        self.incoming: list[Incoming] = []
        """Every INVITE received, in order."""
        self.calls: list[Call] = []
        """Every call placed, in order."""
        self._auto: AutoAnswer | None = None
        self._incoming_send, self._incoming_recv = trio.open_memory_channel[Incoming](math.inf)
        self._out: list[Outgoing] = []
        self._pending: dict[object, _Pending] = {}
        self._invites: dict[str, Call] = {}
        self._uas: dict[str, Incoming] = {}
        self._legs: dict[tuple[str, str, str], Leg] = {}
        self._retransmitters: list[tuple[Uas2xxRetransmitter, Leg]] = []
        self._registrations: dict[str, list[int | str]] = {}  # user -> [cseq, call-id]
        self._nursery: trio.Nursery | None = None
        self._arrival = trio.Event()
        self._mark = 0
        self._sent = self._received = self._rtx_sent = self._rtx_received = 0
        self._dropped_out = self._unparsable = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await nursery.start(self.driver.serve)
        self.local = self.driver.bound_udp[0]

    def close(self) -> None:
        self.log.close()

    @property
    def contact_uri(self) -> SipUri:
        """Our Contact: ``sip:user@ip:port``."""
        return SipUri("sip", self.user, None, self.local[0], self.local[1], (), ())

    def spawn(self, fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``fn`` as a task of the UA's nursery (used by timer callbacks)."""
        assert self._nursery is not None, "the UA is not running (use open_ua)"

        async def run() -> None:
            await fn()

        self._nursery.start_soon(run)

    def flush(self) -> None:
        """Hand queued messages to the driver (call after changing state outside a callback)."""
        if self._nursery is not None:
            self.driver.flush()

    def statistics(self) -> UaStatistics:
        return UaStatistics(
            sent=self._sent,
            received=self._received,
            retransmissions_sent=self._rtx_sent,
            retransmissions_received=self._rtx_received,
            dropped_out=self._dropped_out,
            unparsable_in=self._unparsable,
        )

    # -- SipCore --------------------------------------------------------------------------

    def receive_untrusted(self, data: bytes, inbound: Inbound, *, now: float) -> None:
        """One datagram in. Never raises for any input."""
        self._received += 1
        try:
            message = parse_untrusted(data)
        except SipParseError as exc:
            self._unparsable += 1
            self._record(LoggedMessage(now, "in", None, data, inbound.source))
            self.log.event("drop", trigger=exc.trigger, peer=_peer(inbound.source))
            self._notify()
            return
        self._record(LoggedMessage(now, "in", message, data, inbound.source))
        self.log.message("in", message, inbound.source, data=data)
        try:
            if isinstance(message, Response):
                self.layer.receive_response(message, inbound.source, now=now)
            else:
                via = message.top_via
                stamped = add_received_rport(via, inbound.source)
                if stamped is not via:
                    message.headers.pop_first_value("Via")
                    message.headers.prepend("Via", str(stamped))
                self.layer.receive_request(message, inbound.source, now=now)
        except SipError as exc:
            self.log.event("drop", trigger="bad_message", reason=str(exc))
        self._pump(now)
        self._notify()

    def handle_timers(self, *, now: float) -> None:
        self.layer.handle_timers(now=now)
        self._pump(now)
        for rt, leg in list(self._retransmitters):
            rt.handle_timers(now=now)
            for event in rt.drain_events():
                if isinstance(event, Send):
                    self._send(event.message, event.dest, retransmission=True)
                else:
                    leg._on_ack_timeout()
        self._retransmitters = [
            (rt, leg) for rt, leg in self._retransmitters if rt.next_deadline() is not None
        ]

    def next_deadline(self) -> float | None:
        deadlines = [d for rt, _ in self._retransmitters if (d := rt.next_deadline()) is not None]
        layer = self.layer.next_deadline()
        if layer is not None:
            deadlines.append(layer)
        return min(deadlines, default=None)

    def drain_outgoing(self) -> list[Outgoing]:
        out, self._out = self._out, []
        self.log.flush()
        return out

    def transport_failed(self, dest: Address, transport: TransportName, *, now: float) -> None:
        self.layer.transport_failed(dest, now=now)
        self._pump(now)

    # -- event pump -----------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        while events := self.layer.drain_events():
            for event in events:
                try:
                    self._handle(event, now)
                except SipError as exc:  # a header we needed later is malformed
                    self.log.event("drop", trigger="bad_message", reason=str(exc))

    def _handle(self, event: Event, now: float) -> None:
        match event:
            case Send():
                self._send(event.message, event.dest, retransmission=event.retransmission)
            case RequestReceived():
                self._on_request(event.request, event.transaction, event.source, now)
            case CancelReceived():
                # §9.2: 200 to the CANCEL itself; 481 when no transaction matches.
                self._reply(event.transaction, event.request, 200 if event.invite else 481)
                leg = self._uas.get(event.request.call_id)
                if leg is not None and leg.transaction is event.invite:
                    leg._on_cancel()
            case ResponseReceived():
                self._on_response(event.response, event.transaction, now)
            case TransactionTimeout() | TransportError():
                tx = event.transaction
                if isinstance(tx, ClientTransaction):
                    status = 408 if isinstance(event, TransactionTimeout) else 503
                    self._on_response(make_response(tx.request, status), tx, now)
            case TransactionTerminated():
                if isinstance(event.transaction, ClientTransaction):
                    self._pending.pop(event.transaction.key, None)
            case _:
                assert_never(event)

    def _on_response(self, response: Response, tx: ClientTransaction | None, now: float) -> None:
        if response.cseq.method == "INVITE":
            call = self._invites.get(response.call_id)
            if call is not None:
                call._on_response(response, tx.key if tx is not None else None, now)
            return
        if tx is None or response.is_provisional:
            return
        pending = self._pending.pop(tx.key, None)
        if pending is not None:
            pending.final = response
            pending.done.set()

    def _on_request(
        self, request: Request, tx: ServerTransaction | None, source: Address, now: float
    ) -> None:
        to_tag = request.to.tag
        key = (request.call_id, to_tag or "", request.from_.tag or "")
        leg = self._legs.get(key) if to_tag else None
        if tx is None:  # ACK for a 2xx (or stray)
            if leg is not None:
                leg._on_ack(request, now)
            return
        if to_tag:
            if leg is None or leg.dialog is None:
                self._reply(tx, request, 481)  # §12.2.2 no matching dialog
            else:
                leg._on_in_dialog(request, tx, now)
            return
        if self.extensions is not None and request.method != "ACK":
            # REGISTER names its user in To (§10.2: the Request-URI is the registrar domain).
            uri = request.to.uri if request.method == "REGISTER" else request.request_uri
            if not isinstance(uri, SipUri) or uri.user_unescaped not in self.extensions:
                self._reply(tx, request, 404)
                return
        match request.method:
            case "INVITE":
                self._on_invite(request, tx, source)
            case "OPTIONS":
                self._reply(tx, request, 200, [("Allow", self.ALLOW)])
            case "REGISTER" if self.register_status is not None:
                contacts = [("Contact", v) for v in request.headers.values("contact")]
                self._reply(tx, request, self.register_status, contacts)
            case "BYE":
                self._reply(tx, request, 481)
            case _:
                self._reply(tx, request, 405, [("Allow", self.ALLOW)])

    def _on_invite(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        incoming = Incoming(self, request, tx, source)
        self.incoming.append(incoming)
        self._uas[request.call_id] = incoming
        self.log.event("incoming_call", call_id=request.call_id, peer=_peer(source))
        auto = self._auto
        if auto is None:
            self._incoming_send.send_nowait(incoming)
            return
        if auto.ring:
            incoming.ring_nowait()
        if auto.delay <= 0:
            self._finish_auto(incoming, auto)
        else:
            self.spawn(lambda: self._delayed_answer(incoming, auto))

    async def _delayed_answer(self, incoming: Incoming, auto: AutoAnswer) -> None:
        await trio.sleep(auto.delay)
        self._finish_auto(incoming, auto)

    def _finish_auto(self, incoming: Incoming, auto: AutoAnswer) -> None:
        if 200 <= auto.status < 300:
            incoming.answer_nowait(auto.status, sdp=auto.sdp)
        elif auto.status >= 300:
            incoming.reject_nowait(auto.status)

    # -- sending (used by the legs) -------------------------------------------------------

    def _record(self, entry: LoggedMessage) -> None:
        if self.keep_messages:
            self.messages.append(entry)

    def _notify(self) -> None:
        self._arrival.set()
        self._arrival = trio.Event()

    def _send(self, message: Message, dest: Address, *, retransmission: bool = False) -> None:
        """Serialize and queue one message, unless the fault hooks drop it."""
        data = serialize(message)
        now = trio.current_time()
        drop = (self.drop_acks and isinstance(message, Request) and message.method == "ACK") or (
            self.on_send is not None and not self.on_send(message)
        )
        self._record(LoggedMessage(now, "out", message, data, dest, retransmission, drop))
        if drop:
            self._dropped_out += 1
            self.log.message("out", message, dest, data=data, kind="drop")
            return
        self._sent += 1
        self._rtx_sent += retransmission
        self._out.append(Outgoing(data, dest, "udp", self.local))
        self.log.message(
            "out", message, dest, data=data, kind="retransmit" if retransmission else "sip"
        )

    def _respond(self, tx: ServerTransaction, response: Response) -> None:
        if "Server" not in response.headers:
            response.headers.add("Server", "siplab-ua")
        self.layer.respond(tx, response, now=trio.current_time())
        self._pump(trio.current_time())

    def _reply(
        self,
        tx: ServerTransaction,
        request: Request,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        tag = None if status == 100 else (request.to.tag or new_tag())
        self._respond(tx, make_response(request, status, to_tag=tag, headers=headers))

    def _retransmit_2xx(
        self, leg: Leg, response: Response, dest: Address, now: float
    ) -> Uas2xxRetransmitter:
        rt = Uas2xxRetransmitter(response, dest, now=now, timers=self.timers)
        self._retransmitters.append((rt, leg))
        return rt

    def _start_client(self, request: Request, dest: Address) -> object:
        tx = self.layer.start_client(request, dest, now=trio.current_time())
        self._pump(trio.current_time())
        return tx.key

    def _via(self) -> Via:
        host, port = self.local
        return Via("UDP", host, port, (("branch", new_branch()), ("rport", None)))

    def _contact_headers(self, *, sdp: bool = False) -> list[tuple[str, str]]:
        headers = [("Contact", f"<{self.contact_uri}>")]
        if sdp:
            headers.append(("Content-Type", "application/sdp"))
        return headers

    def sdp(self) -> bytes:
        """Our minimal audio SDP (RFC 4566; no media is sent)."""
        return sdp_body(self.local[0], self.local[1] + 2)

    def _adopt_leg(self, leg: Leg) -> None:
        assert leg.dialog is not None
        d = leg.dialog.id
        self._legs[(d.call_id, d.local_tag, d.remote_tag)] = leg

    def _forget_leg(self, leg: Leg) -> None:
        if leg.dialog is not None:
            d = leg.dialog.id
            self._legs.pop((d.call_id, d.local_tag, d.remote_tag), None)
        if isinstance(leg, Call):
            self._invites.pop(leg.call_id, None)
        elif isinstance(leg, Incoming) and self._uas.get(leg.call_id) is leg:
            del self._uas[leg.call_id]

    def _dest_for(self, uri_text: str) -> Address:
        if self.proxy is not None:
            return self.proxy
        uri = parse_uri(uri_text)
        if not isinstance(uri, SipUri):
            raise ValueError(f"cannot send to {uri_text!r} without an outbound proxy")
        host, port, _ = uri_destination(uri)
        return (host, port)

    def _dialog_dest(self, dialog: Dialog) -> Address:
        """§12.2.1.1: in-dialog requests go to the first route, or to the remote target."""
        hop = dialog.next_hop()
        if isinstance(hop, SipUri):
            host, port, _ = uri_destination(hop)
            return (host, port)
        return self._dest_for(str(hop))

    async def _transact_counted(
        self,
        request: Request,
        dest: Address,
        *,
        dialog: Dialog | None = None,
        auth: bool = True,
        user: str | None = None,
        password: str | None = None,
    ) -> tuple[Response, int]:
        user = user or self.user
        password = password if password is not None else self.password
        attempts = 0
        while True:
            attempts += 1
            pending = _Pending()
            self._pending[self._start_client(request, dest)] = pending
            self.flush()
            await pending.done.wait()
            response = pending.final
            assert response is not None
            challenged = response.status in (401, 407) and auth
            if password is None or not challenged or attempts > MAX_AUTH_ROUNDS:
                return response, attempts
            if attempts == MAX_AUTH_ROUNDS and not is_stale(response):
                return response, attempts
            retry = authorize(request, response, user, password)
            if retry is None:
                return response, attempts
            if dialog is not None:
                dialog.local_seq = retry.cseq.seq
            request = retry

    async def _transact(
        self, request: Request, dest: Address, *, dialog: Dialog | None = None, auth: bool = True
    ) -> Response:
        response, _ = await self._transact_counted(request, dest, dialog=dialog, auth=auth)
        return response

    def _out_of_dialog(self, method: str, ruri: str, **fields: Any) -> Request:
        return out_of_dialog_request(method, ruri, via=self._via(), domain=self.domain, **fields)

    # -- public API -----------------------------------------------------------------------

    async def register(
        self,
        expires: int | None = 3600,
        *,
        contacts: list[str] | None = None,
        contact: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> RegisterResult:
        """REGISTER ``sip:user@domain`` (§10.2), answering a digest challenge.

        Args:
            expires: Expires header (None: none sent; 0 removes the binding).
            contacts: Contact values to register (default: our own Contact).
            contact: one Contact value, e.g. ``"*"`` with ``expires=0`` to remove all.
            user, password: register another user than the UA's own (storms).
        """
        user = user or self.user
        state = self._registrations.setdefault(user, [0, new_call_id(self.local[0])])
        # §10.2: "A UA MUST increment the CSeq value by one for each REGISTER request with
        # the same Call-ID" and "SHOULD use the same Call-ID for all registrations".
        state[0] = int(state[0]) + 1
        if contact is not None:
            values = [contact]
        elif contacts is not None:
            values = contacts
        else:
            values = [f"<sip:{user}@{self.local[0]}:{self.local[1]}>"]
        extra = [("Contact", v) for v in values]
        if expires is not None:
            extra.append(("Expires", str(expires)))
        ruri = f"sip:{self.domain}"
        request = self._out_of_dialog(
            "REGISTER",
            ruri,
            user=user,
            to_user=user,
            call_id=str(state[1]),
            cseq=int(state[0]),
            extra=extra,
        )
        started = trio.current_time()
        response, attempts = await self._transact_counted(
            request, self._dest_for(ruri), user=user, password=password
        )
        state[0] = response.cseq.seq
        bindings = []
        if response.is_success:
            try:
                bindings = [c for c in response.contacts if not c.star]
            except SipError:
                bindings = []
        return RegisterResult(
            response.status, response, bindings, attempts, trio.current_time() - started
        )

    async def unregister(
        self, *, user: str | None = None, password: str | None = None
    ) -> RegisterResult:
        """Remove our own binding (Expires: 0)."""
        return await self.register(0, user=user, password=password)

    async def options(self, target: str | None = None) -> Response:
        """Send OPTIONS out of dialog (to ``target`` URI, default ``sip:domain``)."""
        ruri = target or f"sip:{self.domain}"
        request = self._out_of_dialog(
            "OPTIONS",
            ruri,
            user=self.user,
            to_user=self.user,
            call_id=new_call_id(self.local[0]),
            cseq=1,
        )
        return await self._transact(request, self._dest_for(ruri))

    async def call(
        self,
        target: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        sdp: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- a call property, not this await's
        user: str | None = None,
        password: str | None = None,
    ) -> Call:
        """Send an INVITE to ``target`` (a user part, or a full ``sip:`` URI); returns the `Call`.

        The call proceeds in the background: ``await call.wait_answered()`` for the final.

        Args:
            target: "600" (becomes ``sip:600@domain``) or a SIP URI.
            headers: extra header fields for the INVITE.
            sdp: offer a minimal audio SDP.
            timeout: no-answer timer: CANCEL the call if no final response came after this
                many seconds (a phone giving up), None to wait for Timer B / the peer.
            user, password: call as another user than the UA's own (storms).
        """
        user = user or self.user
        if target.startswith(("sip:", "sips:")):
            ruri, to_user = target, (getattr(parse_uri(target), "user", None) or "")
        else:
            ruri, to_user = f"sip:{target}@{self.domain}", target
        extra = [*self._contact_headers(sdp=sdp), *headers]
        invite = self._out_of_dialog(
            "INVITE",
            ruri,
            user=user,
            to_user=to_user,
            call_id=new_call_id(self.local[0]),
            cseq=1,
            extra=extra,
            body=self.sdp() if sdp else b"",
        )
        dest = self._dest_for(ruri)
        call = Call(
            self,
            invite,
            dest,
            user=user,
            password=password if password is not None else self.password,
            started_at=trio.current_time(),
        )
        self.calls.append(call)
        self._invites[call.call_id] = call
        call._sent(self._start_client(invite, dest))
        self.flush()
        if timeout is not None:
            self.spawn(lambda: _give_up(call, timeout))
        await trio.lowlevel.checkpoint()
        return call

    def auto_answer(
        self, status: int = 200, *, ring: bool = True, delay: float = 0.0, sdp: bool = True
    ) -> None:
        """Answer every new INVITE: 180 (if ``ring``), then ``status`` after ``delay`` s."""
        self._auto = AutoAnswer(status, ring, delay, sdp)

    async def wait_incoming(self) -> Incoming:
        """The next INVITE received (when not auto-answering). Bound it with ``fail_after``."""
        return await self._incoming_recv.receive()

    async def send_raw(self, data: bytes, dest: Address) -> None:
        """Put ``data`` on the wire as is (malformed-input scenarios); marks ``expect``'s start."""
        self._mark = len(self.messages)
        try:
            parsed: Message | None = parse_untrusted(data)
        except SipParseError:
            parsed = None
        self._record(LoggedMessage(trio.current_time(), "out", parsed, data, dest))
        self._out.append(Outgoing(data, dest, "udp", self.local))
        self._sent += 1
        self.flush()
        await trio.lowlevel.checkpoint()

    async def expect(
        self,
        predicate: Callable[[Message], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 -- the scenario API asked for expect(pred, timeout)
        *,
        since: int | None = None,
    ) -> Message:
        """The first message received since the last ``send_raw`` (or index ``since`` of
        ``messages``) for which ``predicate`` is true.

        Raises:
            trio.TooSlowError: nothing matched within ``timeout`` seconds.
        """
        index = self._mark if since is None else since
        with trio.fail_after(timeout):
            while True:
                for entry in self.messages[index:]:
                    if (
                        entry.direction == "in"
                        and entry.message is not None
                        and predicate(entry.message)
                    ):
                        return entry.message
                index = len(self.messages)
                await self._arrival.wait()


async def _give_up(call: Call, after: float) -> None:
    with trio.move_on_after(after):
        await call.wait_answered()
        return
    await call.cancel()


def _peer(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


@asynccontextmanager
async def open_ua(
    *,
    local: Address = ("127.0.0.1", 0),
    proxy: Address | None = None,
    user: str = "ua",
    password: str | None = None,
    domain: str | None = None,
    events_path: str | Path | None = None,
    node: str | None = None,
    timers: Timers = DEFAULT_TIMERS,
    drop_acks: bool = False,
    on_send: Callable[[Message], bool] | None = None,
    register_status: int | None = None,
    extensions: Collection[str] | None = None,
    keep_messages: bool = True,
) -> AsyncIterator[UserAgent]:
    """Run a `UserAgent` (arguments as there) for the body of the ``async with``.

    The socket is bound when the body starts (``ua.local`` is the bound address) and closed
    when it ends. Exceptions of the body come out unwrapped (not in an ExceptionGroup).
    """
    ua = UserAgent(
        local=local,
        proxy=proxy,
        user=user,
        password=password,
        domain=domain,
        events_path=events_path,
        node=node,
        timers=timers,
        drop_acks=drop_acks,
        on_send=on_send,
        register_status=register_status,
        extensions=extensions,
        keep_messages=keep_messages,
    )
    failure: Exception | None = None
    try:
        async with trio.open_nursery() as nursery:
            await ua._start(nursery)
            try:
                yield ua
            except Exception as exc:
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
    finally:
        ua.close()
    if failure is not None:
        raise failure
