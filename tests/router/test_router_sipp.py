"""The reference router between real SIPp peers on loopback (issue: router part 1).

SIPp UAC -> router (``siplab router`` as a process) -> three SIPp UAS standing in for PBX nodes.
Checks that calls spread as the dispatcher algorithm says, and that a PBX killed mid-run gets no
new calls once probing notices, while calls in setup on it fail over to the others.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lab.engines import SippRun, sipp_binary, start_sipp, start_sipp_uas, uac_call, wait_sip_ready
from lab.procs import start_process
from lab.requires import needs

pytestmark = [
    pytest.mark.sipp,
    needs(sipp_binary() is not None, "SIPp (Debian sip-tester) is not installed"),
]

ROUTER = ("127.0.0.20", 5060)
UAC_IP = "127.0.0.21"
UAS = [("127.0.0.22", 5090), ("127.0.0.23", 5090), ("127.0.0.24", 5090)]


def _router_config(
    tmp: Path, *, algorithm: int, probing: float, timeout: float, fr_timer: float
) -> Path:
    dests = "".join(f'[[dispatcher.destinations]]\nuri = "sip:{h}:{p}"\n' for h, p in UAS)
    cfg = tmp / "router.toml"
    cfg.write_text(
        f'[router]\nlisten = ["udp:{ROUTER[0]}:{ROUTER[1]}"]\nevents = "{tmp / "events.jsonl"}"\n'
        f"events_raw = false\n\n[timers]\nfr_timer = {fr_timer}\n\n"
        f"[dispatcher]\nalgorithm = {algorithm}\n\n{dests}\n"
        f"[dispatcher.probing]\ninterval = {probing}\ntimeout = {timeout}\nmode = 1\n"
    )
    return cfg


def _start_router(tmp: Path, cfg: Path):  # type: ignore[no-untyped-def]
    proc = start_process(
        [sys.executable, "-m", "router.cli", "router", "--config", str(cfg)],
        name="router",
        log_dir=tmp,
    )
    try:
        wait_sip_ready(ROUTER[0], ROUTER[1], timeout=15.0, alive=proc.is_running, local_ip=UAC_IP)
    except BaseException:
        proc.stop(grace=2.0)
        raise
    return proc


def _events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _invites_per_node(events: list[dict[str, object]]) -> Counter[str]:
    return Counter(
        str(e["peer"])
        for e in events
        if e.get("event") == "sip"
        and e.get("dir") == "out"
        and e.get("method") == "INVITE"
        and e.get("status") is None
    )


@pytest.mark.parametrize(("algorithm", "even"), [(4, True), (0, False)])
def test_router_sipp_calls_spread_over_nodes(tmp_path: Path, algorithm: int, even: bool) -> None:
    uas = [start_sipp_uas(h, p, tmp_path / "uas", name=f"uas{i}") for i, (h, p) in enumerate(UAS)]
    router = _start_router(
        tmp_path,
        _router_config(tmp_path, algorithm=algorithm, probing=1.0, timeout=0.5, fr_timer=2.0),
    )
    try:
        run = SippRun(
            uac_call(),
            local_ip=UAC_IP,
            remote=ROUTER,
            rate=150,
            max_calls=300,
            timeout_s=30,
            name="uac",
        )
        handle = start_sipp(run, tmp_path / "uac")
        result = handle.wait()
    finally:
        router.stop()
        offered = [u.stop().count("INVITE") for u in uas]
    assert result.successful == 300, result.failed_by_reason
    assert result.failed == 0
    assert sum(offered) == 300
    per_node = _invites_per_node(_events(tmp_path / "events.jsonl"))
    assert sorted(per_node.values()) == sorted(offered)
    if even:
        # Round robin: each node gets every third call.
        assert all(n == 100 for n in offered), offered
    else:
        # Hash of Call-ID: deterministic per call, spread over every node.
        assert all(n > 30 for n in offered), offered


def test_router_sipp_node_killed_mid_run_fails_over(tmp_path: Path) -> None:
    probing, timeout = 0.5, 0.5
    uas = [start_sipp_uas(h, p, tmp_path / "uas", name=f"uas{i}") for i, (h, p) in enumerate(UAS)]
    router = _start_router(
        tmp_path,
        _router_config(tmp_path, algorithm=4, probing=probing, timeout=timeout, fr_timer=2.0),
    )
    victim = uas[2]
    try:
        run = SippRun(
            uac_call(),
            local_ip=UAC_IP,
            remote=ROUTER,
            rate=100,
            max_calls=600,
            timeout_s=40,
            name="uac",
        )
        handle = start_sipp(run, tmp_path / "uac")
        time.sleep(2.0)
        killed_at = time.time()
        victim.process.send_signal(signal.SIGKILL)
        result = handle.wait()
    finally:
        router.stop()
        for u in uas[:2]:
            u.stop()
    events = _events(tmp_path / "events.jsonl")
    dead = f"{UAS[2][0]}:{UAS[2][1]}"
    downs = [
        e
        for e in events
        if e.get("event") == "dispatcher_state"
        and e.get("went_down")
        and str(e.get("uri", "")).endswith(dead)
    ]
    assert downs, "the router never marked the killed node down"
    detected = float(downs[0]["t"])  # type: ignore[arg-type]
    # A node that stops answering gets no new calls after at most interval + ping timeout
    # (plus the failover marking, which may come first).
    assert detected - killed_at <= probing + timeout + 0.5
    late = [
        e
        for e in events
        if e.get("event") == "sip"
        and e.get("dir") == "out"
        and e.get("method") == "INVITE"
        and e.get("status") is None
        and e.get("peer") == dead
        and float(e["t"]) > detected + 0.05  # type: ignore[arg-type]
    ]
    assert late == []
    # Calls in setup on the dead node failed over; only a call whose BYE was in flight to it
    # at the instant of the kill can be lost (hold time 0).
    # XXX: twice in the full suite one such call was still open when SIPp's 40 s global timeout
    # ended the run (neither successful nor failed: the router's 408 for its BYE never reached
    # SIPp?); it counts as lost here until that is understood (session note, stop 11).
    lost = 600 - result.successful
    assert lost <= 2, (result.failed, result.failed_by_reason)
