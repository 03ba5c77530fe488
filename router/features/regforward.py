"""Registration forwarding: tell the PBX nodes where a phone is (SIP-REFERENCE §4.2 option B).

Theory of operation
-------------------
After a phone's REGISTER is saved, every PBX node that may call it (``Dial(PJSIP/101)``) must
hold a contact for AOR 101, and that contact must lead back through the router, which knows
the phone's real (NATed) address. Like Kamailio's ``uac_req_send`` recipe, the router sends
each node a REGISTER of its own, not a copy of the phone's:

* From/To ``sip:<user>@<domain>``, R-URI ``sip:<node>``, no Authorization: the node knows the
  router by IP as an auth-less endpoint (SIP-REFERENCE §4.1, §4.3);
* Contact = the phone's contact(s), each with ``;expires=`` the time left on its binding;
* ``Path: <sip:ROUTER:PORT;lr>`` and ``Supported: path`` (RFC 3327 §4: "the registrar ... stores
  the Path header field values with the contact"), so with ``support_path=yes`` the node's
  INVITE to that contact carries ``Route: <sip:ROUTER;lr>`` and reaches the router, which
  looks the contact up (``lookup_and_relay``);
* a stable Call-ID per (user, node) for this router run and a CSeq that increases by one per
  REGISTER (RFC 3261 §10.2: "the same Call-ID ... for all registrations" of a UA to a registrar,
  "CSeq ... incremented by one for each REGISTER request with the same Call-ID").

Each (user, node) pair is a small state machine: IDLE, or PENDING while one REGISTER is in
flight. RFC 3261 §10.2: "A UA MUST NOT send a new registration ... until it has received a final
response from the registrar for the previous one or the previous REGISTER request has timed
out", so a change during PENDING only marks the pair dirty and is sent after the answer. The
state sent is always the whole current binding set of the user: contacts the node holds that
are no longer bound are sent with ``expires=0``; when nothing is left, ``Contact: *`` and
``Expires: 0`` (un-registration, §10.2.2).

A failed forward (timeout, transport error, non-2xx) never fails the phone's registration: it is
counted and retried after ``retry`` seconds. A 2xx tells us what the node granted (its Contact
``expires``, it may clamp, SIP-REFERENCE §6.6); the pair is refreshed ``expires_margin`` seconds
before the node's copy would expire while the phone is still bound.

Mode ``all`` sends to every node of the set; ``hash`` to one node chosen by the Kamailio
dispatcher hash of the user among the usable nodes (XXX: when a node goes down the user moves
to another node and the old node keeps its copy until it expires); ``none`` disables forwarding.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from router.features.dispatcher.hashing import ds_get_hash
from router.realtime.records import Binding
from router.sip import Headers, Request, Response, SipError, new_branch, new_tag, parse_contact_list

Address = tuple[str, int]

PERMANENT_EXPIRES = 3600
"""Expires sent for a permanent binding (Binding.expires 0)."""


class ForwardMode(enum.Enum):
    ALL = "all"
    HASH = "hash"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """Settings of the forwarder."""

    router_host: str
    """Host put in Via and Path."""
    router_port: int = 5060
    mode: ForwardMode = ForwardMode.ALL
    domain: str | None = None
    """From/To domain; None = the node's host."""
    retry: float = 30.0
    """Seconds before a failed forward is tried again."""
    expires_margin: float = 30.0
    """Refresh a node's copy this long before it expires."""
    path: bool = True
    """Send Path + Supported: path (without it the node calls the phone directly)."""
    instance: str = ""
    """Per-run token mixed into Call-IDs (several routers must not share Call-IDs)."""
    user_agent: str = "siplab-router"


@dataclass(frozen=True, slots=True)
class Node:
    """One PBX node (a dispatcher destination)."""

    uri: str
    dest: Address
    transport: str = "udp"
    usable: bool = True


class PairState(enum.Enum):
    IDLE = "idle"
    PENDING = "pending"


@dataclass(slots=True)
class _Pair:
    user: str
    node: Node
    call_id: str
    cseq: int = 0
    state: PairState = PairState.IDLE
    dirty: bool = False
    """The desired contact set changed since the last REGISTER was sent."""
    wanted: dict[str, int] = field(default_factory=dict)
    """Desired contacts -> absolute expiry (epoch)."""
    held: dict[str, float] = field(default_factory=dict)
    """Contacts the node confirmed -> absolute expiry it granted."""
    sent: dict[str, int] = field(default_factory=dict)
    """Contacts (and requested expiries in seconds) of the REGISTER in flight."""
    retry_at: float | None = None
    failures: int = 0
    confirmed_at: float = 0.0
    """When the node last answered 2xx."""


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """A REGISTER to start as a client transaction."""

    key: tuple[str, str]
    """(user, node uri): give it back to ``on_response``/``on_failure``."""
    request: Request
    dest: Address
    transport: str


