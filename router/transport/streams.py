"""TLS (RFC 3261 §26) and SIP over WebSocket (RFC 7118) for the trio driver.

Both are stream transports that end up in the driver's one connection table, keyed by the peer's
address, next to plain TCP. The core sees them as reliable stream connections ("tcp"): it answers
on the connection a request came in on (§18.2.2), and the registrar saves the source address as
``received``, so a request for a registered browser phone (whose Contact host is a made-up
``*.invalid`` name, RFC 7118 §5.2) goes back over the WebSocket its REGISTER came on, the way
Kamailio's ``websocket`` module with ``fix_nated_register()`` does it.

What happens between accept and SIP, per listener protocol:

* ``tls``: TLS handshake (client certificate checked against ``streams.ca`` when
  ``require_client_cert``), then the bytes are framed by ``StreamFramer`` as for TCP.
* ``ws`` / ``wss``: (TLS, then) the HTTP Upgrade of RFC 6455 with the ``sip`` subprotocol that
  RFC 7118 §4.1 requires, done by ``wsproto``; afterwards each WebSocket message carries exactly
  one SIP message (RFC 7118 §5.1). :class:`WebSocketStream` turns that into the byte stream the
  framer wants, adding a Content-Length where the browser left it out (allowed over WebSocket,
  needed by the framer), and rewrites two things as Kamailio's websocket deployments do with
  nathelper: the ``*.invalid`` Contact of a non-REGISTER message becomes the connection's
  address (``fix_nated_contact``), so in-dialog requests from a PBX find the connection; and the
  router's own top Via on a request towards the browser says ``WS``/``WSS``.

Limits, each counted in the driver's drops (``transport_drops{reason=...}`` in /metrics):
``stream_source_limit`` (connections per source IP), ``tls_handshake_failed``,
``handshake_timeout``, ``ws_bad_upgrade``, ``ws_message_too_large``, ``ws_protocol_error``,
``ws_keepalive_timeout`` (a ping unanswered for a whole interval: the peer went away without a
FIN, so the half-open connection is closed), ``stream_idle_timeout``, ``stream_flow_failed``
(a request for a phone whose TLS/WebSocket connection is gone: the router never connects to a
phone's ephemeral port, it fails the transaction at once, RFC 5626 §5.3).
"""

from __future__ import annotations

import re
import ssl
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from router.configfile import ConfigError
from router.streamconfig import StreamsSection

from .base import Address

Drops = Counter[str]


_LOST = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a stream raises when the peer vanished (reset, TLS cut short, closed under us)."""


class StreamClosed(Exception):
    """The peer went away or broke the protocol; the reason is already counted."""


def server_ssl_context(cfg: StreamsSection, source: str = "<config>") -> ssl.SSLContext:
    """The router's TLS server context; file problems raise ``ConfigError`` naming the field."""
    base = Path(source).parent if source != "<config>" else Path(".")

    def path(name: str, value: str | None) -> str:
        if value is None:
            raise ConfigError(source, f"streams.{name}", "needed by a tls or wss listener")
        p = Path(value)
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise ConfigError(source, f"streams.{name}", f"{p}: no such file")
        return str(p)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(path("cert", cfg.cert), path("key", cfg.key))
    except ssl.SSLError as exc:
        raise ConfigError(source, "streams.cert", f"cannot load cert/key: {exc.reason}") from None
    if cfg.ca is not None:
        try:
            ctx.load_verify_locations(path("ca", cfg.ca))
        except ssl.SSLError as exc:
            raise ConfigError(source, "streams.ca", f"cannot load: {exc.reason}") from None
    # Ask for a client certificate only when it is required: a CertificateRequest makes
    # Chromium cancel a WebSocket handshake (it has no way to pick a certificate there).
    ctx.verify_mode = ssl.CERT_REQUIRED if cfg.require_client_cert else ssl.CERT_NONE
    return ctx


