"""Benchmark: phones holding one TLS / WSS / TCP connection each to the reference router.

N phones (500 by default) each open their own connection, register with digest (challenge +
authenticated REGISTER + 200) and keep the connection open, as desk phones over TLS and browser
phones over WSS do. Prints, per transport: how many connections the router holds at the end
(its /status), the registration storm's duration and rate, and the router's memory per held
connection (VmRSS growth / N, read from /proc). Numbers only; nothing asserts a speed.

Kamailio is not beside it yet: Debian's SIPp is built without TLS (no ``-t ln``) and the lab's
Kamailio cfg has no tls/websocket fragment, so there is no like-for-like peer run on this machine.

Run: ``python -m bench.bench_streams [--phones 500] [--transports tls,wss,tcp]``
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from lab.certs import lab_certificates
from lab.engines import wait_sip_ready
from lab.procs import start_process
from router.realtime import UserCredential, connect
from router.sip import Response, StreamFramer, answer_challenge, parse_challenge, parse_untrusted

HOST = "127.240.0.50"
PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "wss": 8443}
HTTP = 8080
CLIENT_IPS = 8
"""Phones come from 127.240.1.1..8 (the per-source cap is per IP)."""
DOMAIN = "siplab.local"


@dataclass(frozen=True)
class StreamResult:
    transport: str
    phones: int
    registered: int
    held: int
    seconds: float
    rss_before_kb: int
    rss_after_kb: int

    @property
    def kb_per_connection(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / max(self.held, 1)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _register(user: UserCredential, branch: str, cseq: int, via: str, auth: str = "") -> bytes:
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK{branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user.username}@{DOMAIN}>;tag=b{cseq}\r\n"
        f"To: <sip:{user.username}@{DOMAIN}>\r\nCall-ID: bench-{user.username}\r\n"
        f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user.username}@{branch}.invalid>;expires=3600"
        f"\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()


class _Conn:
    """One phone's connection: TCP, TLS or WSS; send a SIP message, read the next one."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection | None) -> None:
        self.stream, self.ws = stream, ws
        self.framer = StreamFramer()
        self.pending: list[bytes] = []

    async def send(self, data: bytes) -> None:
        out = self.ws.send(TextMessage(data.decode())) if self.ws else data
        await self.stream.send_all(out)

    async def receive(self) -> Response:
        while True:
            if self.pending:
                msg = parse_untrusted(self.pending.pop(0))
                assert isinstance(msg, Response)
                return msg
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise trio.BrokenResourceError("closed")
            if self.ws is None:
                self.framer.feed(bytes(chunk))
                while (m := self.framer.next_message()) is not None:
                    self.pending.append(m)
            else:
                self.ws.receive_data(bytes(chunk))
                for ev in self.ws.events():
                    if isinstance(ev, TextMessage):
                        self.pending.append(ev.data.encode())


async def _open(transport: str, ctx: ssl.SSLContext, source: str) -> _Conn:
    port = PORTS[transport]
    raw = await trio.open_tcp_stream(HOST, port, local_address=source)
    stream: trio.abc.Stream = raw
    if transport in ("tls", "wss"):
        tls = trio.SSLStream(raw, ctx, server_hostname=HOST)
        await tls.do_handshake()
        stream = tls
    if transport != "wss":
        return _Conn(stream, None)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=HOST, target="/", subprotocols=["sip"])))
    while True:
        ws.receive_data(bytes(await stream.receive_some(65536)))
        if any(isinstance(e, AcceptConnection) for e in ws.events()):
            return _Conn(stream, ws)


async def _phone(
    transport: str, ctx: ssl.SSLContext, user: UserCredential, index: int, done: list[_Conn]
) -> None:
    conn = await _open(transport, ctx, f"127.240.1.{1 + index % CLIENT_IPS}")
    via = {"tcp": "TCP", "tls": "TLS", "wss": "WSS"}[transport] + f" {index}.invalid"
    await conn.send(_register(user, f"{index}a", 1, via))
    challenge = await conn.receive()
    creds = answer_challenge(
        parse_challenge(challenge.headers.get("WWW-Authenticate") or ""),
        "REGISTER",
        f"sip:{DOMAIN}",
        user.username,
        user.password,
    )
    await conn.send(_register(user, f"{index}b", 2, via, f"Authorization: {creds}\r\n"))
    if (await conn.receive()).status == 200:
        done.append(conn)


