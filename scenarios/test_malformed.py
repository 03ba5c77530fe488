"""Malformed input: garbage, truncated, oversized and wrongly framed messages at the router.

ARCHITECTURE, rules: "Bad input never crashes a component: SIP gets the right status code or a
counted drop". STYLE §5: "A malformed request gets a 400 when enough parsed to route a reply
(Via, Call-ID, CSeq, From, To); otherwise, and for malformed responses, it is dropped. Either
way it is counted and logged with a named trigger, and the receive loop lives on."

The corpus is the invalid messages of RFC 4475 (``tests/data/rfc4475/``, the RFC's short names,
with the status the RFC asks for) plus generated ones: seeded random bytes, a valid INVITE cut
at several points, an oversized datagram, NUL bytes. Over TCP (the router listens on
``tcp:<router>:5060`` too) the stream framing is attacked: no Content-Length, a non-numeric or
negative one, headers that never end.

The corpus messages name hosts such as ``192.0.2.15`` in their Via without ``rport``; the router
answers to the ``received`` address (our source) at port 5060 (RFC 3261 §18.2.2), so the sender
binds port 5060 on a lab generator address to get the 400s.
"""

from __future__ import annotations

import random
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from lab.backends import NodeState
from lab.backends.local import options_ping
from lab.pytest_plugin import Lab
from lab.ua import UserAgent
from router.sip import Headers, Request, Response, new_branch, new_call_id, new_tag, serialize

pytestmark = pytest.mark.lab

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "rfc4475"
RFC4475_INVALID = {
    # name: status the RFC asks for when enough parsed to answer, None = drop (no Via/CSeq to
    # answer to, or a response).
    "badinv01": None,
    "clerr": 400,
    "ncl": 400,
    "scalar02": None,
    "scalarlg": None,
    "quotbal": None,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "badaspec": None,
    "baddn": None,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": None,
    "insuf": None,
    "multi01": 400,
    "mcl01": 400,
}
SEED = 4475


# -- helpers ----------------------------------------------------------------------------------


_TOP_VIA = re.compile(
    rb"^((?:Via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*[\d.]+[ \t]*/[ \t]*)([A-Za-z]+[ \t]+[^;,\s]+)",
    re.I | re.M,
)


def corpus_message(name: str, me: tuple[str, int]) -> bytes:
    """RFC 4475 message ``name`` with its first Via's transport and sent-by made ``UDP me``.

    The corpus names hosts such as ``host5.example.com``; left as is, any reply (or a router
    that ignored ``received``) would make the router resolve them in DNS, off the loopback.
    Only the sent-by changes: what makes the message invalid is elsewhere (badinv01's broken
    Via is not matched and stays intact).
    """
    data = (CORPUS / f"{name}.sip").read_bytes()
    sent_by = f"UDP {me[0]}:{me[1]}".encode()
    return _TOP_VIA.sub(lambda m: m.group(1) + sent_by, data, count=1)


def drops_total(lab: Lab) -> int:
    """Sum of the router's drop counters (``/status``)."""
    return int(sum(lab.router_status()["drops"].values()))


def metric_sum(lab: Lab, name: str) -> float:
    with urllib.request.urlopen(f"http://{lab.router.http}/metrics", timeout=2.0) as resp:
        text = resp.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


async def wait_drop(lab: Lab, before: int, timeout: float = 2.0) -> int:  # noqa: ASYNC109
    """Wait until the router counted a drop after ``before``; returns the new total."""
    deadline = trio.current_time() + timeout
    while (now := drops_total(lab)) <= before:
        if trio.current_time() > deadline:
            raise AssertionError(f"no counted drop (still {now})")
        await trio.sleep(0.02)
    return now


def sample_invite(lab: Lab, me: tuple[str, int]) -> bytes:
    """A well-formed INVITE to 600 from ``me`` (the base of the truncated ones)."""
    host, port = me
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:160@{lab.domain}>;tag={new_tag()}"),
            ("To", f"<sip:600@{lab.domain}>"),
            ("Call-ID", new_call_id(host)),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:160@{host}:{port}>"),
            ("Content-Type", "application/sdp"),
        ]
    )
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    return serialize(Request("INVITE", f"sip:600@{lab.domain}", headers, body))


