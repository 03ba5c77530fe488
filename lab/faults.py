"""A SIP-aware UDP fault relay: put it on a link, tell it what to break.

Theory of operation. A link ``A-B`` (``ua-router``, ``router-pbx1``) gets a relay address; A is
configured to talk to the relay instead of B. The relay forwards every datagram from a client
(A side) to B from an *upstream socket* of its own, one per client address, and sends what comes
back on that socket to the client from the relay's listening socket. It rewrites nothing: Via,
Contact and Record-Route still name the real endpoints, so only the traffic A sends to B's
address (requests, and responses to B's requests) crosses the relay; what B sends straight to a
Via or Contact address does not.

Two details make this work without rewriting:

- RFC 3261 §18.2.2: a server sends a response "to the address indicated by the 'received'
  parameter" with the port of the sent-by (or RFC 3581 ``rport``: the source port). B sees the
  relay as the source, so its responses come to the relay's IP: to the upstream socket when the
  client asked for ``rport``, otherwise to the sent-by port. The relay therefore binds each
  upstream socket to the client's own port on the relay IP when it can, and routes responses
  that arrive on the listening socket by their top Via branch (remembered when the request went
  up) or, failing that, to the Via sent-by.
- Retransmissions are just more datagrams: a dropped ACK or 200 is retransmitted by the endpoint
  and the rule decides again (``count`` bounds how many times a rule fires).

Rules (:class:`FaultRule`) match on direction (``a2b`` towards B, ``b2a`` back), method (the
CSeq method for responses), status, Call-ID, a probability and a count, and act: ``drop``,
``delay`` (ms), ``duplicate`` (send twice) or ``reorder`` (hold the message until the next one in
the same direction has been sent, at most ``hold_ms``). The first matching rule that fires wins.
Randomness comes from ``random.Random(seed)`` so a run is reproducible. Every decision, ``pass``
included, is an event (``event: "fault"``) with the message text, so ladders and the pcap show
what the relay did.

Control: the rules live in a JSON file the relay re-reads whenever it changes (checked on every
datagram: a ``stat`` is far cheaper than a SIP parse). ``siplab lab fault add|clear`` writes it
atomically. Counters survive a reload because rules carry ids.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from router.configfile import ConfigError, FieldError, load_file
from router.observe import EventLog
from router.sip import Request, SipError, parse_untrusted

Address = tuple[str, int]
Direction = Literal["a2b", "b2a"]
Action = Literal["drop", "delay", "duplicate", "reorder"]


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One thing to break. Empty matchers match everything."""

    action: Action
    id: str = ""
    """Stable id (counters survive a rules-file reload); generated when empty."""
    direction: Literal["a2b", "b2a", "any"] = "any"
    method: str = ""
    """Request method, or the CSeq method of a response (``ACK``, ``INVITE``)."""
    status: int = 0
    """Response status to match (0 = any message; set = responses only)."""
    call_id: str = ""
    prob: float = 1.0
    count: int = 0
    """Fire at most this many times (0 = unlimited)."""
    delay_ms: float = 0.0
    """For ``delay``: how long to hold each message."""
    hold_ms: float = 500.0
    """For ``reorder``: the longest a message waits for a successor."""

    def __post_init__(self) -> None:
        if self.action not in ("drop", "delay", "duplicate", "reorder"):
            raise FieldError("action", f"unknown action {self.action!r}")
        if not 0.0 <= self.prob <= 1.0:
            raise FieldError("prob", "must be between 0 and 1")
        if self.count < 0 or self.delay_ms < 0 or self.hold_ms < 0:
            raise FieldError("count", "count, delay_ms and hold_ms must be >= 0")
        if not self.id:
            object.__setattr__(self, "id", secrets.token_hex(4))

    def matches(self, info: MessageInfo, direction: Direction) -> bool:
        if self.direction != "any" and self.direction != direction:
            return False
        if self.method and self.method.upper() != (info.method or "").upper():
            return False
        if self.status and self.status != info.status:
            return False
        return not self.call_id or self.call_id == info.call_id


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What the rules can see of a datagram."""

    method: str | None
    status: int | None
    call_id: str | None
    branch: str | None
    via_sent_by: Address | None
    is_request: bool


def inspect_untrusted(data: bytes) -> MessageInfo:
    """Classify a datagram; anything unparsable is an unmatched, unknown message."""
    try:
        msg = parse_untrusted(data)
    except SipError:
        return MessageInfo(None, None, None, None, None, False)
    is_request = isinstance(msg, Request)
    try:
        method = msg.method if isinstance(msg, Request) else msg.cseq.method
        call_id: str | None = msg.call_id
        via = msg.top_via
        branch, sent_by = via.branch, via.sent_by()
    except (SipError, IndexError):
        return MessageInfo(
            msg.method if isinstance(msg, Request) else None, None, None, None, None, is_request
        )
    status = None if isinstance(msg, Request) else msg.status
    return MessageInfo(method, status, call_id, branch, sent_by, is_request)


@dataclass(frozen=True, slots=True)
class Emit:
    """A datagram the driver must send ``delay`` seconds from now."""

    data: bytes
    direction: Direction
    delay: float = 0.0
    held_since: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["pass", "drop", "delay", "duplicate", "hold"]
    rule: str | None
    info: MessageInfo
    emits: tuple[Emit, ...]


@dataclass(frozen=True, slots=True)
class FaultStatistics:
    passed: int
    dropped: int
    delayed: int
    duplicated: int
    reordered: int
    hits: dict[str, int]


class FaultEngine:
    """The sans-IO heart of the relay: datagram in, sends out; no sockets, ``now`` passed in."""

    def __init__(self, rules: list[FaultRule] | None = None, *, seed: int = 0) -> None:
        self.rules: list[FaultRule] = list(rules or [])
        self.rng = random.Random(seed)
        self.hits: dict[str, int] = {}
        self._held: dict[Direction, tuple[Emit, float]] = {}
        self._counts = {"pass": 0, "drop": 0, "delay": 0, "duplicate": 0, "reorder": 0}

    def set_rules(self, rules: list[FaultRule]) -> None:
        self.rules = list(rules)
        self.hits = {r.id: self.hits.get(r.id, 0) for r in rules}

    def _fire(self, info: MessageInfo, direction: Direction) -> FaultRule | None:
        for rule in self.rules:
            if not rule.matches(info, direction):
                continue
            if rule.count and self.hits.get(rule.id, 0) >= rule.count:
                continue
            # Draw only for probabilistic rules so adding a prob=1 rule does not shift the
            # sequence the seeded ones see.
            if rule.prob < 1.0 and self.rng.random() >= rule.prob:
                continue
            self.hits[rule.id] = self.hits.get(rule.id, 0) + 1
            return rule
        return None

    def decide(
        self, data: bytes, direction: Direction, *, now: float
    ) -> tuple[Decision, list[Emit]]:
        """Apply the rules to one datagram.

        Returns:
            The decision (for the event log) and every datagram to send now or later, including
            a held message released because this one overtook it.
        """
        info = inspect_untrusted(data)
        rule = self._fire(info, direction)
        emits: list[Emit] = []
        if rule is None:
            decision = Decision("pass", None, info, (Emit(data, direction),))
        elif rule.action == "drop":
            decision = Decision("drop", rule.id, info, ())
        elif rule.action == "delay":
            decision = Decision(
                "delay", rule.id, info, (Emit(data, direction, rule.delay_ms / 1000),)
            )
        elif rule.action == "duplicate":
            decision = Decision(
                "duplicate", rule.id, info, (Emit(data, direction), Emit(data, direction))
            )
        else:
            released = self._held.pop(direction, None)
            if released is not None:
                emits.append(released[0])
            self._held[direction] = (Emit(data, direction, 0.0, now), now + rule.hold_ms / 1000)
            decision = Decision("hold", rule.id, info, ())
        if decision.action != "hold":
            self._counts[decision.action] += 1
        emits[:0] = decision.emits
        if decision.action != "hold":
            held = self._held.pop(direction, None)
            if held is not None:
                # The held message goes out right after the one that overtook it.
                emits.append(held[0])
                self._counts["reorder"] += 1
        return decision, emits

    def next_deadline(self) -> float | None:
        return min((deadline for _, deadline in self._held.values()), default=None)

    def handle_timers(self, *, now: float) -> list[Emit]:
        """Release held messages whose hold time is over (nothing overtook them)."""
        out = []
        for direction, (emit, deadline) in list(self._held.items()):
            if deadline <= now:
                del self._held[direction]
                out.append(emit)
        return out

    def statistics(self) -> FaultStatistics:
        c = self._counts
        return FaultStatistics(
            c["pass"], c["drop"], c["delay"], c["duplicate"], c["reorder"], dict(self.hits)
        )


# -- the rules file (control channel) ------------------------------------------------------


def read_rules(path: str | Path) -> list[FaultRule]:
    """Rules in ``path`` (``{"rules": [...]}``); a missing file means no rules.

    Raises:
        ConfigError: the file is not valid JSON or a rule is invalid (names the rule index).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), "", f"cannot read rules: {exc}") from None
    from router.configfile import load_section

    items = data.get("rules", []) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(str(path), "rules", "expected a list")
    return [
        load_section(item, FaultRule, file=str(path), prefix=f"rules[{i}]")
        for i, item in enumerate(items)
    ]


