"""The router's TLS and WebSocket listeners on real sockets, with the lab's certificates.

A WSS client built on wsproto (as a browser would speak it), a TLS client with and without a
client certificate from the lab CA, and a PBX node on UDP; every limit is checked by its counter.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest

from lab.certs import LabCa, lab_certificates
from router.config import router_config_from_dict
from router.configfile import ConfigError
from router.realtime import connect
from router.server import RunningRouter, serve_router
from router.sip import (
    Headers,
    Request,
    Response,
    StreamFramer,
    answer_challenge,
    parse_challenge,
    parse_untrusted,
    serialize,
)

IP = "127.240.0.10"
PBX = ("127.240.0.11", 5060)
UDP, TLS, WS, WSS = 5060, 5061, 8080, 8443


@pytest.fixture
def lab_ca(tmp_path: Path) -> LabCa:
    ca, _ = lab_certificates(tmp_path, {"router": [IP]})
    return ca


@pytest.fixture
def passwords(tmp_path: Path) -> dict[str, str]:
    with connect(f"sqlite:///{tmp_path}/realtime.db") as d:
        d.init_schema()
        users = d.provision_users(2, 101, domain="example.com", context="default", seed=7)
    return {u.username: u.password for u in users}


def _config(tmp: Path, **streams: Any) -> Any:
    certs = tmp / "certs"
    db = f"sqlite:///{tmp}/realtime.db"
    return router_config_from_dict(
        {
            "router": {
                "listen": [
                    f"udp:{IP}:{UDP}",
                    f"tcp:{IP}:{UDP}",
                    f"tls:{IP}:{TLS}",
                    f"ws:{IP}:{WS}",
                    f"wss:{IP}:{WSS}",
                ],
            },
            "streams": {
                "cert": str(certs / "router.pem"),
                "key": str(certs / "router.key"),
                "ca": str(certs / "ca.pem"),
                **streams,
            },
            "dispatcher": {
                "destinations": [{"uri": f"sip:{PBX[0]}:{PBX[1]}"}],
                "probing": {"interval": 0},
            },
            "registrar": {"db": db, "forward_retry": 30.0, "purge_interval": 60.0},
        }
    )


@pytest.fixture
async def router(
    tmp_path: Path, request: pytest.FixtureRequest, lab_ca: LabCa, passwords: dict[str, str]
) -> AsyncIterator[RunningRouter]:
    cfg = _config(tmp_path, **getattr(request, "param", {}))
    async with trio.open_nursery() as nursery:
        running: RunningRouter = await nursery.start(serve_router, cfg)
        yield running
        running.stop()


def _client_ctx(tmp: Path, *, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tmp / "certs" / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


class WsPhone:
    """The signalling side of a browser phone: SIP over a WebSocket (RFC 7118)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Any] = []

    @classmethod
    async def open(
        cls, tmp: Path, *, secure: bool = True, subprotocols: tuple[str, ...] = ("sip",)
    ) -> WsPhone:
        stream: trio.abc.Stream
        if secure:
            stream = await trio.open_ssl_over_tcp_stream(
                IP, WSS, ssl_context=_client_ctx(tmp), https_compatible=True
            )
        else:
            stream = await trio.open_tcp_stream(IP, WS)
        phone = cls(stream)
        await stream.send_all(
            phone.ws.send(WsRequest(host=IP, target="/", subprotocols=list(subprotocols)))
        )
        return phone

    async def event(self) -> Any:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    async def sip(self) -> Any:
        while True:
            ev = await self.event()
            if ev is None or isinstance(ev, CloseConnection):
                return ev
            if isinstance(ev, TextMessage):
                return parse_untrusted(ev.data.encode())

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(text)))


def _request(method: str, uri: str, *headers: tuple[str, str]) -> Request:
    return Request(method, uri, Headers([("Max-Forwards", "70"), *headers]))


