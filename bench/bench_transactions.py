"""Benchmark: transaction-layer round trips per second, two layers in one process.

A client `TransactionLayer` and a server `TransactionLayer` exchange pre-parsed messages (no
parsing, no serializing, no sockets): only matching, state machines, timers and events are
measured. Scenarios, one round trip each:

* ``non-INVITE``: OPTIONS -> 200 (client + server transactions, then Timers K and J);
* ``INVITE 2xx``: INVITE -> 200 -> ACK for 2xx (Accepted states, Timers L and M);
* ``INVITE 486``: INVITE -> 486 -> transaction-generated ACK (Completed/Confirmed, D, H, I).

Every batch ends by advancing time past every timer, so the cost of arming, skipping and
firing timers (and of forgetting transactions) is included.

The floor, measured in the same run on the same messages, is the least any stateful element
must do per message: one dict lookup on (branch, method) and one list append. The ratio
layer/floor is the figure to watch; absolute numbers move from machine to machine.

Run: ``python bench/bench_transactions.py [--calls 20000] [--repeat 3]``. Numbers only.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.sip.headers import CSeq, NameAddr, Via
from router.sip.message import Headers, Request, Response, make_response, new_branch
from router.sip.transaction import RequestReceived, ServerTransaction, TransactionLayer
from router.sip.uri import SipUri

CLIENT = ("192.0.2.1", 5060)
SERVER = ("192.0.2.2", 5060)


def _request(method: str, branch: str, n: int, *, to_tag: str | None = None) -> Request:
    via = Via("UDP", CLIENT[0], CLIENT[1], (("branch", branch),))
    to = NameAddr(None, SipUri(user="bob", host="example.com"))
    if to_tag is not None:
        to = to.with_tag(to_tag)
    fields = [
        ("Via", str(via)),
        ("Max-Forwards", "70"),
        ("From", str(NameAddr(None, SipUri(user="alice", host="example.com")).with_tag("f"))),
        ("To", str(to)),
        ("Call-ID", f"bench-{n}@192.0.2.1"),
        ("CSeq", str(CSeq(1, method))),
    ]
    return Request(method, "sip:bob@example.com", Headers(fields))


def _preparse(message: Request | Response) -> None:
    """Touch the accessors the layer reads, so their parse is cached (pre-parsed input)."""
    _ = message.top_via.sent_by(), message.cseq
    if isinstance(message, Request):
        _ = message.call_id, message.from_


@dataclass(frozen=True, slots=True)
class Exchange:
    """The pre-built messages of one round trip."""

    request: Request
    response: Response
    ack: Request | None


def build(scenario: str, count: int) -> list[Exchange]:
    out = []
    for n in range(count):
        if scenario == "non-INVITE":
            req = _request("OPTIONS", new_branch(), n)
            exchange = Exchange(req, make_response(req, 200, to_tag="t"), None)
        else:
            req = _request("INVITE", new_branch(), n)
            status = 200 if scenario == "INVITE 2xx" else 486
            ack = _request("ACK", new_branch(), n, to_tag="t") if status == 200 else None
            exchange = Exchange(req, make_response(req, status, to_tag="t"), ack)
        for message in (exchange.request, exchange.response, exchange.ack):
            if message is not None:
                _preparse(message)
        out.append(exchange)
    return out


def run_layers(exchanges: list[Exchange]) -> float:
    """Seconds for every round trip through two layers, timers included."""
    client, server = TransactionLayer(), TransactionLayer()
    now = 0.0
    start = time.perf_counter()
    for i, ex in enumerate(exchanges):
        client.start_client(ex.request, SERVER, now=now)
        client.drain_events()
        server.receive_request(ex.request, CLIENT, now=now)
        event = server.drain_events()[0]
        assert isinstance(event, RequestReceived)
        tx = event.transaction
        assert isinstance(tx, ServerTransaction)
        server.respond(tx, ex.response, now=now)
        server.drain_events()
        client.receive_response(ex.response, SERVER, now=now)
        for out in client.drain_events():
            # INVITE 486: the client transaction's own ACK goes to the server transaction.
            if isinstance(getattr(out, "message", None), Request):
                server.receive_request(out.message, CLIENT, now=now)  # type: ignore[union-attr]
        if ex.ack is not None:
            server.receive_request(ex.ack, CLIENT, now=now)
        server.drain_events()
        if i % 1000 == 999:
            now += 0.001
            client.handle_timers(now=now)
            server.handle_timers(now=now)
    now += 1000.0
    client.handle_timers(now=now)
    server.handle_timers(now=now)
    client.drain_events()
    server.drain_events()
    elapsed = time.perf_counter() - start
    assert client.next_deadline() is None
    assert server.next_deadline() is None
    stats = client.statistics(), server.statistics()
    assert all(s.client_invite + s.client_non_invite == 0 for s in stats)
    assert all(s.server_invite + s.server_non_invite == 0 for s in stats)
    return elapsed


def run_floor(exchanges: list[Exchange]) -> float:
    """Seconds for the same messages through one dict lookup + one append each."""
    table: dict[tuple[str | None, str], int] = {}
    sink: list[object] = []
    start = time.perf_counter()
    for i, ex in enumerate(exchanges):
        for message in (ex.request, ex.request, ex.response, ex.response, ex.ack):
            if message is None:
                continue
            key = (message.top_via.branch, message.cseq.method)
            if table.get(key) is None:
                table[key] = i
            sink.append(message)
    return time.perf_counter() - start


def best_of(repeat: int, fn: Callable[[list[Exchange]], float], ex: list[Exchange]) -> float:
    return min(fn(ex) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="round trips per scenario")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    args = parser.parse_args()
    print(f"transaction layer, {args.calls} round trips per scenario, best of {args.repeat}")
    header = f"{'scenario':<12} {'layer rt/s':>12} {'us/rt':>8} {'floor rt/s':>12} {'us/rt':>8}"
    print(header + f" {'ratio':>6}")
    for scenario in ("non-INVITE", "INVITE 2xx", "INVITE 486"):
        exchanges = build(scenario, args.calls)
        # The pre-built messages are input, not the layer's garbage: keep them out of the
        # collector's way (a long-running router would gc.freeze() after startup too).
        gc.collect()
        gc.freeze()
        layer = best_of(args.repeat, run_layers, exchanges)
        floor = best_of(args.repeat, run_floor, exchanges)
        n = args.calls
        print(
            f"{scenario:<12} {n / layer:>12,.0f} {layer / n * 1e6:>8.1f}"
            f" {n / floor:>12,.0f} {floor / n * 1e6:>8.1f} {layer / floor:>6.1f}"
        )
        del exchanges
        gc.unfreeze()


if __name__ == "__main__":
    main()