def write_rules(path: str | Path, rules: list[FaultRule]) -> None:
    """Atomically replace the rules file (the relay sees a new inode and reloads)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps({"rules": [asdict(r) for r in rules]}, indent=2) + "\n", encoding="utf-8"
    )
    tmp.replace(target)


def add_rule(path: str | Path, rule: FaultRule) -> FaultRule:
    write_rules(path, [*read_rules(path), rule])
    return rule


def clear_rules(path: str | Path) -> None:
    write_rules(path, [])


class _RulesWatcher:
    def __init__(
        self, path: str | None, engine: FaultEngine, on_error: Callable[[str], None]
    ) -> None:
        self.path = path
        self.engine = engine
        self.on_error = on_error
        self._stamp: tuple[int, int, int] | None = None

    def poll(self) -> None:
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.engine.set_rules(read_rules(self.path))
        except ConfigError as exc:
            self.on_error(str(exc))


# -- the trio driver -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """One relay process (``python -m lab.faults --config relay.toml``)."""

    listen: str
    """``IP:PORT`` clients send to."""
    upstream: str
    """``IP:PORT`` of the real node (B)."""
    name: str = "relay"
    link: str = ""
    rules: str = ""
    """JSON rules file to watch (empty: no runtime control)."""
    events: str = ""
    seed: int = 0
    initial_rules: list[FaultRule] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("listen", "upstream"):
            host, _, port = getattr(self, name).rpartition(":")
            if not host or not port.isdigit():
                raise FieldError(name, f"expected IP:PORT, got {getattr(self, name)!r}")

    def address(self, name: str) -> Address:
        host, _, port = getattr(self, name).rpartition(":")
        return host, int(port)


@dataclass
class RunningRelay:
    address: Address
    engine: FaultEngine
    cancel_scope: trio.CancelScope


async def serve_relay(
    config: RelayConfig, *, task_status: trio.TaskStatus[RunningRelay] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the relay until cancelled; ``task_status.started(RunningRelay)`` once bound."""
    listen_addr, upstream = config.address("listen"), config.address("upstream")
    engine = FaultEngine(list(config.initial_rules), seed=config.seed)
    events = EventLog(config.events or None, config.name, raw=True)
    watcher = _RulesWatcher(
        config.rules or None, engine, lambda err: events.event("fault_rules_error", error=err)
    )
    watcher.poll()
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await listener.bind(listen_addr)
    uplinks: dict[Address, trio.socket.SocketType] = {}
    by_branch: dict[str, Address] = {}
    wake = trio.Event()

    def log(
        decision: Decision,
        direction: Direction,
        data: bytes,
        *,
        origin: Address,
        at: Address,
        src: Address,
        dst: Address,
    ) -> None:
        info = decision.info
        events.emit(
            {
                "event": "fault",
                "link": config.link,
                "dir": direction,
                "action": decision.action,
                "rule": decision.rule,
                "method": info.method,
                "status": info.status,
                "call_id": info.call_id,
                "branch": info.branch,
                "from": _fmt(origin),
                "to": _fmt(at),
                "src": _fmt(src),
                "dst": _fmt(dst),
                "copies": len(decision.emits),
                "delay": max((e.delay for e in decision.emits), default=0.0),
                "raw": data.decode("utf-8", "replace"),
            }
        )

    async def send(emit: Emit, sock: trio.socket.SocketType, dst: Address) -> None:
        if emit.delay:
            await trio.sleep(emit.delay)
        try:
            await sock.sendto(emit.data, dst)
        except OSError as exc:
            events.event("fault_send_error", dst=_fmt(dst), error=str(exc))
        if emit.held_since is not None:
            info = inspect_untrusted(emit.data)
            events.emit(
                {
                    "event": "fault",
                    "link": config.link,
                    "dir": emit.direction,
                    "action": "reorder",
                    "method": info.method,
                    "status": info.status,
                    "call_id": info.call_id,
                    "src": _fmt(sock.getsockname()[:2]),
                    "dst": _fmt(dst),
                    "copies": 1,
                    "delay": 0.0,
                    "raw": emit.data.decode("utf-8", "replace"),
                }
            )
        events.flush()

    # Where each datagram of an Emit goes is fixed when it is decided: remember it.
    routes: dict[int, tuple[trio.socket.SocketType, Address]] = {}

    async def dispatch(
        nursery: trio.Nursery,
        data: bytes,
        direction: Direction,
        sock: trio.socket.SocketType,
        dst: Address,
        origin: Address,
        at: Address,
    ) -> None:
        watcher.poll()
        decision, emits = engine.decide(data, direction, now=trio.current_time())
        log(decision, direction, data, origin=origin, at=at, src=sock.getsockname()[:2], dst=dst)
        for emit in emits:
            target = (
                routes.pop(id(emit.data), (sock, dst)) if emit.data is not data else (sock, dst)
            )
            nursery.start_soon(send, emit, *target)
        if decision.action == "hold":
            routes[id(data)] = (sock, dst)
            wake.set()
        events.flush()

    async def uplink_loop(
        nursery: trio.Nursery, client: Address, sock: trio.socket.SocketType
    ) -> None:
        while True:
            data, _ = await sock.recvfrom(65536)
            await dispatch(nursery, data, "b2a", listener, client, upstream, sock.getsockname()[:2])

    async def timers(nursery: trio.Nursery) -> None:
        nonlocal wake
        while True:
            deadline = engine.next_deadline()
            if deadline is None:
                await wake.wait()
                wake = trio.Event()
                continue
            with trio.move_on_at(deadline):
                await wake.wait()
                wake = trio.Event()
                continue
            for emit in engine.handle_timers(now=trio.current_time()):
                target = routes.pop(id(emit.data), None)
                if target is not None:
                    nursery.start_soon(send, emit, *target)

    async def uplink_for(nursery: trio.Nursery, client: Address) -> trio.socket.SocketType:
        sock = uplinks.get(client)
        if sock is None:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                # Same port as the client on the relay IP: a response sent to Via's port with
                # received=<relay IP> (no rport) still reaches this socket (RFC 3261 §18.2.2).
                await sock.bind((listen_addr[0], client[1]))
            except OSError:
                await sock.bind((listen_addr[0], 0))
            uplinks[client] = sock
            nursery.start_soon(uplink_loop, nursery, client, sock)
        return sock

    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(timers, nursery)
                task_status.started(RunningRelay(listener.getsockname()[:2], engine, scope))
                while True:
                    data, src = await listener.recvfrom(65536)
                    src = src[:2]
                    info = inspect_untrusted(data)
                    if src == upstream or (not info.is_request and info.branch in by_branch):
                        # A response B sent to our IP rather than to the upstream socket.
                        client = by_branch.get(info.branch or "") or info.via_sent_by
                        if client is None:
                            events.event("fault_unroutable", peer=_fmt(src))
                            continue
                        await dispatch(nursery, data, "b2a", listener, client, src, listen_addr)
                        continue
                    if info.is_request and info.branch:
                        by_branch[info.branch] = src
                        if len(by_branch) > 100_000:
                            by_branch.pop(next(iter(by_branch)))
                    uplink = await uplink_for(nursery, src)
                    await dispatch(nursery, data, "a2b", uplink, upstream, src, listen_addr)
    finally:
        listener.close()
        for sock in uplinks.values():
            sock.close()
        events.close()


