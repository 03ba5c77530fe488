"""Pure request builders of the trio UA: out-of-dialog requests, digest retries, SDP.

No I/O and no state: the UA core (`ua.py`) and the legs (`calls.py`) call these.
"""

from __future__ import annotations

from collections.abc import Iterable

from router.sip import (
    CSeq,
    Headers,
    Request,
    Response,
    Via,
    answer_challenge,
    maybe_select_challenge,
    new_branch,
    new_tag,
)

MAX_AUTH_ROUNDS = 2
"""Answer at most this many challenges per request (a second one only when ``stale=true``)."""
USER_AGENT = "siplab-ua"


def out_of_dialog_request(
    method: str,
    ruri: str,
    *,
    via: Via,
    domain: str,
    user: str,
    to_user: str,
    call_id: str,
    cseq: int,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Request:
    """A request outside any dialog (§8.1.1): From ``sip:user@domain`` with a fresh tag, To
    ``sip:to_user@domain`` without one, Max-Forwards 70 ("SHOULD be 70", §8.1.1.6)."""
    fields = [
        ("Via", str(via)),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{user}@{domain}>;tag={new_tag()}"),
        ("To", f"<sip:{to_user}@{domain}>"),
        ("Call-ID", call_id),
        ("CSeq", str(CSeq(cseq, method))),
        ("User-Agent", USER_AGENT),
        *extra,
    ]
    return Request(method, ruri, Headers(fields), body)


def authorize(request: Request, challenge: Response, user: str, password: str) -> Request | None:
    """The request again with credentials for a 401/407 (§22.2), CSeq + 1, new branch.

    "When a UAC resubmits a request with its credentials after receiving a 401 (Unauthorized)
    or 407 (Proxy Authentication Required) response, it MUST increment the CSeq header field
    value as it would normally when sending an updated request" (§22.2); being a new request
    it is a new transaction, hence a new branch (§8.1.1.7).

    Returns:
        None when the response carries no challenge we can answer.
    """
    header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
    found = maybe_select_challenge(challenge.headers.get_all(header))
    if found is None:
        return None
    creds = answer_challenge(found, request.method, request.uri, user, password, body=request.body)
    headers = request.headers.copy()
    answer = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
    headers.remove(answer)
    headers.add(answer, str(creds))
    headers.pop_first_value("Via")
    headers.prepend("Via", str(request.top_via.with_param("branch", new_branch())))
    headers.set("CSeq", str(CSeq(request.cseq.seq + 1, request.method)))
    return Request(request.method, request.uri, headers, request.body)


def is_stale(response: Response) -> bool:
    """RFC 7616 §3.3 ``stale=true``: our credentials were right, only the nonce was old."""
    name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    challenge = maybe_select_challenge(response.headers.get_all(name))
    return challenge is not None and challenge.stale


def sdp_body(host: str, port: int) -> bytes:
    """A minimal audio offer/answer (RFC 4566) on ``host``; no media is ever sent."""
    return (
        f"v=0\r\no=siplab 1 1 IN IP4 {host}\r\ns=siplab\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8\r\na=sendrecv\r\n"
    ).encode()
