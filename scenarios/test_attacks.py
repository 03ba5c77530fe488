"""Attacks on the routing tier, with the tools attackers use, aimed only at the lab itself.

Everything here targets the lab's own loopback addresses: ``lab.attack`` refuses any target or
source outside 127.0.0.0/8 before a tool starts, and the floods are bounded in count and time.

The module runs on its own lab (router + 2 PBX nodes, 60 users, no relays) because attacks leave
state behind on purpose: a blocked source address, a router that just absorbed a flood. Its
registrar is configured with ``max_failures_per_source = 8`` (and a per-user limit high enough
not to trigger first), the number the brute-force scenario checks.

What must hold (SIP-REFERENCE §3, the Kamailio/Asterisk security practice the router follows):

* svmap finds the router (it answers OPTIONS; hiding would break keepalives);
* svwar learns nothing: existing and non-existing users get identical answers (401 for a
  REGISTER without credentials, whoever the user);
* svcrack is blocked by the registrar after the configured number of wrong passwords, so the
  real password, later in its dictionary, is never accepted from that source;
* a flood well above capacity does not kill the router, which serves legitimate users again
  within seconds.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import trio

from lab import attack
from lab.backends import NodeState
from lab.engines import sipp_binary, start_sipp, uac_call, uac_register
from lab.pytest_plugin import Lab, LabSpec
from lab.requires import needs
from lab.ua import UserAgent
from lab.wire import SipRecord

pytestmark = pytest.mark.lab

MAX_FAILURES_PER_SOURCE = 8
RECOVERY_S = 15.0
"""A legitimate REGISTER and call must succeed within this long after a flood ends."""

needs_sipvicious = needs(attack.available(), "sipvicious not installed (pip extra attack)")
needs_sipp = needs(sipp_binary() is not None, "SIPp not installed (Debian package sip-tester)")


@pytest.fixture(scope="module")
def lab_topology() -> LabSpec:
    return LabSpec(
        {"pbx_count": 2, "users": {"count": 60}, "faults": []},
        router={
            "registrar": {
                "max_failures_per_source": MAX_FAILURES_PER_SOURCE,
                "max_failures_per_user": 1000,
            }
        },
    )


# -- helpers ----------------------------------------------------------------------------------


def attacker(lab: Lab, index: int) -> str:
    """A source address for one attack (each gets its own: blocks are per source)."""
    return lab.generator_host(10 + index)


def to_router(lab: Lab, since: float) -> list[SipRecord]:
    """Messages sent to the router since ``since``, from the lab's capture (any router)."""
    return [r for r in lab.packets(since) if r.dst == lab.router.address]


def from_router(lab: Lab, since: float) -> list[SipRecord]:
    """Messages the router sent since ``since``, from the lab's capture (any router)."""
    return [r for r in lab.packets(since) if r.src == lab.router.address]


def header(raw: str, name: str) -> str:
    match = re.search(rf"^{name}\s*:\s*(.*?)\r?$", raw, re.I | re.M)
    return match.group(1) if match else ""


def to_user(raw: str) -> str:
    match = re.search(r"sips?:([^@;>]+)@", header(raw, "To"))
    return match.group(1) if match else ""


def attack_source(lab: Lab, since: float, users: set[str]) -> str:
    """The address the tool really sent from: the source of the first REGISTER for one of
    ``users`` since ``since``. (The sipvicious release installed here binds every interface
    whatever ``-b`` says, so its packets leave from 127.0.0.1; still loopback.)"""
    for r in to_router(lab, since):
        if r.method == "REGISTER" and r.is_request and to_user(text(r)) in users:
            return r.src.rpartition(":")[0]
    raise AssertionError(f"the router received no REGISTER for {sorted(users)}")


def answers_to(lab: Lab, source: str, since: float, method: str) -> list[SipRecord]:
    """The router's final responses to ``method`` requests from ``source`` (on the wire)."""
    return [
        r
        for r in from_router(lab, since)
        if r.method == method and (r.status or 0) >= 200 and r.dst.startswith(f"{source}:")
    ]


def text(record: SipRecord) -> str:
    return record.data.decode("utf-8", "replace")


