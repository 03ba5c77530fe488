"""The reference router in-process on 127.0.0.95:5060 with a provisioned SQLite registrar,
and a PBX stand-in address for the dispatcher (a trio UA answers there)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from router.config import router_config_from_dict
from router.realtime import UserCredential, connect
from router.server import RunningRouter, serve_router

ROUTER = ("127.0.0.95", 5060)
PBX = ("127.0.0.96", 5060)
DOMAIN = "example.com"
USERS = 210
FIRST = 1000


@dataclass
class Lab:
    router: RunningRouter
    users: list[UserCredential]
    events: Path

    def password(self, name: str) -> str:
        return next(u.password for u in self.users if u.username == name)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[UserCredential]]:
    """Users provisioned once; every test gets a fresh copy of the file (no shared bindings)."""
    path = tmp_path_factory.mktemp("ua-db") / "template.db"
    with connect(f"sqlite:///{path}") as db:
        db.init_schema()
        users = db.provision_users(
            USERS, FIRST, domain=DOMAIN, context="default", seed=11, max_contacts=3
        )
    return path, users


@pytest.fixture
def provisioned(
    template_db: tuple[Path, list[UserCredential]], tmp_path: Path
) -> tuple[str, list[UserCredential]]:
    path, users = template_db
    copy = tmp_path / "realtime.db"
    shutil.copyfile(path, copy)
    return f"sqlite:///{copy}", users


@pytest.fixture
async def lab(provisioned: tuple[str, list[UserCredential]], tmp_path: Path) -> AsyncIterator[Lab]:
    url, users = provisioned
    events = tmp_path / "events.jsonl"
    config = router_config_from_dict(
        {
            "router": {"listen": [f"udp:{ROUTER[0]}:{ROUTER[1]}"], "events": str(events)},
            "timers": {"t1": 0.05, "t2": 0.4, "t4": 0.5, "fr_timer": 2.0, "fr_inv_timer": 5.0},
            "dispatcher": {
                "destinations": [{"uri": f"sip:{PBX[0]}:{PBX[1]}"}],
                "probing": {"interval": 0},
            },
            "registrar": {
                "db": url,
                "domain": DOMAIN,
                # Storms register hundreds of users from one address.
                "max_failures_per_source": 10_000,
                "forward": "none",
            },
        }
    )
    async with trio.open_nursery() as nursery:
        running: RunningRouter = await nursery.start(serve_router, config)
        yield Lab(running, users, events)
        running.stop()
        nursery.cancel_scope.cancel()
