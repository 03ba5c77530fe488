from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from lab.pbx.config import PbxConfig, TimersConfig
from lab.pbx.core import PbxCore
from lab.pbx.server import serve_pbx
from lab.pbx.store import PbxStore

from .helpers import PBX1_IP, ROUTER_IP, Peer, provision


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'realtime.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[PbxStore]:
    s = PbxStore.open(db_url)
    provision(s)
    yield s
    s.close()


def node_config(db_url: str, name: str = "pbx1", ip: str = PBX1_IP, **kw: object) -> PbxConfig:
    values: dict[str, object] = {
        "name": name,
        "db": db_url,
        "listen": ip,
        "port": 0,
        "routers": [ROUTER_IP],
        "timers": TimersConfig(t1=0.02, t2=0.16, t4=0.2),
        "time_scale": 0.02,
    }
    values.update(kw)
    return PbxConfig(**values)  # type: ignore[arg-type]


async def start_node(nursery: trio.Nursery, config: PbxConfig) -> PbxCore:
    core: PbxCore = await nursery.start(serve_pbx, config)
    return core


@pytest.fixture
async def pbx(nursery: trio.Nursery, store: PbxStore, db_url: str) -> PbxCore:
    return await start_node(nursery, node_config(db_url))


@pytest.fixture
async def router() -> AsyncIterator[Peer]:
    peer = await Peer.open(ROUTER_IP)
    yield peer
    peer.close()
