"""Message builders for the transaction tests (typed values, no string templates)."""

from __future__ import annotations

from router.sip.headers import CSeq, NameAddr, Via
from router.sip.message import Headers, Request, Response, make_response, new_branch
from router.sip.transaction.events import Event, Send
from router.sip.uri import SipUri

ALICE = ("192.0.2.1", 5060)
BOB = ("192.0.2.2", 5060)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = None,
    sent_by: tuple[str, int] = ALICE,
    cseq: int = 1,
    call_id: str = "call-1@192.0.2.1",
    from_tag: str = "ft1",
    to_tag: str | None = None,
    routes: tuple[str, ...] = (),
    rport: bool = False,
) -> Request:
    """A minimal valid request from Alice to Bob."""
    params: list[tuple[str, str | None]] = [("branch", branch or new_branch())]
    if rport:
        params.append(("rport", None))
    via = Via("UDP", sent_by[0], sent_by[1], tuple(params))
    to = NameAddr(None, SipUri(user="bob", host="example.com"))
    if to_tag is not None:
        to = to.with_tag(to_tag)
    fields = [("Via", str(via)), ("Max-Forwards", "70")]
    fields.extend(("Route", r) for r in routes)
    fields += [
        (
            "From",
            str(NameAddr("Alice", SipUri(user="alice", host="example.com")).with_tag(from_tag)),
        ),
        ("To", str(to)),
        ("Call-ID", call_id),
        ("CSeq", str(CSeq(cseq, method))),
        ("Contact", str(NameAddr(None, SipUri(user="alice", host=sent_by[0], port=sent_by[1])))),
    ]
    return Request(method, "sip:bob@example.com", Headers(fields))


def ack_for(invite: Request, *, branch: str | None = None, to_tag: str = "tt1") -> Request:
    """An ACK for ``invite``: same branch (non-2xx ACK) unless ``branch`` is given (2xx ACK)."""
    via = invite.top_via
    return request(
        "ACK",
        branch=branch or via.branch,
        sent_by=via.sent_by(),
        cseq=invite.cseq.seq,
        call_id=invite.call_id,
        from_tag=invite.from_.tag or "",
        to_tag=to_tag,
    )


BOB_CONTACT = str(NameAddr(None, SipUri(user="bob", host=BOB[0], port=BOB[1])))


def response(req: Request, status: int, *, to_tag: str | None = "tt1") -> Response:
    """``make_response`` with a To tag for everything but 100, and Bob's Contact on 2xx."""
    extra = [("Contact", BOB_CONTACT)] if 200 <= status < 300 else []
    return make_response(req, status, to_tag=None if status == 100 else to_tag, headers=extra)


def sends(events: list[Event]) -> list[Send]:
    """The Send events of ``events``, in order."""
    return [e for e in events if isinstance(e, Send)]


def others(events: list[Event]) -> list[Event]:
    """Every event that is not a Send (what the TU sees)."""
    return [e for e in events if not isinstance(e, Send)]