def _register(branch: str, cseq: int, auth: str = "") -> str:
    """A browser's REGISTER; its Content-Length is left out (RFC 7118 §5.1: the WebSocket
    message frames it), the one deliberate edit of serialized bytes in this module."""
    req = _request(
        "REGISTER",
        "sip:example.com",
        ("Via", f"SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK{branch}"),
        ("From", "<sip:101@example.com>;tag=w1"),
        ("To", "<sip:101@example.com>"),
        ("Call-ID", "ws-reg-1"),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", "<sip:k3l2@df7jal23ls0d.invalid;transport=ws>;expires=600"),
        *([("Authorization", auth)] if auth else []),
    )
    return serialize(req).replace(b"Content-Length: 0\r\n", b"").decode()


async def test_wss_phone_registers_with_digest_and_a_pbx_call_reaches_it(
    router: RunningRouter, tmp_path: Path, passwords: dict[str, str]
) -> None:
    phone = await WsPhone.open(tmp_path)
    accepted = await phone.event()
    assert isinstance(accepted, AcceptConnection) and accepted.subprotocol == "sip"
    await phone.send(_register("r1", 1))
    challenge = await phone.sip()
    assert isinstance(challenge, Response) and challenge.status == 401
    pw = passwords["101"]
    creds = answer_challenge(
        parse_challenge(challenge.headers.get("WWW-Authenticate") or ""),
        "REGISTER",
        "sip:example.com",
        "101",
        pw,
    )
    await phone.send(_register("r2", 2, str(creds)))
    ok = await phone.sip()
    assert isinstance(ok, Response) and ok.status == 200, ok

    # The PBX node calls 101 (Dial(PJSIP/101)): the router finds the binding and sends the
    # INVITE over the phone's own WebSocket, with its own Via saying WSS.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pbx:
        pbx.bind(PBX)
        pbx.sendto(_pbx_invite("pbx1"), (IP, UDP))
        with trio.fail_after(5):
            got = await phone.sip()
        assert got.method == "INVITE"
        assert got.uri == "sip:k3l2@df7jal23ls0d.invalid;transport=ws"
        assert got.headers.values("via")[0].startswith(f"SIP/2.0/WSS {IP}")
    await phone.stream.aclose()


async def _register_over_wss(tmp: Path, passwords: dict[str, str]) -> WsPhone:
    phone = await WsPhone.open(tmp)
    assert isinstance(await phone.event(), AcceptConnection)
    await phone.send(_register("r1", 1))
    challenge = await phone.sip()
    creds = answer_challenge(
        parse_challenge(challenge.headers.get("WWW-Authenticate") or ""),
        "REGISTER",
        "sip:example.com",
        "101",
        passwords["101"],
    )
    await phone.send(_register("r2", 2, str(creds)))
    assert (await phone.sip()).status == 200
    return phone


def _pbx_invite(call_id: str) -> bytes:
    """Dial(PJSIP/101) on the PBX node: an INVITE for the AOR to the router."""
    return serialize(
        _request(
            "INVITE",
            f"sip:101@{IP}:{UDP}",
            ("Via", f"SIP/2.0/UDP {PBX[0]}:{PBX[1]};branch=z9hG4bK{call_id};rport"),
            ("From", f"<sip:600@{PBX[0]}>;tag=p1"),
            ("To", "<sip:101@example.com>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:600@{PBX[0]}:{PBX[1]}>"),
        )
    )


async def test_call_to_a_phone_whose_websocket_is_gone_fails_at_once(
    router: RunningRouter, tmp_path: Path, passwords: dict[str, str]
) -> None:
    phone = await _register_over_wss(tmp_path, passwords)
    # The browser tab closes without a WebSocket close; the binding stays (it has not expired).
    await trio.aclose_forcefully(phone.stream)
    await _until(lambda: router.driver.statistics().tcp_connections == 0)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pbx:
        await pbx.bind(PBX)
        await pbx.sendto(_pbx_invite("gone1"), (IP, UDP))
        final = None
        with trio.fail_after(5):  # Timer B would be 32 s: the flow failure answers at once
            while final is None or final.status < 200:
                final = parse_untrusted((await pbx.recvfrom(65535))[0])
    assert isinstance(final, Response) and final.status >= 400, final
    assert router.driver.statistics().drops["stream_flow_failed"] == 1
    assert router.driver.statistics().drops["tcp_connect_failed"] == 0


