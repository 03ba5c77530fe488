"""sipvicious wrappers against the in-process router (skipped without sipvicious)."""

from __future__ import annotations

import pytest
import trio

from lab import attack
from lab.attack import NotLoopback, parse_table, require_loopback
from lab.requires import needs
from lab.ua import open_ua

from .conftest import DOMAIN, ROUTER, Lab

needs_sipvicious = needs(attack.available(), "sipvicious not installed (pip extra attack)")


@pytest.mark.parametrize("host", ["10.0.0.1", "192.0.2.7", "localhost", "::1", "128.0.0.1", ""])
def test_attack_refuses_non_loopback(host: str) -> None:
    with pytest.raises(NotLoopback):
        require_loopback(host)


async def test_attack_refuses_before_running_anything() -> None:
    with pytest.raises(NotLoopback):
        await attack.svmap(("8.8.8.8", 5060))
    with pytest.raises(NotLoopback):
        await attack.svcrack(ROUTER, "1000", ["x"], bind_ip="0.0.0.0")


def test_attack_parse_table() -> None:
    text = (
        "+-----------------+------------+\n| SIP Device      | User Agent |\n"
        "+=================+============+\n| 127.0.0.95:5060 | siplab     |\n"
        "+-----------------+------------+\n"
    )
    assert parse_table(text) == [["127.0.0.95:5060", "siplab"]]
    assert parse_table("WARNING: found nothing") == []


@needs_sipvicious
async def test_attack_svmap_finds_the_router(lab: Lab) -> None:
    with trio.fail_after(20):
        devices = await attack.svmap(ROUTER, bind_ip="127.0.0.97", max_time=15)
    assert [d.address for d in devices] == [ROUTER]


@needs_sipvicious
async def test_attack_svcrack_finds_a_weak_password(lab: Lab) -> None:
    real = lab.password("1004")
    with trio.fail_after(30):
        result = await attack.svcrack(
            ROUTER,
            "1004",
            ["123456", "password", real, "letmein"],
            bind_ip="127.0.0.97",
            domain=DOMAIN,
            max_time=20,
        )
    assert result.cracked
    assert result.password == real
    assert result.attempts == 3
    with trio.fail_after(30):
        miss = await attack.svcrack(
            ROUTER, "1005", ["a", "b"], bind_ip="127.0.0.97", domain=DOMAIN, max_time=1.5
        )
    assert not miss.cracked
    assert miss.exhausted
    assert miss.attempts == 2


@needs_sipvicious
async def test_attack_svwar_learns_nothing_from_the_router(lab: Lab) -> None:
    # The router challenges known and unknown users alike (401 for both): no enumeration.
    with trio.fail_after(20):
        found = await attack.svwar(
            ROUTER, range(1000, 1004), bind_ip="127.0.0.97", domain=DOMAIN, force=True, max_time=10
        )
    assert found == []


@needs_sipvicious
async def test_attack_svwar_enumerates_a_leaky_pbx() -> None:
    # A PBX stand-in that answers 404 for users it does not serve leaks its extensions.
    async with open_ua(
        local=("127.0.0.98", 5060), user="pbx", extensions={"201", "203"}, register_status=200
    ):
        with trio.fail_after(20):
            found = await attack.svwar(
                ("127.0.0.98", 5060), "200-205", bind_ip="127.0.0.97", max_time=10
            )
    assert sorted(e.extension for e in found) == ["201", "203"]
