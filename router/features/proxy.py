"""Stateful proxy core: RFC 3261 §16 as a transaction user.

A *response context* (§16.2: "the proxy ... creates a response context") ties one server
transaction to the client transactions (branches) it forked. This module owns those contexts and
the rules that do not depend on routing policy:

* forwarding a request to a target (§16.6): copy, Request-URI, Max-Forwards, Record-Route,
  Route, Via with a branch that carries a loop-detection hash (§16.6 step 8, §16.3 step 4),
  and a client transaction;
* responses (§16.7): 100 absorbed, other provisionals forwarded at once, any 2xx forwarded at once
  (and other branches cancelled for INVITE), non-2xx finals collected until every branch has
  finished, then the best one forwarded (6xx first, else the lowest class; a 503 sent upstream as
  500, as both RFC 3261 §16.7 step 6 and Kamailio's ``remap_503_500`` do; challenges of 401/407
  branches aggregated, step 7);
* failure timers like Kamailio's tm: ``fr_timer`` until the first reply of a branch, then
  ``fr_inv_timer`` for INVITE; a branch that hits either is treated as a local 408, cancelled if it
  had a provisional (§9.1: "a CANCEL ... SHOULD NOT be sent" before one), and handed to the
  failure handler, which may start new branches (dispatcher failover, ``ds_next_dst``);
* CANCEL (§16.10): answered 200 by its own transaction, pending branches cancelled once they
  have had a provisional, the final (usually 487) forwarded as above.

The core is synchronous and takes ``now``. What to forward where is decided by the routing policy
(``router/policy.py``) through :class:`router.features.context.RequestContext`.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from router.sip import (
    NameAddr,
    Request,
    Response,
    SipUri,
    Via,
    make_response,
    new_branch,
    parse_uri,
)
from router.sip.transaction import ClientTransaction, ServerTransaction
from router.sip.transaction.layer import TransactionLayer

Address = tuple[str, int]

MAGIC = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Timers and switches of the proxy (seconds)."""

    host: str
    """Address put in Via and Record-Route."""
    port: int = 5060
    fr_timer: float = 30.0
    """Wait for the first reply on a branch (Kamailio tm ``fr_timer``)."""
    fr_inv_timer: float = 120.0
    """Wait for a final reply of an INVITE branch after a provisional (``fr_inv_timer``)."""
    remap_503_500: bool = True
    record_route: bool = True
    default_max_forwards: int = 70


@dataclass(frozen=True, slots=True)
class Target:
    """Where one branch goes."""

    dest: Address
    """Next-hop address (Kamailio ``$du`` or the resolved R-URI/Route)."""
    uri: str | None = None
    """New Request-URI, or None to keep it (dispatcher keeps the R-URI, like ``ds_select_dst``)."""
    routes: tuple[str, ...] = ()
    """Route header values to put on top (e.g. a Path from a location lookup)."""
    transport: str = "udp"
    label: str = ""
    """What the policy calls this target (the dispatcher destination URI)."""


@dataclass(slots=True)
class Branch:
    """One client transaction of a response context."""

    target: Target
    request: Request
    tx: ClientTransaction | None = None
    """The client transaction (None once it is gone)."""
    status: int = 0
    """Highest status seen: 0 none, 1xx provisional, final code when done."""
    response: Response | None = None
    timed_out: bool = False
    cancel_wanted: bool = False
    cancelled: bool = False
    deadline: float | None = None
    cancel_reasons: tuple[str, ...] = ()
    """Reason values for this branch's CANCEL (RFC 3326)."""

    @property
    def done(self) -> bool:
        return self.status >= 200 or self.timed_out

    @property
    def replied(self) -> bool:
        return self.status > 0


FailureHandler = Callable[["ResponseContext", "Branch"], None]
"""Called when every branch finished without a 2xx (Kamailio ``failure_route``)."""


@dataclass(slots=True, eq=False)
class ResponseContext:
    """State of one proxied server transaction (§16.2)."""

    server_tx: ServerTransaction
    request: Request
    """The request as received (after Route pre-processing and Record-Route)."""
    source: Address
    created: float
    branches: list[Branch] = field(default_factory=list)
    final_sent: bool = False
    cancelled: bool = False
    six_xx: bool = False
    on_failure: FailureHandler | None = None
    cancel_reasons: tuple[str, ...] = ()
    """Reason header values to put in the CANCELs sent downstream (RFC 3326)."""
    attrs: dict[str, object] = field(default_factory=dict)
    """Scratch space for the policy (dispatcher failover list, selected destination...)."""

    @property
    def pending(self) -> bool:
        return any(not b.done for b in self.branches)


