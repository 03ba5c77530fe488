"""Call legs of the trio UA: `Call` (we sent the INVITE) and `Incoming` (we received it).

Both sides keep a `router.sip.Dialog` once one exists and share the in-dialog duties in
`Leg`: answering the peer's BYE, stopping the 2xx retransmitter when the ACK comes, and
sending BYE when the ACK never comes (RFC 3261 §13.3.1.4: "If the server retransmits the 2xx
response for 64*T1 seconds without receiving an ACK, the dialog is confirmed, but the session
SHOULD be terminated. This is accomplished with a BYE").

The UAC rules that live in `Call`:

* §13.2.2.4: "The UAC core MUST generate an ACK request for each 2xx received from the
  transaction layer", so every retransmitted 2xx (the peer did not see our ACK) is answered
  with the same ACK again, and counted in ``Call.retransmissions``.
* §9.1: "If no provisional response has been received, the CANCEL request MUST NOT be sent;
  rather, the client MUST wait for the arrival of a provisional response", so ``cancel()``
  waits for the first 1xx.
* §22.2: a 401/407 to the INVITE is answered once with credentials: same Call-ID and From tag,
  CSeq + 1, a new branch (the transaction already ACKed the 401/407, §17.1.1.3).

Leg objects are only touched from the UA's trio thread: the driver's callbacks (sync) and the
awaiting API methods interleave at checkpoints, never concurrently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from router.sip import (
    Dialog,
    Request,
    Response,
    Uas2xxRetransmitter,
    build_cancel,
    make_response,
    new_tag,
)

from .build import MAX_AUTH_ROUNDS, authorize, is_stale

if TYPE_CHECKING:
    from router.sip.transaction.base import ServerTransaction

    from .ua import Address, UserAgent


class Leg:
    """What both ends of a dialog do: receive BYE, match ACKs, time out waiting for an ACK."""

    def __init__(self, ua: UserAgent, call_id: str) -> None:
        self.ua = ua
        self.call_id = call_id
        """Call-ID of the INVITE."""
        self.dialog: Dialog | None = None
        """The dialog, once a 2xx (or our 2xx) created it."""
        self.ended_by: str | None = None
        """"local" (we sent BYE/CANCEL), "remote" (peer's BYE/CANCEL) or "failed"."""
        self.retransmitter: Uas2xxRetransmitter | None = None
        """Our 2xx waiting for its ACK (UAS side, or a re-INVITE we answered)."""
        self._ended = trio.Event()
        self._acked = trio.Event()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> str | None:
        """Wait until the call is over (BYE either way, CANCEL, failure); returns ``ended_by``."""
        await self._ended.wait()
        return self.ended_by

    async def wait_acked(self) -> None:
        """Wait until the ACK for our 2xx arrived."""
        await self._acked.wait()

    def _end(self, by: str) -> None:
        if not self._ended.is_set():
            self.ended_by = by
            self._ended.set()
            self.ua._forget_leg(self)
            self.ua.log.event("call_ended", call_id=self.call_id, by=by)

    def _on_ack(self, ack: Request, now: float) -> None:
        rt = self.retransmitter
        if rt is not None and rt.is_ack_for(ack):
            rt.ack_received(now=now)
            self._acked.set()

    def _on_ack_timeout(self) -> None:
        """§13.3.1.4: no ACK within 64*T1: "the session SHOULD be terminated" with a BYE."""
        self.ua.log.event("ack_timeout", call_id=self.call_id)
        self.ua.spawn(self.hangup)

    def _on_in_dialog(self, request: Request, tx: ServerTransaction, now: float) -> None:
        dialog = self.dialog
        assert dialog is not None
        if not dialog.receive_request(request):
            self.ua._reply(tx, request, 500)  # §12.2.2: out-of-order CSeq
            return
        match request.method:
            case "BYE":
                self.ua._reply(tx, request, 200)
                self._end("remote")
            case "INVITE":  # re-INVITE: accept the same session again (no renegotiation)
                response = make_response(
                    request, 200, headers=self.ua._contact_headers(sdp=True), body=self.ua.sdp()
                )
                self.ua._respond(tx, response)
                self.retransmitter = self.ua._retransmit_2xx(self, response, tx.dest, now)
            case "INFO" | "OPTIONS" | "UPDATE" | "NOTIFY":
                self.ua._reply(tx, request, 200)
            case _:
                self.ua._reply(tx, request, 405, [("Allow", self.ua.ALLOW)])

    async def hangup(self) -> Response | None:
        """End the call: BYE in a dialog (overridden by `Call` to CANCEL before the answer)."""
        dialog = self.dialog
        if dialog is None or self.ended:
            return None
        bye = dialog.create_request("BYE", self.ua._via())
        response = await self.ua._transact(bye, self.ua._dialog_dest(dialog), dialog=dialog)
        self._end("local")
        return response


class Call(Leg):
    """An outgoing call (``UserAgent.call``)."""

    def __init__(
        self,
        ua: UserAgent,
        invite: Request,
        dest: Address,
        *,
        user: str,
        password: str | None,
        started_at: float,
    ) -> None:
        super().__init__(ua, invite.call_id)
        self.invite = invite
        """The INVITE last sent (the authenticated one after a challenge)."""
        self.dest = dest
        """Where the INVITE went (outbound proxy or the Request-URI's host)."""
        self.user = user
        self.password = password
        self.status: int | None = None
        """Final status, None while pending."""
        self.final: Response | None = None
        """The first final response (408 synthesized on Timer B)."""
        self.provisionals: list[Response] = []
        """Every 1xx received, in order."""
        self.ack: Request | None = None
        """The ACK for the 2xx (§13.2.2.4), resent for every 2xx retransmission."""
        self.ack_dest: Address | None = None
        self.retransmissions = 0
        """2xx retransmissions received (the peer did not get our ACK)."""
        self.started_at = started_at
        """trio time of the first INVITE."""
        self.first_response_at: float | None = None
        """trio time of the first non-100 response (RFC 6076 SRD end)."""
        self.answered_at: float | None = None
        """trio time of the final response."""
        self._auth_rounds = 0
        self._cancelling = False
        self._tx_key: object = None
        self._progress = trio.Event()  # first 1xx or final
        self._final = trio.Event()

    @property
    def setup_delay(self) -> float | None:
        """RFC 6076 SRD: first INVITE to the first non-100 response."""
        if self.first_response_at is None:
            return None
        return self.first_response_at - self.started_at

    async def wait_answered(self) -> Response:
        """Wait for the final response to the INVITE and return it (any status: a failure
        is a response too, 408 synthesized on Timer B). Bound it with ``trio.fail_after``."""
        await self._final.wait()
        assert self.final is not None
        return self.final

    async def cancel(self) -> Response | None:
        """CANCEL the INVITE (§9.1); returns the response to the CANCEL, None if too late.

        The INVITE's own final (487 Request Terminated, or a 2xx that crossed the CANCEL)
        arrives through ``wait_answered``.
        """
        await self._progress.wait()  # §9.1: not before a provisional response
        if self._final.is_set():
            return None
        self._cancelling = True
        cancel = build_cancel(self.invite)
        response = await self.ua._transact(cancel, self.dest, auth=False)
        return response

    async def hangup(self) -> Response | None:
        """BYE when answered, CANCEL when still ringing; returns the BYE/CANCEL response."""
        if not self._final.is_set():
            response = await self.cancel()
            await self._final.wait()
            if self.dialog is None:
                self._end("local")
                return response
        return await super().hangup()

    # -- from the UA core ----------------------------------------------------------------

    def _sent(self, tx_key: object) -> None:
        self._tx_key = tx_key

    def _on_response(self, response: Response, tx_key: object | None, now: float) -> None:
        status = response.status
        current = tx_key is not None and tx_key == self._tx_key
        if (
            status in (401, 407)
            and current
            and not self._final.is_set()
            and self._auth_rounds < MAX_AUTH_ROUNDS
            and self.password is not None
        ):
            retry = authorize(self.invite, response, self.user, self.password)
            if retry is not None and (self._auth_rounds == 0 or is_stale(response)):
                self._auth_rounds += 1
                self.invite = retry
                self._sent(self.ua._start_client(retry, self.dest))
                return
        if status > 100 and self.first_response_at is None:
            self.first_response_at = now
        if status < 200:
            if current:
                self.provisionals.append(response)
                self._progress.set()
            return
        if status < 300:
            self._on_2xx(response, now)
        elif current:
            self._finish(response, now)
            self._end("cancelled" if self._cancelling else "failed")

    def _on_2xx(self, response: Response, now: float) -> None:
        ua = self.ua
        if self.dialog is None:
            dialog = Dialog.from_uac(self.invite, response, local_target=ua.contact_uri)
            self.dialog = dialog
            self.ack = dialog.build_ack(self.invite)
            self.ack_dest = ua._dialog_dest(dialog)
            ua._adopt_leg(self)
            ua._send(self.ack, self.ack_dest)
            self._finish(response, now)
            return
        if response.to.tag != self.dialog.id.remote_tag:
            # A forked 2xx from another UAS: ACK it too (§13.2.2.4 "for each 2xx"); we keep
            # the first dialog only (XXX: §13.2.2.4 suggests a BYE for the extra dialog).
            other = Dialog.from_uac(self.invite, response, local_target=ua.contact_uri)
            ua._send(other.build_ack(self.invite), ua._dialog_dest(other))
            return
        assert self.ack is not None
        assert self.ack_dest is not None
        self.retransmissions += 1
        ua.log.event("2xx_retransmission", call_id=self.call_id, count=self.retransmissions)
        ua._rtx_received += 1
        ua._send(self.ack, self.ack_dest, retransmission=True)

    def _finish(self, response: Response, now: float) -> None:
        if self._final.is_set():
            return
        self.final = response
        self.status = response.status
        self.answered_at = now
        self._progress.set()
        self._final.set()


class Incoming(Leg):
    """An INVITE we received (``UserAgent.wait_incoming`` / ``auto_answer``)."""

    def __init__(
        self, ua: UserAgent, request: Request, transaction: ServerTransaction, source: Address
    ) -> None:
        super().__init__(ua, request.call_id)
        self.request = request
        """The INVITE."""
        self.transaction = transaction
        self.source = source
        """Where it came from."""
        self.to_tag = new_tag()
        """Our tag, used in every response (one dialog per INVITE)."""
        self.status: int | None = None
        """Our final status; 487 after a CANCEL."""
        self.cancelled = False
        """True when the caller CANCELled before we answered."""
        self._final = trio.Event()

    @property
    def answered(self) -> bool:
        return self._final.is_set()

    async def ring(self, status: int = 180) -> None:
        """Send a provisional (180 Ringing, 183 ...) with our tag and Contact."""
        self.ring_nowait(status)
        await trio.lowlevel.checkpoint()

    async def answer(self, status: int = 200, *, sdp: bool = True) -> bool:
        """Answer 2xx (starts the §13.3.1.4 retransmitter); False if already final."""
        ok = self.answer_nowait(status, sdp=sdp)
        await trio.lowlevel.checkpoint()
        return ok

    async def reject(self, status: int = 486) -> bool:
        """Answer a 3xx-6xx final; False if already final."""
        ok = self.reject_nowait(status)
        await trio.lowlevel.checkpoint()
        return ok

    def ring_nowait(self, status: int = 180) -> None:
        if not self._final.is_set():
            self._respond(status, self.ua._contact_headers(), b"")

    def answer_nowait(self, status: int = 200, *, sdp: bool = True) -> bool:
        if self._final.is_set():
            return False
        ua = self.ua
        response = self._respond(status, ua._contact_headers(sdp=sdp), ua.sdp() if sdp else b"")
        self.dialog = Dialog.from_uas(self.request, self.to_tag, local_target=ua.contact_uri)
        ua._adopt_leg(self)
        self.retransmitter = ua._retransmit_2xx(
            self, response, self.transaction.dest, trio.current_time()
        )
        return True

    def reject_nowait(self, status: int = 486) -> bool:
        if self._final.is_set():
            return False
        self._respond(status, [], b"")
        self._end("failed")
        return True

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
        if 100 < status < 300:
            # §12.1.1: "the UAS MUST copy all Record-Route header field values from the
            # request into the response ... and MUST maintain the order of those values."
            rr = [("Record-Route", v) for v in self.request.headers.get_all("record-route")]
            headers = [*rr, *headers]
        response = make_response(
            self.request, status, to_tag=self.to_tag, headers=headers, body=body
        )
        if status >= 200:
            self.status = status
            self._final.set()
        self.ua._respond(self.transaction, response)
        self.ua.flush()
        return response

    def _on_cancel(self) -> None:
        """§9.2: "the UAS SHOULD then respond to the INVITE with a 487"."""
        if not self._final.is_set():
            self.cancelled = True
            self._respond(487, [], b"")
            self._end("remote")

    async def hangup(self) -> Response | None:
        """BYE when answered; before that, reject with 480 (Temporarily Unavailable)."""
        if not self._final.is_set():
            await self.reject(480)
            return None
        return await super().hangup()
