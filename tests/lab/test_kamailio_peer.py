"""Kamailio peer: cfg rendering, config check errors, and dispatching real SIPp calls.

Addresses 127.0.0.30-39 are this file's (the lab reserves .10 and .11+).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.engines import (
    SippResult,
    SippRun,
    SippUser,
    run_sipp,
    sipp_binary,
    start_sipp_uas,
    uac_call,
    uac_register,
    users_csv,
)
from lab.requires import needs
from lab.routers.kamailio import (
    DispatcherDestination,
    KamailioConfigError,
    KamailioParams,
    check_config,
    kamailio_binary,
    render_config,
    start_kamailio,
    start_kamailio_config,
    write_config,
)

needs_kamailio = needs(
    kamailio_binary() is not None, "Kamailio not installed (Debian package kamailio)"
)
needs_sipp = needs(sipp_binary() is not None, "SIPp not installed (Debian package sip-tester)")

ROUTER = "127.0.0.35"
UAS1, UAS2 = "127.0.0.33", "127.0.0.34"
UAC = "127.0.0.32"


def _params(**changes: object) -> KamailioParams:
    base: dict[str, object] = {
        "listen_ip": ROUTER,
        "listen_port": 5070,
        "destinations": (
            DispatcherDestination(f"sip:{UAS1}:5090"),
            DispatcherDestination(f"sip:{UAS2}:5090"),
        ),
    }
    base.update(changes)
    return KamailioParams(**base)  # type: ignore[arg-type]


def _group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_render_config_defines_everything_the_body_uses(tmp_path: Path) -> None:
    params = _params(ds_ping_interval=5, ds_probing_mode=1, fr_timer_ms=800, ds_mark_failed=True)
    text = render_config(params, tmp_path / "dispatcher.list")
    assert text.startswith("#!KAMAILIO\n")
    for line in (
        f"#!define LISTEN udp:{ROUTER}:5070",
        "#!define CHILDREN 1",
        "#!define FR_TIMER 800",
        "#!define WITH_DISPATCHER",
        f'#!define DS_LIST_FILE "{tmp_path / "dispatcher.list"}"',
        "#!define DS_PING_INTERVAL 5",
        "#!define DS_PROBING_MODE 1",
        "#!define DS_MARK_FAILED",
    ):
        assert line + "\n" in text
    # the reference failover pattern of SIP-REFERENCE §1.6
    assert 'modparam("dispatcher", "flags", 2)' in text
    assert "ds_next_dst()" in text
    assert 't_check_status("408|5[0-9][0-9]")' in text


def test_render_config_with_db_url_uses_no_list_file() -> None:
    text = render_config(_params(destinations=(), ds_db_url="sqlite:///tmp/x.db"))
    assert '#!define DS_DB_URL "sqlite:///tmp/x.db"' in text
    assert "DS_LIST_FILE" not in text.split("\n\n", 1)[0]


def test_write_config_writes_the_dispatcher_list(tmp_path: Path) -> None:
    write_config(_params(), tmp_path)
    assert (tmp_path / "dispatcher.list").read_text() == (
        f"1 sip:{UAS1}:5090 0 0\n1 sip:{UAS2}:5090 0 0\n"
    )


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="loopback"):
        _params(listen_ip="10.1.2.3")
    with pytest.raises(ValueError, match="loopback"):
        DispatcherDestination("sip:10.0.0.11:5060")
    with pytest.raises(ValueError, match="destinations or ds_db_url"):
        _params(destinations=())
    # without the dispatcher role no destination is needed
    assert _params(destinations=(), roles=frozenset()).roles == frozenset()
    with pytest.raises(ValueError, match="ds_probing_mode"):
        _params(ds_probing_mode=7)
    assert KamailioParams(listen_ip=ROUTER, destinations=_params().destinations).shm_mb == 2048


@pytest.mark.kamailio
@needs_kamailio
def test_check_config_names_the_bad_line(tmp_path: Path) -> None:
    params = _params()
    cfg = write_config(params, tmp_path)
    check_config(cfg, params, tmp_path)  # the rendered cfg is valid
    lines = cfg.read_text().splitlines()
    lines.insert(5, 'modparam("tm", "no_such_param", 1)')
    cfg.write_text("\n".join(lines) + "\n")
    with pytest.raises(KamailioConfigError) as info:
        check_config(cfg, params, tmp_path)
    assert info.value.line == 6
    assert info.value.source_line == 'modparam("tm", "no_such_param", 1)'
    assert "cfg line 6" in str(info.value)


@pytest.mark.kamailio
@pytest.mark.sipp
@needs_kamailio
@needs_sipp
def test_kamailio_dispatches_calls_over_two_sipp_uas(tmp_path: Path) -> None:
    uas1 = start_sipp_uas(UAS1, 5090, tmp_path, name="uas1")
    uas2 = start_sipp_uas(UAS2, 5090, tmp_path, name="uas2")
    try:
        kam = start_kamailio(_params(), tmp_path / "kamailio", probe_ip=UAC)
        kam_pid = kam.pid
        try:
            assert kam.is_running()
            run = SippRun(
                uac_call(0),
                local_ip=UAC,
                remote=kam.address,
                rate=100,
                max_calls=200,
                timeout_s=15,
            )
            result = run_sipp(run, tmp_path / "uac")
        finally:
            code = kam.stop()
    finally:
        r1, r2 = uas1.stop(), uas2.stop()
    assert (result.successful, result.failed) == (200, 0)
    calls1, calls2 = r1.count("INVITE"), r2.count("INVITE")
    assert calls1 + calls2 == 200
    assert abs(calls1 - calls2) <= 2  # round robin (alg 4)
    # BYE came back through the proxy (record-route + loose routing) to the UAS of each call
    assert r1.count("BYE") == calls1
    assert r2.count("BYE") == calls2
    assert code == 0
    assert not kam.is_running()
    assert _group_gone(kam_pid)
    assert "kamailio" in (tmp_path / "kamailio" / "kamailio.log").read_text()


@pytest.mark.kamailio
@pytest.mark.sipp
@needs_kamailio
@needs_sipp
def test_kamailio_fails_over_from_a_silent_destination(tmp_path: Path) -> None:
    # 127.0.0.36:5090 has no listener: INVITEs there time out after fr_timer, then ds_next_dst.
    params = _params(
        destinations=(
            DispatcherDestination("sip:127.0.0.36:5090"),
            DispatcherDestination(f"sip:{UAS1}:5090"),
        ),
        fr_timer_ms=500,
    )
    uas = start_sipp_uas(UAS1, 5090, tmp_path, name="uas1")
    try:
        with start_kamailio(params, tmp_path / "kamailio", probe_ip=UAC) as kam:
            run = SippRun(
                uac_call(0), local_ip=UAC, remote=kam.address, rate=20, max_calls=6, timeout_s=15
            )
            result = run_sipp(run, tmp_path / "uac")
    finally:
        uas_result = uas.stop()
    assert (result.successful, result.failed) == (6, 0)
    assert uas_result.count("INVITE") == 6
    # round robin sent half the calls to the silent node first: their setup waited fr_timer
    # (Kamailio's timer wheel may fire a tick or so early, hence the margin)
    delays = sorted(result.setup_delays_ms)
    assert delays[2] < 100
    assert delays[3] >= 400


# A registrar stand-in that checks digest against "pw" + user (auth module, no DB), so the
# SIPp digest scenarios are proven against a real RFC 2617 implementation.
_DIGEST_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.37:5070
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "auth.so"
loadmodule "siputils.so"
loadmodule "textops.so"
request_route {
    if (is_method("REGISTER")) {
        if (!pv_www_authenticate("$td", "pw$tU", "0")) {
            www_challenge("$td", "0");
            exit;
        }
        sl_send_reply("200", "OK");
        exit;
    }
    sl_send_reply("200", "Keepalive");
}
"""


