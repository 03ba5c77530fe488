"""SIPp scenario files generated from parameters.

SIPp reads its call flows from XML files; these builders return that XML as text (a
:class:`SippScenario`) and :meth:`SippScenario.write` puts it in a run folder next to the
statistics it produces, so a run folder always says exactly what was sent.

Keywords used below are SIPp's own (``docs/scenarios/keywords.rst`` in SIPp 3.6):
``[branch]`` a fresh RFC 3261 branch per message, ``[call_id]``, ``[len]`` the body length,
``[routes]`` the Route set learnt from ``rrs="true"`` (the Record-Route of the 200, reversed
as RFC 3261 §12.1.2 asks of a UAC), ``[next_url]`` the remote target (Contact) of the dialog,
``[peer_tag_param]`` the remote tag, ``[last_cseq_number]`` the CSeq number of the last received
message, ``[last_Via:]`` etc. copy a header of the last received message, ``[fieldN]`` column
N of the injection file, and ``[authentication]`` the digest answer to the last challenge kept by
``auth="true"``.

Digest credentials come from the injection file (``-inf``): the accepted SIPp idiom is a
column holding the whole keyword, ``[authentication username=alice password=secret]``, which
SIPp expands when it substitutes ``[field2]``. So the CSV written by :func:`users_csv` is::

    SEQUENTIAL
    alice;example.test;[authentication username=alice password=secret];bob

field0 = user, field1 = domain, field2 = auth keyword, field3 = callee (optional).

Measurements: every UAC scenario brackets call setup with ``start_rtd="1"`` / ``rtd="1"``
(RFC 6076 "Session Request Delay": INVITE sent to 200 received; REGISTER sent to final 200 for
registrations), which SIPp reports as Response Time 1 and, with ``-trace_rtt``, per call.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ScenarioRole",
    "SippScenario",
    "SippUser",
    "options_ping",
    "register_then_call",
    "uac_call",
    "uac_register",
    "uas_answer",
    "users_csv",
]

RTT_BOUNDS_MS = (10, 20, 30, 40, 50, 100, 150, 200, 500, 1000)
"""Upper bounds of SIPp's response-time histogram (``ResponseTimeRepartition``)."""
CALL_LENGTH_BOUNDS_MS = (10, 50, 100, 500, 1000, 5000, 10000)


class ScenarioRole(enum.Enum):
    UAC = "uac"
    """SIPp places calls (needs a remote host and a rate)."""
    UAS = "uas"
    """SIPp waits for requests."""


@dataclass(frozen=True, slots=True)
class SippScenario:
    """One SIPp scenario file's text and what it needs to run."""

    name: str
    """File stem; SIPp also names its ``*_rtt.csv`` after it."""
    role: ScenarioRole
    """Client or server scenario."""
    xml: str
    """The scenario file text."""
    needs_injection: bool = False
    """True when the text uses ``[fieldN]`` (an ``-inf`` file must be given)."""

    def write(self, folder: Path) -> Path:
        """Write ``<folder>/<name>.xml`` and return its path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.xml"
        path.write_text(self.xml, encoding="ascii")
        return path


@dataclass(frozen=True, slots=True)
class SippUser:
    """One injection-file row for the digest scenarios."""

    user: str
    """Address-of-record user part and digest username."""
    domain: str
    """AOR domain (the realm the registrar challenges with, usually)."""
    password: str
    """Digest password."""
    callee: str = "service"
    """Request-URI user of the call in :func:`register_then_call`."""

    def __post_init__(self) -> None:
        for name in ("user", "domain", "password", "callee"):
            value = getattr(self, name)
            # ';' separates CSV fields and ']' / whitespace would end the SIPp keyword early.
            if not value or any(c in value for c in ";[] \t\r\n"):
                raise ValueError(f"SippUser.{name} cannot be empty or hold ';', '[', ']' or spaces")


def users_csv(users: Iterable[SippUser], order: str = "SEQUENTIAL") -> str:
    """Injection file text for :func:`uac_register` / :func:`register_then_call`."""
    if order not in ("SEQUENTIAL", "RANDOM", "USER"):
        raise ValueError(f"unknown injection order {order!r}")
    lines = [order]
    lines.extend(
        f"{u.user};{u.domain};[authentication username={u.user} password={u.password}];{u.callee}"
        for u in users
    )
    return "\n".join(lines) + "\n"


# -- building blocks ----------------------------------------------------------------------------

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'

_SDP = """v=0
o=siplab 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""

_VIA = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
_CONTACT = "Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>"


def _send(message: str, *, retrans: int | None = 500, extra: str = "") -> str:
    attrs = f' retrans="{retrans}"' if retrans is not None else ""
    return f"  <send{attrs}{extra}>\n    <![CDATA[\n\n{message.strip()}\n\n    ]]>\n  </send>\n"


def _recv(what: str, **attrs: str) -> str:
    kind = "response" if what.isdigit() else "request"
    rendered = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'  <recv {kind}="{what}"{rendered}/>\n'


