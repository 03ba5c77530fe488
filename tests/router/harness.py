"""A RouterCore with no sockets: feed messages, read what it would send (explicit time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router.app import RouterCore
from router.config import router_config_from_dict
from router.sip import Headers, Request, Response, new_branch, parse_untrusted, serialize
from router.transport.base import Inbound

ROUTER = ("127.0.0.10", 5060)
UAC = ("127.0.0.2", 5070)
PBX = [("127.0.0.11", 5060), ("127.0.0.12", 5060), ("127.0.0.13", 5060)]


@dataclass
class Sent:
    message: Request | Response
    dest: tuple[str, int]


@dataclass
class RouterHarness:
    core: RouterCore
    now: float = 1000.0
    sent: list[Sent] = field(default_factory=list)

    @classmethod
    def build(
        cls, *, algorithm: int | str = 4, nodes: int = 2, probing: float = 0.0, **timers: float
    ) -> RouterHarness:
        cfg: dict[str, Any] = {
            "router": {"listen": [f"udp:{ROUTER[0]}:{ROUTER[1]}"]},
            "timers": {"t1": 0.5, "fr_timer": 2.0, "fr_inv_timer": 40.0, **timers},
            "dispatcher": {
                "algorithm": algorithm,
                "destinations": [
                    {"uri": f"sip:{h}:{p}", "attrs": f"duid=pbx{i + 1}"}
                    for i, (h, p) in enumerate(PBX[:nodes])
                ],
                "probing": {"interval": probing, "timeout": 1.0},
            },
        }
        return cls(RouterCore(router_config_from_dict(cfg)))

    def feed(
        self, message: Request | Response | bytes, source: tuple[str, int] = UAC
    ) -> list[Sent]:
        data = message if isinstance(message, bytes) else serialize(message)
        self.core.receive_untrusted(data, Inbound("udp", source, ROUTER), now=self.now)
        return self.collect()

    def advance(self, seconds: float) -> list[Sent]:
        target = self.now + seconds
        while True:
            deadline = self.core.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.core.handle_timers(now=self.now)
        self.now = target
        self.core.handle_timers(now=self.now)
        return self.collect()

    def collect(self) -> list[Sent]:
        out = [Sent(parse_untrusted(o.data), o.dest) for o in self.core.drain_outgoing()]
        self.sent.extend(out)
        return out


def invite(
    call: str = "c1",
    *,
    to_tag: str | None = None,
    route: str | None = None,
    max_forwards: int | None = 70,
    uri: str = "sip:600@127.0.0.10:5060",
    method: str = "INVITE",
    cseq: int = 1,
    branch: str | None = None,
) -> Request:
    headers = [
        ("Via", f"SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch={branch or new_branch()};rport"),
        ("From", "<sip:caller@127.0.0.2>;tag=from1"),
        ("To", f"<sip:600@127.0.0.10>{';tag=' + to_tag if to_tag else ''}"),
        ("Call-ID", call),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:caller@{UAC[0]}:{UAC[1]}>"),
    ]
    if max_forwards is not None:
        headers.append(("Max-Forwards", str(max_forwards)))
    if route:
        headers.insert(1, ("Route", route))
    return Request(method, uri, Headers(headers))


def answer(
    request: Request, status: int, *, to_tag: str = "uas1", record_route: bool = True
) -> Response:
    """What a UAS at the far end answers to the request the router forwarded."""
    headers = [("Via", v) for v in request.headers.values("via")]
    if record_route:
        headers += [("Record-Route", v) for v in request.headers.values("record-route")]
    to = request.headers.get("to") or ""
    if status > 100 and ";tag=" not in to:
        to += f";tag={to_tag}"
    headers += [
        ("From", request.headers.get("from") or ""),
        ("To", to),
        ("Call-ID", request.call_id),
        ("CSeq", request.headers.get("cseq") or ""),
    ]
    if status < 300 and status > 100:
        headers.append(("Contact", "<sip:600@127.0.0.11:5060>"))
    return Response(status, "X", Headers(headers))