async def legit_register_and_call(ua: UserAgent) -> None:
    """The phone registers (digest) and calls 600 through the router; raises on any failure."""
    with trio.fail_after(3):
        result = await ua.register()
    assert result.ok, f"REGISTER {ua.user}: {result.status}"
    call = await ua.call("600")
    with trio.fail_after(3):
        final = await call.wait_answered()
    assert final.status == 200, f"call from {ua.user}: {final.status}"
    with trio.fail_after(3):
        await call.hangup()


# -- scenarios --------------------------------------------------------------------------------


@needs_sipvicious
async def test_attacks_svmap_finds_the_router(lab: Lab) -> None:
    """Action: ``svmap`` scans the router's address from an attacker address.

    Must hold: it reports exactly the router, with the User-Agent it answered with.
    """
    router = (lab.router.host, lab.router.port)
    with trio.fail_after(30):
        devices = await attack.svmap(router, bind_ip=attacker(lab, 0), max_time=20)
    assert [d.address for d in devices] == [router]


@needs_sipvicious
@pytest.mark.kamailio
@pytest.mark.router_needs("auth")
async def test_attacks_svwar_enumerates_no_extension(lab: Lab) -> None:
    """Action: ``svwar`` (REGISTER method) tries extensions 100-109, which exist, and
    9000-9009, which do not.

    Must hold: svwar reports no extension, and the router's answers to the REGISTERs for
    existing and for non-existing users are the same (status and reason): nothing tells them
    apart.
    """
    since = time.time()
    router = (lab.router.host, lab.router.port)
    with trio.fail_after(40):
        found = await attack.svwar(
            router,
            "100-109,9000-9009",
            bind_ip=attacker(lab, 1),
            domain=lab.domain,
            force=True,  # svwar's own sanity check already gives up on identical answers
            max_time=25,
        )
    assert found == []
    tried = {str(n) for n in [*range(100, 110), *range(9000, 9010)]}
    source = attack_source(lab, since, tried)
    by_kind: dict[bool, set[tuple[int, str]]] = {True: set(), False: set()}
    users = lab.users()
    for r in answers_to(lab, source, since, "REGISTER"):
        raw = text(r)
        reason = raw.split("\r\n", 1)[0].split(" ", 2)[-1]
        by_kind[to_user(raw) in users].add((int(r.status or 0), reason))
    assert by_kind[True], "the router answered no REGISTER for an existing user"
    assert by_kind[False], "the router answered no REGISTER for an unknown user"
    assert by_kind[True] == by_kind[False] == {(401, "Unauthorized")}


@needs_sipvicious
@pytest.mark.kamailio
@pytest.mark.router_needs("auth")
async def test_attacks_svcrack_is_blocked_after_max_failures(lab: Lab) -> None:
    """Action: ``svcrack`` guesses user 140's password from one address with a dictionary of
    ``max_failures_per_source + 4`` wrong words followed by the real password.

    Must hold: the router evaluates at most ``max_failures_per_source`` wrong passwords from
    that address (401s to REGISTERs with credentials, read from the capture) and every
    REGISTER that reaches it after its first 403 is answered 403 without a check, so svcrack
    does not crack the password; even the right password is refused (403) from that address afterwards,
    while the same user still registers from another address.
    """
    since = time.time()
    user = "140"
    real = lab.password(user)
    words = [f"guess{i}" for i in range(MAX_FAILURES_PER_SOURCE + 4)] + [real]
    router = (lab.router.host, lab.router.port)
    with trio.fail_after(20):
        result = await attack.svcrack(
            router, user, words, bind_ip=attacker(lab, 2), domain=lab.domain, max_time=12
        )
    assert not result.cracked, f"cracked {result.password!r} after {result.attempts}"
    source = attack_source(lab, since, {user})
    answered = answers_to(lab, source, since, "REGISTER")
    requests = {
        (r.call_id, r.cseq): r
        for r in to_router(lab, since)
        if r.method == "REGISTER" and r.is_request and r.src.startswith(f"{source}:")
    }
    credentialed = {key for key, r in requests.items() if header(text(r), "Authorization")}
    assert credentialed, "svcrack sent no credentials"
    statuses = [int(r.status or 0) for r in answered]
    assert 200 not in statuses
    assert 403 in statuses, f"never blocked: {statuses}"
    # Wrong passwords the router checked: the 401s to REGISTERs that carried credentials.
    evaluated = [r for r in answered if r.status == 401 and (r.call_id, r.cseq) in credentialed]
    assert len(evaluated) <= MAX_FAILURES_PER_SOURCE, statuses
    # Every REGISTER that reached the router after its first 403 is refused unchecked. (Ordered
    # by arrival, not by answer: a router with several workers, like Kamailio, may answer a
    # guess that arrived before the block after it has sent the first 403.)
    blocked_at = next(r.t for r in answered if r.status == 403)
    later = [
        int(r.status or 0)
        for r in answered
        if (q := requests.get((r.call_id, r.cseq))) is not None and q.t > blocked_at
    ]
    assert later, "svcrack sent nothing after the block"
    assert set(later) == {403}, statuses

    # The right password from the blocked address: refused. From elsewhere: accepted.
    async with lab.open_ua(user, local=(source, 0)) as ua:
        with trio.fail_after(3):
            blocked = await ua.register()
    assert blocked.status == 403
    async with lab.open_ua(user, local=(attacker(lab, 3), 0)) as ua:
        with trio.fail_after(3):
            assert (await ua.register()).ok


