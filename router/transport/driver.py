"""trio driver: UDP and TCP sockets plus one timer, feeding one sans-IO :class:`SipCore`.

The loop shape follows ``../shared/docs/PERFORMANCE.md``: awaiting ``recvfrom`` once per datagram
costs about three times the SIP work of a relay, so the UDP loop waits for readability once and
then drains the socket with non-blocking ``recvfrom`` until ``BlockingIOError``, yielding to trio
every :data:`BATCH` datagrams. After each batch it flushes what the core queued and re-arms the
single timer if the core's next deadline moved earlier.

TCP (RFC 3261 §18.3) is framed by :class:`router.sip.StreamFramer`. Connections are kept in one
table by peer address and reused for responses and for requests to the same destination
(§18.2.2: "the server transport uses the connection the request arrived on"). A framing error
closes that connection and is counted; it never reaches the other connections.

Nothing the network sends can end the loops: the core promises not to raise, and the driver still
catches and counts any exception from it (``core_error``) so one bad message costs one message.
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

import trio

from router.sip import SipParseError, StreamFramer

from .base import Address, Inbound, Outgoing, SipCore, TransportName
from .streams import GoneFlows, SipStream, StreamListener

log = logging.getLogger("siplab.transport")

BATCH = 64
"""Datagrams handled between two trio checkpoints."""
MAX_DATAGRAM = 65535
SOCKET_BUFFER = 8 * 1024 * 1024
TCP_QUEUE = 4096
"""Messages buffered per TCP connection before it is considered stuck and closed."""
INBOUND_CACHE = 4096
"""UDP peers whose ``Inbound`` is kept for reuse (the table is cleared when full)."""
GC_THRESHOLD = (5000, 10, 10)
"""Young generations collected every 5,000 allocations: a larger first generation (20,000
with 20 x 20) made each young collection scan ~400k survivors (300-460 ms pauses under a
450 calls/s storm, enough to fail OPTIONS probes). Measured with ``siplab storm --rate 450``."""
ROUTER_GC_THRESHOLD = (5000, 10, 1000)
"""The router makes no cyclic garbage in steady state (its full collections free 0 objects)
but holds every live transaction (RFC 6026 keeps INVITE transactions 64*T1): a full collection
then stalls it 0.3-0.9 s. It runs one only after 1,000 second-generation collections."""
"""Collector thresholds while serving (CPython's default is (700, 10, 10))."""

SO_MEMINFO = 55
"""Linux ``getsockopt(SOL_SOCKET, SO_MEMINFO)``: the socket's memory counters; the first is
``rmem_alloc``, the bytes queued in its receive buffer (datagrams not read yet, with overhead)."""
OVERLOAD_BEHIND = 0.10
"""Receive queue above this share of the buffer (at least :data:`OVERLOAD_MIN_BYTES`, at most
half of it): the node is behind, the core sheds a share of new work that grows with the queue
(the router answers that share of new INVITEs 503)."""
OVERLOAD_MIN_BYTES = 256 * 1024
"""Far behind is halfway between "behind" and a full buffer: INVITEs are then dropped before
parsing (counted), so the work already accepted (responses, ACK, BYE, CANCEL) still gets
through before the buffer overflows."""

_gc_tuned = False


def tune_gc_for_serving(threshold: tuple[int, int, int] = GC_THRESHOLD) -> None:
    """Make the cyclic garbage collector cheap for a long-running SIP node (once per process).

    Everything allocated at start-up (modules, config, tables) is moved out of the collector's
    sight (``gc.freeze``), and the first generation is collected after 20,000 allocations
    instead of 700: a node allocates a few dozen objects per message, most of them freed by
    reference counting long before a collection could look at them, while the transactions
    that do survive (RFC 3261 Timers J, K, L, M keep them up to 32 s) make every full
    collection expensive. Collection still happens; it only happens less often.
    """
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
    gc.callbacks.append(_gc_watch)


_gc_started = 0.0
GC_PAUSE_WARN = 0.1
"""A collection longer than this (seconds) is logged: it stalls every socket of the node."""


def _gc_watch(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took = time.perf_counter() - _gc_started
    if took >= GC_PAUSE_WARN:
        log.warning(
            "gc generation %d took %.0f ms (%d collected)",
            info.get("generation", -1),
            took * 1000,
            info.get("collected", 0),
        )


@dataclass(slots=True)
class DriverStatistics:
    """Counters of the driver (``statistics()`` returns a copy)."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    tcp_messages_in: int = 0
    tcp_messages_out: int = 0
    tcp_connections: int = 0
    drops: Counter[str] = field(default_factory=Counter)


class _TcpConnection:
    def __init__(
        self, stream: trio.SocketStream | SipStream, peer: Address, local: Address
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.local = local
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](TCP_QUEUE)


class SipDriver:
    """Runs the sockets of one SIP node around one core."""

    def __init__(
        self,
        core: SipCore,
        *,
        udp: list[Address] | None = None,
        tcp: list[Address] | None = None,
        streams: list[StreamListener] | None = None,
    ) -> None:
        self.core = core
        self._udp_addrs = list(udp or [])
        self._tcp_addrs = list(tcp or [])
        self._stream_listeners = list(streams or [])
        """TLS and WebSocket listeners (``streams.py``): same connection table as TCP."""
        self._gone_flows = GoneFlows()
        self._udp_socks: list[tuple[Address, socket.socket]] = []
        self._tcp_conns: dict[Address, _TcpConnection] = {}
        self._timer_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._stats = DriverStatistics()
        # Overload control, only for a core that can shed (the router): see _backlog_level.
        self._set_overload = getattr(core, "set_overload", None)
        self._overload = 0.0
        self.bound_udp: list[Address] = []
        self.bound_tcp: list[Address] = []
        self.bound_streams: list[tuple[str, Address]] = []

    def statistics(self) -> DriverStatistics:
        s = self._stats
        return DriverStatistics(
            s.datagrams_in,
            s.datagrams_out,
            s.tcp_messages_in,
            s.tcp_messages_out,
            len(self._tcp_conns),
            Counter(s.drops),
        )

    async def serve(
        self, *, task_status: trio.TaskStatus[SipDriver] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind every socket, report ready, then run until cancelled."""
        tune_gc_for_serving()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._start(nursery)
                task_status.started(self)
        finally:
            for _, sock in self._udp_socks:
                sock.close()
            self._udp_socks.clear()

    async def _start(self, nursery: trio.Nursery) -> None:
        for addr in self._udp_addrs:
            family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:  # pragma: no cover - kernel limits
                    pass
            sock.bind(addr)  # an IP literal: no name lookup, cannot block
            bound = sock.getsockname()[:2]
            self._udp_socks.append((bound, sock))
            self.bound_udp.append(bound)
            nursery.start_soon(self._udp_loop, bound, sock)
        for addr in self._tcp_addrs:
            listeners = await trio.open_tcp_listeners(addr[1], host=addr[0])
            for listener in listeners:
                bound = listener.socket.getsockname()[:2]
                self.bound_tcp.append(bound)
                nursery.start_soon(trio.serve_listeners, self._tcp_accepted, [listener])
        for spec in self._stream_listeners:
            for listener in await trio.open_tcp_listeners(spec.address[1], host=spec.address[0]):
                self.bound_streams.append((spec.proto, listener.socket.getsockname()[:2]))
                handler = partial(self._stream_accepted, spec)
                nursery.start_soon(trio.serve_listeners, handler, [listener])
        nursery.start_soon(self._timer_loop)

    # -- output ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Send everything the core has queued, then re-arm the timer."""
        outgoing = self.core.drain_outgoing()
        if outgoing:
            udp = self._udp_socks
            only = udp[0][1] if len(udp) == 1 else None
            stats = self._stats
            for out in outgoing:
                if out.transport == "tcp":
                    self._send_tcp(out)
                elif only is None:
                    self._send_udp(out)
                else:
                    # One UDP socket (the common case): send straight away.
                    try:
                        only.sendto(out.data, out.dest)
                        stats.datagrams_out += 1
                    except OSError as exc:
                        self._udp_send_failed(out, exc)
        self._rearm_timer()

    def _udp_socket_for(self, local: Address | None) -> socket.socket | None:
        if not self._udp_socks:
            return None
        if local is not None:
            for addr, sock in self._udp_socks:
                if addr == local:
                    return sock
        return self._udp_socks[0][1]

    def _send_udp(self, out: Outgoing) -> None:
        sock = self._udp_socket_for(out.local)
        if sock is None:
            self._stats.drops["no_udp_socket"] += 1
            return
        try:
            sock.sendto(out.data, out.dest)
            self._stats.datagrams_out += 1
        except OSError as exc:
            self._udp_send_failed(out, exc)

    def _udp_send_failed(self, out: Outgoing, exc: OSError) -> None:
        if isinstance(exc, BlockingIOError):
            self._stats.drops["udp_send_buffer_full"] += 1
            return
        self._stats.drops[f"udp_send_{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
        self._transport_failed(out.dest, "udp")

    def _send_tcp(self, out: Outgoing) -> None:
        conn = self._tcp_conns.get(out.dest)
        if conn is None:
            if out.dest in self._gone_flows:
                # A TLS/WebSocket phone's connection is gone: nobody listens at its ephemeral
                # port (a browser cannot accept connections). RFC 5626 §5.3: the flow failed.
                self._stats.drops["stream_flow_failed"] += 1
                self._transport_failed(out.dest, "tcp")
                return
            if self._nursery is None:
                self._stats.drops["tcp_not_running"] += 1
                return
            self._nursery.start_soon(self._tcp_connect_and_send, out)
            return
        try:
            conn.send_channel.send_nowait(out.data)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._stats.drops["tcp_send_queue_full"] += 1
            self._transport_failed(out.dest, "tcp")

    def _transport_failed(self, dest: Address, transport: TransportName) -> None:
        try:
            self.core.transport_failed(dest, transport, now=trio.current_time())
        except Exception:  # the core must not kill the driver
            self._stats.drops["core_error"] += 1
            log.exception("core raised in transport_failed")

    # -- input ----------------------------------------------------------------------------

    def _deliver(self, data: bytes, inbound: Inbound) -> None:
        try:
            self.core.receive_untrusted(data, inbound, now=trio.current_time())
        except Exception:
            self._stats.drops["core_error"] += 1
            log.exception("core raised on a message from %s", inbound.source)

    async def _udp_loop(self, local: Address, sock: socket.socket) -> None:
        # One Inbound per peer address, reused: peers are few, datagrams are many.
        inbounds: dict[tuple[str, int], Inbound] = {}
        stats = self._stats
        recvfrom = sock.recvfrom
        core = self.core
        while True:
            await trio.lowlevel.wait_readable(sock)
            # One clock read per batch, not per datagram: a batch is a few milliseconds of
            # work, far below any SIP timer's resolution (T1 = 500 ms).
            now = trio.current_time()
            handled = 0
            while True:
                try:
                    data, source = recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError as exc:
                    # ICMP port unreachable from an earlier send shows up here on Linux.
                    stats.drops[f"udp_recv_{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
                    continue
                stats.datagrams_in += 1
                handled += 1
                if self._overload >= 1.0 and data[:7] == b"INVITE ":
                    # Far behind: new calls are refused before any parsing (the UAC
                    # retransmits, by then the backlog may be gone); accepted calls proceed.
                    stats.drops["overload_invite"] += 1
                else:
                    inbound = inbounds.get(source)
                    if inbound is None:
                        if len(inbounds) >= INBOUND_CACHE:
                            inbounds.clear()
                        inbound = inbounds[source] = Inbound("udp", (source[0], source[1]), local)
                    try:
                        core.receive_untrusted(data, inbound, now=now)
                    except Exception:
                        stats.drops["core_error"] += 1
                        log.exception("core raised on a message from %s", source)
                if handled % BATCH == 0:
                    if self._set_overload is not None:
                        self._change_overload(self._backlog_level(sock))
                    self.flush()
                    await trio.lowlevel.checkpoint()
                    now = trio.current_time()
            if self._overload:
                self._change_overload(0.0)  # the socket is empty: caught up
            self.flush()

    # -- overload ---------------------------------------------------------------------------

    def _backlog_level(self, sock: socket.socket) -> float:
        """Overload pressure from the bytes waiting in the receive buffer: 0.0 below "behind",
        rising linearly to 1.0 at "far behind" (INVITEs then dropped before parsing).

        Measured every :data:`BATCH` datagrams while draining (one getsockopt), never per
        datagram. Queue bytes are the one signal that sees the backlog before the kernel drops:
        once the buffer is full, datagrams are lost unseen and the peers' retransmissions make
        the load grow (the collapse of an unprotected proxy at 1.5x its capacity).
        """
        try:
            meminfo = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
            size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError:  # not Linux: no overload control
            return 0.0
        queued: int = struct.unpack_from("I", meminfo)[0]
        behind = min(max(OVERLOAD_BEHIND * size, OVERLOAD_MIN_BYTES), size / 2)
        far = (behind + size) / 2
        if queued < behind:
            return 0.0
        return min(1.0, (queued - behind) / (far - behind))

    def _change_overload(self, pressure: float) -> None:
        if pressure == self._overload:
            return
        if pressure >= 1.0 > self._overload:
            log.warning("receive backlog far behind: dropping INVITEs before parsing")
        self._overload = pressure
        assert self._set_overload is not None
        try:
            self._set_overload(pressure)
        except Exception:
            self._stats.drops["core_error"] += 1
            log.exception("core raised in set_overload")

    async def _tcp_accepted(self, stream: trio.SocketStream) -> None:
        peer = stream.socket.getpeername()[:2]
        local = stream.socket.getsockname()[:2]
        await self._run_connection(_TcpConnection(stream, (peer[0], peer[1]), (local[0], local[1])))

    async def _stream_accepted(self, spec: StreamListener, stream: trio.SocketStream) -> None:
        peer = stream.socket.getpeername()[:2]
        local = stream.socket.getsockname()[:2]
        peer_addr = (peer[0], peer[1])
        with spec.admit(peer_addr, self._stats.drops) as admitted:
            if not admitted:
                await trio.aclose_forcefully(stream)
                return
            wrapped = await spec.wrap(stream, peer_addr, self._stats.drops)
            if wrapped is not None:
                try:
                    conn = _TcpConnection(wrapped, peer_addr, (local[0], local[1]))
                    await self._run_connection(conn)
                finally:
                    self._gone_flows.add(peer_addr)

    async def _tcp_connect_and_send(self, out: Outgoing) -> None:
        try:
            stream = await trio.open_tcp_stream(out.dest[0], out.dest[1])
        except OSError:
            self._stats.drops["tcp_connect_failed"] += 1
            self._transport_failed(out.dest, "tcp")
            return
        local = stream.socket.getsockname()[:2]
        conn = _TcpConnection(stream, out.dest, (local[0], local[1]))
        conn.send_channel.send_nowait(out.data)
        await self._run_connection(conn)

    async def _run_connection(self, conn: _TcpConnection) -> None:
        previous = self._tcp_conns.get(conn.peer)
        self._tcp_conns[conn.peer] = conn
        self._stats.tcp_connections += 1
        try:
            async with conn.stream, trio.open_nursery() as nursery:
                nursery.start_soon(self._tcp_writer, conn)
                await self._tcp_reader(conn)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # except*: the reader and writer run in a nursery, so a reset arrives wrapped in
            # an ExceptionGroup; a plain except missed it and one RST ended the whole router.
            self._stats.drops["tcp_connection_lost"] += 1
        finally:
            if self._tcp_conns.get(conn.peer) is conn:
                if previous is not None and previous is not conn:
                    self._tcp_conns[conn.peer] = previous
                else:
                    del self._tcp_conns[conn.peer]

    async def _tcp_reader(self, conn: _TcpConnection) -> None:
        framer = StreamFramer()
        inbound = Inbound("tcp", conn.peer, conn.local)
        while True:
            chunk = await conn.stream.receive_some(65536)
            if not chunk:
                return
            framer.feed(chunk)
            try:
                while (message := framer.next_message()) is not None:
                    self._stats.tcp_messages_in += 1
                    self._deliver(message, inbound)
            except SipParseError as exc:
                self._stats.drops[f"tcp_framing_{exc.trigger}"] += 1
                log.info("closing TCP connection from %s: %s", conn.peer, exc)
                self.flush()
                return
            if framer.keepalives:
                framer.keepalives = 0
                conn.send_channel.send_nowait(b"\r\n")  # RFC 5626 §4.4.1 pong
            self.flush()

    async def _tcp_writer(self, conn: _TcpConnection) -> None:
        async for data in conn.receive_channel:
            await conn.stream.send_all(data)
            self._stats.tcp_messages_out += 1

    # -- timers ---------------------------------------------------------------------------

    def _rearm_timer(self) -> None:
        scope = self._timer_scope
        if scope is None:
            return
        deadline = self.core.next_deadline()
        if deadline is not None and deadline < scope.deadline:
            scope.deadline = deadline

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            with trio.CancelScope(
                deadline=deadline if deadline is not None else float("inf")
            ) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            try:
                self.core.handle_timers(now=trio.current_time())
            except Exception:
                self._stats.drops["core_error"] += 1
                log.exception("core raised in handle_timers")
            self.flush()