def _fmt(addr: Address | tuple[Any, ...]) -> str:
    return f"{addr[0]}:{addr[1]}"


def load_relay_config(path: str | Path) -> RelayConfig:
    return load_file(path, RelayConfig)


async def _main(config: RelayConfig) -> None:
    async with trio.open_nursery() as nursery:
        running: RunningRelay = await nursery.start(serve_relay, config)
        print(
            f"siplab fault relay {config.name}: {_fmt(running.address)} -> {config.upstream}",
            flush=True,
        )
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.faults", description="SIP-aware UDP fault relay"
    )
    parser.add_argument("--config", required=True, help="relay TOML file")
    args = parser.parse_args(argv)
    try:
        config = load_relay_config(args.config)
    except ConfigError as exc:
        print(f"lab.faults: error: {exc}", file=sys.stderr)
        return 2
    started = time.time()
    try:
        trio.run(_main, config)
    except OSError as exc:
        print(f"lab.faults: error: {config.listen}: {exc}", file=sys.stderr)
        return 1
    print(f"relay {config.name} stopped after {time.time() - started:.1f} s", flush=True)
    return 0


__all__ = [
    "Decision",
    "Emit",
    "FaultEngine",
    "FaultRule",
    "FaultStatistics",
    "MessageInfo",
    "RelayConfig",
    "RunningRelay",
    "add_rule",
    "clear_rules",
    "inspect_untrusted",
    "load_relay_config",
    "read_rules",
    "serve_relay",
    "write_rules",
]

if __name__ == "__main__":
    sys.exit(main())