def loop_hash(request: Request) -> str:
    """§16.6 step 8: a hash over the fields that make a request the same request.

    "the hash ... SHOULD include the To tag, From tag, Call-ID header field, the Request-URI of
    the request received (before translation), the topmost Via header, and the sequence number
    from CSeq header field, in addition to any Proxy-Require and Proxy-Authorization".
    """
    headers = request.headers
    # One digest of "part NUL part NUL ...": the same bytes as feeding the parts one by one.
    text = "\x00".join(
        (
            request.uri,
            headers.get("to") or "",
            headers.get("from") or "",
            headers.get("call-id") or "",
            str(request.cseq.seq),
            headers.get("proxy-require") or "",
            "",
        )
    )
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:12]


class ProxyCore:
    """Response contexts on top of a :class:`TransactionLayer`."""

    def __init__(self, layer: TransactionLayer, config: ProxyConfig) -> None:
        self.layer = layer
        self.config = config
        self.contexts: dict[int, ResponseContext] = {}
        """By id() of the server transaction."""
        self.by_client: dict[int, tuple[ResponseContext, Branch]] = {}
        self._timers: list[tuple[float, int, Branch, ResponseContext]] = []
        self._seq = itertools.count()
        self.via_sent_by = f"{config.host}:{config.port}"
        self.rr_value = f"<sip:{config.host}:{config.port};lr>"
        self.stats = {"forwarded": 0, "branches": 0, "failovers": 0, "timeouts": 0}

    # -- requests -------------------------------------------------------------------------

    def new_context(
        self, server_tx: ServerTransaction, request: Request, source: Address, now: float
    ) -> ResponseContext:
        ctx = ResponseContext(server_tx, request, source, now)
        self.contexts[id(server_tx)] = ctx
        return ctx

    def detects_loop(self, request: Request) -> bool:
        """§16.3 step 4: our own Via with the same loop hash means the request came back unchanged."""
        host, port = self.config.host, self.config.port
        mine: str | None = None  # hashed only when one of our Vias is there
        for via in request.vias:
            # (host, port) equality is "host:port" equality: the port is an int.
            if via.host == host and (via.port or 5060) == port:
                if mine is None:
                    mine = loop_hash(request)
                branch = via.branch or ""
                if branch.endswith("." + mine):
                    return True
        return False

    def prepare(self, ctx: ResponseContext, target: Target) -> Request:
        """Build the request for one branch (§16.6 steps 1-8)."""
        req = ctx.request.copy()
        if target.uri is not None:
            req.uri = target.uri
        mf = req.max_forwards
        if mf is None:
            req.headers.add("Max-Forwards", str(self.config.default_max_forwards))
        else:
            req.headers.set("Max-Forwards", str(max(mf - 1, 0)))
        for route in reversed(target.routes):
            req.headers.prepend("Route", route)
        branch = f"{new_branch()}.{loop_hash(ctx.request)}"
        via = Via(
            target.transport.upper(),
            self.config.host,
            self.config.port,
            (("branch", branch), ("rport", None)),
        )
        req.headers.prepend_via(via)  # "SIP/2.0/UDP host:port;branch=...;rport", kept parsed
        return req

    def relay(self, ctx: ResponseContext, target: Target, now: float) -> Branch:
        """Start one branch towards ``target``."""
        req = self.prepare(ctx, target)
        branch = Branch(target, req)
        ctx.branches.append(branch)
        reliable = target.transport == "tcp"
        tx = self.layer.start_client(req, target.dest, now=now, reliable=reliable)
        branch.tx = tx
        self.by_client[id(tx)] = (ctx, branch)
        branch.deadline = now + self.config.fr_timer
        heapq.heappush(self._timers, (branch.deadline, next(self._seq), branch, ctx))
        self.stats["branches"] += 1
        return branch

    def relay_stateless(
        self, request: Request, dest: Address, *, transport: str = "udp"
    ) -> Request:
        """Forward without a transaction (ACK for 2xx): Max-Forwards and a Via with a stable branch.

        §16.11: a stateless proxy's branch must be the same for retransmissions, so it is derived
        from the incoming top Via branch.
        """
        req = request.copy()
        mf = req.max_forwards
        if mf is None:
            req.headers.add("Max-Forwards", str(self.config.default_max_forwards))
        else:
            req.headers.set("Max-Forwards", str(max(mf - 1, 0)))
        top = request.vias[0].branch or ""
        digest = hashlib.md5(top.encode(), usedforsecurity=False).hexdigest()[:16]
        req.headers.prepend_via(
            Via(
                transport.upper(),
                self.config.host,
                self.config.port,
                (("branch", f"{MAGIC}sl{digest}"), ("rport", None)),
            )
        )
        return req

    def record_route(self, request: Request) -> None:
        request.headers.prepend("Record-Route", self.rr_value)

    # -- responses ------------------------------------------------------------------------

    def on_response(self, tx: object, response: Response, now: float) -> None:
        found = self.by_client.get(id(tx))
        if found is None:
            return
        ctx, branch = found
        status = response.status
        if status < 200:
            first = branch.status == 0
            branch.status = max(branch.status, status)
            if first and ctx.request.method == "INVITE":
                branch.deadline = now + self.config.fr_inv_timer
                heapq.heappush(self._timers, (branch.deadline, next(self._seq), branch, ctx))
            if branch.cancel_wanted and not branch.cancelled:
                self._cancel_branch(branch, now)
            if status != 100 and not ctx.final_sent and not ctx.cancelled:
                self._forward_upstream(ctx, response, now)
            return
        branch.status = status
        branch.response = response
        branch.deadline = None
        if 200 <= status < 300:
            # "forward ... any 2xx response to an INVITE" even after a final (§16.7 step 5).
            self._forward_upstream(ctx, response, now)
            ctx.final_sent = True
            if ctx.request.method == "INVITE":
                # RFC 3326 §2 example: the other branches of a fork are told why.
                if not ctx.cancel_reasons:
                    ctx.cancel_reasons = ('SIP;cause=200;text="Call completed elsewhere"',)
                self._cancel_pending(ctx, now)
            return
        if status >= 600:
            ctx.six_xx = True
            self._cancel_pending(ctx, now)
        self._maybe_finish(ctx, branch, now)

    def on_client_timeout(self, tx: object, now: float) -> None:
        """Timer B/F: §16.8 "as if it received a 408"."""
        found = self.by_client.get(id(tx))
        if found is None:
            return
        ctx, branch = found
        if branch.done:
            return
        branch.timed_out = True
        branch.deadline = None
        self.stats["timeouts"] += 1
        self._maybe_finish(ctx, branch, now)

    def on_client_terminated(self, tx: object) -> None:
        found = self.by_client.pop(id(tx), None)
        if found is not None:
            found[1].tx = None

    def on_server_terminated(self, tx: object) -> None:
        ctx = self.contexts.pop(id(tx), None)
        if ctx is not None:
            # The failure handler is a bound method of the policy's RequestContext, which
            # points back at this context: break the cycle so reference counting frees the
            # call at once (left to the cyclic GC, a 32 s-old call is only found by a full
            # collection: 2.5 s pauses with 500k objects under load).
            ctx.on_failure = None
            ctx.attrs.clear()
            for b in ctx.branches:
                if b.tx is not None and not b.done:
                    b.cancel_wanted = True

    def _maybe_finish(self, ctx: ResponseContext, branch: Branch, now: float) -> None:
        if ctx.pending or ctx.final_sent:
            return
        if ctx.on_failure is not None and not ctx.cancelled and not ctx.six_xx:
            before = len(ctx.branches)
            handler = ctx.on_failure
            ctx.on_failure = None  # the handler re-arms it (t_on_failure) if it wants another round
            handler(ctx, branch)
            if len(ctx.branches) > before:
                self.stats["failovers"] += 1
                return
            if ctx.final_sent:
                return
        self._send_best(ctx, now)

    def best_response(self, ctx: ResponseContext) -> Response:
        """§16.7 step 6: 6xx first, else the lowest class; a timeout counts as 408."""
        best: Response | None = None
        best_key: tuple[int, int] | None = None
        for b in ctx.branches:
            resp = b.response if b.response is not None else None
            status = resp.status if resp is not None else 408
            key = (0, status) if status >= 600 else (status // 100, status)
            if best_key is None or key < best_key:
                best_key = key
                best = resp if resp is not None else self._local(ctx, 408)
        return best if best is not None else self._local(ctx, 408)

    def _local(self, ctx: ResponseContext, status: int, reason: str | None = None) -> Response:
        return make_response(ctx.request, status, reason)

    def _send_best(self, ctx: ResponseContext, now: float) -> None:
        best = self.best_response(ctx)
        if best.status in (401, 407):
            name = "WWW-Authenticate" if best.status == 401 else "Proxy-Authenticate"
            for b in ctx.branches:
                if (
                    b.response is not None
                    and b.response is not best
                    and b.response.status == best.status
                ):
                    for value in b.response.headers.get_all(name):
                        best.headers.add(name, value)
        self._forward_upstream(ctx, best, now)
        ctx.final_sent = True

    def _forward_upstream(self, ctx: ResponseContext, response: Response, now: float) -> None:
        resp = response.copy()
        # Our own Via is on top of a branch response; a locally made response has none of ours.
        vias = resp.vias
        if vias:
            top = vias[0]
            if (
                top.host == self.config.host
                and (top.port or 5060) == self.config.port
                and len(vias) > len(ctx.request.vias)
            ):
                resp.headers.pop_first_value("Via")
        if resp.status == 503 and self.config.remap_503_500:
            resp.status = 500
            resp.reason = "Server Internal Error"
        self.layer.respond(ctx.server_tx, resp, now=now)
        self.stats["forwarded"] += 1

    # -- CANCEL ---------------------------------------------------------------------------

    def cancel(self, invite_tx: object, now: float, *, reasons: tuple[str, ...] = ()) -> bool:
        """§16.10: cancel every pending branch of the INVITE's context. False if none known.

        ``reasons``: the Reason header values of the CANCEL received, copied into the CANCELs
        sent downstream (RFC 3326 §2: "Proxies ... SHOULD copy" them; Kamailio tm does), so a
        phone learns e.g. "Call completed elsewhere" from a queue that hung up its branch.
        """
        ctx = self.contexts.get(id(invite_tx))
        if ctx is None:
            return False
        ctx.cancelled = True
        if reasons:
            ctx.cancel_reasons = reasons
        self._cancel_pending(ctx, now)
        return True

    def _cancel_pending(self, ctx: ResponseContext, now: float) -> None:
        for b in ctx.branches:
            if b.done or b.cancelled:
                continue
            b.cancel_reasons = ctx.cancel_reasons
            b.cancel_wanted = True
            if b.replied:
                self._cancel_branch(b, now)

    def _cancel_branch(self, branch: Branch, now: float) -> None:
        """§9.1: CANCEL with the branch's R-URI, Call-ID, From, To, CSeq number and top Via."""
        if branch.request.method != "INVITE" or branch.cancelled:
            return
        branch.cancelled = True
        inv = branch.request
        headers = [("Via", inv.headers.values("via")[0])]
        headers.extend(("Route", value) for value in inv.headers.get_all("Route"))
        headers += [
            ("Max-Forwards", str(self.config.default_max_forwards)),
            ("From", inv.headers.get("from") or ""),
            ("To", inv.headers.get("to") or ""),
            ("Call-ID", inv.call_id),
            ("CSeq", f"{inv.cseq.seq} CANCEL"),
        ]
        headers.extend(("Reason", value) for value in branch.cancel_reasons)
        headers.append(("Content-Length", "0"))
        from router.sip import Headers

        cancel = Request("CANCEL", inv.uri, Headers(headers))
        self.layer.start_client(
            cancel, branch.target.dest, now=now, reliable=branch.target.transport == "tcp"
        )

    # -- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        while self._timers:
            at, _, branch, _ = self._timers[0]
            if branch.deadline != at or branch.done:
                heapq.heappop(self._timers)
                continue
            return at
        return None

    def handle_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            at, _, branch, ctx = heapq.heappop(self._timers)
            if branch.deadline != at or branch.done:
                continue
            # Kamailio: "fr_timer ... the transaction is ... failed with 408" and the branch
            # is cancelled when it had a provisional; before that it is just abandoned.
            branch.timed_out = True
            branch.deadline = None
            self.stats["timeouts"] += 1
            if branch.replied:
                self._cancel_branch(branch, now)
            elif branch.tx is not None:
                self.layer.abandon(branch.tx, now=now)
            self._maybe_finish(ctx, branch, now)


def uri_host(value: str) -> SipUri | None:
    """Parse a URI or name-addr value; None if it is not a SIP URI."""
    text = value.strip()
    if text.startswith("<") or '"' in text:
        from router.sip import parse_name_addr

        uri = parse_name_addr(text).uri
    else:
        uri = parse_uri(text)
    return uri if isinstance(uri, SipUri) else None


__all__ = [
    "Branch",
    "NameAddr",
    "ProxyConfig",
    "ProxyCore",
    "ResponseContext",
    "Target",
    "loop_hash",
]
