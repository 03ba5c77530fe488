"""The fault relay: rules decide exactly (seeded), and the relay drops exactly what it was told,
counted at the sender, the relay's events and the receiver."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import trio

from lab.faults import (
    FaultEngine,
    FaultRule,
    RelayConfig,
    add_rule,
    clear_rules,
    inspect_untrusted,
    read_rules,
    serve_relay,
    write_rules,
)
from router.configfile import ConfigError
from router.sip import Headers, Request, make_response, parse_untrusted, serialize

CLIENT = ("127.79.0.10", 5060)
RELAY = ("127.79.0.100", 5060)
SERVER = ("127.79.0.11", 5060)


def request(method: str, call_id: str, cseq: int = 1, branch: str = "z9hG4bKx") -> bytes:
    host, port = CLIENT
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={branch}-{call_id}-{method}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:ua@{host}>;tag=a1"),
            ("To", f"<sip:pbx@{SERVER[0]}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
    )
    return serialize(Request(method, f"sip:pbx@{SERVER[0]}", headers))


def response(data: bytes, status: int) -> bytes:
    req = parse_untrusted(data)
    assert isinstance(req, Request)
    return serialize(make_response(req, status, to_tag="b2"))


# -- the engine (sans-IO) -----------------------------------------------------------------


def test_engine_drops_exactly_count_matching_messages() -> None:
    engine = FaultEngine([FaultRule("drop", method="ACK", count=2)])
    actions = []
    for i in range(5):
        for method in ("INVITE", "ACK"):
            decision, emits = engine.decide(request(method, f"c{i}"), "a2b", now=0.0)
            actions.append((method, decision.action, len(emits)))
    assert actions.count(("ACK", "drop", 0)) == 2
    assert actions.count(("ACK", "pass", 1)) == 3
    assert actions.count(("INVITE", "pass", 1)) == 5
    assert engine.statistics().dropped == 2


def test_engine_matches_status_direction_and_call_id() -> None:
    rule = FaultRule("drop", status=200, direction="b2a", call_id="c1")
    engine = FaultEngine([rule])
    ok = response(request("INVITE", "c1"), 200)
    other = response(request("INVITE", "c2"), 200)
    ringing = response(request("INVITE", "c1"), 180)
    assert engine.decide(ok, "a2b", now=0)[0].action == "pass"  # wrong direction
    assert engine.decide(other, "b2a", now=0)[0].action == "pass"  # other call
    assert engine.decide(ringing, "b2a", now=0)[0].action == "pass"  # other status
    assert engine.decide(ok, "b2a", now=0)[0].action == "drop"
    assert inspect_untrusted(ok).method == "INVITE"  # responses match by CSeq method


def test_engine_probability_is_seeded() -> None:
    def run(seed: int) -> list[str]:
        engine = FaultEngine([FaultRule("drop", prob=0.3)], seed=seed)
        return [
            engine.decide(request("OPTIONS", f"c{i}"), "a2b", now=0)[0].action for i in range(200)
        ]

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert 30 < run(7).count("drop") < 90


def test_engine_duplicate_delay_and_reorder() -> None:
    engine = FaultEngine(
        [FaultRule("duplicate", method="INVITE"), FaultRule("delay", method="BYE", delay_ms=250)]
    )
    _, emits = engine.decide(request("INVITE", "c"), "a2b", now=0)
    assert len(emits) == 2
    _, emits = engine.decide(request("BYE", "c"), "a2b", now=0)
    assert [e.delay for e in emits] == [0.25]

    engine = FaultEngine([FaultRule("reorder", method="INVITE", count=1, hold_ms=100)])
    first, second = request("INVITE", "c"), request("ACK", "c")
    decision, emits = engine.decide(first, "a2b", now=1.0)
    assert (decision.action, emits) == ("hold", [])
    assert engine.next_deadline() == pytest.approx(1.1)
    _, emits = engine.decide(second, "a2b", now=1.01)
    assert [e.data for e in emits] == [second, first]  # overtaken
    # A held message nobody overtakes leaves when its hold time is over.
    engine = FaultEngine([FaultRule("reorder", count=1, hold_ms=100)])
    engine.decide(first, "a2b", now=0.0)
    assert engine.handle_timers(now=0.05) == []
    assert [e.data for e in engine.handle_timers(now=0.1)] == [first]


def test_rules_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    assert read_rules(path) == []
    rule = add_rule(path, FaultRule("drop", method="ACK", count=1))
    assert read_rules(path) == [rule]
    clear_rules(path)
    assert read_rules(path) == []
    path.write_text(json.dumps({"rules": [{"action": "explode"}]}))
    with pytest.raises(ConfigError, match=r"rules\[0\]"):
        read_rules(path)


# -- the relay on sockets ------------------------------------------------------------------


async def _udp(addr: tuple[str, int]) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(addr)
    return sock


async def test_relay_drops_exactly_what_it_was_told(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    events = tmp_path / "relay.jsonl"
    write_rules(rules, [FaultRule("drop", method="ACK", direction="a2b", count=3)])
    config = RelayConfig(
        listen=f"{RELAY[0]}:{RELAY[1]}",
        upstream=f"{SERVER[0]}:{SERVER[1]}",
        name="fault-ua-pbx",
        link="ua-pbx",
        rules=str(rules),
        events=str(events),
        seed=1,
    )
    with await _udp(SERVER) as server, await _udp(CLIENT) as client:
        await _exchange(config, server, client, events)


async def _exchange(
    config: RelayConfig,
    server: trio.socket.SocketType,
    client: trio.socket.SocketType,
    events: Path,
) -> None:
    received: list[str] = []
    barrier = trio.Event()
    answers: list[int] = []
    calls = 10

    async def serve() -> None:
        while True:
            data, src = await server.recvfrom(65536)
            msg = parse_untrusted(data)
            assert isinstance(msg, Request)
            received.append(msg.method)
            if msg.method == "OPTIONS":
                barrier.set()
            if msg.method == "INVITE":
                await server.sendto(response(data, 200), src)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_relay, config)
        nursery.start_soon(serve)
        with trio.fail_after(5):
            for i in range(calls):
                await client.sendto(request("INVITE", f"call-{i}"), RELAY)
                data, src = await client.recvfrom(65536)
                assert src[:2] == RELAY  # the reply comes back from the relay address
                answers.append(parse_untrusted(data).status)  # type: ignore[union-attr]
                await client.sendto(request("ACK", f"call-{i}"), RELAY)
            # A last request as a barrier: once it arrived, every earlier ACK has been decided.
            await client.sendto(request("OPTIONS", "barrier"), RELAY)
            await barrier.wait()
        nursery.cancel_scope.cancel()

    sent_acks = calls
    assert answers == [200] * calls
    assert received.count("INVITE") == calls
    assert received.count("ACK") == sent_acks - 3  # the server side
    decisions = [json.loads(line) for line in (await trio.Path(events).read_text()).splitlines()]
    drops = [d for d in decisions if d["event"] == "fault" and d["action"] == "drop"]
    assert len(drops) == 3  # the relay side
    assert {d["method"] for d in drops} == {"ACK"}
    assert [d["call_id"] for d in drops] == ["call-0", "call-1", "call-2"]
    assert sum(d["action"] == "pass" for d in decisions) == 2 * calls + calls - 3 + 1


async def test_relay_rereads_rules_at_runtime(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    config = RelayConfig(
        listen=f"{RELAY[0]}:5070", upstream=f"{SERVER[0]}:5070", rules=str(rules), seed=3
    )
    with await _udp((SERVER[0], 5070)) as server, await _udp((CLIENT[0], 5070)) as client:
        await _reload(config, rules, server, client)


async def _reload(
    config: RelayConfig, rules: Path, server: trio.socket.SocketType, client: trio.socket.SocketType
) -> None:
    got: list[str] = []

    async def barrier(name: str) -> None:
        await client.sendto(request("OPTIONS", name), (RELAY[0], 5070))
        while True:
            data, _ = await server.recvfrom(65536)
            msg = parse_untrusted(data)
            got.append(msg.call_id)
            if msg.call_id == name:
                return

    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve_relay, config)
        with trio.fail_after(5):
            await client.sendto(request("MESSAGE", "before"), (RELAY[0], 5070))
            await barrier("b1")
            add_rule(rules, FaultRule("drop", method="MESSAGE"))
            await client.sendto(request("MESSAGE", "during"), (RELAY[0], 5070))
            await barrier("b2")
            clear_rules(rules)
            await client.sendto(request("MESSAGE", "after"), (RELAY[0], 5070))
            await barrier("b3")
        assert running.engine.statistics().dropped == 1
        nursery.cancel_scope.cancel()
    assert got == ["before", "b1", "b2", "after", "b3"]
