"""Benchmark: CPU per call of the router's sans-IO core, no sockets (a steady figure to iterate on).

Socket benchmarks on a shared 2-core machine move by 2x with the neighbours' load; this one
replays the dispatcher call flow of :mod:`bench.bench_dispatch` through one
:class:`router.app.RouterCore` built from the same TOML, in one process, with an explicit clock:

    UAC INVITE -> (100 back, INVITE to a UAS) ; UAS 180, 200 -> forwarded to the UAC ;
    UAC ACK, BYE (Route: the Record-Route learned) -> forwarded ; UAS 200 (BYE) -> forwarded.

``now`` advances by 1/rate per call and timers fire when due, so the transaction tables and
timer heaps hold what they hold at that rate (INVITE server transactions live 32 s). Only the
time spent inside the core (``receive_untrusted``, ``drain_outgoing``, ``handle_timers``) is
counted; building the UAS's answers is not. Prints microseconds of CPU per call (process time),
the best of ``--repeat`` runs, and optionally a cProfile of one run.

Run: ``python -m bench.bench_core [--calls 20000] [--rate 2000] [--repeat 3] [--profile 25]``
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.bench_dispatch import reference_argv
from router.app import RouterCore
from router.server import load_router_config
from router.transport.base import Inbound, Outgoing
from router.transport.driver import ROUTER_GC_THRESHOLD, tune_gc_for_serving

UAC = ("127.77.0.1", 5060)
ROUTER = ("127.77.0.10", 5060)
SDP = (
    b"v=0\r\no=bench 1 1 IN IP4 127.77.0.1\r\ns=-\r\nc=IN IP4 127.77.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _headers(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name.strip().lower(), value.strip()))
    return lines[0], fields


def _get(fields: list[tuple[str, str]], *names: str) -> list[str]:
    return [v for n, v in fields if n in names]


def invite(n: int) -> bytes:
    return (
        f"INVITE sip:service@127.77.0.10:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.77.0.1:5060;branch=z9hG4bK-b-{n}-0\r\n"
        f"From: <sip:sipp@127.77.0.1:5060>;tag=bT{n}\r\n"
        f"To: <sip:service@127.77.0.10:5060>\r\n"
        f"Call-ID: {n}-bench@127.77.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:sipp@127.77.0.1:5060;transport=UDP>\r\n"
        f"Max-Forwards: 70\r\nSubject: siplab\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


def uas_response(request: bytes, status: str, uas: tuple[str, int], body: bytes = b"") -> bytes:
    _, fields = _headers(request)
    lines = [f"SIP/2.0 {status}"]
    lines += [f"Via: {v}" for v in _get(fields, "via", "v")]
    lines += [f"Record-Route: {v}" for v in _get(fields, "record-route")]
    lines.append(f"From: {_get(fields, 'from', 'f')[0]}")
    to = _get(fields, "to", "t")[0]
    lines.append(f"To: {to}" if ";tag=" in to else f"To: {to};tag=uas")
    lines.append(f"Call-ID: {_get(fields, 'call-id', 'i')[0]}")
    lines.append(f"CSeq: {_get(fields, 'cseq')[0]}")
    lines.append(f"Contact: <sip:pbx@{uas[0]}:{uas[1]};transport=UDP>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def in_dialog(method: str, seq: int, n: int, ok: bytes) -> bytes:
    _, fields = _headers(ok)
    routes = _get(fields, "record-route")
    contact = _get(fields, "contact", "m")[0].strip("<>").split(";")[0]
    lines = [f"{method} {contact} SIP/2.0"]
    lines.append(f"Via: SIP/2.0/UDP 127.77.0.1:5060;branch=z9hG4bK-b-{n}-{seq}")
    lines.append(f"From: {_get(fields, 'from', 'f')[0]}")
    lines.append(f"To: {_get(fields, 'to', 't')[0]}")
    lines.append(f"Call-ID: {_get(fields, 'call-id', 'i')[0]}")
    lines.append(f"CSeq: {seq} {method}")
    lines += [f"Route: {r}" for r in reversed(routes)]
    lines += ["Max-Forwards: 70", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Replay:
    """Drives one core through ``calls`` calls; ``busy`` is the process time spent in it."""

    def __init__(self, config: Path) -> None:
        self.core = RouterCore(load_router_config(str(config)), now=0.0)
        self.busy = 0.0
        self.now = 0.0
        self.inbound: dict[tuple[str, int], Inbound] = {}
        self.sent = 0
        self.calls = 0

    def _in(self, data: bytes, source: tuple[str, int]) -> list[Outgoing]:
        inbound = self.inbound.get(source)
        if inbound is None:
            inbound = self.inbound[source] = Inbound("udp", source, ROUTER)
        clock = time.process_time
        t0 = clock()
        core = self.core
        core.receive_untrusted(data, inbound, now=self.now)
        deadline = core.next_deadline()
        if deadline is not None and deadline <= self.now:
            core.handle_timers(now=self.now)
        out = core.drain_outgoing()
        self.busy += clock() - t0
        self.sent += len(out)
        return out

    def call(self, n: int) -> None:
        out = self._in(invite(n), UAC)
        fwd = next(o for o in out if o.dest != UAC)
        uas = fwd.dest
        self._in(uas_response(fwd.data, "180 Ringing", uas), uas)
        ok = self._in(uas_response(fwd.data, "200 OK", uas, SDP), uas)
        if not ok:
            raise RuntimeError("the 200 OK was not forwarded: the replay is broken")
        self._in(in_dialog("ACK", 1, n, ok[0].data), UAC)
        bye = self._in(in_dialog("BYE", 2, n, ok[0].data), UAC)
        self._in(uas_response(bye[0].data, "200 OK", uas), uas)

    def run(self, calls: int, rate: float) -> float:
        for n in range(self.calls, self.calls + calls):
            self.now += 1.0 / rate
            self.call(n)
        self.calls += calls
        return self.busy


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    args = parser.parse_args(argv)
    tune_gc_for_serving(ROUTER_GC_THRESHOLD)  # as `siplab router` does
    folder = Path(tempfile.mkdtemp(prefix="bench_core_"))
    config = Path(reference_argv(folder)[-1])
    figures = []
    for _ in range(max(1, args.repeat)):
        gc.collect()
        replay = Replay(config)
        busy = replay.run(args.calls, args.rate)
        figures.append(busy / args.calls * 1e6)
        print(
            f"  {busy / args.calls * 1e6:7.1f} us CPU per call "
            f"({args.calls} calls at {args.rate:.0f}/s simulated, {replay.sent} messages out)",
            flush=True,
        )
    print(f"best {min(figures):.1f} us per call")
    if args.profile:
        replay = Replay(config)
        prof = cProfile.Profile()
        prof.enable()
        replay.run(args.calls, args.rate)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
