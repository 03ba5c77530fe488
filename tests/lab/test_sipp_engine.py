"""SIPp engine: scenario generation, command lines, result parsing, and real SIPp runs.

Addresses 127.0.0.30-39 are this file's (the lab reserves .10 and .11+).
"""

from __future__ import annotations

import os
import signal
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.engines import (
    ScenarioRole,
    SippError,
    SippRun,
    SippUser,
    options_ping,
    percentile,
    register_then_call,
    run_sipp,
    run_sipp_async,
    sipp_binary,
    start_sipp_uas,
    uac_call,
    uac_register,
    uas_answer,
    users_csv,
)
from lab.engines.results import parse_result
from lab.procs import ProcessGroup, start_process
from lab.requires import needs

needs_sipp = needs(sipp_binary() is not None, "SIPp not installed (Debian package sip-tester)")

ALL_SCENARIOS = [uac_call(100), uas_answer(), uac_register(), register_then_call(0), options_ping()]


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("scenario", ALL_SCENARIOS, ids=lambda s: s.name)
def test_scenario_xml_is_well_formed_and_flags_injection(scenario, tmp_path: Path) -> None:
    root = ET.fromstring(scenario.xml.split("\n", 2)[2])  # after the XML decl and DOCTYPE
    assert root.tag == "scenario"
    first = root[0]
    if scenario.role is ScenarioRole.UAC:
        assert first.tag == "send"
    else:
        assert first.tag == "recv"
    assert scenario.needs_injection == ("[field" in scenario.xml)
    # every "next" jumps to a label that exists
    labels = {e.get("id") for e in root.iter("label")}
    assert {e.get("next") for e in root.iter() if e.get("next")} <= labels
    assert scenario.write(tmp_path).read_text() == scenario.xml


def test_uac_call_acks_and_byes_through_the_route_set() -> None:
    xml = uac_call(250).xml
    assert "ACK [next_url] SIP/2.0" in xml
    assert "BYE [next_url] SIP/2.0" in xml
    assert xml.count("[routes]") == 2
    assert 'rrs="true"' in xml
    assert '<pause milliseconds="250"/>' in xml


def test_users_csv_carries_the_authentication_keyword_in_field2() -> None:
    text = users_csv([SippUser("alice", "example.test", "s3cret", callee="bob")])
    assert text.splitlines() == [
        "SEQUENTIAL",
        "alice;example.test;[authentication username=alice password=s3cret];bob",
    ]
    assert "[field2]" in uac_register().xml


@pytest.mark.parametrize("bad", ["a;b", "a]b", "a b", ""])
def test_sipp_user_rejects_text_that_breaks_the_csv(bad: str) -> None:
    with pytest.raises(ValueError, match=r"SippUser\.password"):
        SippUser("alice", "example.test", bad)


def test_sipp_run_refuses_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SippRun(uac_call(), local_ip="127.0.0.32", remote=("10.0.0.1", 5060))
    with pytest.raises(ValueError, match="loopback"):
        SippRun(uac_call(), local_ip="192.168.1.2", remote=("127.0.0.31", 5060))
    with pytest.raises(ValueError, match="not an IPv4"):
        SippRun(uac_call(), local_ip="127.0.0.32", remote=("example.com", 5060))


def test_sipp_run_uac_needs_a_remote_and_a_bound() -> None:
    with pytest.raises(ValueError, match="remote"):
        SippRun(uac_call(), local_ip="127.0.0.32")
    with pytest.raises(ValueError, match="max_calls"):
        SippRun(uac_call(), local_ip="127.0.0.32", remote=("127.0.0.31", 5060), max_calls=0)
    with pytest.raises(ValueError, match="injection"):
        SippRun(uac_register(), local_ip="127.0.0.32", remote=("127.0.0.31", 5060))


def test_sipp_run_argv_is_bounded_and_traced(tmp_path: Path) -> None:
    run = SippRun(
        uac_call(),
        local_ip="127.0.0.32",
        remote=("127.0.0.31", 5070),
        rate=250,
        rate_period_ms=500,
        max_calls=1000,
        max_concurrent=50,
        rate_increase=10,
        rate_max=300,
        timeout_s=12,
    )
    argv = run.argv(tmp_path)
    joined = " ".join(argv)
    assert argv[1] == "127.0.0.31:5070"
    for expected in (
        "-ci 127.0.0.1",
        "-i 127.0.0.32",
        "-r 250 -rp 500ms",
        "-m 1000",
        "-l 50",
        "-timeout 12s -timeout_error",
        "-trace_stat",
        "-trace_rtt -rtt_freq 1",
        "-trace_counts",
        "-rate_increase 10",
        "-rate_max 300 -no_rate_quit",
        f"-stf {tmp_path / 'uac_call_stat.csv'}",
        f"-error_file {tmp_path / 'uac_call_errors.log'}",
    ):
        assert expected in joined


