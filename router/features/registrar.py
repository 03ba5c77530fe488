"""The registrar: Kamailio ``save("location")`` / ``lookup("location")`` over an in-memory usrloc.

Theory of operation (SIP-REFERENCE §2.2-2.4, RFC 3261 §10.3)
-------------------------------------------------------------
``Registrar.save`` takes one authenticated REGISTER and returns a :class:`SaveResult`: the
response to send and the binding changes to make durable. It validates the whole request
before changing anything, so a REGISTER either applies completely or not at all (Kamailio
processes contacts one by one and may leave half a request applied; RFC 3261 §10.3 step 6-8
read as one unit, which we chose).

Rules, in the order they are applied:

1. AOR = To URI user (RFC 3261 §10.3 step 5, Kamailio ``use_domain=0``): non-SIP To -> 416,
   no user -> 400.
2. No Contact header: a query; 200 with the current bindings (§10.3 "If ... no Contact").
3. ``Contact: *`` must be alone (else 400 "* used in contact and more than 1 contact") and with
   ``Expires: 0`` (else 400 "* used in contact and expires is not zero"); it removes every
   binding of the AOR (RFC 3261 §10.3 step 6).
4. Per contact, expires = Contact ``expires`` param > ``Expires`` header > ``default_expires``
   (an unparsable value falls back to the next source, as Kamailio does); 0 removes; below
   ``min_expires`` it is raised (``min_expires_mode`` 0) or the request fails with 423 and
   ``Min-Expires`` (mode 1; RFC 3261 §10.3 step 7: "the registrar MAY reject ... with a 423");
   above ``max_expires`` (if non-zero) it is capped. Bad ``q`` -> 400 "Invalid q param in contact".
5. Matching is by contact URI (usrloc ``matching_mode`` 0). Same Call-ID and a lower CSeq -> 400
   "Invalid CSeq number" (§10.3 step 7: "If ... the CSeq ... is less than or equal to the
   current value ... the request fails"); an equal CSeq within ``cseq_delay`` s of the last
   change is a retransmission (200, nothing changes), later it is a 400 (Kamailio usrloc).
6. ``max_contacts``: valid bindings + new non-zero contacts - removed ones above the limit ->
   503 + ``P-Registrar-Error: Too many registered contacts``; a limit of 0 means the AOR may not
   register at all (Asterisk ``ps_aors.max_contacts`` 0 -> 403, SIP-REFERENCE §4.1).
7. 200 OK lists every current binding as ``<uri>;expires=<remaining>[;q=<q>]`` in one Contact
   header (Kamailio ``build_contact``), plus ``Date`` (§10.3 step 8: "The response SHOULD include
   a Date header field"), plus the Path when the request said ``Supported: path`` (RFC 3327 §5.3).

Every non-200 carries ``P-Registrar-Error`` (Kamailio ``reg_reply_helper``).
``lookup`` returns the valid bindings of an AOR, highest q first, newest first among equals.
Times are epoch seconds (``location.expires`` is usrloc ``expires_type=1``); ``now`` comes in.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate

from router.realtime.records import Binding
from router.sip import Contact, Request, SipError, SipParseError, SipUri


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """Kamailio registrar/usrloc parameters (SIP-REFERENCE §2.1, §2.5)."""

    default_expires: int = 3600
    min_expires: int = 60
    min_expires_mode: int = 0
    """0: raise a low expires to ``min_expires``; 1: answer 423."""
    max_expires: int = 3600
    """0 = no cap."""
    cseq_delay: float = 20.0
    use_path: bool = True
    """Store the Path of the REGISTER and echo it when the UA supports path (path_mode 1)."""


class SaveAction(enum.Enum):
    """Kamailio ``save()`` return values, by name."""

    INSERTED = 1
    UPDATED = 2
    DELETED = 3
    QUERY = 4
    RETRANSMISSION = 5
    REFUSED = -1


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What ``save`` decided; the caller sends ``status``/``headers`` and persists the changes."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    aor: str | None
    action: SaveAction
    upserts: tuple[Binding, ...] = ()
    """Bindings inserted or updated (the location rows to write)."""
    deletes: tuple[Binding, ...] = ()
    """Bindings removed (the location rows to delete, by ruid)."""
    bindings: tuple[Binding, ...] = ()
    """Every valid binding of the AOR after the request."""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def changed(self) -> bool:
        return bool(self.upserts or self.deletes)


def _refuse(
    status: int,
    reason: str,
    error: str,
    aor: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> SaveResult:
    headers = (("P-Registrar-Error", error), *extra)
    return SaveResult(status, reason, headers, aor, SaveAction.REFUSED)


def aor_of(request: Request) -> str:
    """The address-of-record key: the To URI user (RFC 3261 §10.3 step 5).

    Raises:
        SipError: 416 for a non-SIP To URI, 400 without a user part.
    """
    uri = request.to.uri
    if not isinstance(uri, SipUri):
        raise SipError("To URI is not sip/sips", status=416)
    user = uri.user_unescaped
    if not user:
        raise SipError("To URI has no user")
    return user


def new_ruid() -> str:
    """A unique record id (usrloc ``ruid``)."""
    return "uloc-" + secrets.token_hex(8)


class Registrar:
    """In-memory usrloc (the cache) plus the ``save``/``lookup`` rules."""

    def __init__(self, config: RegistrarConfig) -> None:
        self.config = config
        self._aors: dict[str, list[Binding]] = {}
        self._by_contact: dict[str, Binding] = {}
        """Contact URI -> binding (for requests that target a contact, not an AOR)."""

    # -- cache ----------------------------------------------------------------------------

    def load(self, bindings: Iterable[Binding], now: float) -> list[Binding]:
        """Fill the cache from the DB at start-up; returns the expired rows it skipped."""
        expired: list[Binding] = []
        for b in bindings:
            if b.expires and b.expires <= now:
                expired.append(b)
                continue
            self._put(b)
        return expired

    def _put(self, binding: Binding) -> None:
        rows = self._aors.setdefault(binding.username, [])
        for i, old in enumerate(rows):
            if old.ruid == binding.ruid:
                rows[i] = binding
                break
        else:
            rows.append(binding)
        self._by_contact[binding.contact] = binding

    def _drop(self, binding: Binding) -> None:
        rows = self._aors.get(binding.username, [])
        rows[:] = [b for b in rows if b.ruid != binding.ruid]
        if not rows:
            self._aors.pop(binding.username, None)
        if (found := self._by_contact.get(binding.contact)) and found.ruid == binding.ruid:
            del self._by_contact[binding.contact]

    def count(self) -> int:
        return sum(len(v) for v in self._aors.values())

    def users(self) -> list[str]:
        return list(self._aors)

    # -- lookup ---------------------------------------------------------------------------

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Valid bindings, highest q first (no q counts as 1.0 here), newest first (§2.3)."""
        rows = [b for b in self._aors.get(aor, ()) if b.expires == 0 or b.expires > now]
        return sorted(rows, key=lambda b: (-(b.q if b.q >= 0 else 1.0), -b.last_modified))

    def lookup_contact(self, contact: str, now: float) -> Binding | None:
        """The valid binding whose contact URI is exactly ``contact``."""
        b = self._by_contact.get(contact)
        return b if b is not None and (b.expires == 0 or b.expires > now) else None

    def _take_expired(self, aor: str, now: float) -> list[Binding]:
        gone = [b for b in self._aors.get(aor, ()) if 0 < b.expires <= now]
        for b in gone:
            self._drop(b)
        return gone

    def purge_expired(self, now: float) -> list[Binding]:
        """Remove and return bindings whose expiry has passed (usrloc timer)."""
        gone = [b for rows in self._aors.values() for b in rows if 0 < b.expires <= now]
        for b in gone:
            self._drop(b)
        return gone

    def next_expiry(self) -> float | None:
        ends = [b.expires for rows in self._aors.values() for b in rows if b.expires > 0]
        return float(min(ends)) if ends else None

    # -- save -----------------------------------------------------------------------------

    def save(
        self,
        request: Request,
        *,
        now: float,
        received: str | None = None,
        socket: str | None = None,
        max_contacts: int | None = None,
    ) -> SaveResult:
        """Kamailio ``save("location")`` for one REGISTER (rules in the module docstring).

        Args:
            request: the REGISTER (already authenticated).
            now: epoch seconds.
            received: source address URI, e.g. ``sip:192.0.2.7:5062`` (stored for NAT).
            socket: the local socket it arrived on, e.g. ``udp:127.0.0.10:5060``.
            max_contacts: limit for this AOR; None = no limit, 0 = registration forbidden.
        """
        try:
            aor = aor_of(request)
            call_id = request.call_id
            cseq = request.cseq.seq
            contacts = request.contacts
        except SipError as exc:
            return _refuse(
                exc.status,
                "Bad Request" if exc.status == 400 else "Unsupported URI Scheme",
                str(exc)[:80],
            )
        current = self.lookup(aor, now)
        if not contacts:
            return self._ok(request, aor, SaveAction.QUERY, current, now)
        if max_contacts == 0:
            return _refuse(403, "Forbidden", "No configured max_contacts", aor)
        header_expires = _maybe_header_expires(request)
        if any(c.star for c in contacts):
            if len(contacts) > 1:
                return _refuse(400, "Bad Request", "* used in contact and more than 1 contact", aor)
            if header_expires != 0:
                return _refuse(400, "Bad Request", "* used in contact and expires is not zero", aor)
            for b in current:
                self._drop(b)
            gone = current + self._take_expired(aor, now)
            return self._ok(request, aor, SaveAction.DELETED, [], now, deletes=gone)

        plan: list[tuple[Contact, int, float]] = []
        for contact in contacts:
            expires = self._expires_for(contact, header_expires)
            if 0 < expires < self.config.min_expires:
                if self.config.min_expires_mode == 1:
                    return _refuse(
                        423, "Interval Too Brief", "Interval too brief", aor,
                        (("Min-Expires", str(self.config.min_expires)),),
                    )  # fmt: skip
                expires = self.config.min_expires
            if self.config.max_expires and expires > self.config.max_expires:
                expires = self.config.max_expires
            try:
                q = contact.q
            except SipParseError:
                return _refuse(400, "Bad Request", "Invalid q param in contact", aor)
            plan.append((contact, expires, -1.0 if q is None else q))

        existing = {b.contact: b for b in current}
        retransmitted: set[str] = set()
        for contact, _, _ in plan:
            old = existing.get(str(contact.uri))
            if old is None or old.callid != call_id:
                continue
            if cseq < old.cseq:
                return _refuse(400, "Bad Request", "Invalid CSeq number", aor)
            if cseq == old.cseq:
                if now - old.last_modified <= self.config.cseq_delay:
                    retransmitted.add(old.contact)
                else:
                    return _refuse(400, "Bad Request", "Invalid CSeq number", aor)

        if max_contacts is not None:
            total = len(current)
            for contact, expires, _ in plan:
                known = str(contact.uri) in existing
                if expires and not known:
                    total += 1
                elif not expires and known:
                    total -= 1
            if total > max_contacts:
                return _refuse(503, "Service Unavailable", "Too many registered contacts", aor)

        path = (",".join(request.headers.values("path")) or None) if self.config.use_path else None
        user_agent = (request.headers.get("user-agent") or "")[:255]
        upserts: list[Binding] = []
        # Rows of this AOR that expired but were not purged yet go now (a re-registering
        # contact gets a fresh ruid rather than two rows with one contact).
        deletes: list[Binding] = self._take_expired(aor, now)
        inserted = False
        for contact, expires, q in plan:
            uri = str(contact.uri)
            old = existing.get(uri)
            if uri in retransmitted:
                continue
            if expires == 0:
                if old is not None:
                    self._drop(old)
                    deletes.append(old)
                    del existing[uri]
                continue
            binding = Binding(
                ruid=old.ruid if old is not None else new_ruid(),
                username=aor,
                domain=None,
                contact=uri,
                expires=int(now) + expires,
                q=q,
                callid=call_id,
                cseq=cseq,
                last_modified=int(now),
                received=received,
                path=path,
                user_agent=user_agent,
                socket=socket,
            )
            inserted = inserted or old is None
            self._put(binding)
            existing[uri] = binding
            upserts.append(binding)
        if upserts:
            action = SaveAction.INSERTED if inserted else SaveAction.UPDATED
        elif deletes:
            action = SaveAction.DELETED
        else:
            action = SaveAction.RETRANSMISSION if retransmitted else SaveAction.UPDATED
        return self._ok(
            request, aor, action, self.lookup(aor, now), now, upserts=upserts, deletes=deletes
        )

    def _expires_for(self, contact: Contact, header_expires: int | None) -> int:
        try:
            param = contact.expires
        except SipParseError:
            param = None  # Kamailio: an unparsable expires falls back to the default
        if param is not None:
            return param
        if header_expires is not None:
            return header_expires
        return self.config.default_expires

    def _ok(
        self,
        request: Request,
        aor: str,
        action: SaveAction,
        bindings: list[Binding],
        now: float,
        *,
        upserts: Iterable[Binding] = (),
        deletes: Iterable[Binding] = (),
    ) -> SaveResult:
        headers: list[tuple[str, str]] = []
        if bindings:
            headers.append(("Contact", ", ".join(contact_value(b, now) for b in bindings)))
        if self.config.use_path and _supports_path(request):
            headers.extend(("Path", v) for v in request.headers.get_all("path"))
        headers.append(("Date", formatdate(now, usegmt=True)))
        return SaveResult(
            200, "OK", tuple(headers), aor, action, tuple(upserts), tuple(deletes), tuple(bindings)
        )


def remaining(binding: Binding, now: float) -> int:
    """Seconds left on a binding, in whole seconds of the clock it was stored with (Kamailio
    keeps an integer ``act_time``), 0 for a permanent one."""
    return max(0, binding.expires - int(now)) if binding.expires else 0


def contact_value(binding: Binding, now: float) -> str:
    """``<uri>;expires=N[;q=Q]`` as Kamailio's ``build_contact`` writes it."""
    text = f"<{binding.contact}>;expires={remaining(binding, now)}"
    if binding.q >= 0:
        text += f";q={binding.q:.3g}"
    return text


def _maybe_header_expires(request: Request) -> int | None:
    try:
        return request.expires
    except SipError:
        return None


def _supports_path(request: Request) -> bool:
    return any(v.strip().lower() == "path" for v in request.headers.values("supported"))


__all__ = [
    "Registrar",
    "RegistrarConfig",
    "SaveAction",
    "SaveResult",
    "aor_of",
    "contact_value",
    "new_ruid",
    "remaining",
]
