"""Channels: answering, Dial() legs, bridging, hangup, and pjsip's no-ACK behaviour.

Theory of operation
-------------------
A new INVITE that passed identification and auth (``core``) is looked up in the dialplan.
As ``res_pjsip_session.c new_invite`` does, an unknown extension gets **404 with no 100
before it**; a full node gets 503; only then is **100 Trying** sent (SIP-REFERENCE §6.2) and
the per-call processing cost spent. The channel then runs its application:

* ``answer``: 200 OK with SDP at once; hang up after ``hangup_after`` (scaled) if set.
* ``dial``: ``Dial(PJSIP/<user>)``: an INVITE to the first live contact of the AOR from
  ``ps_contacts``, with the binding's Path as preloaded Route set (so it travels through the
  router). No contact: "No URI available. Is endpoint registered?" and the caller gets 404
  with ``Reason: Q.850;cause=3`` (after its 100), as measured on Asterisk 22.10 (Dial's
  CHANUNAVAIL hangup cause 3, "no route to destination", mapped to 404).
* ``queue``: ``Queue(<name>)``, see ``queuecalls.QueueRunner``.

B2BUA rules, as a bridged pair of Asterisk channels: the callee's 180/183 gives the caller
180 Ringing; the callee's 2xx is ACKed and the caller gets 200 OK; the other ringing legs get
CANCEL with ``Reason: SIP;cause=200;text="Call completed elsewhere"``; a BYE on either side
is answered 200 and sent on to the other; a CANCEL from the caller cancels every callee leg
(§9.1: a CANCEL only after a provisional, so it waits for one when needed).

No ACK (SIP-REFERENCE §6.3): the 2xx is retransmitted at T1, 2·T1 ... capped at T2 while
the ACK is missing, and at 64·T1 the channel sends BYE with
``Reason: SIP ;cause=408 ;text="Request Timeout"`` and hangs up. The channel is up until then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from router.sip import (
    Headers,
    Request,
    Response,
    SipError,
    SipUri,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
)
from router.sip.transaction.base import ClientTransaction, ServerTransaction, Transaction
from router.sip.transaction.events import CancelReceived
from router.sip.transaction.server_invite import ServerInviteTransaction

from .dialplan import Extension
from .legs import Leg, LegState, build_2xx_ack, build_cancel
from .queuecalls import QueueRunner
from .queues import QueueMemory
from .timers import TimerHandle, ack_wait_schedule

if TYPE_CHECKING:
    from .core import PbxCore
    from .store import Endpoint

ACK_TIMEOUT_REASON = 'SIP ;cause=408 ;text="Request Timeout"'
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'
_LIVE_UNANSWERED = (LegState.CALLING, LegState.EARLY)
_ANSWERED = (LegState.CONNECTING, LegState.CONFIRMED)


@dataclass(eq=False, slots=True)
class Call:
    """One inbound channel and the outbound channels it placed."""

    number: int
    caller: Leg
    exten: str
    app: Extension
    callees: list[Leg] = field(default_factory=list)
    bridged: Leg | None = None
    ended: bool = False
    ringing_sent: bool = False
    timers: list[TimerHandle] = field(default_factory=list)
    queue: QueueRunner | None = None


class CallManager:
    """Every channel of one node."""

    def __init__(self, core: PbxCore) -> None:
        self.core = core
        self.dialogs: dict[tuple[str, str], Leg] = {}
        self.call_of: dict[Leg, Call] = {}
        self.invite_legs: dict[Transaction, Leg] = {}
        self.device_use: dict[str, int] = {}
        """Live outbound legs per interface on this node (PJSIP device state)."""
        self.queue_memory: dict[str, QueueMemory] = {}
        """Per-node app_queue memory by queue name (rrpos, call counts, last calls)."""
        self.started = 0
        self._sdp_port = 20000

    # -- bookkeeping ----------------------------------------------------------------------

    @property
    def channels(self) -> int:
        """Live legs (each is an Asterisk channel)."""
        return len(self.call_of)

    def is_extension(self, exten: str) -> bool:
        return self.core.dialplan.lookup(exten, self._is_user(exten)) is not None

    def _is_user(self, exten: str) -> bool:
        endpoint = self.core.store.endpoint(exten)
        return endpoint is not None and bool(endpoint.aors)

    def _scaled(self, seconds: float) -> float:
        return seconds * self.core.config.time_scale

    def _event(self, kind: str, call: Call, **fields: object) -> None:
        self.core.log.event(kind, call=call.number, call_id=call.caller.call_id, **fields)

    def _sdp(self) -> bytes:
        host = self.core.local[0]
        self._sdp_port = 20000 + (self._sdp_port - 19998) % 10000
        sess = self.core.rng.randrange(1, 2**31)
        return (
            f"v=0\r\no=- {sess} {sess} IN IP4 {host}\r\ns=Asterisk\r\nc=IN IP4 {host}\r\n"
            f"t=0 0\r\nm=audio {self._sdp_port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\na=ptime:20\r\na=maxptime:150\r\na=sendrecv\r\n"
        ).encode()

    def _contact(self) -> str:
        external = self.core.config.external_signaling_address
        if external:
            return f"<sip:asterisk@{external}>"
        host, port = self.core.local
        return f"<sip:asterisk@{host}:{port}>"

    def _track(self, leg: Leg, call: Call) -> None:
        self.dialogs[leg.key] = leg
        self.call_of[leg] = call

    # -- inbound INVITE -------------------------------------------------------------------

    def on_invite(
        self,
        request: Request,
        tx: ServerTransaction,
        source: tuple[str, int],
        endpoint: Endpoint,
        now: float,
    ) -> None:
        core = self.core
        assert isinstance(tx, ServerInviteTransaction)
        try:
            uri = request.request_uri
        except SipError:
            core.reply(tx, request, 400, now)
            return
        if not isinstance(uri, SipUri):
            core.reply(tx, request, 416, now)
            return
        exten = uri.user_unescaped or ""
        app = core.dialplan.lookup(exten, self._is_user(exten))
        if app is None:
            core.log.event("no_extension", call_id=request.call_id, exten=exten)
            core.reply(tx, request, 404, now)
            return
        limit = core.config.capacity.max_channels
        if limit and self.channels >= limit:
            core.counters["rejected_full"] += 1
            core.log.event("channel_limit", call_id=request.call_id, channels=self.channels)
            core.reply(tx, request, 503, now)
            return
        core.reply(tx, request, 100, now)
        if core.spend_cpu is not None and core.config.capacity.call_cost_ms:
            core.spend_cpu(core.config.capacity.call_cost_ms)
        try:
            leg = Leg.from_invite(
                request, new_tag(), core.rng.randrange(1, 0x7FFF), "tcp" if tx.reliable else "udp"
            )
        except SipError:
            core.reply(tx, request, 400, now)
            return
        leg.server_tx = tx
        leg.response_dest = tx.dest
        self.started += 1
        call = Call(self.started, leg, exten, app)
        self._track(leg, call)
        self.invite_legs[tx] = leg
        self._event(
            "channel_new",
            call,
            exten=exten,
            app=app.app,
            endpoint=endpoint.id,
            peer=f"{source[0]}:{source[1]}",
        )
        match app.app:
            case "answer":
                self.answer(call, now)
                if app.hangup_after is not None:
                    call.timers.append(
                        core.scheduler.call_at(
                            now + self._scaled(app.hangup_after),
                            partial(self._hangup_after, call),
                            "hangup_after",
                        )
                    )
            case "busy":
                self._fail_caller(call, 486, now)
            case "congestion":
                self._fail_caller(call, 503, now)
            case "dial":
                if not self.dial(call, app.target, now, interface=f"PJSIP/{app.target}"):
                    self._fail_caller(call, 404, now, reason="Q.850;cause=3")
                elif app.timeout is not None:
                    call.timers.append(
                        core.scheduler.call_at(
                            now + self._scaled(app.timeout),
                            partial(self._dial_timeout, call),
                            "dial_timeout",
                        )
                    )
            case "queue":
                call.queue = QueueRunner(self, call, app.queue)
                call.queue.start(now)

    def answer(self, call: Call, now: float) -> None:
        """200 OK with SDP, then pjsip's 2xx retransmission until the ACK (§6.3)."""
        leg = call.caller
        if leg.state not in _LIVE_UNANSWERED or leg.server_tx is None:
            return
        response = make_response(
            leg.invite,
            200,
            to_tag=leg.local_tag,
            headers=[
                *_record_route(leg.invite),
                ("Contact", self._contact()),
                ("Allow", "OPTIONS, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, REFER"),
                ("Supported", "100rel, timer, replaces, norefersub"),
                ("Content-Type", "application/sdp"),
            ],
            body=self._sdp(),
        )
        self.core.respond(leg.server_tx, response, now=now)
        leg.last_2xx = response
        leg.state = LegState.CONNECTING
        leg.answered_at = now
        self._event("channel_answer", call)
        t = self.core.config.timers
        offsets, give_up = ack_wait_schedule(t.t1, t.t2)
        if leg.transport == "udp" and offsets:
            self._arm_2xx(leg, now, offsets, 0)
        leg.ack_timer = self.core.scheduler.call_at(
            now + give_up, partial(self._ack_timeout, leg), "ack_timeout"
        )

    def _hangup_after(self, call: Call, now: float) -> None:
        self.hangup(call, None, now, cause="dialplan_hangup")

    def _arm_2xx(self, leg: Leg, start: float, offsets: list[float], index: int) -> None:
        def fire(now: float) -> None:
            if leg.state is not LegState.CONNECTING or leg.last_2xx is None:
                return
            assert leg.response_dest is not None
            self.core.emit(leg.last_2xx, leg.response_dest, "udp", retransmission=True)
            if index + 1 < len(offsets):
                self._arm_2xx(leg, start, offsets, index + 1)

        leg.retransmit_timer = self.core.scheduler.call_at(start + offsets[index], fire, "2xx")

    def _ack_timeout(self, leg: Leg, now: float) -> None:
        if leg.state is not LegState.CONNECTING:
            return
        call = self.call_of.get(leg)
        if call is None:
            return
        self._event("ack_timeout", call)
        self._send_bye(leg, now, reason=ACK_TIMEOUT_REASON)
        self.hangup(call, leg, now, cause="ack_timeout")

    def on_ack(self, request: Request, now: float) -> None:
        try:
            key = (request.call_id, request.to.tag or "")
        except SipError:
            return
        leg = self.dialogs.get(key)
        if leg is None or not leg.inbound or leg.state is not LegState.CONNECTING:
            return
        leg.state = LegState.CONFIRMED
        for timer in (leg.retransmit_timer, leg.ack_timer):
            if timer is not None:
                timer.cancel()
        call = self.call_of.get(leg)
        if call is not None:
            self._event("ack", call)

    # -- in-dialog requests and CANCEL ----------------------------------------------------

    def on_in_dialog(self, request: Request, tx: ServerTransaction, now: float) -> bool:
        """A request with a To tag; False when it matches no dialog (the core sends 481)."""
        leg = self.dialogs.get((request.call_id, request.to.tag or ""))
        if leg is None or leg.state is LegState.TERMINATED:
            return False
        call = self.call_of.get(leg)
        method = request.method
        if method == "BYE":
            self.core.reply(tx, request, 200, now)
            leg.state = LegState.TERMINATED
            self._leg_done(leg, now, completed=True)
            if call is not None:
                self._event("bye_received", call, inbound=leg.inbound)
                self.hangup(call, leg, now, cause="normal_clearing")
            return True
        if method == "INVITE":
            response = make_response(
                request,
                200,
                headers=[
                    *_record_route(request),
                    ("Contact", self._contact()),
                    ("Content-Type", "application/sdp"),
                ],
                body=self._sdp(),
            )
            self.core.respond(tx, response, now=now)
            return True
        self.core.reply(
            tx, request, 200 if method in ("UPDATE", "INFO", "OPTIONS", "NOTIFY") else 501, now
        )
        return True

    def on_cancel(self, event: CancelReceived, now: float) -> None:
        core = self.core
        request, tx = event.request, event.transaction
        leg = self.invite_legs.get(event.invite) if event.invite is not None else None
        if leg is None:
            core.reply(tx, request, 481, now)
            return
        core.reply(tx, request, 200, now)
        call = self.call_of.get(leg)
        if call is None or leg.state not in _LIVE_UNANSWERED:
            return
        self._event("caller_cancel", call)
        self._fail_caller(call, 487, now)

    # -- outbound legs --------------------------------------------------------------------

    def dial(self, call: Call, user: str, now: float, *, interface: str) -> Leg | None:
        """Dial(PJSIP/<user>): INVITE the first contact of the endpoint's AORs; None if none.

        Dynamic contacts (``ps_contacts``, any node's) come first, then the AOR's permanent
        ``contact`` (SIP-REFERENCE §4.2 D); permanent contacts carry no Path.
        """
        core = self.core
        endpoint = core.store.endpoint(user)
        target: tuple[str, list[str]] | None = None
        if endpoint is not None:
            for aor_id in endpoint.aors:
                contacts = core.store.contacts(aor_id, now_epoch=core.epoch(now))
                if contacts:
                    target = (contacts[0].uri, contacts[0].paths)
                    break
                aor = core.store.aor(aor_id)
                if aor is not None and aor.permanent_contacts:
                    target = (aor.permanent_contacts[0], [])
                    break
        if target is None:
            self._event(
                "dial_unavailable",
                call,
                target=user,
                reason="No URI available. Is endpoint registered?",
            )
            return None
        return self._place(call, user, target[0], target[1], interface, now)

    def _place(
        self, call: Call, user: str, uri: str, paths: list[str], interface: str, now: float
    ) -> Leg | None:
        core = self.core
        host, port = core.local
        caller_user = "anonymous"
        try:
            from_uri = call.caller.invite.from_.uri
            if isinstance(from_uri, SipUri) and from_uri.user:
                caller_user = from_uri.user
        except SipError:
            pass
        call_id = new_call_id(host)
        tag = new_tag()
        cseq = core.rng.randrange(1, 0x7FFF)
        leg = Leg(
            inbound=False,
            invite=Request("INVITE", uri, Headers()),
            call_id=call_id,
            local_tag=tag,
            local_uri=f'"{caller_user}" <sip:{caller_user}@{host}>',
            remote_uri=f"<{uri}>",
            remote_tag=None,
            remote_target=uri,
            route_set=list(paths),
            local_cseq=cseq,
            interface=interface,
        )
        try:
            dest_host, dest_port, transport = leg.next_hop(uri)
        except SipError:
            return None
        leg.transport = "tcp" if transport == "tcp" else "udp"
        fields = [
            ("Via", f"SIP/2.0/{leg.transport.upper()} {host}:{port};rport;branch={new_branch()}"),
            ("From", f"{leg.local_uri};tag={tag}"),
            ("To", leg.remote_uri),
            ("Contact", self._contact()),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} INVITE"),
            *(("Route", r) for r in paths),
            ("Max-Forwards", "70"),
            ("User-Agent", core.config.user_agent),
            ("Allow", "OPTIONS, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, REFER"),
            ("Supported", "100rel, timer, replaces, norefersub"),
            ("Content-Type", "application/sdp"),
        ]
        leg.invite = Request("INVITE", uri, Headers(fields), self._sdp())
        leg.client_tx = core.start_client(
            leg.invite, (dest_host, dest_port), leg.transport, now=now
        )
        self.invite_legs[leg.client_tx] = leg
        self._track(leg, call)
        call.callees.append(leg)
        self.device_use[interface] = self.device_use.get(interface, 0) + 1
        self._event("dial", call, target=user, interface=interface, uri=uri, leg_call_id=call_id)
        return leg

    def on_response(self, response: Response, tx: ClientTransaction | None, now: float) -> None:
        try:
            method = response.cseq.method
        except SipError:
            return
        if method != "INVITE":
            return
        leg = self.invite_legs.get(tx) if tx is not None else None
        if leg is None:
            try:
                leg = self.dialogs.get((response.call_id, response.from_.tag or ""))
            except SipError:
                return
            if leg is None or leg.inbound:
                return
        call = self.call_of.get(leg)
        status = response.status
        if status < 200:
            leg.provisional_seen = True
            if leg.cancel_reason is not None and not leg.cancelled:
                self._send_cancel(leg, now)
                return
            if status > 100 and leg.state is LegState.CALLING:
                leg.state = LegState.EARLY
                if call is not None:
                    self._callee_ringing(call, leg, now)
            return
        if status < 300:
            if leg.state in _ANSWERED:
                if leg.ack is not None:  # 2xx retransmission: our ACK was lost
                    self._send_ack(leg, leg.ack)
                return
            host, port = self.core.local
            leg.ack = build_2xx_ack(leg, response, via_host=host, via_port=port)
            self._send_ack(leg, leg.ack)
            leg.state = LegState.CONFIRMED
            leg.answered_at = now
            if (
                call is None
                or call.ended
                or call.bridged is not None
                or leg.cancel_reason is not None
            ):
                self._send_bye(leg, now)
                self._leg_done(leg, now, completed=False)
                return
            self._callee_answered(call, leg, now)
            return
        if leg.state in _ANSWERED or leg.state is LegState.TERMINATED:
            return
        leg.state = LegState.TERMINATED
        self._leg_done(leg, now, completed=False)
        if call is not None:
            self._callee_failed(call, leg, status, now)

    def on_failure(self, tx: Transaction, status: int, now: float) -> None:
        """Timer B/F/H or a transport error: an INVITE leg that never got a final fails."""
        leg = self.invite_legs.get(tx)
        if leg is None or leg.inbound or leg.state not in _LIVE_UNANSWERED:
            return
        leg.state = LegState.TERMINATED
        self._leg_done(leg, now, completed=False)
        call = self.call_of.get(leg)
        if call is not None:
            self._callee_failed(call, leg, status, now)

    def on_terminated(self, tx: Transaction) -> None:
        self.invite_legs.pop(tx, None)

    def _send_ack(self, leg: Leg, ack: Request) -> None:
        try:
            host, port, _ = leg.next_hop(ack.uri)
        except SipError:
            return
        self.core.emit(ack, (host, port), "tcp" if leg.transport == "tcp" else "udp")

    def _send_bye(self, leg: Leg, now: float, *, reason: str | None = None) -> None:
        host, port = self.core.local
        extra = (("Reason", reason),) if reason else ()
        bye = leg.build_request(
            "BYE", via_host=host, via_port=port, user_agent=self.core.config.user_agent, extra=extra
        )
        leg.state = LegState.TERMINATED
        try:
            dest_host, dest_port, _ = leg.next_hop(bye.uri)
        except SipError:
            return
        self.core.start_client(bye, (dest_host, dest_port), leg.transport, now=now)

    def _send_cancel(self, leg: Leg, now: float) -> None:
        leg.cancelled = True
        cancel = build_cancel(leg.invite, leg.cancel_reason or None)
        if leg.client_tx is not None:
            self.core.start_client(cancel, leg.client_tx.dest, leg.transport, now=now)

    def cancel_leg(self, leg: Leg, now: float, reason: str | None = None) -> None:
        """Stop ringing an outbound leg: CANCEL now if a provisional came, else when it does."""
        if leg.inbound or leg.state not in _LIVE_UNANSWERED or leg.cancel_reason is not None:
            return
        leg.cancel_reason = reason or ""
        if leg.provisional_seen:
            self._send_cancel(leg, now)

    # -- call-level events ----------------------------------------------------------------

    def _callee_ringing(self, call: Call, leg: Leg, now: float) -> None:
        if call.ringing_sent or call.ended or call.caller.state is not LegState.CALLING:
            return
        tx = call.caller.server_tx
        if tx is None:
            return
        call.ringing_sent = True
        call.caller.state = LegState.EARLY
        ringing = make_response(
            call.caller.invite,
            180,
            to_tag=call.caller.local_tag,
            headers=[*_record_route(call.caller.invite), ("Contact", self._contact())],
        )
        self.core.respond(tx, ringing, now=now)
        self._event("ringing", call, interface=leg.interface)

    def _callee_answered(self, call: Call, leg: Leg, now: float) -> None:
        call.bridged = leg
        for timer in call.timers:
            timer.cancel()
        for other in call.callees:
            if other is not leg:
                self.cancel_leg(other, now, COMPLETED_ELSEWHERE)
        if call.queue is not None:
            call.queue.answered(leg, now)
        self._event("bridge", call, interface=leg.interface, leg_call_id=leg.call_id)
        if call.caller.state in _LIVE_UNANSWERED:
            self.answer(call, now)
        else:
            self._send_bye(leg, now)
            self._leg_done(leg, now, completed=True)

    def _callee_failed(self, call: Call, leg: Leg, status: int, now: float) -> None:
        self._event("dial_failed", call, interface=leg.interface, status=status)
        if call.ended:
            return
        if call.bridged is not None:
            return
        if call.queue is not None:
            call.queue.member_failed(leg, now)
            return
        if any(c.state in _LIVE_UNANSWERED for c in call.callees):
            return
        self._fail_caller(call, status if status != 487 else 480, now)

    def _dial_timeout(self, call: Call, now: float) -> None:
        if call.bridged is None and not call.ended:
            self._event("dial_timeout", call)
            self._fail_caller(call, 480, now)

    def _fail_caller(
        self, call: Call, status: int, now: float, *, reason: str | None = None
    ) -> None:
        """Reject the unanswered caller with ``status`` (and a ``Reason`` header) and hang
        everything up."""
        leg = call.caller
        if leg.state in _LIVE_UNANSWERED and leg.server_tx is not None:
            extra = [("Reason", reason)] if reason else []
            response = make_response(leg.invite, status, to_tag=leg.local_tag, headers=extra)
            self.core.respond(leg.server_tx, response, now=now)
            leg.state = LegState.TERMINATED
            self._leg_done(leg, now, completed=False)
        self.hangup(call, leg, now, cause=f"sip_{status}")

    def hangup(self, call: Call, origin: Leg | None, now: float, *, cause: str) -> None:
        """Hang up every leg of ``call`` except ``origin`` (which already ended)."""
        if call.ended:
            return
        call.ended = True
        for timer in call.timers:
            timer.cancel()
        if call.queue is not None:
            call.queue.stop(now)
        for leg in [call.caller, *call.callees]:
            if leg is origin or leg.state is LegState.TERMINATED:
                if leg.state is LegState.TERMINATED:
                    self._leg_done(leg, now, completed=leg.answered_at is not None)
                continue
            if leg.inbound:
                if leg.state in _LIVE_UNANSWERED and leg.server_tx is not None:
                    self.core.respond(
                        leg.server_tx, make_response(leg.invite, 480, to_tag=leg.local_tag), now=now
                    )
                    leg.state = LegState.TERMINATED
                else:
                    self._send_bye(leg, now)
            elif leg.state in _ANSWERED:
                self._send_bye(leg, now)
            else:
                self.cancel_leg(leg, now)
                if leg.cancelled or leg.provisional_seen:
                    leg.state = LegState.TERMINATED
            if leg.state is LegState.TERMINATED:
                self._leg_done(leg, now, completed=leg.answered_at is not None)
        self._event("channel_hangup", call, cause=cause)

    def _leg_done(self, leg: Leg, now: float, *, completed: bool) -> None:
        """Forget a finished leg: timers, dialog, device state, queue member state."""
        call = self.call_of.pop(leg, None)
        if call is None:
            return
        for timer in (leg.retransmit_timer, leg.ack_timer, leg.ring_timer):
            if timer is not None:
                timer.cancel()
        self.dialogs.pop(leg.key, None)
        if leg.interface is not None and not leg.inbound:
            left = self.device_use.get(leg.interface, 0) - 1
            if left > 0:
                self.device_use[leg.interface] = left
            else:
                self.device_use.pop(leg.interface, None)
            if call.queue is not None:
                call.queue.leg_released(leg, now, completed=completed)


def _record_route(request: Request) -> list[tuple[str, str]]:
    """RFC 3261 §12.1.1: "the UAS MUST copy all Record-Route header field values from the
    request into the response (including the URIs, URI parameters, and any Record-Route header
    field parameters, whether they are known or unknown to the UAS) and MUST maintain the order
    of those values" (pjsip does, so the router's in-dialog requests come back through it)."""
    return [("Record-Route", value) for value in request.headers.get_all("record-route")]