def generated_udp(lab: Lab, me: tuple[str, int]) -> dict[str, bytes]:
    """Generated bad datagrams, none of which can be answered (all must be counted drops)."""
    rng = random.Random(SEED)
    invite = sample_invite(lab, me)
    out = {
        f"random{i}": bytes(rng.randrange(256) for _ in range(rng.randrange(20, 600)))
        for i in range(3)
    }
    out["nul"] = b"\x00" * 64 + b"INVITE"
    out["start-line-only"] = invite.split(b"\r\n", 1)[0]
    out["cut-in-via"] = invite[: invite.index(b"Via:") + 20]
    out["no-header-end"] = invite[: invite.index(b"\r\n\r\n")]
    out["oversized"] = b"INVITE sip:600@x SIP/2.0\r\nX-Pad: " + b"a" * 65000 + b"\r\n\r\n"
    out["bad-response"] = b"SIP/2.0 2x0 OK\r\nVia: junk\r\n\r\n"
    return out


async def answered(ua: UserAgent, timeout: float = 1.0) -> Response | None:  # noqa: ASYNC109
    try:
        message = await ua.expect(lambda m: isinstance(m, Response), timeout)
    except trio.TooSlowError:
        return None
    assert isinstance(message, Response)
    return message


async def assert_router_serves(lab: Lab) -> None:
    """The router process is up, answers OPTIONS and completes a call through to a PBX."""
    assert lab.state("router") is NodeState.UP
    host, port = lab.router.host, lab.router.port
    assert options_ping(host, port, source=lab.generator_host(7), timeout=2.0) == 200
    async with lab.open_ua("161", local=(lab.generator_host(7), 0)) as ua:
        call = await ua.call("600")
        with trio.fail_after(5):
            assert (await call.wait_answered()).status == 200
            bye = await call.hangup()
        assert bye is not None
        assert bye.status == 200


# -- scenarios --------------------------------------------------------------------------------


# RFC 4475 invalid messages Kamailio rejects exactly like the reference (answer and a counted
# drop); the others are marked (differences "malformed_leniency").
KAMAILIO_LIKE_REFERENCE = frozenset({"badinv01", "insuf", "ltgtruri", "quotbal", "scalarlg"})


def _rfc4475_param(name: str) -> Any:
    if name in KAMAILIO_LIKE_REFERENCE:
        return pytest.param(name, marks=pytest.mark.kamailio)
    return pytest.param(name, marks=pytest.mark.kamailio_differs("malformed_leniency"))


@pytest.mark.parametrize("name", [_rfc4475_param(n) for n in sorted(RFC4475_INVALID)])
async def test_malformed_rfc4475_invalid_over_udp(lab: Lab, name: str) -> None:
    """Topology: the default lab.

    Action: send the RFC 4475 invalid message ``name`` to the router over UDP.

    Must hold: the router counts a drop for it, and answers with the status the RFC asks for
    (400, 505 for a bad version) exactly when the message carries enough to answer to;
    otherwise nothing comes back.
    """
    want = RFC4475_INVALID[name]
    router = (lab.router.host, lab.router.port)
    async with lab.open_ua("malformed", local=(lab.generator_host(6), 5060)) as ua:
        data = corpus_message(name, ua.local)
        before = drops_total(lab)
        await ua.send_raw(data, router)
        got = await answered(ua, 1.0 if want else 0.3)
        await wait_drop(lab, before)
    if want is None:
        assert got is None, f"{name}: unexpected answer {got and got.status}"
    else:
        assert got is not None, f"{name}: no answer, want {want}"
        assert got.status == want


