"""Node-level behaviour: capacity, dialplan timers, events, configuration and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from lab.pbx.cli import add_commands
from lab.pbx.config import CapacityConfig, load_config
from lab.pbx.dialplan import load_dialplan
from lab.pbx.store import PbxStore
from router.configfile import ConfigError
from router.sip import Request, Response

from .conftest import node_config, start_node
from .helpers import Peer


async def test_full_node_answers_503_before_100(
    nursery: trio.Nursery, store: PbxStore, db_url: str, router: Peer
) -> None:
    config = node_config(db_url, capacity=CapacityConfig(max_channels=1, call_cost_ms=1.0))
    core = await start_node(nursery, config)
    first = router.request(
        "INVITE", f"sip:600@{core.local[0]}", to_user="600", to_host=core.local[0]
    )
    await router.send(first, core.local)
    assert [(await router.recv_response()).status for _ in range(2)] == [100, 200]
    second = router.request(
        "INVITE", f"sip:600@{core.local[0]}", to_user="600", to_host=core.local[0]
    )
    await router.send(second, core.local)
    while (response := await router.recv_response()).call_id != second.call_id:
        pass
    assert response.status == 503
    assert core.statistics().counters["rejected_full"] == 1


async def test_602_hangs_up_after_3_seconds(
    autojump_clock: object, nursery: trio.Nursery, store: PbxStore, db_url: str, router: Peer
) -> None:
    core = await start_node(nursery, node_config(db_url, time_scale=1.0))
    invite = router.request(
        "INVITE", f"sip:602@{core.local[0]}", to_user="602", to_host=core.local[0]
    )
    await router.send(invite, core.local)
    assert (await router.recv_response()).status == 100
    ok = await router.recv_response()
    answered = trio.current_time()
    await router.send(router.ack_for(invite, ok), core.local)
    bye = await router.recv_request("BYE", within=10)
    assert isinstance(bye.message, Request)
    assert bye.at - answered == pytest.approx(3.0, abs=1e-3)
    assert bye.message.headers.get("Reason") is None
    await router.send(router.answer(bye.message, 200, to_tag="x"), bye.source)
    assert await router.silent(0.1)
    assert core.statistics().channels == 0


async def test_events_file_has_every_message_and_channel_decisions(
    nursery: trio.Nursery, store: PbxStore, db_url: str, router: Peer, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    core = await start_node(nursery, node_config(db_url, events=str(events)))
    invite = router.request(
        "INVITE", f"sip:600@{core.local[0]}", to_user="600", to_host=core.local[0]
    )
    await router.send(invite, core.local)
    await router.recv_response()
    ok = await router.recv_response()
    assert isinstance(ok, Response)
    await router.send(router.ack_for(invite, ok), core.local)
    await router.send(router.request("OPTIONS", f"sip:{core.local[0]}"), core.local)
    await router.recv_response()
    core.log.flush()
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    sip = [(r["dir"], r["method"], r["status"]) for r in lines if r["event"] == "sip"]
    assert ("in", "INVITE", None) in sip
    assert ("out", "INVITE", 100) in sip
    assert ("out", "INVITE", 200) in sip
    assert ("in", "ACK", None) in sip
    assert ("out", "OPTIONS", 200) in sip
    kinds = {r["event"] for r in lines}
    assert {"channel_new", "channel_answer", "ack", "node_started"} <= kinds
    assert all(r["node"] == "pbx1" for r in lines)
    assert all("raw" in r for r in lines if r["event"] == "sip")


def test_config_errors_name_file_field_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('name = "pbx1"\ndb = "sqlite:///x.db"\nlisten = "pbx.example"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.field) == (str(path), "listen")
    path.write_text('name = "pbx1"\ndb = "x"\nqueue_mode = "global"\n')
    with pytest.raises(ConfigError, match="queue_mode"):
        load_config(path)
    path.write_text('name = "pbx1"\ndb = "x"\n[timers]\nt1 = 1.0\nt2 = 0.5\n')
    with pytest.raises(ConfigError, match=r"timers\.t2"):
        load_config(path)


def test_dialplan_file_loads_and_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "dialplan.toml"
    path.write_text(
        '[extensions.900]\napp = "answer"\nhangup_after = 5\n[extensions.901]\napp = "dial"\n'
    )
    with pytest.raises(ConfigError, match=r"extensions\.901\.target"):
        load_dialplan(path)
    path.write_text('dial_users = false\n[extensions.900]\napp = "answer"\nhangup_after = 5\n')
    plan = load_dialplan(path)
    assert plan.lookup("900", False) is not None
    assert plan.lookup("101", True) is None


def test_cli_check_validates_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from router.cli import UserError

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    good = tmp_path / "node.toml"
    good.write_text('name = "pbx1"\ndb = "sqlite:///x.db"\nlisten = "127.0.0.40"\n')
    args = parser.parse_args(["pbx", "--config", str(good), "--check"])
    assert args.func(args) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "pbx1"\n')
    args = parser.parse_args(["pbx", "--config", str(bad), "--check"])
    with pytest.raises(UserError, match=r"bad\.toml: db: required setting is missing"):
        args.func(args)
