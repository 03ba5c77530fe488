"""The vocabulary of a routing policy: Kamailio's script functions as methods.

A routing policy (``router/policy.py``) is a plain function ``request_route(ctx)``; ``ctx`` is a
:class:`RequestContext` for one received request. Its methods are named after the Kamailio
functions they mirror (``maxfwd_process``, ``loose_route``, ``record_route``, ``ds_select_dst``,
``ds_next_dst``, ``t_on_failure``, ``t_relay``...) so that a reader who knows kamailio.cfg can
read the policy, and they do what those functions do (SIP-REFERENCE §1, §2, §7).

Everything here is synchronous and takes time from the router (``ctx.now``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.features.proxy import Branch, ResponseContext, Target
from router.sip import Request, SipError, SipUri, make_response, parse_name_addr, parse_uri
from router.sip.routing import uri_destination
from router.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from router.app import RouterCore


@dataclass(frozen=True, slots=True)
class BranchFailure:
    """What a failure handler learns about the branch that failed last."""

    status: int
    """Final status of the branch (408 for a local timeout)."""
    timed_out: bool
    """True when no final reply came before fr_timer / fr_inv_timer / Timer B."""
    replied: bool
    """True when the branch had any reply (Kamailio ``t_branch_replied``)."""
    destination: str
    """The dispatcher destination (or target label) of the branch."""


FailureRoute = Callable[["RequestContext", BranchFailure], None]


class RequestContext:
    """One request on its way through the policy."""

    def __init__(
        self,
        router: RouterCore,
        request: Request,
        source: tuple[str, int],
        transaction: ServerTransaction | None,
        *,
        transport: str,
        now: float,
    ) -> None:
        self.router = router
        self.request = request
        self.source = source
        self.transaction = transaction
        self.transport = transport
        self.now = now
        self.replied = False
        self.features = router.features
        self.dispatcher_algorithm = router.config.dispatcher_algorithm
        self.mark_failed_inactive = router.config.dispatcher_mark_failed
        self._du: Target | None = None
        """Kamailio ``$du``: the next hop chosen by the dispatcher or a lookup."""
        self._ds_candidates: list[tuple[str, tuple[str, int], str]] = []
        self._ds_current: str | None = None
        self._failure_route: FailureRoute | None = None
        self._response_ctx: ResponseContext | None = None
        self._extra_targets: list[Target] = []

    # -- facts about the request ----------------------------------------------------------

    @property
    def method(self) -> str:
        return self.request.method

    def is_method(self, *methods: str) -> bool:
        return self.request.method in methods

    @property
    def ruri(self) -> SipUri | None:
        try:
            uri = self.request.request_uri
        except SipError:
            return None
        return uri if isinstance(uri, SipUri) else None

    @property
    def ruri_user(self) -> str | None:
        uri = self.ruri
        return uri.user if uri is not None else None

    def has_to_tag(self) -> bool:
        return self.request.to.tag is not None

    def uri_is_myself(self, uri: SipUri | None = None) -> bool:
        uri = uri if uri is not None else self.ruri
        if uri is None:
            return False
        host, port = uri.host_port()
        return self.router.is_myself(host, port)

    def from_dispatcher_node(self) -> bool:
        """Kamailio ``ds_is_from_list()``: the source IP belongs to a dispatcher destination."""
        return self.router.dispatcher_has_address(self.source[0])

    # -- REQINIT --------------------------------------------------------------------------

    def sanity_check(self) -> bool:
        """Required headers parse (the parser checked presence; here the values)."""
        req = self.request
        try:
            _ = (req.cseq, req.call_id, req.from_, req.to, req.vias)
            if req.method in ("INVITE", "REGISTER", "SUBSCRIBE"):
                _ = req.contacts
        except SipError as exc:
            self.reply(400, f"Bad Request ({exc})"[:80])
            return False
        uri = req.request_uri if self._uri_ok() else None
        if uri is None:
            self.reply(416, "Unsupported URI Scheme")
            return False
        return True

    def _uri_ok(self) -> bool:
        try:
            uri = self.request.request_uri
        except SipError:
            return False
        return isinstance(uri, SipUri) or uri.__class__.__name__ == "TelUri"

    def loop_check(self) -> bool:
        """§16.3 step 4: False (and 482 sent) when the request already passed here unchanged."""
        if self.router.proxy.detects_loop(self.request):
            self.reply(482, "Loop Detected")
            return False
        return True

    def maxfwd_process(self) -> bool:
        """Kamailio ``mf_process_maxfwd_header``: False when Max-Forwards is 0 (§16.3 step 3).

        The decrement itself happens when the request is forwarded (``ProxyCore.prepare``).
        """
        try:
            mf = self.request.max_forwards
        except SipError:
            return True
        return mf is None or mf > 0

    # -- replies --------------------------------------------------------------------------

    def reply(
        self, status: int, reason: str | None = None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Kamailio ``sl_send_reply``/``send_reply``: answer through the server transaction."""
        if self.replied or self.request.method == "ACK":
            return
        resp = make_response(
            self.request,
            status,
            reason,
            to_tag=self.router.to_tag(self.request),
            headers=headers or (),
        )
        self.router.reply(self, resp)
        self.replied = True

    # -- routing --------------------------------------------------------------------------

    def record_route(self) -> None:
        self.router.proxy.record_route(self.request)

    def remove_preloaded_route(self) -> None:
        """§16.4: a top Route naming this proxy is removed (Kamailio: loose_route() == -1 case)."""
        routes = self.request.routes
        if routes and isinstance(routes[0].uri, SipUri) and self.uri_is_myself(routes[0].uri):
            self.request.headers.pop_first_value("Route")

    def loose_route(self) -> bool:
        """§16.4 and §16.12: consume our own Route, then route by the next Route or the R-URI.

        Returns True when the request carried a route set (Kamailio returns 1), which is what
        in-dialog requests of a record-routed dialog do.
        """
        req = self.request
        had_route = False
        # Strict-router upstream put our RR URI into the Request-URI: restore from the last Route.
        if self.uri_is_myself() and req.routes:
            last_values = req.headers.values("route")
            last = last_values[-1]
            req.uri = str(parse_name_addr(last).uri)
            # remove the last Route value
            remaining = last_values[:-1]
            req.headers.remove("route")
            for v in remaining:
                req.headers.add("Route", v)
            had_route = True
        while True:
            routes = req.routes
            if (
                not routes
                or not isinstance(routes[0].uri, SipUri)
                or not self.uri_is_myself(routes[0].uri)
            ):
                break
            req.headers.pop_first_value("Route")
            had_route = True
        routes = req.routes
        if routes:
            uri = routes[0].uri
            if isinstance(uri, SipUri):
                host, port, transport = uri_destination(uri)
                self._du = Target((host, port), transport=transport, label=str(uri))
                return True
        if had_route:
            ruri = self.ruri
            if ruri is not None:
                host, port, transport = uri_destination(ruri)
                self._du = Target((host, port), transport=transport, label=str(ruri))
            return True
        return False

    # -- dispatcher -----------------------------------------------------------------------

    def ds_select_dst(self, setid: int, algorithm: int | str) -> bool:
        """Choose a destination; keep the failover order (Kamailio ``flags=2`` XAVPs)."""
        chosen = self.router.dispatcher_select(setid, algorithm, self.request)
        if not chosen:
            return False
        self._ds_candidates = chosen
        return self._ds_apply()

    def _ds_apply(self) -> bool:
        if not self._ds_candidates:
            return False
        uri, dest, transport = self._ds_candidates.pop(0)
        self._ds_current = uri
        self._du = Target(dest, transport=transport, label=uri)
        return True

    def ds_next_dst(self) -> bool:
        """Kamailio ``ds_next_dst``: the next destination in failover order."""
        while self._ds_candidates:
            uri = self._ds_candidates[0][0]
            if self.router.dispatcher_usable(uri):
                return self._ds_apply()
            self._ds_candidates.pop(0)
        return False

    def ds_mark_dst(self, state: str = "ip") -> None:
        if self._ds_current is not None:
            self.router.dispatcher_mark(self._ds_current, state, reason="failover")

    # -- transactions ---------------------------------------------------------------------

    def t_on_failure(self, route: FailureRoute) -> None:
        self._failure_route = route

    def t_is_canceled(self) -> bool:
        return self._response_ctx is not None and self._response_ctx.cancelled

    def relay(self) -> bool:
        """Kamailio ``t_relay``: forward statefully (statelessly for ACK) to ``$du`` or the R-URI."""
        target = self._du
        if target is None:
            uri = self.ruri
            if uri is None:
                self.reply(416, "Unsupported URI Scheme")
                return False
            host, port, transport = uri_destination(uri)
            target = Target((host, port), transport=transport, label=str(uri))
        return self.router.relay(self, target)

    def _on_branch_failure(self, ctx: ResponseContext, branch: Branch) -> None:
        self._response_ctx = ctx
        route = self._failure_route
        self._failure_route = None
        if route is None:
            return
        status = branch.response.status if branch.response is not None else 408
        failure = BranchFailure(status, branch.timed_out, branch.replied, branch.target.label)
        self.now = self.router.now
        before = len(ctx.branches)
        route(self, failure)
        if self._failure_route is not None and len(ctx.branches) > before:
            ctx.on_failure = self._on_branch_failure

    # -- registrar and auth (router part 2) -----------------------------------------------

    def requires_auth(self) -> bool:
        return self.router.requires_auth(self)

    def auth_check(self) -> bool:
        return self.router.auth_check(self)

    def save_location(self) -> bool:
        return self.router.save_location(self)

    def forward_registration(self) -> None:
        self.router.forward_registration(self)

    def lookup_and_relay(self) -> None:
        self.router.lookup_and_relay(self)


def target_for_uri(text: str) -> Target | None:
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        return None
    host, port, transport = uri_destination(uri)
    return Target((host, port), transport=transport, label=text)