@pytest.mark.kamailio
@pytest.mark.sipp
@needs_kamailio
@needs_sipp
def test_sipp_digest_register_against_kamailio_auth(tmp_path: Path) -> None:
    cfg = tmp_path / "digest.cfg"
    cfg.write_text(_DIGEST_CFG)
    params = KamailioParams(
        listen_ip="127.0.0.37", listen_port=5070, shm_mb=64, pkg_mb=8, roles=frozenset()
    )
    good = [SippUser(f"u{n}", "example.test", f"pwu{n}") for n in range(4)]
    bad = [SippUser("u9", "example.test", "wrong")]
    (tmp_path / "good.csv").write_text(users_csv(good))
    (tmp_path / "bad.csv").write_text(users_csv(bad))
    with start_kamailio_config(cfg, params, tmp_path / "kamailio", probe_ip=UAC) as kam:

        def register(csv: str, calls: int) -> SippResult:
            run = SippRun(
                uac_register(60),
                local_ip=UAC,
                remote=kam.address,
                rate=20,
                max_calls=calls,
                injection=tmp_path / csv,
                timeout_s=10,
                name=f"register_{csv[:-4]}",
            )
            return run_sipp(run, tmp_path / csv[:-4])

        ok = register("good.csv", 4)
        refused = register("bad.csv", 1)
    assert (ok.successful, ok.failed) == (4, 0)
    assert ok.count("401") == 4
    # a wrong password is challenged again: 401 where the scenario expects 200
    assert (refused.successful, refused.failed) == (0, 1)
    assert refused.failed_by_reason == {"UnexpectedMessage": 1}