async def test_websocket_without_sip_subprotocol_is_refused_and_counted(
    router: RunningRouter, tmp_path: Path
) -> None:
    phone = await WsPhone.open(tmp_path, secure=False, subprotocols=("chat",))
    ev = await phone.event()
    assert isinstance(ev, RejectConnection) and ev.status_code == 400
    await phone.stream.aclose()
    assert router.driver.statistics().drops["ws_bad_upgrade"] == 1
    # A plain GET (a browser opening the address to accept the certificate) gets HTTP 400.
    async with await trio.open_tcp_stream(IP, WS) as s:
        await s.send_all(b"GET / HTTP/1.1\r\nHost: router\r\n\r\n")
        with trio.fail_after(5):
            assert (await s.receive_some(100)).startswith(b"HTTP/1.1 400")
    assert router.driver.statistics().drops["ws_bad_upgrade"] == 2


@pytest.mark.parametrize("router", [{"max_message_size": 1024}], indirect=True)
async def test_oversized_websocket_message_closes_with_1009(
    router: RunningRouter, tmp_path: Path
) -> None:
    phone = await WsPhone.open(tmp_path)
    assert isinstance(await phone.event(), AcceptConnection)
    big = _request("OPTIONS", f"sip:{IP}", ("X-Pad", "a" * 2000))
    await phone.send(serialize(big).decode())
    ev = await phone.sip()
    assert isinstance(ev, CloseConnection) and ev.code == 1009
    await phone.stream.aclose()
    assert router.driver.statistics().drops["ws_message_too_large"] == 1


@pytest.mark.parametrize("router", [{"ws_ping_interval": 0.2}], indirect=True)
async def test_half_open_websocket_is_pinged_then_closed(
    router: RunningRouter, tmp_path: Path
) -> None:
    phone = await WsPhone.open(tmp_path)
    assert isinstance(await phone.event(), AcceptConnection)
    await _until(lambda: router.driver.statistics().tcp_connections == 1)
    # The phone reads nothing and never answers: like a browser whose network vanished.
    await _until(lambda: router.driver.statistics().drops["ws_keepalive_timeout"] == 1)
    await _until(lambda: router.driver.statistics().tcp_connections == 0)
    ping = await phone.event()
    assert isinstance(ping, Ping)
    await phone.stream.aclose()


@pytest.mark.parametrize(
    "router", [{"handshake_timeout": 0.3, "max_connections_per_source": 2}], indirect=True
)
async def test_handshake_timeout_and_per_source_cap(router: RunningRouter) -> None:
    silent = [await trio.open_tcp_stream(IP, WSS) for _ in range(3)]
    # The third connection from this source IP is over the cap: closed at once.
    assert await silent[2].receive_some(10) == b""
    # The other two never start TLS: closed when the handshake time runs out.
    with trio.fail_after(5):
        for s in silent[:2]:
            assert await s.receive_some(10) == b""
    drops = router.driver.statistics().drops
    assert drops["stream_source_limit"] == 1
    assert drops["handshake_timeout"] == 2
    for s in silent:
        await s.aclose()


def _options(via: str) -> bytes:
    return serialize(
        _request(
            "OPTIONS",
            f"sip:{IP}",
            ("Via", f"SIP/2.0/TLS {via};branch=z9hG4bKtls1"),
            ("From", "<sip:probe@example.com>;tag=t1"),
            ("To", f"<sip:{IP}>"),
            ("Call-ID", "tls-1"),
            ("CSeq", "1 OPTIONS"),
        )
    )


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll a counter of the in-process router (it has no event to wait on)."""
    with trio.fail_after(5):
        for _ in iter(int, 1):
            if predicate():
                return
            await trio.sleep(0.02)


async def _tls_options(ctx: ssl.SSLContext) -> Any:
    """OPTIONS over TLS; the router's answer. TLS 1.3: the server's verdict on the client
    certificate arrives after the client's side of the handshake is done, on the first read."""
    s = await trio.open_ssl_over_tcp_stream(IP, TLS, ssl_context=ctx)
    async with s:
        await s.send_all(_options("127.0.0.1:5999"))
        framer = StreamFramer()
        with trio.fail_after(5):
            while (raw := framer.next_message()) is None:
                chunk = await s.receive_some(65536)
                if not chunk:
                    raise trio.BrokenResourceError("closed")
                framer.feed(bytes(chunk))
        return parse_untrusted(raw)


