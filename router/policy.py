"""The default routing policy: the counterpart of ``request_route`` in kamailio.cfg.

Read it top to bottom like the stock Kamailio config it mirrors (``etc/kamailio.cfg`` plus the
dispatcher sample ``dispatcher.cfg``): request sanity, Max-Forwards, keepalive OPTIONS, in-dialog
requests by loose routing, CANCEL and retransmissions (absorbed by the transaction layer before
this runs), registrations (authenticate, save, forward to the PBX nodes), requests from a PBX node
to a registered user (location lookup), and everything else from outside to the dispatcher.

To use your own policy, write a function with the same signature and name it in the router
config: ``[router] policy = "mypackage.mymodule:request_route"``.
"""

from __future__ import annotations

from router.script import BranchFailure, RequestContext

DISPATCH_SET = 1


def request_route(ctx: RequestContext) -> None:
    # route[REQINIT]
    if not ctx.sanity_check():
        return  # answered 400 already
    if not ctx.maxfwd_process():
        ctx.reply(483, "Too Many Hops")
        return
    if not ctx.loop_check():
        return  # 482 sent
    if ctx.is_method("OPTIONS") and ctx.uri_is_myself() and not ctx.ruri_user:
        ctx.reply(200, "Keepalive")
        return

    # route[WITHINDLG]
    if ctx.has_to_tag():
        if ctx.loose_route():
            ctx.relay()
            return
        if ctx.is_method("ACK"):
            return  # an ACK for a 2xx we never routed: drop (stock cfg: "ACK without matching transaction")
        ctx.reply(404, "Not here")
        return

    ctx.remove_preloaded_route()
    if ctx.is_method("INVITE", "SUBSCRIBE", "REFER"):
        ctx.record_route()

    # route[REGISTRAR]
    if ctx.is_method("REGISTER"):
        if not ctx.features.registrar:
            ctx.reply(405, "Method Not Allowed")
            return
        if not ctx.auth_check():
            return  # challenged or refused already
        if ctx.save_location():
            ctx.forward_registration()
        return

    # route[LOCATION]: a PBX node calling a registered phone (Dial(PJSIP/101) through the Path).
    if ctx.from_dispatcher_node() and ctx.features.registrar:
        ctx.lookup_and_relay()
        return

    # route[AUTH] for requests from phones, then route[DISPATCH]
    if ctx.features.registrar and ctx.requires_auth() and not ctx.auth_check():
        return
    if not ctx.ds_select_dst(DISPATCH_SET, ctx.dispatcher_algorithm):
        ctx.reply(404, "No destination")
        return
    ctx.t_on_failure(dispatch_failure)
    ctx.relay()


def dispatch_failure(ctx: RequestContext, failure: BranchFailure) -> None:
    """failure_route[RTF_DISPATCH]: next destination on timeout, 408 or 5xx."""
    if ctx.t_is_canceled():
        return
    if failure.timed_out or failure.status == 408 or 500 <= failure.status <= 599:
        # A node that said nothing at all is marked inactive at once (probing brings it back);
        # one that answered 5xx is alive, maybe busy: try the next one but keep it in the set.
        if ctx.mark_failed_inactive and failure.timed_out and not failure.replied:
            ctx.ds_mark_dst("ip")
        if ctx.ds_next_dst():
            ctx.t_on_failure(dispatch_failure)
            ctx.relay()