@pytest.mark.kamailio_differs("malformed_leniency")
async def test_malformed_generated_udp_are_counted_drops(lab: Lab) -> None:
    """Topology: the default lab.

    Action: garbage (seeded random bytes, NULs), a valid INVITE truncated in its start line,
    in a Via, before the end of the headers, a 65 kB datagram and a broken response.

    Must hold: none of them is answered, each one is a counted drop (``/status`` drops and
    ``siplab_drops_total``), and afterwards the router still answers OPTIONS and completes a
    call.
    """
    router = (lab.router.host, lab.router.port)
    metric_before = metric_sum(lab, "siplab_drops_total")
    async with lab.open_ua("malformed", local=(lab.generator_host(6), 5060)) as ua:
        corpus = generated_udp(lab, ua.local)
        for name, data in corpus.items():
            before = drops_total(lab)
            await ua.send_raw(data, router)
            try:
                await wait_drop(lab, before)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
            assert await answered(ua, 0.05) is None, name
    assert metric_sum(lab, "siplab_drops_total") >= metric_before + len(corpus)
    await assert_router_serves(lab)


TCP_FRAMING = {
    "no-content-length": lambda invite: re.sub(rb"Content-Length: \d+\r\n", b"", invite),
    "content-length-nan": lambda invite: re.sub(
        rb"Content-Length: \d+", b"Content-Length: x1", invite
    ),
    "content-length-negative": lambda invite: re.sub(
        rb"Content-Length: \d+", b"Content-Length: -5", invite
    ),
    "endless-headers": lambda invite: (
        invite.split(b"\r\n\r\n")[0] + b"\r\nX-Pad: " + b"a" * 300_000
    ),
    "garbage": lambda invite: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 200 + b"\r\n\r\n",
}


@pytest.mark.kamailio
@pytest.mark.router_needs("tcp")
@pytest.mark.parametrize("name", sorted(TCP_FRAMING))
async def test_malformed_tcp_framing_is_answered_or_closed(lab: Lab, name: str) -> None:
    """Topology: the default lab; the router listens on TCP too.

    Action: open a TCP connection and send an INVITE with broken stream framing ``name``
    (RFC 3261 §18.3: "In the case of stream-oriented transports such as TCP, the
    Content-Length header field indicates the size of the body. All implementations MUST be
    able to process ... Content-Length ... on streams").

    Must hold: the router answers 400 on the connection or closes it within 2 s, and then
    still serves a normal OPTIONS on a new TCP connection.
    """
    host, port = lab.router.host, lab.router.port
    invite = sample_invite(lab, (lab.generator_host(6), 5060)).replace(
        b"SIP/2.0/UDP", b"SIP/2.0/TCP"
    )
    stream = await trio.open_tcp_stream(host, port, local_address=lab.generator_host(6))
    got = b""
    async with stream:
        with trio.move_on_after(2) as waited:
            try:
                await stream.send_all(TCP_FRAMING[name](invite))
                while chunk := await stream.receive_some(65536):
                    got += chunk
                    if got.startswith(b"SIP/2.0 4") and b"\r\n\r\n" in got:
                        break
            except trio.BrokenResourceError:
                pass  # reset by the router while we were still sending: closed
    assert not waited.cancelled_caught, f"{name}: connection neither answered nor closed"
    assert got == b"" or got.startswith(b"SIP/2.0 400"), got[:80]
    await assert_tcp_options(lab)


async def assert_tcp_options(lab: Lab, *, rport: bool = True) -> None:
    """A valid OPTIONS on a new TCP connection is answered 200 on that connection."""
    host, port = lab.router.host, lab.router.port
    me = lab.generator_host(6)
    headers = Headers(
        [
            ("Via", f"SIP/2.0/TCP {me}:5060;branch={new_branch()}" + (";rport" if rport else "")),
            ("Max-Forwards", "70"),
            ("From", f"<sip:malformed@{lab.domain}>;tag={new_tag()}"),
            ("To", f"<sip:{host}>"),
            ("Call-ID", new_call_id(me)),
            ("CSeq", "1 OPTIONS"),
        ]
    )
    async with await trio.open_tcp_stream(host, port, local_address=me) as stream:
        await stream.send_all(serialize(Request("OPTIONS", f"sip:{host}:{port}", headers)))
        got = b""
        with trio.fail_after(2):
            while b"\r\n\r\n" not in got:
                chunk = await stream.receive_some(65536)
                assert chunk, "router closed the TCP connection of a valid OPTIONS"
                got += chunk
    assert got.startswith(b"SIP/2.0 200"), got[:80]