async def _storm(transport: str, users: list[UserCredential], ctx: ssl.SSLContext) -> list[_Conn]:
    done: list[_Conn] = []
    limit = trio.CapacityLimiter(100)  # handshakes in flight at once

    async def one(i: int, user: UserCredential) -> None:
        async with limit:
            try:
                await _phone(transport, ctx, user, i, done)
            except (OSError, trio.BrokenResourceError, AssertionError) as exc:
                print(f"  phone {user.username}: {exc!r}", file=sys.stderr)

    async with trio.open_nursery() as nursery:
        for i, user in enumerate(users):
            nursery.start_soon(one, i, user)
    return done


def _held() -> int:
    with urllib.request.urlopen(f"http://{HOST}:{HTTP}/status", timeout=5) as r:
        return int(json.loads(r.read())["transport"]["tcp_connections"])


def measure(transport: str, phones: int, workdir: Path) -> StreamResult:
    workdir.mkdir(parents=True, exist_ok=True)
    ca, _ = lab_certificates(workdir, {"router": [HOST]})
    url = f"sqlite:///{workdir / 'realtime.db'}"
    with connect(url) as db:
        db.init_schema()
        users = db.provision_users(phones, 1000, domain=DOMAIN, context="default", seed=5)
    listen = ", ".join(f'"{p}:{HOST}:{port}"' for p, port in PORTS.items())
    cfg = workdir / "router.toml"
    cfg.write_text(
        f'[router]\nlisten = [{listen}]\nhttp = "{HOST}:{HTTP}"\n\n'
        '[streams]\ncert = "certs/router.pem"\nkey = "certs/router.key"\n'
        f"max_connections_per_source = {phones}\nws_ping_interval = 0\n\n"
        "[dispatcher]\n[dispatcher.probing]\ninterval = 0\n\n"
        f'[registrar]\ndb = "{url}"\nforward = "none"\ndomain = "{DOMAIN}"\n'
        "max_failures_per_source = 1000000\nmax_failures_per_user = 1000000\n"
    )
    proc = start_process(
        [sys.executable, "-m", "router.cli", "router", "--config", str(cfg)],
        name="router",
        log_dir=workdir,
    )
    try:
        wait_sip_ready(HOST, PORTS["udp"], timeout=15.0, alive=proc.is_running)
        before = _rss_kb(proc.pid)
        ctx = ssl.create_default_context(cafile=str(ca.files.cert))
        started = time.monotonic()
        result: list[StreamResult] = []

        async def run() -> None:
            conns = await _storm(transport, users, ctx)
            seconds = time.monotonic() - started
            held = await trio.to_thread.run_sync(_held)
            after = _rss_kb(proc.pid)
            result.append(StreamResult(transport, phones, len(conns), held, seconds, before, after))
            for c in conns:
                await trio.aclose_forcefully(c.stream)

        trio.run(run)
        return result[0]
    finally:
        proc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--phones", type=int, default=500)
    ap.add_argument("--transports", default="tls,wss,tcp")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="siplab-bench-streams-") as tmp:
        for transport in args.transports.split(","):
            r = measure(transport, args.phones, Path(tmp) / transport)
            print(
                f"reference router {r.transport:>3}: {r.registered}/{r.phones} phones registered "
                f"in {r.seconds:.1f} s ({r.registered / r.seconds:.0f} reg/s), "
                f"{r.held} connections held, RSS {r.rss_before_kb / 1024:.1f} -> "
                f"{r.rss_after_kb / 1024:.1f} MB = {r.kb_per_connection:.1f} kB per connection",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