@dataclass(frozen=True, slots=True)
class ForwardStatistics:
    pairs: int
    pending: int
    sent: int
    ok: int
    failed: int
    retried: int
    refreshed: int


class RegistrationForwarder:
    """(user, node) registration pairs; see the module docstring."""

    def __init__(self, config: ForwardConfig) -> None:
        self.config = config
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._out: list[ForwardRequest] = []
        self._counts = {"sent": 0, "ok": 0, "failed": 0, "retried": 0, "refreshed": 0}

    # -- inputs ---------------------------------------------------------------------------

    def targets(self, user: str, nodes: Sequence[Node]) -> list[Node]:
        """The nodes that must hold ``user``'s contacts."""
        if self.config.mode is ForwardMode.NONE or not nodes:
            return []
        if self.config.mode is ForwardMode.ALL:
            return list(nodes)
        usable = [n for n in nodes if n.usable] or list(nodes)
        return [usable[ds_get_hash(user) % len(usable)]]

    def update(
        self, user: str, bindings: Iterable[Binding], nodes: Sequence[Node], now: float
    ) -> None:
        """The user's binding set is now ``bindings``: bring every target node in line."""
        if self.config.mode is ForwardMode.NONE:
            return
        wanted = {b.contact: b.expires for b in bindings if b.expires == 0 or b.expires > now}
        targets = {n.uri: n for n in self.targets(user, nodes)}
        for node in targets.values():
            pair = self._pair(user, node)
            pair.node = node
            pair.wanted = dict(wanted)
            pair.dirty = True
            pair.retry_at = None
            self._maybe_send(pair, now)
        # Nodes that no longer should hold this user (hash moved, or the set shrank).
        for (u, uri), pair in list(self._pairs.items()):
            if u == user and uri not in targets and (pair.wanted or pair.held):
                pair.wanted = {}
                pair.dirty = True
                self._maybe_send(pair, now)

    def on_response(self, key: tuple[str, str], response: Response, now: float) -> None:
        """Final response of a forwarded REGISTER."""
        pair = self._pairs.get(key)
        if pair is None or response.status < 200:
            return
        pair.state = PairState.IDLE
        if not response.is_success:
            self._failed(pair, now)
            return
        self._counts["ok"] += 1
        pair.failures = 0
        granted = _granted(response, pair.sent, now)
        for contact, seconds in pair.sent.items():
            if seconds == 0:
                pair.held.pop(contact, None)
            else:
                pair.held[contact] = granted.get(contact, now + seconds)
        pair.sent = {}
        pair.confirmed_at = now
        self._after(pair, now)

    def on_failure(self, key: tuple[str, str], now: float) -> None:
        """The forwarded REGISTER timed out or could not be sent."""
        pair = self._pairs.get(key)
        if pair is None:
            return
        pair.state = PairState.IDLE
        self._failed(pair, now)

    def _failed(self, pair: _Pair, now: float) -> None:
        self._counts["failed"] += 1
        pair.failures += 1
        pair.sent = {}
        pair.dirty = True
        pair.retry_at = now + self.config.retry

    def _after(self, pair: _Pair, now: float) -> None:
        # Pairs are kept even when empty: the Call-ID/CSeq sequence must go on if the user
        # registers again (RFC 3261 §10.2 "incremented by one").
        if pair.dirty:
            self._maybe_send(pair, now)

    # -- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [d for p in self._pairs.values() if (d := self._deadline(p)) is not None]
        return min(deadlines) if deadlines else None

    def _deadline(self, pair: _Pair) -> float | None:
        if pair.state is PairState.PENDING:
            return None
        if pair.retry_at is not None:
            return pair.retry_at
        ends = [
            end
            for contact, end in pair.held.items()
            if contact in pair.wanted and (pair.wanted[contact] == 0 or pair.wanted[contact] > end)
        ]
        if not ends:
            return None
        end = min(ends)
        # Never sooner than half-way through what the node granted: a node that grants less
        # than the margin must not make us loop.
        return max(end - self.config.expires_margin, (pair.confirmed_at + end) / 2)

    def handle_timers(self, now: float) -> None:
        """Retry failed pairs and refresh the node copies that are about to expire."""
        for pair in list(self._pairs.values()):
            deadline = self._deadline(pair)
            if deadline is None or deadline > now:
                continue
            if pair.retry_at is not None:
                self._counts["retried"] += 1
            else:
                self._counts["refreshed"] += 1
            pair.retry_at = None
            pair.dirty = True
            self._maybe_send(pair, now)

    # -- output ---------------------------------------------------------------------------

    def drain_requests(self) -> list[ForwardRequest]:
        out, self._out = self._out, []
        return out

    def _pair(self, user: str, node: Node) -> _Pair:
        key = (user, node.uri)
        pair = self._pairs.get(key)
        if pair is None:
            token = hashlib.sha1(
                f"{user}|{node.uri}|{self.config.instance}".encode(), usedforsecurity=False
            ).hexdigest()[:20]
            pair = _Pair(user, node, f"fwd-{token}@{self.config.router_host}")
            self._pairs[key] = pair
        return pair

    def _maybe_send(self, pair: _Pair, now: float) -> None:
        """Send the pair's desired state unless a REGISTER is in flight or a retry waits."""
        if pair.state is PairState.PENDING:
            return  # stays dirty; sent when the answer (or the timeout) comes
        if pair.retry_at is not None and pair.retry_at > now:
            return
        pair.retry_at = None
        contacts: dict[str, int] = {}
        for contact, end in pair.wanted.items():
            # Binding.expires 0 is a permanent binding: the node gets PERMANENT_EXPIRES.
            seconds = PERMANENT_EXPIRES if end == 0 else max(0, end - int(now))
            if seconds > 0:
                contacts[contact] = seconds
        for contact in pair.held:
            contacts.setdefault(contact, 0)
        pair.dirty = False
        if not contacts:
            return  # nothing bound here and nothing held by the node
        pair.cseq += 1
        pair.sent = contacts
        pair.state = PairState.PENDING
        self._counts["sent"] += 1
        key = (pair.user, pair.node.uri)
        request = self._build(pair, contacts)
        self._out.append(ForwardRequest(key, request, pair.node.dest, pair.node.transport))

    def _build(self, pair: _Pair, contacts: dict[str, int]) -> Request:
        cfg = self.config
        host, port = pair.node.dest
        node_host = f"[{host}]" if ":" in host else host
        domain = cfg.domain or node_host
        aor = f"sip:{pair.user}@{domain}"
        me = f"{cfg.router_host}:{cfg.router_port}"
        headers = Headers(
            [
                ("Via", f"SIP/2.0/{pair.node.transport.upper()} {me};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<{aor}>;tag={new_tag()}"),
                ("To", f"<{aor}>"),
                ("Call-ID", pair.call_id),
                ("CSeq", f"{pair.cseq} REGISTER"),
            ]
        )
        if all(s == 0 for s in contacts.values()) and set(contacts) >= set(pair.held):
            # RFC 3261 §10.2.2: remove every binding with "*" and Expires: 0.
            headers.add("Contact", "*")
            headers.add("Expires", "0")
        else:
            for contact, seconds in contacts.items():
                headers.add("Contact", f"<{contact}>;expires={seconds}")
            headers.add("Expires", str(max(contacts.values())))
        if cfg.path:
            headers.add("Path", f"<sip:{me};lr>")
            headers.add("Supported", "path")
        headers.add("User-Agent", cfg.user_agent)
        headers.add("Content-Length", "0")
        return Request("REGISTER", f"sip:{node_host}:{port}", headers)

    # -- introspection --------------------------------------------------------------------

    def held(self, user: str, node_uri: str) -> dict[str, float]:
        """Contacts ``node_uri`` confirmed for ``user`` -> expiry it granted."""
        pair = self._pairs.get((user, node_uri))
        return dict(pair.held) if pair is not None else {}

    def statistics(self) -> ForwardStatistics:
        c = self._counts
        return ForwardStatistics(
            pairs=len(self._pairs),
            pending=sum(p.state is PairState.PENDING for p in self._pairs.values()),
            sent=c["sent"],
            ok=c["ok"],
            failed=c["failed"],
            retried=c["retried"],
            refreshed=c["refreshed"],
        )


def _granted(response: Response, sent: dict[str, int], now: float) -> dict[str, float]:
    """Contact -> absolute expiry the registrar granted (its 200 lists every binding)."""
    out: dict[str, float] = {}
    try:
        header = response.expires
    except SipError:
        header = None
    for value in response.headers.get_all("contact"):
        try:
            listed = parse_contact_list(value)
        except SipError:
            continue
        for c in listed:
            uri = str(c.uri)
            if uri not in sent:
                continue
            try:
                seconds = c.expires
            except SipError:
                seconds = None
            if seconds is None:
                seconds = header
            if seconds is not None:
                out[uri] = now + seconds
    return out


__all__ = [
    "PERMANENT_EXPIRES",
    "ForwardConfig",
    "ForwardMode",
    "ForwardRequest",
    "ForwardStatistics",
    "Node",
    "RegistrationForwarder",
]