_CONTENT_LENGTH = re.compile(rb"^(content-length|l)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_INVALID_CONTACT = re.compile(
    rb"^((?:contact|m)[ \t]*:[^\r\n]*?sips?:(?:[^@;>\r\n]*@)?)([A-Za-z0-9.-]+\.invalid)"
    rb"(?::\d+)?([^\r\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_TRANSPORT_PARAM = re.compile(rb";transport=wss?", re.IGNORECASE)


def _frame_for_sip(message: bytes) -> bytes:
    """Make a WebSocket message framable as a stream: add Content-Length when it is missing."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        return message + b"\r\n\r\n" if message.strip() else b""
    if _CONTENT_LENGTH.search(head) is None:
        head += b"\r\nContent-Length: " + str(len(body)).encode()
    return head + b"\r\n\r\n" + body


def fix_nated_contact(message: bytes, peer: Address) -> bytes:
    """nathelper ``fix_nated_contact()`` for WebSocket clients: ``x@abc.invalid;transport=ws``
    becomes ``x@IP:PORT;transport=tcp`` (the connection's peer), except in REGISTER, whose
    Contact the registrar keeps as the phone sent it (it routes by ``received``)."""
    if message.startswith(b"REGISTER "):
        return message
    host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
    address = f"{host}:{peer[1]}".encode()

    def replace(m: re.Match[bytes]) -> bytes:
        rest = _TRANSPORT_PARAM.sub(b";transport=tcp", m.group(3), count=1)
        return m.group(1) + address + rest

    return _INVALID_CONTACT.sub(replace, message, count=1)


def _via_for_websocket(data: bytes, secure: bool) -> bytes:
    """A request the router sends to a browser: its own (top) Via names WS/WSS (RFC 7118 §5.2)."""
    if data.startswith(b"SIP/2.0 "):
        return data
    return data.replace(
        b"\r\nVia: SIP/2.0/TCP ", b"\r\nVia: SIP/2.0/WSS " if secure else b"\r\nVia: SIP/2.0/WS ", 1
    )


class SipStream(trio.abc.Stream):
    """A stream whose ``receive_some`` returns ``bytes`` (what the driver's framer takes)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise NotImplementedError


class WebSocketStream(SipStream):
    """A server-side SIP WebSocket over a trio stream, looking like a byte stream of SIP."""

    def __init__(
        self,
        inner: trio.abc.Stream,
        peer: Address,
        cfg: StreamsSection,
        drops: Drops,
        *,
        secure: bool,
    ) -> None:
        self.inner = inner
        self.peer = peer
        self.cfg = cfg
        self.drops = drops
        self.secure = secure
        self.ws = WSConnection(ConnectionType.SERVER)
        self._send_lock = trio.Lock()
        self._parts: list[bytes] = []
        self._size = 0
        self._closed = False
        self._broken = False

    async def _send_raw(self, data: bytes) -> None:
        if data and not self._broken:
            async with self._send_lock:
                try:
                    await self.inner.send_all(data)
                except _LOST:
                    # Raising would reach the driver's nursery as an ExceptionGroup; the
                    # reader sees the end of the connection next and closes it.
                    self._broken = True
                    self.drops["stream_connection_lost"] += 1

    async def handshake(self) -> None:
        """The RFC 6455 upgrade; RFC 7118 §4.1: the client must offer the ``sip`` subprotocol."""
        while True:
            chunk = await self.inner.receive_some(16384)
            if not chunk:
                raise StreamClosed
            try:
                self.ws.receive_data(bytes(chunk))
                events = list(self.ws.events())
            except RemoteProtocolError as exc:
                # Not an Upgrade (a browser opening https://router:8443/ to accept the lab
                # certificate, a scanner): answer wsproto's suggested HTTP error, then close.
                self.drops["ws_bad_upgrade"] += 1
                if isinstance(exc.event_hint, RejectConnection):
                    await self._send_raw(self.ws.send(exc.event_hint))
                raise StreamClosed from None
            for event in events:
                if isinstance(event, Request):
                    if "sip" not in event.subprotocols:
                        self.drops["ws_bad_upgrade"] += 1
                        await self._send_raw(
                            self.ws.send(RejectConnection(status_code=400, has_body=False))
                        )
                        raise StreamClosed
                    await self._send_raw(self.ws.send(AcceptConnection(subprotocol="sip")))
                    return

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next SIP message (as stream bytes), or b"" once the connection is over."""
        if self._closed:
            return b""
        ping_interval = self.cfg.ws_ping_interval or float("inf")
        idle = self.cfg.idle_timeout or float("inf")
        silent = 0.0
        pinged = False
        while True:
            with trio.move_on_after(min(ping_interval, idle)) as scope:
                try:
                    chunk = await self.inner.receive_some(65536)
                except _LOST:
                    self.drops["stream_connection_lost"] += 1
                    return self._finish()
            if scope.cancelled_caught:
                silent += min(ping_interval, idle)
                if pinged:
                    # RFC 6455 §5.5.2: a pong is due "as soon as practical"; none came within a
                    # whole interval, so the peer is gone without a FIN (a half-open connection).
                    self.drops["ws_keepalive_timeout"] += 1
                    return self._finish()
                if silent >= idle:
                    self.drops["stream_idle_timeout"] += 1
                    return self._finish()
                pinged = True
                await self._send_raw(self.ws.send(Ping(b"siplab")))
                continue
            if not chunk or self._broken:
                return self._finish()
            silent, pinged = 0.0, False
            try:
                self.ws.receive_data(bytes(chunk))
                out = await self._handle_events()
            except (RemoteProtocolError, LocalProtocolError):
                self.drops["ws_protocol_error"] += 1
                return self._finish()
            if out is not None:
                return out

    async def _handle_events(self) -> bytes | None:
        messages: list[bytes] = []
        for event in self.ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                data = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
                self._size += len(data)
                if self._size > self.cfg.max_message_size:
                    self.drops["ws_message_too_large"] += 1
                    # RFC 6455 §7.4.1: 1009 "message too big to process".
                    await self._close(1009, "message too big")
                    return self._finish()
                self._parts.append(data)
                if event.message_finished:
                    message = b"".join(self._parts)
                    self._parts, self._size = [], 0
                    messages.append(fix_nated_contact(_frame_for_sip(message), self.peer))
            elif isinstance(event, Ping):
                await self._send_raw(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, CloseConnection):
                if event.code in (1002, 1007):
                    # wsproto reports a malformed frame (unmasked, bad opcode, reserved bits,
                    # bad UTF-8) as a close with 1002/1007; echoing it closes the connection.
                    self.drops["ws_protocol_error"] += 1
                await self._send_raw(self.ws.send(event.response()))
                return self._finish()
        if messages:
            return b"".join(messages)
        return None

    def _finish(self) -> bytes:
        self._closed = True
        return b""

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self._send_raw(self.ws.send(CloseConnection(code=code, reason=reason)))
        except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        if raw == b"\r\n":
            return  # an RFC 5626 pong means nothing here: WebSocket has its own ping
        try:
            frame = self.ws.send(
                TextMessage(_via_for_websocket(raw, self.secure).decode("utf-8", "replace"))
            )
        except LocalProtocolError:
            raise trio.ClosedResourceError("websocket closed") from None
        await self._send_raw(frame)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with trio.move_on_after(1):
                await self._close(1001, "going away")
        await self.inner.aclose()


class IdleStream(SipStream):
    """A TLS stream that gives up after ``idle_timeout`` seconds of silence."""

    def __init__(self, inner: trio.abc.Stream, idle: float, drops: Drops) -> None:
        self.inner = inner
        self.idle = idle or float("inf")
        self.drops = drops

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        with trio.move_on_after(self.idle):
            try:
                return bytes(await self.inner.receive_some(max_bytes))
            except _LOST:
                # A reset or a TLS record cut short: the end of this connection, not an error
                # to raise into the driver's nursery (where it would be an ExceptionGroup).
                self.drops["stream_connection_lost"] += 1
                return b""
        self.drops["stream_idle_timeout"] += 1
        return b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except _LOST:
            self.drops["stream_connection_lost"] += 1

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


class GoneFlows:
    """Peers of closed TLS/WebSocket connections (bounded: the oldest are forgotten)."""

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._peers: dict[Address, None] = {}

    def add(self, peer: Address) -> None:
        self._peers.pop(peer, None)
        self._peers[peer] = None
        if len(self._peers) > self.size:
            del self._peers[next(iter(self._peers))]

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers


@dataclass
class StreamListener:
    """One ``tls``/``ws``/``wss`` listen address and how to turn an accepted socket into SIP."""

    proto: str
    address: Address
    cfg: StreamsSection
    ssl_context: ssl.SSLContext | None

    def __post_init__(self) -> None:
        self._per_source: Counter[str] = Counter()

    @contextmanager
    def admit(self, peer: Address, drops: Drops) -> Iterator[bool]:
        """Count the connection against its source IP; False when the source is at its cap."""
        ip = peer[0]
        if self._per_source[ip] >= self.cfg.max_connections_per_source:
            drops["stream_source_limit"] += 1
            yield False
            return
        self._per_source[ip] += 1
        try:
            yield True
        finally:
            self._per_source[ip] -= 1
            if not self._per_source[ip]:
                del self._per_source[ip]

    async def wrap(
        self, stream: trio.SocketStream, peer: Address, drops: Drops
    ) -> SipStream | None:
        """TLS and/or WebSocket handshakes within ``handshake_timeout``; None = refused."""
        wrapped: trio.abc.Stream = stream
        with trio.move_on_after(self.cfg.handshake_timeout) as scope:
            try:
                if self.ssl_context is not None:
                    tls = trio.SSLStream(stream, self.ssl_context, server_side=True)
                    await tls.do_handshake()
                    wrapped = tls
                if self.proto in ("ws", "wss"):
                    ws = WebSocketStream(wrapped, peer, self.cfg, drops, secure=self.proto == "wss")
                    await ws.handshake()
                    return ws
                return IdleStream(wrapped, self.cfg.idle_timeout, drops)
            except trio.BrokenResourceError:
                drops["tls_handshake_failed"] += 1
            except (StreamClosed, trio.ClosedResourceError, OSError):
                pass
            except (RemoteProtocolError, LocalProtocolError):
                drops["ws_bad_upgrade"] += 1
        if scope.cancelled_caught:
            drops["handshake_timeout"] += 1
        await trio.aclose_forcefully(stream)
        return None


def stream_listeners(
    listen: list[tuple[str, str, int]], cfg: StreamsSection, source: str = "<config>"
) -> list[StreamListener]:
    """The listeners for every ``tls``/``ws``/``wss`` address of ``router.listen``."""
    ctx: ssl.SSLContext | None = None
    out = []
    for proto, host, port in listen:
        if proto not in ("tls", "ws", "wss"):
            continue
        secure = proto in ("tls", "wss")
        if secure and ctx is None:
            ctx = server_ssl_context(cfg, source)
        out.append(StreamListener(proto, (host, port), cfg, ctx if secure else None))
    return out
