"""A user's own kamailio.cfg as the router: the -A contract, capabilities, clear errors.

The scenarios themselves run against the example cfgs in scripts/test.sh (``pytest scenarios -m
kamailio --router kamailio --router-config examples/kamailio/...``); here: what the lab does
before and around them. Lab addresses: net 93 (127.93.0.x).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.requires import needs
from lab.routers.kamailio import KamailioConfigError, kamailio_binary
from lab.routers.kamailio.capabilities import ALL, detect, missing, router_capabilities
from lab.routers.kamailio.config import contract_defines, define_args
from lab.routers.kamailio.router import (
    KamailioRouterParams,
    example_config,
    prepare_database,
    router_command,
    router_params_from_dict,
)
from lab.topology import RouterSpec, load_topology, topology_from_dict
from router.configfile import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "kamailio"
ROUTER = "127.93.0.10"

needs_kamailio = needs(
    kamailio_binary() is not None, "Kamailio not installed (Debian package kamailio)"
)


def _params(tmp_path: Path) -> KamailioRouterParams:
    url = f"sqlite:///{tmp_path}/rt.db"
    data = {
        "router": {"name": "r", "listen": [f"udp:{ROUTER}:5060", f"tcp:{ROUTER}:5060"]},
        "dispatcher": {"db": url, "probing": {"interval": 1.0, "mode": 1}},
        "registrar": {"enabled": True, "db": url},
    }
    return router_params_from_dict(data)


def test_contract_defines_reach_the_cfg_as_dash_a(tmp_path: Path) -> None:
    params = _params(tmp_path).kamailio_params()
    defines = dict(contract_defines(params))
    # the documented core of the contract (docs/kamailio-contract.md)
    assert defines["SIPLAB"] is None
    assert defines["LISTEN"] == f"udp:{ROUTER}:5060"
    assert defines["LISTEN_TCP"] == f"tcp:{ROUTER}:5060"
    assert defines["DB_URL"] == f'"sqlite:///{tmp_path}/rt.db"'
    assert "DB_SQLITE" in defines and "DB_POSTGRES" not in defines
    assert defines["DS_SET"] == '"1"'
    assert defines["REALM"] == '"asterisk"'
    args = define_args([("SIPLAB", None), ("DS_SET", '"1"')])
    assert args == ["-A", "SIPLAB", "-A", 'DS_SET="1"']


@needs_kamailio
def test_lab_runs_siplab_cfg_unchanged_with_dash_a(tmp_path: Path) -> None:
    argv = router_command(_params(tmp_path), tmp_path / "kam")
    cfg = tmp_path / "kam" / "kamailio.cfg"
    assert argv[argv.index("-f") + 1] == str(cfg)
    assert cfg.read_text() == example_config()  # no rendering: the example itself
    assert f"LISTEN=udp:{ROUTER}:5060" in argv
    assert argv[argv.index(f"LISTEN=udp:{ROUTER}:5060") - 1] == "-A"
    assert (tmp_path / "kam" / "kamailio.argv").read_text().startswith(argv[0])


@needs_kamailio
@pytest.mark.parametrize("name", ["noauth.cfg", "hash-callid.cfg"])
def test_example_user_cfgs_pass_kamailio_check_with_the_contract(tmp_path: Path, name: str) -> None:
    argv = router_command(  # raises KamailioConfigError when the cfg is rejected
        _params(tmp_path),
        tmp_path / "kam",
        config=EXAMPLES / name,
    )
    assert argv[argv.index("-f") + 1] == str(EXAMPLES / name)


def test_hash_example_is_siplab_cfg_but_for_the_algorithm() -> None:
    """The hash example must not drift from siplab's cfg (it documents one change)."""
    ours = example_config()
    theirs = (EXAMPLES / "hash-callid.cfg").read_text()
    body = theirs[theirs.index("####### Global parameters") :]
    expected = ours[ours.index("####### Global parameters") :].replace(
        "\tif (!ds_select_dst(DS_SET, DS_ALG)) {",
        "\t# algorithm 0: hash over the Call-ID (SIP-REFERENCE §1.3), not the lab's DS_ALG\n"
        '\tif (!ds_select_dst(DS_SET, "0")) {',
    )
    assert body == expected


@needs_kamailio
def test_broken_user_cfg_names_file_line_and_kamailio_message(tmp_path: Path) -> None:
    cfg = tmp_path / "mine.cfg"
    cfg.write_text(
        'listen=LISTEN\nloadmodule "tm.so"\nrequest_route {\n  sl_send_reply("200", "OK");\n}\n'
    )
    with pytest.raises(KamailioConfigError) as caught:
        router_command(_params(tmp_path), tmp_path / "kam", config=cfg)
    err = caught.value
    assert err.file == str(cfg) and err.line == 4
    assert 'sl_send_reply("200", "OK");' in str(err)
    assert "unknown command, missing loadmodule?" in str(err)  # Kamailio's own words