@needs_sipp
async def test_attacks_flood_does_not_kill_the_router(lab: Lab, measurements: Any) -> None:
    """Action: two SIPp floods at once for at most 5 s: INVITEs to 600 at 3000/s (15000
    calls) and digest REGISTERs at 1000/s (5000), both well above the capacity of a router on
    two cores; SIPp gives up on its calls after 8 s.

    Must hold: the router process survives (same pid) and answers ``/status`` after the flood;
    within 15 s a legitimate phone registers and completes a call.
    """
    pid = lab.router.pid
    # The REGISTER flood uses users 100..139 only: every AOR allows few contacts, and the
    # legitimate phone (150) must find its AOR as the flood left it, untouched.
    lines = lab.users_csv.read_text(encoding="utf-8").splitlines()
    flooders = lab.run_dir / "sipp" / "flood-users.csv"
    flooders.parent.mkdir(parents=True, exist_ok=True)
    flooders.write_text(
        "\n".join([lines[0], *(ln for ln in lines[1:] if int(ln.split(";")[0]) < 140)]) + "\n",
        encoding="utf-8",
    )
    started = time.monotonic()
    floods: dict[str, dict[str, Any]] = {
        "invite": {
            "scenario": uac_call(),
            "name": "flood-invite",
            "max_calls": 15000,
            "rate": 3000,
            "generator": 4,
            "service": "600",
            "timeout_s": 8,
        },
        "register": {
            "scenario": uac_register(),
            "injection": flooders,
            "name": "flood-register",
            "max_calls": 5000,
            "rate": 1000,
            "generator": 5,
            "timeout_s": 8,
        },
    }
    results: dict[str, Any] = {}

    async def flood(key: str) -> None:
        # SIPp ends a flood on its global -timeout with exit 255, which run_sipp treats as
        # fatal; here that is the plan, so the result files are read whatever the exit code.
        run, workdir = lab.sipp_run(**floods[key])
        handle = start_sipp(run, workdir)
        try:
            with trio.move_on_after(run.timeout_s + run.kill_grace_s):
                while handle.is_running():  # noqa: ASYNC110 -- polling a child process
                    await trio.sleep(0.1)
        finally:
            results[key] = handle.stop(grace=1.0)

    async with trio.open_nursery() as nursery:
        for key in floods:
            nursery.start_soon(flood, key)
    flood_s = time.monotonic() - started
    measurements["flood_s"] = round(flood_s, 2)
    for name, r in results.items():
        measurements[f"{name}_created"] = r.calls_created
        measurements[f"{name}_successful"] = r.successful
    assert sum(r.calls_created for r in results.values()) > 2000, "the flood never got going"

    assert lab.state("router") is NodeState.UP
    assert lab.router.pid == pid
    status = await trio.to_thread.run_sync(lab.router_status)
    assert status["node"] == "router"

    # One phone (one Contact: its AOR allows one binding) retries until it gets through.
    ended = time.monotonic()
    last: BaseException | None = None
    async with lab.open_ua("150", local=(lab.generator_host(6), 0)) as ua:
        while time.monotonic() - ended <= RECOVERY_S:
            try:
                await legit_register_and_call(ua)
            except (AssertionError, trio.TooSlowError) as exc:
                last = exc
                await trio.sleep(0.5)
                continue
            measurements["recovery_s"] = round(time.monotonic() - ended, 2)
            break
    assert "recovery_s" in measurements, f"no legitimate call within {RECOVERY_S} s: {last!r}"
