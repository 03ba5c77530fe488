"""Where Kamailio in the router's seat behaves differently from the reference router, and why.

Issue 9: "Where Kamailio behaves differently by design, the scenario says so with a reason".
A scenario that runs against both routers imports :data:`DIFFERENCES` and names the entry that
explains a diverging expectation, e.g.::

    from lab.routers.kamailio.differences import difference

    if router_kind == "kamailio":
        pytest.skip(difference("forward_retry"))

Each value is the reason, written so it can stand alone in a report. Entries say "mirrored"
when ``kamailio.cfg`` compensates and stock Kamailio configs would differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["DIFFERENCES", "difference"]

_TABLE: dict[str, str] = {
    # -- digest auth (SIP-REFERENCE §3) --------------------------------------------------------
    "stale_flag": (
        "Kamailio puts stale=true in a challenge only when the cfg passes flag 16 "
        "(auth_challenge_helper never infers it); stock configs do not, so their clients are "
        "re-prompted on an expired nonce. Mirrored: siplab's cfg adds 16 for return codes -4 "
        "(nonce expired) and -6 (nonce reused)."
    ),
    "qop_default": (
        "Stock kamailio.cfg challenges with flags 0 (no qop, RFC 2617 legacy digest); the "
        "reference offers qop=auth. Mirrored: the rendered cfg passes flag 1 when qop='auth'."
    ),
    "nonce_format": (
        "Kamailio nonces are its own base64(expiry|since|MD5(secret)) format; the reference's "
        "are HMAC nonces. Even with the same nonce_secret neither verifies the other's nonces, "
        "so a client cannot move between a reference router and Kamailio without a new challenge."
    ),
    "nonce_replay": (
        "With qop the reference rejects a nonce-count that does not increase (replay, answered "
        "stale). Kamailio accepts a nonce for its whole lifetime unless nonce_count=1, which "
        "needs stateful auth (t_newtran before authorize); the lab cfg authenticates statelessly."
    ),
    "digest_algorithms": (
        "Kamailio 5.6 challenges with one algorithm (auth 'algorithm', the first of the "
        "reference's list); the reference can send one challenge per algorithm (RFC 8760 §2)."
    ),
    "md5_cred_rows": (
        "auth_db reads one plaintext column (ps_auths.password, calculate_ha1=yes): rows with "
        "auth_type=md5 (HA1 in md5_cred) cannot be verified; the reference verifies both kinds. "
        "siplab provisions userpass rows, so lab users are unaffected."
    ),
    "failure_window": (
        "Failures are counted in an htable item that expires failure_window after the first "
        "failure (fixed window, $shtinc does not refresh the expiry); the reference keeps a "
        "sliding window of failure times. Bursts faster than the window block identically."
    ),
    # -- registrar / usrloc (SIP-REFERENCE §2) ---------------------------------------------------
    "min_expires": (
        "A too-short Expires is raised to min_expires (registrar min_expires_mode 0) or answered "
        "423 + Min-Expires (mode 1), exactly as the reference; Asterisk itself never sends 423 "
        "and clamps to 60..7200 instead. Mirrored through min_expires_mode."
    ),
    "location_writes": (
        "usrloc db_mode 1 writes each binding before its 200 (one SQLite commit per REGISTER); "
        "the reference holds the 200s of a batch and commits them together. Same durability "
        "(no acknowledged binding is lost), lower registration throughput on SQLite."
    ),
    "sqlite_concurrency": (
        "db_sqlite 5.6 sets no busy timeout: with several Kamailio workers, or another process "
        "writing the same SQLite file at the same moment, a write fails with 'database is "
        "locked' and the REGISTER gets 500. In the lab the PBX nodes write ps_contacts (the "
        "forwarded registrations) into the same file, so even children=1 lost 82 of 500 "
        "REGISTERs of a 200/s storm. Hence the lab gives Kamailio its own PostgreSQL by "
        "default ([db] kind 'auto', lab/topology.py) and 4 workers on it (router.workers_for); "
        "the reference waits up to busy_timeout_ms and runs on either."
    ),
    "expired_bindings": (
        "The reference purges expired bindings itself and un-registers them at the PBX nodes; "
        "Kamailio's usrloc timer drops them silently. The nodes' copies were given the same "
        "expiry, so they lapse at the same time without a message."
    ),
    "lookup_by_contact": (
        "For a request from a PBX node the reference first matches the exact contact URI the "
        "node called, then the AOR; Kamailio lookup('location') uses only the R-URI user (AOR), "
        "so every contact of that AOR is forked to."
    ),
    # -- registration forwarding (SIP-REFERENCE §4.2 option B) -----------------------------------
    "forward_on_refresh": (
        "Kamailio forwards after every REGISTER that save() stored, updated or deleted, "
        "including plain refreshes; the reference forwards only when the binding set changed "
        "and refreshes the nodes on its own timer (forward_expires_margin)."
    ),
    "forward_retry": (
        "uac_req_send is fire-and-forget (the node's answer is only logged in "
        "event_route[uac:reply]): a failed forward is not retried after forward_retry, the node "
        "catches up at the phone's next refresh."
    ),
    "forward_call_id": (
        "Kamailio 5.6 $uac_req has no CSeq key (tm sends CSeq 10), so each forwarded REGISTER "
        "has a fresh Call-ID; the reference keeps one Call-ID per (user, node) and increments "
        "CSeq (RFC 3261 §10.2). Registrars accept both; Asterisk's binding is replaced either way."
    ),
    "forward_hash": (
        "forward='hash' uses ds_select alg 7 on $tU: the hash is taken over all entries of the "
        "set and walks to the next usable one when the chosen node is down; the reference hashes "
        "over the usable nodes only. Same node while all nodes are up."
    ),
    # -- dispatcher / proxy (SIP-REFERENCE §1, §7) -----------------------------------------------
    "probe_timeout": (
        "Kamailio 5.6 has no ds_ping_fr_timer: an OPTIONS keepalive times out after tm fr_timer, "
        "not after probing.timeout; dead-node detection takes up to interval + fr_timer."
    ),
    "probe_interval": (
        "ds_ping_interval is whole seconds (the renderer rounds up); the reference probes at "
        "fractional intervals, so time-scaled lab runs probe Kamailio at most once a second."
    ),
    "loop_detection": (
        "The reference answers 482 when its own Via with the same loop hash comes back "
        "(RFC 3261 §16.3 step 4); the lab cfg relies on Max-Forwards (483 after 10 hops)."
    ),
    "malformed_leniency": (
        "Kamailio parses lazily (only the headers a route touches) and counts only some parse "
        "errors (core:bad_msg_hdr, bad_URIs_rcvd, drop/err_requests): many RFC 4475 invalid "
        "messages are routed or answered differently, or dropped without a counter; the "
        "reference parses every message fully and counts each drop. The ones Kamailio does "
        "reject like the reference run unmarked."
    ),
    "metrics": (
        "Kamailio exposes no Prometheus /metrics with siplab_* names (its counters are read "
        "through JSON-RPC stats.get_statistics, Lab.router_status); checks on the reference's "
        "metrics cannot be made."
    ),
    "router_events": (
        "Kamailio writes no siplab events log (router.jsonl: every message in and out with its "
        "answer); a check that reads what the router itself received or answered cannot be "
        "made. Checks on the PBX/phone side and SIPp results still run."
    ),
    "tcp_framing_drops": (
        "Kamailio's TCP reader closes a connection whose stream framing is broken (no or a bad "
        "Content-Length, RFC 3261 §18.3) without counting it in any statistic "
        "(core:bad_msg_hdr, drop_requests, err_requests stay unchanged); the reference counts "
        "each as a drop. The connection is closed either way (that scenario runs unmarked)."
    ),
}

DIFFERENCES: Mapping[str, str] = MappingProxyType(_TABLE)
"""Difference name -> reason (read-only)."""


def difference(name: str) -> str:
    """The reason for ``name``, prefixed for a skip/xfail message.

    Raises:
        KeyError: no such difference (names are fixed so scenarios cannot drift).
    """
    try:
        return f"Kamailio differs by design ({name}): {DIFFERENCES[name]}"
    except KeyError:
        raise KeyError(
            f"unknown Kamailio difference {name!r}; known: {sorted(DIFFERENCES)}"
        ) from None