@needs_kamailio
def test_lab_up_with_a_broken_cfg_fails_with_file_and_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "mine.cfg"
    cfg.write_text("listen=LISTEN\nrequest_route {\n  exit\n}\n")  # missing ';'
    topo = tmp_path / "lab.toml"
    topo.write_text(
        'net = 93\npbx_count = 1\n[db]\nkind = "sqlite"\n[users]\ncount = 2\n'
        '[router]\nkind = "kamailio"\nconfig = "mine.cfg"\n'
    )
    cli = [sys.executable, "-m", "lab.cli"]
    done = subprocess.run(
        [*cli, *("lab", "up", "--topology", str(topo), "--dir", str(tmp_path / "run"))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{cfg} line 4" in done.stderr, done.stderr  # resolved next to the topology file


def test_subscriber_view_and_versions_for_stock_cfgs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rt.db"
    prepare_database(url)
    from router.realtime import connect

    db = connect(url)
    try:
        db.provision_users(3, 200, domain="lab", context="from-users", seed=2)
        rows = db.query('SELECT username FROM "subscriber" ORDER BY username')
    finally:
        db.close()
    assert [r[0] for r in rows] == ["200", "201", "202"]


def test_capabilities_detected_from_the_cfg_text() -> None:
    assert detect(example_config()) == ALL
    assert detect((EXAMPLES / "noauth.cfg").read_text()) == {"registrar", "ds_alg"}
    hashed = detect((EXAMPLES / "hash-callid.cfg").read_text())
    assert hashed == {"auth", "registrar", "durable", "tcp", "ds_alg:0"}
    # bindings in memory only (usrloc db_mode 0) do not survive a restart
    assert "durable" not in detect((EXAMPLES / "noauth.cfg").read_text())
    # a commented-out call does not count
    assert detect('# www_authorize("x", "subscriber")\nrequest_route { exit; }') == set()
    assert not missing("ds_alg:4", frozenset({"ds_alg"}))
    assert missing("ds_alg:4", frozenset({"ds_alg:0"}))
    assert missing("auth", hashed - {"auth"})


def test_router_spec_fields_and_declared_capabilities(tmp_path: Path) -> None:
    spec = RouterSpec(kind="kamailio", config=str(EXAMPLES / "noauth.cfg"))
    assert router_capabilities(spec) == {"registrar", "ds_alg"}
    declared = RouterSpec(kind="kamailio", config=str(EXAMPLES / "noauth.cfg"), provides=["auth"])
    assert router_capabilities(declared) == {"auth"}
    assert router_capabilities(RouterSpec(external="127.93.0.60:5060")) == set()
    assert router_capabilities(RouterSpec()) == ALL
    bad = [
        ({"kind": "reference", "config": "x.cfg"}, "router.config"),
        ({"kind": "kamailio", "version": "4.4"}, "router.version"),
        ({"external": "nowhere"}, "router.external"),
        ({"provides": ["video"]}, "router.provides[0]"),
    ]
    for table, field in bad:
        with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
            topology_from_dict({"router": table}, source="t.toml")
    topo = tmp_path / "t.toml"
    topo.write_text('[router]\nkind = "kamailio"\nconfig = "my.cfg"\nversion = "6.0"\n')
    loaded = load_topology(topo).router
    assert (loaded.config, loaded.version) == (str(tmp_path / "my.cfg"), "6.0")


# A stock-style auth cfg (kamailio.cfg's WITH_AUTH: auth_db on `subscriber`, plaintext password,
# calculate_ha1): the lab's `subscriber` view must let it authenticate the users in ps_auths.
_STOCK_AUTH_CFG = """
listen=udp:127.93.0.40:5070
children=1
disable_tcp=yes
log_stderror=yes
loadmodule "db_sqlite.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "siputils.so"
loadmodule "textops.so"
modparam("auth_db", "db_url", DB_URL)
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
request_route {
    if (is_method("REGISTER")) {
        if (!www_authorize("$td", "subscriber")) {
            www_challenge("$td", "0");
            exit;
        }
        sl_send_reply("200", "OK");
        exit;
    }
    sl_send_reply("200", "Keepalive");
}
"""


@needs_kamailio
@pytest.mark.sipp
def test_stock_auth_db_cfg_authenticates_lab_users_through_the_subscriber_view(
    tmp_path: Path,
) -> None:
    from lab.engines import SippRun, run_sipp, sipp_binary, uac_register
    from lab.routers.kamailio import KamailioParams, start_kamailio_config
    from router.realtime import connect, write_sipp_csv

    if sipp_binary() is None:
        pytest.skip("SIPp not installed (Debian package sip-tester)")
    url = f"sqlite:///{tmp_path}/rt.db"
    prepare_database(url)
    db = connect(url)
    try:
        users = db.provision_users(4, 300, domain="127.93.0.40", context="c", seed=3)
    finally:
        db.close()
    write_sipp_csv(tmp_path / "users.csv", users)
    cfg = tmp_path / "stock.cfg"
    cfg.write_text(f'#!define DB_URL "{url}"\n' + _STOCK_AUTH_CFG)
    params = KamailioParams(
        listen_ip="127.93.0.40", listen_port=5070, shm_mb=64, pkg_mb=8, roles=frozenset()
    )
    with start_kamailio_config(cfg, params, tmp_path / "kam", probe_ip="127.93.0.41") as kam:
        run = SippRun(
            uac_register(60),
            local_ip="127.93.0.41",
            remote=kam.address,
            rate=20,
            max_calls=4,
            injection=tmp_path / "users.csv",
            timeout_s=10,
        )
        result = run_sipp(run, tmp_path / "sipp")
    assert (result.successful, result.failed) == (4, 0)
    assert result.count("401") == 4  # each was challenged, then accepted with its password