def _wrap(name: str, body: str) -> str:
    bounds = ", ".join(str(b) for b in RTT_BOUNDS_MS)
    lengths = ", ".join(str(b) for b in CALL_LENGTH_BOUNDS_MS)
    return (
        f'{_HEAD}<scenario name="{name}">\n{body}'
        f'  <ResponseTimeRepartition value="{bounds}"/>\n'
        f'  <CallLengthRepartition value="{lengths}"/>\n'
        "</scenario>\n"
    )


def _check_hold(hold_ms: int) -> None:
    if hold_ms < 0:
        raise ValueError("hold_ms must be >= 0")


def _invite_and_dialog(
    *,
    to_user: str,
    from_user: str,
    cseq: int,
    hold_ms: int,
    challenge: bool,
    from_host: str = "[local_ip]:[local_port]",
) -> str:
    """INVITE (optionally answering a 401/407 once), ACK, hold, BYE: the common call body."""
    uri = f"sip:{to_user}@[remote_ip]:[remote_port]"
    frm = f"From: <sip:{from_user}@{from_host}>;tag=[pid]T[call_number]"

    def invite(seq: int, auth: str) -> str:
        return _send(
            f"INVITE {uri} SIP/2.0\n{_VIA}\n{frm}\nTo: <{uri}>\nCall-ID: [call_id]\n"
            f"CSeq: {seq} INVITE\n{_CONTACT.format(user=from_user)}\n{auth}"
            "Max-Forwards: 70\nSubject: siplab\nContent-Type: application/sdp\n"
            f"Content-Length: [len]\n\n{_SDP}",
            extra=' start_rtd="1"' if not auth else "",
        )

    body = invite(cseq, "")
    body += _recv("100", optional="true")
    if challenge:
        # A proxy challenges INVITE with 407, a UAS/registrar with 401 (RFC 3261 §22.2/§22.3).
        body += _recv("407", optional="true", auth="true", next="inv_auth")
        body += _recv("401", optional="true", auth="true", next="inv_auth")
    body += _recv("180", optional="true")
    body += _recv("183", optional="true")
    answered = {"next": "answered"} if challenge else {}
    body += _recv("200", rtd="1", rrs="true", **answered)
    if challenge:
        # RFC 3261 §17.1.1.3: the ACK of a non-2xx final response reuses the INVITE's top Via
        # (same branch) and the response's To (with its tag); it is hop-by-hop, no Route needed.
        body += '  <label id="inv_auth"/>\n'
        body += _send(
            f"ACK {uri} SIP/2.0\n[last_Via:]\n{frm}\n[last_To:]\nCall-ID: [call_id]\n"
            "CSeq: [last_cseq_number] ACK\nMax-Forwards: 70\nContent-Length: 0",
            retrans=None,
        )
        body += invite(cseq + 1, "[field2]\n")
        body += _recv("100", optional="true")
        body += _recv("180", optional="true")
        body += _recv("183", optional="true")
        body += _recv("200", rtd="1", rrs="true")
        body += '  <label id="answered"/>\n'
    # RFC 3261 §13.2.2.4: the ACK for a 2xx is a new transaction sent to the remote target
    # with the route set; CSeq number equal to the INVITE's.
    body += _send(
        f"ACK [next_url] SIP/2.0\n{_VIA}\n{frm}\nTo: <{uri}>[peer_tag_param]\n"
        "Call-ID: [call_id]\nCSeq: [last_cseq_number] ACK\n[routes]\n"
        f"{_CONTACT.format(user=from_user)}\nMax-Forwards: 70\nContent-Length: 0",
        retrans=None,
    )
    body += f'  <pause milliseconds="{hold_ms}"/>\n'
    body += _send(
        f"BYE [next_url] SIP/2.0\n{_VIA}\n{frm}\nTo: <{uri}>[peer_tag_param]\n"
        "Call-ID: [call_id]\nCSeq: [last_cseq_number+1] BYE\n[routes]\n"
        f"{_CONTACT.format(user=from_user)}\nMax-Forwards: 70\nContent-Length: 0"
    )
    body += _recv("200", crlf="true")
    return body


# -- public builders ----------------------------------------------------------------------------


def uac_call(
    hold_ms: int = 0, *, to_user: str = "[service]", from_user: str = "sipp"
) -> SippScenario:
    """UAC: INVITE (SDP) → optional 100/180/183 → 200 → ACK → pause ``hold_ms`` → BYE → 200.

    ``to_user`` may be a SIPp keyword (default ``[service]``, set with ``-s``).
    """
    _check_hold(hold_ms)
    body = _invite_and_dialog(
        to_user=to_user, from_user=from_user, cseq=1, hold_ms=hold_ms, challenge=False
    )
    return SippScenario("uac_call", ScenarioRole.UAC, _wrap("siplab uac call", body))