def test_percentile_is_nearest_rank() -> None:
    samples = tuple(float(x) for x in range(1, 101))
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 95) == 95.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile((), 50) is None


def test_parse_result_of_an_empty_folder_has_no_rows(tmp_path: Path) -> None:
    result = parse_result(tmp_path, "nothing", pid=None, exit_code=255)
    assert result.stats_rows == 0
    assert result.successful == 0
    assert result.failure_ratio == 0.0


def test_managed_process_stop_by_pid_kills_the_group(tmp_path: Path) -> None:
    script = "import subprocess,time; subprocess.Popen(['sleep','30']); print('up',flush=True); time.sleep(30)"
    with ProcessGroup() as group:
        proc = group.add(start_process([sys.executable, "-c", script], name="p", log_dir=tmp_path))
        pid = proc.pid
        assert proc.is_running()
    # parent (SIGTERM) and its forked child (group SIGKILL) are gone
    assert proc.returncode == -signal.SIGTERM
    assert _gone(pid)
    assert (tmp_path / "p.log").exists()


@pytest.mark.sipp
@needs_sipp
def test_sipp_uac_to_sipp_uas_200_calls_at_100_cps(tmp_path: Path) -> None:
    uas = start_sipp_uas("127.0.0.31", 5090, tmp_path)
    try:
        run = SippRun(
            uac_call(0),
            local_ip="127.0.0.32",
            remote=("127.0.0.31", 5090),
            rate=100,
            max_calls=200,
            timeout_s=15,
        )
        result = run_sipp(run, tmp_path / "uac")
    finally:
        uas_result = uas.stop()
    assert result.exit_code == 0
    assert (result.calls_created, result.successful, result.failed) == (200, 200, 0)
    assert result.failed_by_reason == {}
    assert len(result.setup_delays_ms) == 200
    assert result.p99_ms is not None
    assert result.p99_ms < 1000
    assert sum(n for _, n in result.rtt_histogram) == 200
    assert 1.0 <= result.elapsed_s < 10
    assert uas_result.count("INVITE") == 200
    assert uas_result.count("BYE") == 200
    assert not uas.is_running()
    assert _gone(uas.pid)


@pytest.mark.sipp
@needs_sipp
def test_sipp_failed_calls_are_counted_by_reason(tmp_path: Path) -> None:
    # Nothing listens on 127.0.0.39:5099: each INVITE is sent twice (max_retrans=1) then fails.
    run = SippRun(
        uac_call(0),
        local_ip="127.0.0.32",
        remote=("127.0.0.39", 5099),
        rate=20,
        max_calls=3,
        max_retrans=1,
        timeout_s=10,
    )
    result = run_sipp(run, tmp_path)
    assert result.exit_code == 1
    assert result.successful == 0
    assert result.failed == 3
    assert result.failed_by_reason == {"MaxUDPRetrans": 3}
    assert result.retransmissions == 3
    assert result.failure_ratio == 1.0


@pytest.mark.sipp
@needs_sipp
async def test_run_sipp_async_options_ping(tmp_path: Path) -> None:
    uas = start_sipp_uas("127.0.0.31", 5091, tmp_path)
    try:
        run = SippRun(
            options_ping(),
            local_ip="127.0.0.32",
            remote=("127.0.0.31", 5091),
            rate=50,
            max_calls=10,
            timeout_s=10,
        )
        result = await run_sipp_async(run, tmp_path / "ping")
    finally:
        uas_result = uas.stop()
    assert (result.successful, result.failed) == (10, 0)
    assert uas_result.count("OPTIONS") == 11  # 10 pings + the readiness probe
    assert uas_result.count("INVITE") == 0


@pytest.mark.sipp
@needs_sipp
def test_run_sipp_raises_when_sipp_cannot_bind(tmp_path: Path) -> None:
    uas = start_sipp_uas("127.0.0.31", 5093, tmp_path)
    try:
        run = SippRun(
            uac_call(),
            local_ip="127.0.0.31",
            local_port=5093,  # taken by the UAS
            remote=("127.0.0.31", 5093),
            timeout_s=5,
        )
        with pytest.raises(SippError, match="cannot bind"):
            run_sipp(run, tmp_path / "uac")
    finally:
        uas.stop()
