"""The PJSIP registrar (res_pjsip_registrar.c) over realtime ``ps_contacts``.

Decision order, as ``registrar_on_rx_request`` and ``register_aor_core`` take it
(SIP-REFERENCE §4.1, §6.6):

1. To URI not sip/sips -> 416.
2. AOR = the To user *among the identified endpoint's* ``aors``: the endpoint has no aors ->
   403; the user is not one of them -> 404. (So a REGISTER for 101 relayed by a router that
   is identified by IP lands on the router's endpoint: 404 unless its aors list 101.)
3. AOR ``max_contacts`` 0 (the default!) -> 403.
4. Contacts: ``*`` must be alone and with expiration 0, otherwise 400; Path present with
   ``support_path=yes`` but no ``Supported: path`` -> 420.
5. Expiration per contact: ``expires`` param > ``Expires`` header > ``default_expiration``;
   0 removes; otherwise clamped to [minimum_expiration, maximum_expiration]. Asterisk never
   answers 423.
6. Too many contacts: ``remove_existing=yes`` drops the soonest-expiring ones, else 403.
7. 200 OK with one Contact per binding (``expires=`` remaining), a Date header, and an
   Expires header only when the request had one.

Bindings live in the shared ``ps_contacts`` with this node's system name as ``reg_server``,
plus path (when ``support_path``), user agent, last Via address, Call-ID and endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate

from router.sip import (
    Contact,
    Request,
    Response,
    SipError,
    SipUri,
    make_response,
    new_tag,
    parse_uri,
)

from .store import Aor, Endpoint, PbxStore


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """What the registrar did (for the event log)."""

    response: Response
    aor: str | None
    action: str
    """"bound", "query", "removed", or the refusal reason."""


def _expiration(aor: Aor, contact_expires: int | None, header: int | None) -> int:
    """registrar_get_expiration: param > header > default; 0 stays 0; else clamped."""
    if contact_expires is not None:
        value = contact_expires
    elif header is not None:
        value = header
    else:
        value = aor.default_expiration
    if value == 0:
        return 0
    return max(aor.minimum_expiration, min(aor.maximum_expiration, value))


def handle_register(
    store: PbxStore,
    request: Request,
    endpoint: Endpoint,
    source: tuple[str, int],
    *,
    reg_server: str,
    now_epoch: float,
    extra_headers: list[tuple[str, str]],
) -> RegisterOutcome:
    """Run the registrar for an identified and authenticated REGISTER."""
    tag = new_tag()

    def refuse(status: int, why: str, aor: str | None = None) -> RegisterOutcome:
        return RegisterOutcome(
            make_response(request, status, to_tag=tag, headers=extra_headers), aor, why
        )

    try:
        to_uri = request.to.uri
        contacts = request.contacts
        header_expires = request.expires
    except SipError:
        return refuse(400, "malformed")
    if not isinstance(to_uri, SipUri):
        return refuse(416, "to_uri_scheme")
    user = to_uri.user_unescaped or ""
    if not endpoint.aors:
        return refuse(403, "endpoint_has_no_aors")
    if user not in endpoint.aors:
        return refuse(404, "aor_not_on_endpoint")
    aor = store.aor(user)
    if aor is None:
        return refuse(404, "aor_missing", user)
    if aor.max_contacts == 0:
        return refuse(403, "max_contacts_0", user)

    star = [c for c in contacts if c.star]
    if star and (len(contacts) > 1 or header_expires != 0):
        return refuse(400, "bad_star_contact", user)
    try:
        for c in contacts:
            if not c.star and not isinstance(c.uri, SipUri):
                return refuse(400, "bad_contact_uri", user)
            _ = c.expires
        paths = request.headers.values("Path")
    except SipError:
        return refuse(400, "malformed_contact", user)
    supported = {v.strip().lower() for v in request.headers.values("Supported")}
    if paths and aor.support_path and "path" not in supported:
        return refuse(420, "path_not_supported", user)

    existing = store.contacts(user, now_epoch=now_epoch)
    action = "query"
    with store.db.transaction():
        if star:
            for binding in existing:
                store.delete_contact(user, binding.uri)
            existing = []
            action = "removed"
        else:
            updates: dict[str, int] = {}
            for c in contacts:
                updates[str(c.uri)] = _expiration(aor, c.expires, header_expires)
            current = {b.uri for b in existing}
            adding = [u for u, e in updates.items() if e and u not in current]
            removing = {u for u, e in updates.items() if not e}
            kept = [b for b in existing if b.uri not in removing]
            overflow = len(kept) + len(adding) - aor.max_contacts
            if overflow > 0:
                refreshed = {u for u, e in updates.items() if e}
                victims = [b for b in kept if b.uri not in refreshed]
                if not aor.remove_existing or len(victims) < overflow:
                    return refuse(403, "too_many_contacts", user)
                removing |= {b.uri for b in victims[:overflow]}
            for uri in removing:
                store.delete_contact(user, uri)
            path_text = ",".join(paths) if (paths and aor.support_path) else None
            last_via = request.vias[-1]
            for uri, expires in updates.items():
                if not expires:
                    continue
                store.save_contact(
                    user,
                    uri,
                    expiration_time=int(now_epoch) + expires,
                    path=path_text,
                    user_agent=request.headers.get("User-Agent"),
                    reg_server=reg_server,
                    endpoint=endpoint.id,
                    call_id=request.call_id,
                    via=(last_via.received or last_via.host, last_via.sent_by()[1]),
                )
            if updates:
                action = "bound" if any(updates.values()) else "removed"
    headers = list(extra_headers)
    for binding in store.contacts(user, now_epoch=now_epoch):
        remaining = max(0, binding.expiration_time - int(now_epoch))
        contact = Contact(None, parse_uri(binding.uri), (("expires", str(remaining)),))
        headers.append(("Contact", str(contact)))
    headers.append(("Date", formatdate(now_epoch, usegmt=True)))
    if header_expires is not None:
        headers.append(("Expires", str(_expiration(aor, None, header_expires))))
    return RegisterOutcome(make_response(request, 200, to_tag=tag, headers=headers), user, action)
