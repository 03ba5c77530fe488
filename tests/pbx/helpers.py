"""Test helpers for the emulator: a provisioned realtime DB and a tiny raw-UDP SIP peer.

Messages are built with the project's own typed constructors (``router.sip``), never from text
templates (STYLE §2.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from lab.pbx.store import PbxStore
from router.sip import (
    Headers,
    Request,
    Response,
    answer_challenge,
    new_branch,
    new_call_id,
    new_tag,
    parse_challenge,
    parse_untrusted,
    serialize,
)

ROUTER_IP = "127.0.0.41"
PHONE_IP = "127.0.0.42"
PBX1_IP = "127.0.0.40"
PBX2_IP = "127.0.0.43"
PASSWORDS = {"101": "secret101", "102": "secret102"}


def provision(store: PbxStore, *, strategy: str = "ringall", ringinuse: str = "no") -> None:
    """Rows a lab would write: the router trunk endpoint, users 101/102, queue1."""
    db = store.db
    store.create_schema()
    with db.transaction():
        db.execute(
            "INSERT INTO ps_endpoints (id, aors, context, identify_by) VALUES (?, ?, ?, ?)",
            ("router", "101,102", "default", "ip,username"),
        )
        db.execute(
            'INSERT INTO ps_endpoint_id_ips (id, endpoint, "match") VALUES (?, ?, ?)',
            ("router-ip", "router", ROUTER_IP),
        )
        for user, password in PASSWORDS.items():
            db.execute(
                "INSERT INTO ps_endpoints (id, aors, auth, context) VALUES (?, ?, ?, ?)",
                (user, user, user, "default"),
            )
            db.execute(
                "INSERT INTO ps_auths (id, auth_type, username, password) VALUES (?, ?, ?, ?)",
                (user, "userpass", user, password),
            )
            db.execute(
                "INSERT INTO ps_aors (id, max_contacts, remove_existing, support_path) "
                "VALUES (?, ?, ?, ?)",
                (user, 1, "yes", "yes"),
            )
        db.execute(
            "INSERT INTO queues (name, strategy, timeout, retry, ringinuse) VALUES (?, ?, ?, ?, ?)",
            ("queue1", strategy, 15, 5, ringinuse),
        )
        for uid, user in enumerate(PASSWORDS, start=1):
            db.execute(
                "INSERT INTO queue_members (queue_name, interface, uniqueid, penalty, paused) "
                "VALUES (?, ?, ?, 0, 0)",
                ("queue1", f"PJSIP/{user}", uid),
            )


@dataclass
class Received:
    message: Request | Response
    source: tuple[str, int]
    at: float


@dataclass
class Peer:
    """A raw UDP SIP endpoint on one loopback address."""

    sock: trio.socket.SocketType
    addr: tuple[str, int]
    cseq: int = 1
    inbox: list[Received] = field(default_factory=list)

    @classmethod
    async def open(cls, ip: str) -> Peer:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await sock.bind((ip, 0))
        return cls(sock, sock.getsockname()[:2])

    def close(self) -> None:
        self.sock.close()

    async def send(self, message: Request | Response, dest: tuple[str, int]) -> None:
        await self.sock.sendto(serialize(message), dest)

    async def recv(self, within: float = 2.0) -> Received:
        with trio.fail_after(within):
            data, source = await self.sock.recvfrom(65535)
        got = Received(parse_untrusted(data), source[:2], trio.current_time())
        self.inbox.append(got)
        return got

    async def recv_response(self, within: float = 2.0) -> Response:
        while True:
            got = await self.recv(within)
            if isinstance(got.message, Response):
                return got.message

    async def recv_request(self, method: str | None = None, within: float = 2.0) -> Received:
        while True:
            got = await self.recv(within)
            if isinstance(got.message, Request) and (
                method is None or got.message.method == method
            ):
                return got

    async def silent(self, seconds: float) -> bool:
        """True when nothing arrives for ``seconds``."""
        with trio.move_on_after(seconds):
            await self.recv(seconds + 1)
            return False
        return True

    def request(
        self,
        method: str,
        uri: str,
        *,
        from_user: str = "caller",
        to_user: str | None = None,
        to_host: str | None = None,
        call_id: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        to_tag: str | None = None,
        from_tag: str | None = None,
        cseq: int | None = None,
    ) -> Request:
        host, port = self.addr
        self.cseq += 1
        to_uri = f"sip:{to_user}@{to_host or host}" if to_user else uri
        to = f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
        fields = [
            ("Via", f"SIP/2.0/UDP {host}:{port};rport;branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{from_user}@{host}>;tag={from_tag or new_tag()}"),
            ("To", to),
            ("Call-ID", call_id or new_call_id(host)),
            ("CSeq", f"{cseq or self.cseq} {method}"),
            *headers,
        ]
        if not any(name.lower() == "contact" for name, _ in headers):
            fields.append(("Contact", f"<sip:{from_user}@{host}:{port}>"))
        return Request(method, uri, Headers(fields), body)

    def ack_for(self, invite: Request, response: Response) -> Request:
        """The 2xx ACK (new branch, To with tag, request to the 2xx Contact)."""
        host, port = self.addr
        target = str(response.contacts[0].uri)
        fields = [
            ("Via", f"SIP/2.0/UDP {host}:{port};rport;branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""),
            ("To", response.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} ACK"),
        ]
        return Request("ACK", target, Headers(fields))

    def in_dialog(self, method: str, invite: Request, response: Response) -> Request:
        host, port = self.addr
        self.cseq += 1
        fields = [
            ("Via", f"SIP/2.0/UDP {host}:{port};rport;branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""),
            ("To", response.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq + 100} {method}"),
        ]
        return Request(method, str(response.contacts[0].uri), Headers(fields))

    def answer(self, request: Request, status: int, *, to_tag: str, body: bytes = b"") -> Response:
        """A UAS response to a request the emulator sent us."""
        from router.sip import make_response

        host, port = self.addr
        headers = [("Contact", f"<sip:phone@{host}:{port}>")] if status < 300 else []
        return make_response(request, status, to_tag=to_tag, headers=headers, body=body)


def authorize(request: Request, challenge_value: str, user: str, password: str) -> Request:
    """A copy of ``request`` with an Authorization answering the challenge (new branch)."""
    creds = answer_challenge(
        parse_challenge(challenge_value), request.method, request.uri, user, password
    )
    again = request.copy()
    again.headers.set("Authorization", str(creds))
    via = again.headers.values("Via")[0]
    head, _, _ = via.partition(";branch=")
    again.headers.set("Via", f"{head};branch={new_branch()}")
    cseq = again.cseq
    again.headers.set("CSeq", f"{cseq.seq + 1} {cseq.method}")
    return again