@pytest.mark.parametrize("router", [{"require_client_cert": True}], indirect=True)
async def test_tls_requires_a_client_cert_from_the_lab_ca(
    router: RunningRouter, tmp_path: Path, lab_ca: LabCa
) -> None:
    # A desk phone with a certificate from the lab CA gets an answer over TLS.
    good = lab_ca.issue(tmp_path / "certs", "phone101", client=True)
    reply = await _tls_options(_client_ctx(tmp_path, cert=(good.cert, good.key)))
    assert isinstance(reply, Response) and reply.status == 200
    # One from another CA, and one with no certificate, are refused in the handshake.
    rogue_ca = LabCa.create(tmp_path / "rogue", name="rogue CA", stem="rogue-ca")
    rogue = rogue_ca.issue(tmp_path / "rogue", "phone101", client=True)
    for cert in ((rogue.cert, rogue.key), None):
        with pytest.raises(trio.BrokenResourceError):
            await _tls_options(_client_ctx(tmp_path, cert=cert))
    await _until(lambda: router.driver.statistics().drops["tls_handshake_failed"] == 2)


async def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"streams\.cert: tls:127.240.0.10:5061 needs"):
        router_config_from_dict({"router": {"listen": [f"tls:{IP}:{TLS}"]}})
    with pytest.raises(ConfigError, match=r"router.listen\[0\]: 'sctp:1.2.3.4:5': expected"):
        router_config_from_dict({"router": {"listen": ["sctp:1.2.3.4:5"]}})
    with pytest.raises(ConfigError, match=r"streams.ca: require_client_cert needs"):
        router_config_from_dict({"streams": {"require_client_cert": True}})
    cfg = router_config_from_dict(
        {
            "router": {"listen": [f"wss:{IP}:{WSS}"]},
            "streams": {"cert": "nope.pem", "key": "nope.key"},
        },
        source=str(tmp_path / "router.toml"),
    )
    with pytest.raises(ConfigError, match=r"router.toml: streams.cert: .*nope.pem: no such file"):
        with trio.fail_after(5):
            await serve_router(cfg)


async def test_malformed_websocket_frame_closes_with_1002(router: RunningRouter) -> None:
    phone = await WsPhone.open(Path("."), secure=False)
    assert isinstance(await phone.event(), AcceptConnection)
    # RFC 6455 §5.1: a client MUST mask its frames; the server closes on an unmasked one.
    await phone.stream.send_all(b"\x81\x05hello")
    ev = await phone.event()
    assert isinstance(ev, CloseConnection) and ev.code == 1002
    await _until(lambda: router.driver.statistics().drops["ws_protocol_error"] == 1)
    await phone.stream.aclose()


async def test_connections_reset_mid_message_leave_the_router_serving(
    router: RunningRouter, tmp_path: Path
) -> None:
    linger0 = struct.pack("ii", 1, 0)  # close() then sends RST instead of FIN
    tcp = await trio.open_tcp_stream(IP, UDP)
    tls = await trio.open_ssl_over_tcp_stream(IP, TLS, ssl_context=_client_ctx(tmp_path))
    for stream, sock in ((tcp, tcp.socket), (tls, tls.transport_stream.socket)):  # type: ignore[attr-defined]
        await stream.send_all(b"OPTIONS sip:x SIP/2.0\r\n")  # half a message
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        await trio.aclose_forcefully(stream)
    drops = router.driver.statistics().drops
    await _until(lambda: drops["tcp_connection_lost"] + drops["stream_connection_lost"] >= 2)
    reply = await _tls_options(_client_ctx(tmp_path))
    assert isinstance(reply, Response) and reply.status == 200
