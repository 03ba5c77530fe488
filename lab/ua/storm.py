"""Storm mode: many registrations and calls from one trio process, for machines without SIPp.

One `UserAgent` runs per local IP (one UDP socket each); operations are started at ``rate``
per second, spread over the UAs and the users round-robin, with at most ``concurrency`` in
flight. Every operation is bounded (``op_timeout``) and so is the whole storm
(``max_duration``): when the storm is cut short, what is still running is counted as failed
with status 0 ("no final response").

Measures (see `lab.ua.results` for the RFC 6076 definitions): RRD per successful
registration, SRD per call that got a status-indicative response, retransmissions sent by the
UAs (Timers A/E, re-ACKs, 2xx repeats), failures by final status.

The scenarios:

* ``register``: REGISTER (digest answered) for the next user;
* ``call``: INVITE ``callee`` as the next user (digest answered); on 2xx hold ``hold`` seconds,
  then BYE. A call succeeds when it was answered 2xx;
* ``mixed``: even operations register, odd ones call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Literal

import trio

from router.sip.transaction.timers import DEFAULT_TIMERS, Timers

from .results import StormProgress, StormResult
from .ua import Address, UserAgent, open_ua

Scenario = Literal["call", "register", "mixed"]
SCENARIOS: tuple[Scenario, ...] = ("call", "register", "mixed")
NO_STATUS = 0
"""Failure key for operations that never got a final response (storm cut short, errors)."""


class _Storm:
    def __init__(self, result: StormResult, uas: list[UserAgent]) -> None:
        self.result = result
        self.uas = uas
        self.in_flight = 0

    def retransmissions(self) -> int:
        return sum(ua.statistics().retransmissions_sent for ua in self.uas)

    def fail(self, status: int) -> None:
        self.result.failed += 1
        self.result.failures[status] += 1


@contextlib.asynccontextmanager
async def _open_uas(
    local_ips: Sequence[str],
    target: Address,
    domain: str | None,
    timers: Timers,
    events_path: str | Path | None,
) -> AsyncIterator[list[UserAgent]]:
    async with contextlib.AsyncExitStack() as stack:
        uas = [
            await stack.enter_async_context(
                open_ua(
                    local=(ip, 0),
                    proxy=target,
                    user="storm",
                    domain=domain,
                    timers=timers,
                    events_path=events_path,
                    node=f"storm{i}",
                    keep_messages=False,
                )
            )
            for i, ip in enumerate(local_ips)
        ]
        for ua in uas:
            ua.auto_answer(480, ring=False)  # nobody calls a storm UA; refuse quickly if so
        yield uas


async def run_storm(
    scenario: Scenario,
    target: Address,
    *,
    rate: float,
    count: int,
    users: Sequence[tuple[str, str]],
    local_ips: Sequence[str] = ("127.0.0.1",),
    callee: str = "600",
    domain: str | None = None,
    hold: float = 0.0,
    expires: int = 3600,
    concurrency: int = 200,
    op_timeout: float = 32.0,
    max_duration: float = 300.0,
    timers: Timers = DEFAULT_TIMERS,
    progress: Callable[[StormProgress], None] | None = None,
    progress_interval: float = 1.0,
    output: str | Path | None = None,
    events_path: str | Path | None = None,
) -> StormResult:
    """Run one storm and return (and optionally write) its result.

    Args:
        scenario: "register", "call" or "mixed".
        target: the router/proxy every request goes to.
        rate: operations started per second.
        count: operations in total.
        users: (username, password) pairs, used round-robin.
        local_ips: one UA (UDP socket, any port) per address, used round-robin.
        callee: user part called in the call scenario.
        domain: SIP domain of From/To/Request-URI (default: the target's host).
        hold: seconds an answered call stays up before BYE.
        expires: Expires of the registrations.
        concurrency: operations in flight at most (starting waits for a free slot).
        op_timeout: one operation's bound; a call gets CANCEL at this point.
        max_duration: the storm's bound; unfinished operations count as failed (status 0).
        timers: T1/T2/T4 of the UAs.
        progress: called about every ``progress_interval`` s, and once at the end.
        output: write the result JSON there.
        events_path: ``events.jsonl`` for the UAs' messages (None: none; large storms!).

    Raises:
        ValueError: bad scenario, rate, count or empty users/local_ips.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if rate <= 0 or count < 0 or concurrency < 1 or not users or not local_ips:
        raise ValueError("need rate > 0, count >= 0, concurrency >= 1, users and local_ips")
    result = StormResult(scenario, target, rate, count)
    limiter = trio.CapacityLimiter(concurrency)
    async with _open_uas(local_ips, target, domain, timers, events_path) as uas:
        storm = _Storm(result, uas)
        rtx_before = storm.retransmissions()
        started = trio.current_time()

        async def one(i: int) -> None:
            ua = uas[i % len(uas)]
            user, password = users[i % len(users)]
            kind = scenario if scenario != "mixed" else ("register" if i % 2 == 0 else "call")
            storm.in_flight += 1
            try:
                if kind == "register":
                    await _register(storm, ua, user, password, expires, op_timeout)
                else:
                    await _call(storm, ua, user, password, callee, hold, op_timeout)
            finally:
                storm.in_flight -= 1
                limiter.release_on_behalf_of(i)

        def tick(last: list[float]) -> None:
            if progress is None:
                return
            now = trio.current_time()
            rtx = storm.retransmissions() - rtx_before
            span = max(now - last[0], 1e-9)
            progress(
                StormProgress(
                    elapsed=now - started,
                    attempted=result.attempted,
                    succeeded=result.succeeded,
                    failed=result.failed,
                    retransmissions=rtx,
                    attempted_per_s=(result.attempted - last[1]) / span,
                    succeeded_per_s=(result.succeeded - last[2]) / span,
                    failed_per_s=(result.failed - last[3]) / span,
                    retransmissions_per_s=(rtx - last[4]) / span,
                    in_flight=storm.in_flight,
                )
            )
            last[:] = [now, result.attempted, result.succeeded, result.failed, rtx]

        async def reporter() -> None:
            last = [started, 0.0, 0.0, 0.0, 0.0]
            while True:
                await trio.sleep(progress_interval)
                tick(last)

        with trio.move_on_after(max_duration) as bound:
            async with trio.open_nursery() as side:
                side.start_soon(reporter)
                async with trio.open_nursery() as ops:
                    for i in range(count):
                        await trio.sleep_until(started + i / rate)
                        await limiter.acquire_on_behalf_of(i)
                        result.attempted += 1
                        ops.start_soon(one, i)
                side.cancel_scope.cancel()
        result.timed_out = bound.cancelled_caught
        unfinished = result.attempted - result.succeeded - result.failed
        for _ in range(unfinished):
            storm.fail(NO_STATUS)
        result.duration = trio.current_time() - started
        result.retransmissions = storm.retransmissions() - rtx_before
        tick([started, 0.0, 0.0, 0.0, 0.0])
    if output is not None:
        result.write(output)
    return result


async def _register(
    storm: _Storm, ua: UserAgent, user: str, password: str, expires: int, bound: float
) -> None:
    with trio.move_on_after(bound):
        reg = await ua.register(expires, user=user, password=password)
        if reg.ok:
            storm.result.succeeded += 1
            storm.result.rrd.append(reg.delay)
        else:
            storm.fail(reg.status)
        return
    storm.fail(408)


async def _call(
    storm: _Storm,
    ua: UserAgent,
    user: str,
    password: str,
    callee: str,
    hold: float,
    bound: float,
) -> None:
    call = await ua.call(callee, user=user, password=password)
    with trio.move_on_after(bound):
        await call.wait_answered()
    if call.setup_delay is not None:
        storm.result.srd.append(call.setup_delay)
    final = call.final
    if final is None:
        storm.fail(408)
        with trio.move_on_after(bound):
            await call.hangup()  # CANCEL (§9.1 waits for a provisional; bounded)
        return
    if not final.is_success:
        storm.fail(final.status)
        return
    storm.result.succeeded += 1
    if hold > 0:
        await trio.sleep(hold)
    with trio.move_on_after(bound):
        await call.hangup()