@pytest.mark.router_needs("tcp")
@pytest.mark.kamailio_differs("tcp_framing_drops")
async def test_malformed_tcp_framing_errors_are_counted(lab: Lab) -> None:
    """Topology: the default lab.

    Action: one TCP connection sending a request with no Content-Length on the stream.

    Must hold: the router's drop counters (``/status`` drops) grow by one.
    """
    host, port = lab.router.host, lab.router.port
    before = drops_total(lab)
    invite = sample_invite(lab, (lab.generator_host(6), 5060)).replace(
        b"SIP/2.0/UDP", b"SIP/2.0/TCP"
    )
    async with await trio.open_tcp_stream(
        host, port, local_address=lab.generator_host(6)
    ) as stream:
        await stream.send_all(TCP_FRAMING["no-content-length"](invite))
        with trio.move_on_after(1):
            while await stream.receive_some(65536):
                pass
    await wait_drop(lab, before, timeout=1.0)


@pytest.mark.kamailio_differs("malformed_leniency")
async def test_malformed_after_the_whole_corpus_router_keeps_serving(lab: Lab) -> None:
    """Topology: the default lab.

    Action: the whole RFC 4475 invalid corpus and the generated datagrams, back to back with
    no pause, then a normal call.

    Must hold: every one of them is counted (drops grow by at least the corpus size), the
    router process never restarted (same pid) and it completes the call.
    """
    pid = lab.router.pid
    router = (lab.router.host, lab.router.port)
    started = time.monotonic()
    async with lab.open_ua("malformed", local=(lab.generator_host(6), 5060)) as ua:
        corpus = [corpus_message(n, ua.local) for n in sorted(RFC4475_INVALID)]
        corpus += list(generated_udp(lab, ua.local).values())
        before = drops_total(lab)
        for data in corpus:
            await ua.send_raw(data, router)
        deadline = trio.current_time() + 3
        while drops_total(lab) < before + len(corpus):
            assert trio.current_time() < deadline, (
                f"{drops_total(lab) - before} of {len(corpus)} bad datagrams counted"
            )
            await trio.sleep(0.05)
    assert lab.router.pid == pid
    await assert_router_serves(lab)
    assert time.monotonic() - started < 15


@pytest.mark.kamailio
@pytest.mark.router_needs("tcp")
async def test_malformed_tcp_reply_uses_the_same_connection(lab: Lab) -> None:
    """Topology: the default lab.

    Action: a valid OPTIONS over TCP whose Via has no ``rport`` (sent-by port 5060, where
    nothing listens).

    Must hold: RFC 3261 §18.2.2: "If the 'sent-protocol' is a reliable transport protocol such
    as TCP or SCTP ... the response MUST be sent using the existing connection to the source
    of the original request": the 200 comes back on our connection.
    """
    await assert_tcp_options(lab, rport=False)


@pytest.mark.kamailio
async def test_malformed_400_goes_to_the_source_address(lab: Lab) -> None:
    """Topology: the default lab.

    Action: RFC 4475 ``clerr`` (Content-Length larger than the body) whose Via names another
    loopback address (127.x.0.250, where nothing listens) than the one it is sent from.

    Must hold: RFC 3261 §18.2.2: the response goes "to the address in the 'received'
    parameter", the source of the request: we get the 400.
    """
    router = (lab.router.host, lab.router.port)
    elsewhere = (lab.topology.generator_host(0).rpartition(".")[0] + ".250", 5060)
    async with lab.open_ua("malformed", local=(lab.generator_host(6), 5060)) as ua:
        await ua.send_raw(corpus_message("clerr", elsewhere), router)
        got = await answered(ua, 1.0)
    assert got is not None, "the 400 did not come back to the source address"
    assert got.status == 400