def uas_answer(*, ring: bool = True, bye_timeout_ms: int = 120_000) -> SippScenario:
    """UAS (the PBX stand-in): INVITE → [180] → 200 with SDP → ACK → BYE → 200.

    Responses copy Via/From/To/Call-ID/CSeq and the Record-Route set (RFC 3261 §12.1.1: "the
    UAS MUST copy all Record-Route header field values from the request into the response").
    Out-of-dialog OPTIONS (dispatcher keepalives, readiness probes) are answered 200.
    """
    tag = "[pid]U[call_number]"
    common = (
        "[last_Via:]\n[last_From:]\n[last_To:];tag=" + tag + "\n[last_Call-ID:]\n[last_CSeq:]\n"
    )
    # Out-of-dialog OPTIONS (dispatcher keepalives, readiness probes) get a 200 and end the
    # "call" at once. SIPp counts those as successful calls too, so callers count answered
    # calls from the INVITE element (``SippResult.count("INVITE", "Recv")``).
    body = _recv("OPTIONS", optional="true", next="options")
    body += _recv("INVITE", crlf="true")
    if ring:
        body += _send(
            "SIP/2.0 180 Ringing\n" + common + "[last_Record-Route:]\n"
            f"{_CONTACT.format(user='pbx')}\nContent-Length: 0",
            retrans=None,
        )
    body += _send(
        "SIP/2.0 200 OK\n" + common + "[last_Record-Route:]\n"
        f"{_CONTACT.format(user='pbx')}\nContent-Type: application/sdp\n"
        f"Content-Length: [len]\n\n{_SDP}"
    )
    body += _recv("ACK", crlf="true")
    body += _recv("BYE", timeout=str(bye_timeout_ms))
    body += _send("SIP/2.0 200 OK\n" + common + "Content-Length: 0", retrans=None)
    # Keep the call a little so a retransmitted BYE is still matched to it (RFC 3261 Timer J).
    body += '  <pause milliseconds="500" next="end"/>\n'
    body += '  <label id="options"/>\n'
    body += _send(
        "SIP/2.0 200 OK\n" + common + f"{_CONTACT.format(user='pbx')}\n"
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\nAccept: application/sdp\nContent-Length: 0",
        retrans=None,
    )
    body += '  <label id="end"/>\n'
    return SippScenario("uas_answer", ScenarioRole.UAS, _wrap("siplab uas answer", body))


def _register_body(expires: int) -> str:
    aor = "sip:[field0]@[field1]"
    head = (
        f"REGISTER sip:[field1] SIP/2.0\n{_VIA}\nFrom: <{aor}>;tag=[pid]R[call_number]\n"
        f"To: <{aor}>\nCall-ID: [call_id]\n"
    )
    tail = f"{_CONTACT.format(user='[field0]')}\nExpires: {expires}\nMax-Forwards: 70\n"
    body = _send(head + "CSeq: 1 REGISTER\n" + tail + "Content-Length: 0", extra=' start_rtd="1"')
    # RFC 3261 §22.1: a registrar answers 401 (WWW-Authenticate), a proxy 407.
    body += _recv("407", optional="true", auth="true", next="reg_auth")
    body += _recv("401", auth="true")
    body += '  <label id="reg_auth"/>\n'
    body += _send(head + "CSeq: 2 REGISTER\n" + tail + "[field2]\nContent-Length: 0")
    body += _recv("200", rtd="1")
    return body


def uac_register(expires: int = 3600) -> SippScenario:
    """UAC: REGISTER → 401/407 (challenge kept) → REGISTER with digest → 200 (needs ``-inf``)."""
    if expires < 0:
        raise ValueError("expires must be >= 0")
    return SippScenario(
        "uac_register",
        ScenarioRole.UAC,
        _wrap("siplab uac register", _register_body(expires)),
        needs_injection=True,
    )


def register_then_call(hold_ms: int = 0, expires: int = 3600) -> SippScenario:
    """UAC: the :func:`uac_register` flow, then a call to ``[field3]`` answering one challenge.

    Both share the Call-ID (SIPp matches messages to calls by Call-ID), with increasing CSeq
    numbers as RFC 3261 §8.1.1.5 requires within a Call-ID. Response Time 1 covers the
    REGISTER and is overwritten by the INVITE, so the rtt file holds the INVITE setup delay.
    """
    _check_hold(hold_ms)
    body = _register_body(expires)
    body += _invite_and_dialog(
        to_user="[field3]",
        from_user="[field0]",
        from_host="[field1]",
        cseq=3,
        hold_ms=hold_ms,
        challenge=True,
    )
    return SippScenario(
        "register_then_call",
        ScenarioRole.UAC,
        _wrap("siplab register then call", body),
        needs_injection=True,
    )


def options_ping() -> SippScenario:
    """UAC: one out-of-dialog OPTIONS per call, expecting 200 (RFC 3261 §11)."""
    body = _send(
        f"OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0\n{_VIA}\n"
        "From: <sip:ping@[local_ip]:[local_port]>;tag=[pid]O[call_number]\n"
        "To: <sip:[remote_ip]:[remote_port]>\nCall-ID: [call_id]\nCSeq: 1 OPTIONS\n"
        f"{_CONTACT.format(user='ping')}\nAccept: application/sdp\nMax-Forwards: 70\n"
        "Content-Length: 0",
        extra=' start_rtd="1"',
    )
    body += _recv("200", rtd="1")
    return SippScenario("options_ping", ScenarioRole.UAC, _wrap("siplab options ping", body))
